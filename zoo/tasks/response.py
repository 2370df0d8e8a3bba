"""Neural-response regression: predict each neuron's response to an image.

Batches are ``(images [B, C, H, W], responses [B, n])`` for training and validation and
``(images, responses [B, R, n])`` for test, where R repeats of each test image were recorded; test batches may carry
the noise-free rates ``[B, n]`` of a simulated population as a third element.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import MeanMetric

from zoo.errors import ShapeMismatchError
from zoo.metrics import ExplainableVariance, PerNeuronCorrelation, RepeatOracle
from zoo.tasks.base import Task

__all__ = ["CoreReadoutModel", "ResponseTask", "poisson_loss", "mse_loss", "mean_mse_loss", "LOSSES"]


def _recorded(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``target`` was recorded (not NaN), and the target with the rest zeroed: a loss masks those entries
    out, and no NaN reaches its gradient."""
    seen = ~target.isnan()
    return seen, torch.where(seen, target, torch.zeros_like(target))


def poisson_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Poisson negative log-likelihood (up to a constant) summed over the recorded neurons, one value per sample.

    Linear in ``target``, so the loss on repeat-averaged responses equals the mean loss over repeats.
    """
    seen, target = _recorded(target)
    return torch.where(seen, pred - target * torch.log(pred + 1e-5), 0.0).sum(-1)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the recorded neurons, one value per sample."""
    seen, target = _recorded(target)
    return torch.where(seen, (pred - target) ** 2, 0.0).sum(-1)


