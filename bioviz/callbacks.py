"""Lightning callbacks that log pictures of what a model learns to TensorBoard as it trains.

    bioviz fit -c configs/quickstart.yaml \\
        --trainer.callbacks+=bioviz.callbacks.FilterLogger \\
        --trainer.callbacks+=bioviz.callbacks.ReadoutMaskLogger \\
        --trainer.callbacks+=bioviz.callbacks.TuningLogger --trainer.callbacks.every_n_epochs=5

Each callback works on any LightningModule: layers are found generically (the first ``nn.Conv2d``, or a dotted
path such as ``core.layers.0.0`` / ``readout.mask`` that the user gives) and checked when fitting starts, so a wrong
name fails at once rather than after an epoch. Pictures are made at the end of every ``every_n_epochs``-th training
epoch, on global rank 0 only, without gradients; filter and mask grids are logged as image arrays (no figure is
drawn), so they cost milliseconds. Needs a TensorBoard logger (``SummaryWriter``-like ``logger.experiment``);
without one the callbacks warn once and do nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import lightning.pytorch as pl
import torch

from bioviz.hooks import first_conv, get_module, get_tensor
from bioviz.plot import orientation_map_rgb, tile_images, tuning_curves, tuning_image
from bioviz.rf import bar_bank, center_crop, gradient_rf, isotropy, orientedness, support_size
from bioviz.tuning import orientation_map, orientation_tuning

__all__ = ["FilterLogger", "WeightGridLogger", "ReadoutMaskLogger", "TuningLogger", "ReceptiveFieldLogger"]


def tensorboard_writer(trainer: pl.Trainer):
    """The first logger's ``SummaryWriter`` that can take images, or None."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            return experiment
    return None


class _EveryNEpochs(pl.Callback):
    def __init__(self, every_n_epochs: int, tag: str):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.tag = tag
        self._warned = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            if not self._warned:
                warnings.warn(f"{type(self).__name__}: no TensorBoard logger, nothing is logged. Use "
                              f"lightning.pytorch.loggers.TensorBoardLogger (bioviz fit's default).", stacklevel=2)
                self._warned = True
            return
        with torch.no_grad():
            self.log_pictures(writer, pl_module, trainer.global_step)

    def log_pictures(self, writer, pl_module: pl.LightningModule, step: int) -> None:
        raise NotImplementedError


class FilterLogger(_EveryNEpochs):
    """Logs a conv layer's filters as one image, one tile per filter, on a symmetric diverging colour scale
    shared by all filters (red +, blue -, white 0); filters on 3 input channels (RGB images) in colour.

    ``layer``: dotted path of the layer or its weight (``"core.layers.0.0"``); default the first ``nn.Conv2d``.
    ``channel``: show this one input channel instead (needed for inputs of other than 1 or 3 channels).
    At most ``max_filters`` filters.
    """

    def __init__(self, layer: str | None = None, every_n_epochs: int = 1, channel: int | None = None,
                 max_filters: int = 64, tag: str = "filters"):
        super().__init__(every_n_epochs, tag)
        self.layer, self.channel, self.max_filters = layer, channel, max_filters

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.layer is None:
            self.layer = first_conv(pl_module)[0]
        weight = get_tensor(pl_module, self.layer)
        if weight.ndim != 4:
            raise ValueError(f"FilterLogger: {self.layer!r} has a weight of shape {list(weight.shape)}, not conv "
                             f"filters [out, in, kH, kW]; name a Conv2d layer")
        if self.channel is None and weight.shape[1] not in (1, 3):
            raise ValueError(f"FilterLogger: {self.layer!r} has {weight.shape[1]} input channels; choose one to show "
                             f"with channel=c")
        if self.channel is not None and not 0 <= self.channel < weight.shape[1]:
            raise ValueError(f"FilterLogger: channel={self.channel} but {self.layer!r} has {weight.shape[1]} input "
                             f"channels")

    def log_pictures(self, writer, pl_module, step):
        weight = get_tensor(pl_module, self.layer)[: self.max_filters]
        weight = weight if self.channel is None else weight[:, self.channel : self.channel + 1]
        if weight.shape[1] == 3:  # colour tiles are grey at 0, so white borders separate them
            image = tile_images(weight, pad_color=(1.0, 1.0, 1.0))
        else:
            image = tile_images(weight[:, 0])
        writer.add_image(self.tag, image, step, dataformats="HWC")


