"""Self-organising maps trained by Hebbian learning (no backprop), measured by their orientation maps.

Training batches are ``(images,)``. Each step settles the network on the batch, computes the Hebbian terms from the
settled activity, averages them across DDP processes (so every process keeps the same weights), and applies them
with the model's ``DivisiveHebbian`` optimiser (manual optimisation: ``global_step`` counts Hebbian updates); then
the model may adapt (GCAL's homeostatic thresholds) from each unit's activity, averaged over the processes too.

Validation batches are sine gratings ``(images, orientation, phase, frequency)`` (degrees, degrees,
cycles/pixel). At the end of validation the responses give each unit's tuning curve (max over phase, best
frequency), and ``bioviz.tuning`` turns them into the orientation map. Logged: ``val/selectivity`` (mean normalised
vector magnitude, the monitored metric), ``val/pinwheel_density`` (pinwheels per squared column spacing, Kaschube et
al.'s method, counted ``map_margin`` units in from the edges; pi in cortex), ``val/column_spacing`` (pixels, the mean
local spacing there), ``val/preference_uniformity`` (entropy of the preference histogram in 12 bins over its
maximum: 1 = uniform), and, on a TensorBoard logger, the orientation map and the afferent weights
(``weight_picture``). Every validation map is also kept in ``map_history`` (saved in checkpoints) for the study of
the map's development.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn

from bioviz.callbacks import tensorboard_writer
from bioviz.plot import orientation_map_rgb, tile_images
from bioviz.tuning import orientation_map, pinwheel_density
from zoo.layers.lissom import DivisiveHebbian
from zoo.tasks.base import Task

__all__ = ["SelfOrganizingTask", "MapMeasurement", "measure_map", "preference_uniformity"]


def preference_uniformity(preference: torch.Tensor, bins: int = 12) -> float:
    """Entropy of the histogram of preferences (degrees, [0, 180)) in ``bins`` bins over log(bins): 1 = uniform."""
    counts = torch.histc(preference.double().flatten() % 180, bins=bins, min=0, max=180)
    p = counts / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(bins))


class MapMeasurement:
    """Orientation map of a sheet from grating responses: ``preference``, ``selectivity`` ``[H, W]`` and the
    summary numbers (``selectivity_mean``, ``uniformity``, ``pinwheels``: a ``bioviz.tuning.Pinwheels``)."""

    def __init__(self, preference: torch.Tensor, selectivity: torch.Tensor, margin: int = 0):
        self.preference, self.selectivity = preference, selectivity
        self.selectivity_mean = float(selectivity.mean())
        self.uniformity = preference_uniformity(preference)
        try:
            self.pinwheels = pinwheel_density(preference, selectivity, margin=margin)
        except ValueError:  # a uniform (untuned) map has no columns
            self.pinwheels = None


def measure_map(responses: torch.Tensor, orientation: torch.Tensor, phase: torch.Tensor, frequency: torch.Tensor,
                sheet_shape: tuple[int, int], margin: int = 0) -> MapMeasurement:
    """``responses`` ``[n, units]`` to gratings with the given ``orientation``, ``phase``, ``frequency`` (each
    ``[n]``): each unit's curve is the max over phase at its best frequency (the one with its largest response)."""
    orientations, o_index = torch.unique(orientation.double(), return_inverse=True)
    _, f_index = torch.unique(frequency.double(), return_inverse=True)
    n_f, n_o, n_p = int(f_index.max()) + 1, len(orientations), len(torch.unique(phase.double()))
    spacing = 180.0 / n_o
    if len(responses) != n_f * n_o * n_p or not torch.allclose(orientations, orientations[0] + spacing *
                                                               torch.arange(n_o, dtype=torch.float64)):
        raise ValueError(f"an orientation map needs the whole set of gratings, evenly spaced over 180 degrees; got "
                         f"{len(responses)} responses at orientations {orientations.tolist()}. Do not limit the "
                         f"validation/test batches below the whole set.")
    curves = responses.new_full((n_f * n_o, responses.shape[1]), -math.inf)
    index = (f_index * n_o + o_index)[:, None].expand_as(responses)
    curves = curves.scatter_reduce(0, index, responses, reduce="amax").view(n_f, n_o, -1)
    if torch.isinf(curves).any():
        raise ValueError("the gratings do not cover every orientation at every frequency")
    best = curves.amax(1, keepdim=True).argmax(0, keepdim=True).expand(1, n_o, -1)
    curves = curves.gather(0, best)[0].T  # [units, O]
    sheet = orientation_map(curves, orientations, sheet_shape=sheet_shape)
    return MapMeasurement(sheet.preference, sheet.selectivity, margin)