def mean_mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over the recorded neurons, one value per sample; its batch mean is ``nn.MSELoss()``."""
    seen, target = _recorded(target)
    return torch.where(seen, (pred - target) ** 2, 0.0).sum(-1) / seen.sum(-1).clamp_min(1)


LOSSES = {"poisson": poisson_loss, "mse": mse_loss, "mean_mse": mean_mse_loss}
FEV_THRESHOLD = 0.15  # test/feve averages the neurons with at least this much explainable variance (Sensorium 2022)


def _loaded(module: ResponseTask, incompatible_keys) -> None:
    """A state dict was loaded: the weights are no longer the fresh ones that ``setup`` initialises."""
    module.initialized_from_data = True


class ResponseTask(Task):
    """Base for neural-response models. Subclasses build the network and may override ``penalty()``.

    Logged: ``train/loss`` (data loss + penalties), ``train/data_loss``, ``val/loss`` (data loss only, the metric the
    checkpoint keeps the best of), ``val/corr`` and ``val/corr_median`` (per-neuron Pearson r over the whole
    validation set); on test: ``test/loss``, ``test/corr`` and ``test/corr_median`` against the repeat-averaged
    responses ("correlation to average"), ``test/corr_single_trial`` (against every recorded trial), with repeats
    ``test/oracle`` (mean sqrt(FEV)), ``test/fraction_oracle`` = test/corr / test/oracle, ``test/feve`` (fraction
    of explainable variance explained, mean over the neurons with FEV >= 0.15, as Sensorium 2022 reports it; see
    ``zoo.metrics.ExplainableVariance``) and ``test/feve_all`` (the mean over all neurons, as Cadena et al. 2019
    report it), and for simulated data with known rates ``test/oracle_true`` (correlation of the true rates with the
    repeat average) and ``test/fraction_oracle_true``. After a test, ``test_summary`` says the same in one line. NaN
    responses are trials that were not recorded: losses and metrics skip them.
    """

    monitor = "val/loss"
    monitor_mode = "min"
    data_hparams = ("in_shape", "n_neurons")
    retired_hparams = ("mean_responses",)  # once linked from the data; now the bias is set in setup()

    def __init__(self, in_shape: Sequence[int], n_neurons: int, loss: str = "poisson", lr: float | None = None,
                 **shape_checks):
        super().__init__(in_shape, lr, **shape_checks)
        self.n_neurons = int(n_neurons)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        self.loss_fn = LOSSES[loss]
        self.val_loss = MeanMetric()
        self.val_corr = PerNeuronCorrelation(n_neurons)
        self.test_loss = MeanMetric()
        self.test_corr = PerNeuronCorrelation(n_neurons)
        self.test_oracle = RepeatOracle(n_neurons)
        self.test_oracle_true = PerNeuronCorrelation(n_neurons)
        self.test_corr_trials = PerNeuronCorrelation(n_neurons)
        self.test_explainable = ExplainableVariance(n_neurons)
        self.test_summary: str | None = None
        self.initialized_from_data = False  # True once the data or a state dict has set the weights
        self.register_load_state_dict_post_hook(_loaded)

    def initialize_bias(self, mean_responses: torch.Tensor) -> None:
        """Start each neuron's output near its mean training response ``[n]`` (as neuralpredictors'
        ``initialize_bias``). Models whose output has no bias to set leave this empty."""

    def setup(self, stage: str) -> None:
        """Before a fit of a new model, ``initialize_bias`` from the DataModule's ``mean_responses`` (a model that
        loaded weights, from a checkpoint or the zoo, keeps its bias; a resumed run restores it after this)."""
        if stage != "fit" or self.initialized_from_data:
            return
        mean = getattr(self.trainer.datamodule, "mean_responses", None)
        if mean is None:
            return
        mean = torch.as_tensor(mean, dtype=torch.float32)
        if mean.shape != (self.n_neurons,):
            raise ShapeMismatchError(f"{type(self).__name__} predicts {self.n_neurons} neurons but the data's mean "
                                     f"responses are for {mean.numel()}")
        with torch.no_grad():
            self.initialize_bias(mean.to(self.device))
        self.initialized_from_data = True

    def _predict(self, images: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        pred = self(images)
        if pred.shape[-1] != responses.shape[-1]:
            raise ShapeMismatchError(
                f"{type(self).__name__} predicts {pred.shape[-1]} neurons but the data has {responses.shape[-1]}. "
                "Build the model for this data (the CLI links --model.init_args.n_neurons from the data)."
            )
        return pred

    def training_step(self, batch, batch_idx):
        images, responses = batch[0], batch[1]
        pred = self._predict(images, responses)
        return self.training_loss(self.loss_fn(pred, responses).mean(), batch_size=len(images))

    # Metrics are reset when an epoch starts, not when it ends: states made at the end of a standalone validate()
    # would be inference-mode tensors that a later fit() could not update in place.
    def on_validation_epoch_start(self):
        self.val_loss.reset()
        self.val_corr.reset()

    def on_test_epoch_start(self):
        for metric in (self.test_loss, self.test_corr, self.test_corr_trials, self.test_oracle, self.test_oracle_true,
                       self.test_explainable):
            metric.reset()

    def validation_step(self, batch, batch_idx):
        images, responses = batch[0], batch[1]
        pred = self._predict(images, responses)
        self.val_loss.update(self.loss_fn(pred, responses))
        self.val_corr.update(pred, responses)

    def on_validation_epoch_end(self):
        corr = self.val_corr.compute()
        self.log("val/loss", self.val_loss.compute(), prog_bar=True, sync_dist=True)
        self.log("val/corr", corr.mean().float(), prog_bar=True, sync_dist=True)
        self.log("val/corr_median", corr.median().float(), sync_dist=True)

    def test_step(self, batch, batch_idx):
        images, responses = batch[0], batch[1]
        repeats = responses if responses.ndim == 3 else responses.unsqueeze(1)
        average = repeats.nanmean(1)
        pred = self._predict(images, average)
        self.test_loss.update(self.loss_fn(pred, average))
        self.test_corr.update(pred, average)
        self.test_corr_trials.update(pred[:, None].expand_as(repeats).flatten(0, 1), repeats.flatten(0, 1))
        self.test_explainable.update(pred, repeats)
        if repeats.shape[1] >= 2:
            self.test_oracle.update(repeats)
        if len(batch) > 2:
            self.test_oracle_true.update(batch[2], average)

    def on_test_epoch_end(self):
        corr = self.test_corr.compute()
        results = {"test/loss": self.test_loss.compute(), "test/corr": corr.mean(),
                   "test/corr_median": corr.median(), "test/corr_single_trial": self.test_corr_trials.compute().mean()}
        if self.test_oracle.update_called:
            results["test/oracle"] = self.test_oracle.compute().mean()
            results["test/fraction_oracle"] = results["test/corr"] / results["test/oracle"]
            variance = self.test_explainable.compute()
            explainable = variance["fev"] >= FEV_THRESHOLD
            if explainable.any():
                results["test/feve"] = variance["feve"][explainable].mean()
            results["test/feve_all"] = variance["feve"].nanmean()
        if self.test_oracle_true.update_called:
            results["test/oracle_true"] = self.test_oracle_true.compute().mean()
            results["test/fraction_oracle_true"] = results["test/corr"] / results["test/oracle_true"]
        for name, value in results.items():
            self.log(name, value.float(), sync_dist=True)
        summary = f"test correlation {results['test/corr']:.3f} (median {results['test/corr_median']:.3f})"
        if "test/oracle" in results:
            summary += (f"; oracle {results['test/oracle']:.3f} (sqrt FEV), "
                        f"fraction of oracle {results['test/fraction_oracle']:.3f}")
        if "test/feve" in results:
            summary += f"; FEVE {results['test/feve']:.3f}"
        if "test/oracle_true" in results:
            summary += (f"; true-rate oracle {results['test/oracle_true']:.3f}, "
                        f"fraction {results['test/fraction_oracle_true']:.3f}")
        self.test_summary = summary

    def predict_step(self, batch, batch_idx):
        return self(batch[0])


class CoreReadoutModel(ResponseTask):
    """A core (image -> feature maps, with ``penalty()``) followed by a per-neuron readout (``zoo.layers.READOUTS``):
    what the models of Ecker et al. (2019) share; ``CNNV1`` and ``RotEquiV1`` differ only in their core.

    Subclasses set ``self.core`` and ``self.readout`` (``zoo.layers.build_readout``). Loss: the data loss (Poisson by
    default) + the core's filter penalties + the readout's penalty. With the transfer readout, the test also reports
    ``test/corr_core_neurons`` and ``test/corr_transfer_neurons`` (neurons that trained the core, and those that
    only read it through a stop-gradient).
    """

    core: nn.Module
    readout: nn.Module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.readout(self.core(images))

    def penalty(self) -> torch.Tensor:
        return self.core.penalty() + self.readout.penalty()

    def initialize_bias(self, mean_responses: torch.Tensor) -> None:
        self.readout.initialize_bias(mean_responses)

    def on_test_epoch_end(self):
        super().on_test_epoch_end()
        trains_core = getattr(self.readout, "trains_core", None)
        if trains_core is not None:
            corr = self.test_corr.compute()
            self.log("test/corr_core_neurons", corr[trains_core].mean().float(), sync_dist=True)
            self.log("test/corr_transfer_neurons", corr[~trains_core].mean().float(), sync_dist=True)