class WeightGridLogger(_EveryNEpochs):
    """Logs any per-unit weight tensor ``[n, H, W]`` (e.g. spatial readout masks, LISSOM afferent weights reshaped
    by the model) as one image, one tile per unit.

    ``attribute``: dotted path to the tensor. ``absolute``: show |w| (readouts that use |mask|) on a sequential
    scale; otherwise a symmetric diverging scale. ``scale``: ``"shared"`` or ``"tile"`` (each unit its own range).
    """

    def __init__(self, attribute: str, every_n_epochs: int = 1, absolute: bool = False, scale: str = "tile",
                 max_units: int = 64, tag: str | None = None):
        super().__init__(every_n_epochs, tag or attribute.replace(".", "/"))
        self.attribute, self.absolute, self.scale, self.max_units = attribute, absolute, scale, max_units

    def setup(self, trainer, pl_module, stage: str) -> None:
        value = get_tensor(pl_module, self.attribute)
        if value.ndim != 3:
            raise ValueError(f"{type(self).__name__}: {self.attribute!r} has shape {list(value.shape)}; it needs one "
                             f"map per unit, [n, H, W]")

    def log_pictures(self, writer, pl_module, step):
        value = get_tensor(pl_module, self.attribute)[: self.max_units]
        if self.absolute:
            image = tile_images(value.abs(), cmap="viridis", symmetric=False, scale=self.scale)
        else:
            image = tile_images(value, scale=self.scale)
        writer.add_image(self.tag, image, step, dataformats="HWC")


class ReadoutMaskLogger(WeightGridLogger):
    """``WeightGridLogger`` for the spatial masks of a factorised readout (``readout.mask``, used as |mask|)."""

    def __init__(self, attribute: str = "readout.mask", every_n_epochs: int = 1, absolute: bool = True,
                 scale: str = "tile", max_units: int = 64, tag: str | None = None):
        super().__init__(attribute, every_n_epochs, absolute, scale, max_units, tag)


