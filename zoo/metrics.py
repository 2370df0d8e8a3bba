"""Metrics for neural-response models: per-neuron correlation over a whole set, and the repeat-based oracle.

Both keep float64 sufficient statistics summed over batches and, under DDP, over ranks. This is exact for any split
of the data into batches and shards (given that no sample is seen twice), and avoids the float32 trap of
``torchmetrics.PearsonCorrCoef``, which returns NaN once a variance drops below ~3.5e-4.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["PerNeuronCorrelation", "RepeatOracle"]


class PerNeuronCorrelation(Metric):
    """Pearson correlation of each neuron's prediction with its response over all samples seen.

    ``update(preds [B, n], target [B, n])``; ``compute() -> [n]``. A neuron whose prediction or target SD is below
    ``min_sd`` gets 0 (as the Ecker et al. evaluation does), never NaN.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_neurons: int, min_sd: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.min_sd = min_sd
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy"):
            self.add_state(name, torch.zeros(n_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape or preds.ndim != 2:
            raise ValueError(f"expected preds and target of equal shape [B, n], got {tuple(preds.shape)} "
                             f"and {tuple(target.shape)}")
        x, y = preds.detach().double(), target.detach().double()
        self.count += x.shape[0]
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
    FEV = (Var_images(m) - noise) / Var_images(m), noise = mean_images(Var_repeats) / R, as in the evaluation of
    Ecker et al. 2019 (docs/data.md).
    ``compute() -> [n]`` returns sqrt(max(FEV, 0)).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_neurons: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("sum_m", "sum_mm", "sum_noise"):
            self.add_state(name, torch.zeros(n_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, responses: torch.Tensor) -> None:
        if responses.ndim != 3 or responses.shape[1] < 2:
            raise ValueError(f"expected responses [B, R >= 2, n], got {tuple(responses.shape)}")
        y = responses.detach().double()
        repeats = y.shape[1]
        m = y.mean(1)
        self.count += y.shape[0]
        self.sum_m += m.sum(0)
        self.sum_mm += (m * m).sum(0)
        self.sum_noise += (y.var(1, unbiased=True) / repeats).sum(0)

    def compute(self) -> torch.Tensor:
        n = self.count
        total = (self.sum_mm - self.sum_m**2 / n) / (n - 1).clamp_min(1)
        noise = self.sum_noise / n.clamp_min(1)
        fev = torch.where(total > 0, 1 - noise / total.clamp_min(1e-30), torch.zeros_like(total))
        return fev.clamp_min(0).sqrt()