class SelfOrganizingTask(Task):
    """Base for Hebbian self-organising models.

    Subclasses build ``self.network`` (a ``LissomNetwork``: ``forward`` gives the sheet's activity ``[B, 1, H, W]``,
    ``hebbian_terms(images, alphas) -> (activity, {name: term})``, ``projections()``, ``v1.afferent``), set
    ``sheet_shape`` (H, W) and ``learning_rates`` ({projection: rate per unit} for the ``DivisiveHebbian``), and may
    override ``before_step(step, optimizer)`` to apply a schedule and ``adapt(activity)`` for homeostasis.
    """

    monitor = "val/selectivity"
    monitor_mode = "max"
    sheet_shape: tuple[int, int]
    learning_rates: dict[str, float]
    map_margin: int = 0  # units at each edge of the sheet left out of the pinwheel count (bioviz.tuning)

    def __init__(self, in_shape: Sequence[int], **shape_checks):
        super().__init__(in_shape, **shape_checks)
        self.automatic_optimization = False
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []
        self.last_map: MapMeasurement | None = None
        # Every validation map, {"step", "preference", "selectivity"}, kept in checkpoints: map development and
        # stability (bioviz.tuning.stability_index against the final map) are read from it after training.
        self.map_history: list[dict] = []

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["map_history"] = self.map_history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.map_history = list(checkpoint.get("map_history", []))

    def before_step(self, step: int, optimizer) -> None:
        """Called before every Hebbian update with the number of updates done so far."""

    def adapt(self, activity: torch.Tensor) -> None:
        """Called after every Hebbian update with each unit's settled activity ``[units]``, averaged over the batch
        and over DDP processes (the same on every process): for homeostatic adaptation. One call per update: with
        ``batch_size`` B on P processes, one adaptation covers B x P inputs (GCAL adapts once per input, so its
        recipe trains with batch size 1 on one process)."""

    @torch.no_grad()
    def measure_map(self, data, response=None) -> MapMeasurement:
        """The orientation map from the gratings of ``data``'s test set, as ``bioviz test`` measures it: e.g.
        ``model.measure_map(zoo.model_info(name).datamodule())``. ``response(images) -> [B, units]`` replaces the
        settled activity (e.g. the afferent drive alone)."""
        data.setup("test")
        response = response or (lambda images: self(images).flatten(1))
        parts = [(response(images.to(self.device)).float().cpu(), o, p, f)
                 for images, o, p, f in data.test_dataloader()]
        responses, orientation, phase, frequency = (torch.cat(x) for x in zip(*parts, strict=True))
        return measure_map(responses, orientation, phase, frequency, self.sheet_shape, self.map_margin)

    def weight_picture(self, grid: int = 8) -> np.ndarray:
        """ON minus OFF afferent weights of ``grid`` x ``grid`` V1 units spread evenly over the sheet (red: ON)."""
        n = self.sheet_shape[0]
        rows = torch.linspace(0, n - 1, min(grid, n)).round().long()
        units = (rows[:, None] * n + rows[None, :]).flatten()
        fields = self.network.v1.afferent.weight_fields()[units.to(self.device)]
        return tile_images((fields[:, 0] - fields[:, 1]).cpu(), ncols=len(rows), scale="tile")

    def full_precision(self):
        """A context that switches a trainer's mixed-precision autocast off (see the module docstring)."""
        return torch.autocast(self.device.type, enabled=False)

    def on_fit_start(self):
        if str(self.trainer.precision).endswith("-mixed"):
            rank_zero_warn(f"{type(self).__name__} settles and learns in float32; precision "
                           f"{self.trainer.precision} does not change it (Hebbian increments are below the "
                           f"resolution of half-precision weights)")

    def training_step(self, batch, batch_idx):
        with self.full_precision():
            self._hebbian_step(batch)

    def _hebbian_step(self, batch):
        images = batch[0]
        self.check_images(images)
        optimizer = self.optimizers()
        self.before_step(self.global_step, optimizer.optimizer)
        activity, terms = self.network.hebbian_terms(images, optimizer.optimizer.alphas())
        if self._distributed():
            for name, term in terms.items():  # identical updates on every process
                dense = self._world_mean(term.dense(self.network.projections()[name].n_units))
                terms[name] = type(term).from_dense(dense)
        optimizer.step(terms=terms)
        if type(self).adapt is not SelfOrganizingTask.adapt:  # a model with homeostasis
            self.adapt(self._world_mean(activity.mean(0)))
        self.log("train/activity", activity.mean(), prog_bar=True, batch_size=len(images))
        self.log("train/active_fraction", (activity > 0).float().mean(), batch_size=len(images))

    def _distributed(self) -> bool:
        return self.trainer.world_size > 1 and dist.is_available() and dist.is_initialized()

    def _world_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the DDP processes (``tensor`` itself when there is one)."""
        if not self._distributed():
            return tensor
        tensor = tensor.contiguous()
        dist.all_reduce(tensor)
        return tensor.div_(self.trainer.world_size)

    def on_validation_epoch_start(self):
        self._val_outputs = []

    def on_test_epoch_start(self):
        self._val_outputs = []

    def validation_step(self, batch, batch_idx):
        images, orientation, phase, frequency = batch
        self.check_images(images)
        with self.full_precision():
            responses = self(images).flatten(1)
        self._val_outputs.append((responses.float().cpu(), orientation.cpu(), phase.cpu(), frequency.cpu()))

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        with self.full_precision():
            return self(batch[0])

    def on_validation_epoch_end(self):
        self._log_map("val")

    def on_test_epoch_end(self):
        self._log_map("test")

    def _log_map(self, stage: str) -> None:
        if not self._val_outputs or self.trainer.sanity_checking:  # the sanity check sees only part of the set
            return
        responses, orientation, phase, frequency = (torch.cat(parts) for parts in zip(*self._val_outputs,
                                                                                       strict=True))
        self._val_outputs = []
        result = measure_map(responses, orientation, phase, frequency, self.sheet_shape, self.map_margin)
        self.last_map = result
        if stage == "val":  # one map per step: a second validation at the same step (trainer.validate) replaces it
            self.map_history = [m for m in self.map_history if m["step"] != self.global_step]
            self.map_history.append({"step": self.global_step, "preference": result.preference.clone(),
                                     "selectivity": result.selectivity.clone()})
        # Every process measured the same gratings with the same weights: the values agree.
        self.log(f"{stage}/selectivity", result.selectivity_mean, prog_bar=True, sync_dist=True)
        self.log(f"{stage}/preference_uniformity", result.uniformity, sync_dist=True)
        if result.pinwheels is not None:
            self.log(f"{stage}/pinwheel_density", result.pinwheels.density, prog_bar=True, sync_dist=True)
            self.log(f"{stage}/column_spacing", result.pinwheels.column_spacing, sync_dist=True)
        writer = tensorboard_writer(self.trainer)
        if self.trainer.is_global_zero and writer is not None:
            step = self.global_step
            writer.add_image(f"{stage}/orientation_map", orientation_map_rgb(result.preference, result.selectivity),
                             step, dataformats="HWC")
            writer.add_histogram(f"{stage}/preference", result.preference.flatten(), step,
                                 bins=np.linspace(0, 180, 19))
            writer.add_image(f"{stage}/afferent_weights", self.weight_picture(), step, dataformats="HWC")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def configure_optimizers(self):
        return DivisiveHebbian(self.network.projections(), self.learning_rates)