class TuningLogger(_EveryNEpochs):
    """Measures the orientation tuning of a layer's units (``layer=None``: the model's output, e.g. every neuron
    of a response model) with ``bioviz.tuning.orientation_tuning`` and logs histograms of preferred orientation and
    OSI, the mean OSI and circular variance, all tuning curves as one image (``tuning/responses``: a row per unit,
    sorted by preference), and, when the units form a sheet (a 2-D unit shape, or ``sheet_shape``), the orientation
    map (hue = preference, brightness = selectivity). ``curves=True`` adds a matplotlib figure of the first
    ``max_units`` tuning curves (``tuning/curves``); drawing it takes about a second, so it is off by default.

    ``shape``: the input's (H, W); default that of the first training batch. ``unit="center"`` measures one tuning
    per channel of a conv layer (its central position).
    """

    def __init__(self, layer: str | None = None, every_n_epochs: int = 5, shape: Sequence[int] | None = None,
                 orientations: int = 16, phases: int = 8, frequency: float | Sequence[float] = (0.05, 0.1, 0.2),
                 unit: str = "all", sheet_shape: Sequence[int] | None = None, max_units: int = 16,
                 curves: bool = False, tag: str = "tuning"):
        super().__init__(every_n_epochs, tag)
        self.layer, self.shape, self.unit, self.sheet_shape = layer, shape, unit, sheet_shape
        self.orientations, self.phases, self.frequency = orientations, phases, frequency
        self.max_units, self.curves = max_units, curves
        self._channels: int | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.layer is not None:
            get_module(pl_module, self.layer)
        if self.unit not in ("all", "center"):
            raise ValueError(f"TuningLogger: unit must be 'all' or 'center', got {self.unit!r}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.shape is None or self._channels is None:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            if isinstance(images, torch.Tensor) and images.ndim == 4:
                self.shape = self.shape or tuple(images.shape[-2:])
                self._channels = images.shape[1]

    def log_pictures(self, writer, pl_module, step):
        if self.shape is None:
            raise ValueError("TuningLogger could not see the input size in the training batches; pass shape=(H, W)")
        tuning = orientation_tuning(pl_module, self.shape, layer=self.layer, orientations=self.orientations,
                                    phases=self.phases, frequency=self.frequency, unit=self.unit,
                                    channels=self._channels)
        for name in ("preferred", "osi"):
            values = getattr(tuning, name).flatten()
            values = values[values.isfinite()]  # a diverged model must not stop training from here
            if values.numel():
                writer.add_histogram(f"{self.tag}/{name}", values, step)
        writer.add_scalar(f"{self.tag}/osi_mean", float(tuning.osi.mean()), step)
        writer.add_scalar(f"{self.tag}/circular_variance_mean", float(tuning.circular_variance.mean()), step)
        writer.add_image(f"{self.tag}/responses", tuning_image(tuning), step, dataformats="HWC")
        if self.curves:
            writer.add_figure(f"{self.tag}/curves", tuning_curves(tuning, max_units=self.max_units), step)
        units = tuning.unit_shape
        if self.sheet_shape is not None or (len(units) >= 2 and all(s == 1 for s in units[:-2])):
            sheet = orientation_map(tuning, sheet_shape=self.sheet_shape)
            writer.add_image(f"{self.tag}/orientation_map", orientation_map_rgb(sheet.preference, sheet.selectivity),
                             step, dataformats="HWC")


class ReceptiveFieldLogger(_EveryNEpochs):
    """Logs the gradient receptive fields (``bioviz.rf.gradient_rf``) of every channel of some conv layers, one
    image per layer (``rf/<name>``: one tile per channel, each on its own symmetric scale, cropped to the units'
    RF extent), and with ``indices=True`` the median bar-bank orientedness index and isotropy of each layer's RFs
    as scalars (``rf/<name>/orientedness_median``, ``rf/<name>/isotropy_median``).

    ``layers``: ``{name: dotted path}`` or a list of paths; default the model's ``rf_layers`` attribute
    (``RetinaVVS``: the bottleneck and the first VVS layer). ``starts``: 0 for the gradient at the zero image (the
    paper's RFs), k for the mean over k random images. ``shape``: the input [C, H, W]; default that of the first
    training batch. At most ``max_channels`` channels per layer.
    """

    def __init__(self, layers: dict[str, str] | list[str] | None = None, every_n_epochs: int = 1, starts: int = 0,
                 noise: float = 0.1, shape: Sequence[int] | None = None, max_channels: int = 32,
                 indices: bool = True, tag: str = "rf"):
        super().__init__(every_n_epochs, tag)
        self.layers = dict(zip(layers, layers, strict=True)) if isinstance(layers, (list, tuple)) else layers
        self.starts, self.noise, self.shape, self.max_channels, self.indices = starts, noise, shape, max_channels, \
            indices
        self._banks: dict[int, torch.Tensor] = {}  # bar banks by RF size, made once per fit

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.layers is None:
            self.layers = getattr(pl_module, "rf_layers", None)
            if not self.layers:
                raise ValueError(f"ReceptiveFieldLogger: {type(pl_module).__name__} has no rf_layers; name the "
                                 f"layers with layers={{name: dotted path}}")
        for path in self.layers.values():
            get_module(pl_module, path)
        if self.starts < 0:
            raise ValueError(f"ReceptiveFieldLogger: starts must be >= 0, got {self.starts}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.shape is None:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            if isinstance(images, torch.Tensor) and images.ndim == 4:
                self.shape = tuple(images.shape[1:])

    def log_pictures(self, writer, pl_module, step):
        if self.shape is None:
            raise ValueError("ReceptiveFieldLogger could not see the input size in the training batches; pass "
                             "shape=[C, H, W]")
        for name, path in self.layers.items():
            with torch.enable_grad():
                result = gradient_rf(pl_module, path, self.shape, starts=self.starts, noise=self.noise)
            rfs = result.rf[: self.max_channels].mean(1)  # colour inputs: the mean over R, G, B
            rfs = center_crop(rfs, support_size(rfs, result.position), result.position)
            writer.add_image(f"{self.tag}/{name}", tile_images(rfs, scale="tile"), step, dataformats="HWC")
            if self.indices and rfs.shape[-1] >= 4:
                size = rfs.shape[-1]
                if size not in self._banks:
                    self._banks[size] = bar_bank(size)
                index = orientedness(rfs, bank=self._banks[size]).index
                writer.add_scalar(f"{self.tag}/{name}/orientedness_median", float(index.median()), step)
                writer.add_scalar(f"{self.tag}/{name}/isotropy_median", float(isotropy(rfs).median()), step)
