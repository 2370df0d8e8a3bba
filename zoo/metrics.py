"""Metrics for neural-response models: per-neuron correlation over a whole set, the repeat-based oracle, and the
benchmarks' explainable-variance measures over single trials.

All keep float64 sufficient statistics summed over batches and, under DDP, over ranks. This is exact for any split
of the data into batches and shards (given that no sample is seen twice), and avoids the float32 trap of
``torchmetrics.PearsonCorrCoef``, which returns NaN once a variance drops below ~3.5e-4.

A NaN response is a trial that was not recorded (public datasets mark so the repeats a neuron did not get, or the
images it was not shown): every metric here skips it, neuron by neuron.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["ExplainableVariance", "PerNeuronCorrelation", "RepeatOracle"]


class PerNeuronCorrelation(Metric):
    """Pearson correlation of each neuron's prediction with its response over all samples seen.

    ``update(preds [B, n], target [B, n])``; ``compute() -> [n]``. Pairs whose target is NaN are left out of that
    neuron's sums. A neuron whose prediction or target SD is below ``min_sd`` gets 0 (as the Ecker et
    al. evaluation does), never NaN.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_neurons: int, min_sd: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.min_sd = min_sd
        for name in ("count", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy"):
            self.add_state(name, torch.zeros(n_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape or preds.ndim != 2:
            raise ValueError(f"expected preds and target of equal shape [B, n], got {tuple(preds.shape)} "
                             f"and {tuple(target.shape)}")
        x, y = preds.detach().double(), target.detach().double()
        seen = ~y.isnan()
        x, y = torch.where(seen, x, 0.0), torch.where(seen, y, 0.0)
        self.count += seen.sum(0)
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.sum_xx += (x * x).sum(0)
        self.sum_yy += (y * y).sum(0)
        self.sum_xy += (x * y).sum(0)

    def compute(self) -> torch.Tensor:
        n = self.count.clamp_min(1)
        mean_x, mean_y = self.sum_x / n, self.sum_y / n
        var_x = (self.sum_xx / n - mean_x**2).clamp_min(0)
        var_y = (self.sum_yy / n - mean_y**2).clamp_min(0)
        cov = self.sum_xy / n - mean_x * mean_y
        sd_x, sd_y = var_x.sqrt(), var_y.sqrt()
        valid = (sd_x >= self.min_sd) & (sd_y >= self.min_sd)
        r = torch.where(valid, cov / (sd_x * sd_y).clamp_min(1e-30), torch.zeros_like(cov))
        return r.clamp(-1, 1)


class RepeatOracle(Metric):
    """Ceiling on the correlation with repeat-averaged responses: sqrt(FEV) per neuron.

    ``update(responses [B, R, n])`` with R >= 2 repeats of each of the B images. With m the repeat mean,
    FEV = (Var_images(m) - noise) / Var_images(m), noise = mean_images(Var_repeats / R), as in the evaluation of
    Ecker et al. 2019 (docs/data.md). Where repeats are missing (NaN), each neuron uses the images it has at least
    two repeats of, each with its own R.
    ``compute() -> [n]`` returns sqrt(max(FEV, 0)).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_neurons: int, **kwargs):
        super().__init__(**kwargs)
        for name in ("count", "sum_m", "sum_mm", "sum_noise"):
            self.add_state(name, torch.zeros(n_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, responses: torch.Tensor) -> None:
        if responses.ndim != 3 or responses.shape[1] < 2:
            raise ValueError(f"expected responses [B, R >= 2, n], got {tuple(responses.shape)}")
        m, var, repeats = _repeat_moments(responses)
        used = repeats >= 2
        self.count += used.sum(0)
        self.sum_m += torch.where(used, m, 0.0).sum(0)
        self.sum_mm += torch.where(used, m * m, 0.0).sum(0)
        self.sum_noise += torch.where(used, var / repeats.clamp_min(1), 0.0).sum(0)

    def compute(self) -> torch.Tensor:
        n = self.count.clamp_min(1)
        total = (self.sum_mm - self.sum_m**2 / n) / (n - 1).clamp_min(1)
        noise = self.sum_noise / n.clamp_min(1)
        fev = torch.where(total > 0, 1 - noise / total.clamp_min(1e-30), torch.zeros_like(total))
        return fev.clamp_min(0).sqrt()


def _repeat_moments(responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image and neuron of ``responses [B, R, n]`` (NaN = a trial not recorded): the mean over the recorded
    repeats, their variance (ddof 1; 0 where fewer than 2) and their number, all ``[B, n]`` float64."""
    y = responses.detach().double()
    seen = ~y.isnan()
    k = seen.sum(1).double()
    y0 = torch.where(seen, y, 0.0)
    m = y0.sum(1) / k.clamp_min(1)
    ss = torch.where(seen, (y0 - m[:, None]) ** 2, 0.0).sum(1)
    return m, ss / (k - 1).clamp_min(1), k


class ExplainableVariance(Metric):
    """The fraction of explainable variance the public benchmarks score on single trials with repeats (Sensorium
    2022; Cadena et al. 2019), per neuron, from ``update(preds [B, n], responses [B, R, n])`` (a model predicts one
    response per image; each of its R repeats is a trial; NaN marks a trial not recorded):

    - ``fev``: fraction of explainable variance, (total - noise) / total, with ``total`` the variance of all recorded
      trials and ``noise`` the mean over images of the variance across an image's repeats (images with at least 2);
    - ``feve``: fraction of explainable variance explained, 1 - (MSE - noise) / (total - noise), MSE over all trials
      (NaN where nothing is explainable).

    Variances use ddof 1 and each image counts once in ``noise`` whatever its number of repeats, as the Sensorium
    evaluation code computes them (neuralpredictors' ``fev``). ``compute()`` returns ``{"fev": [n], "feve": [n]}``.
    (The benchmarks' single-trial correlation is ``PerNeuronCorrelation`` over the trials.)
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_neurons: int, **kwargs):
        super().__init__(**kwargs)
        for name in ("trials", "sum_r", "sum_rr", "sum_sq_error", "noise_images", "sum_noise"):
            self.add_state(name, torch.zeros(n_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, responses: torch.Tensor) -> None:
        if responses.ndim != 3 or preds.shape != (responses.shape[0], responses.shape[2]):
            raise ValueError(f"expected preds [B, n] and responses [B, R, n], got {tuple(preds.shape)} and "
                             f"{tuple(responses.shape)}")
        r = responses.detach().double()
        seen = ~r.isnan()
        r = torch.where(seen, r, 0.0)
        error = torch.where(seen, r - preds.detach().double()[:, None], 0.0)
        self.trials += seen.sum((0, 1))
        self.sum_r += r.sum((0, 1))
        self.sum_rr += (r * r).sum((0, 1))
        self.sum_sq_error += (error * error).sum((0, 1))
        _, var, repeats = _repeat_moments(responses)
        used = repeats >= 2
        self.noise_images += used.sum(0)
        self.sum_noise += torch.where(used, var, 0.0).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.trials.clamp_min(1)
        total = (self.sum_rr - self.sum_r**2 / n) / (n - 1).clamp_min(1)
        noise = self.sum_noise / self.noise_images.clamp_min(1)
        mse = self.sum_sq_error / n
        fev = torch.where(total > 0, (total - noise) / total.clamp_min(1e-30), torch.zeros_like(total))
        explainable = total - noise
        feve = torch.where(explainable > 0, 1 - (mse - noise) / explainable.clamp_min(1e-30),
                           torch.full_like(total, float("nan")))
        return {"fev": fev, "feve": feve}
