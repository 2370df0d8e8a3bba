"""What every bioviz LightningModule shares: a monitored metric, input checks, and checkpoint compatibility."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch

from zoo.errors import ShapeMismatchError
from zoo.layers import check_in_shape


class Task(pl.LightningModule):
    """Base LightningModule of a paper model.

    ``in_shape`` ([C, H, W], from the data) is checked here (``zoo.layers.check_in_shape``, with the channels, square
    shape or minimum side a model needs) and kept as ``self.in_shape``, which ``check_images`` compares each batch
    with. ``lr`` is the learning rate of the default optimiser (Adam); a model with its own ``configure_optimizers``
    passes none. ``penalty()`` is the one place a model adds terms to its training loss. Subclasses call
    ``save_hyperparameters()`` with plain arguments, build their network and implement ``forward``.
    ``monitor``/``monitor_mode`` name the metric the CLI's checkpoint callback keeps the best of.
    ``data_hparams`` are the hyperparameters that come from the data (linked by the CLI); a checkpoint whose values
    differ from the data's cannot be loaded, and ``on_load_checkpoint`` says so instead of a state-dict size error.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"
    data_hparams: tuple[str, ...] = ("in_shape",)
    # Arguments that older versions of the model took and saved in their checkpoints; dropped when those load.
    retired_hparams: tuple[str, ...] = ()

    def __init__(self, in_shape: Sequence[int], lr: float | None = None, channels: int | None = None,
                 square: bool = False, min_size: int = 1):
        super().__init__()
        self.in_shape = check_in_shape(in_shape, channels, square, min_size, what=type(self).__name__)
        self.lr = lr

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a clear error if ``images`` do not have the shape [B, *in_shape] the model was built for."""
        if images.ndim != 4 or tuple(images.shape[1:]) != self.in_shape:
            raise ShapeMismatchError(
                f"{type(self).__name__} was built for images of shape [B, {', '.join(map(str, self.in_shape))}] "
                f"but got {list(images.shape)}. Use data with that image size (or channel count), or build the "
                f"model for this data (the CLI links --model.init_args.in_shape from the data)."
            )

    def penalty(self) -> torch.Tensor | None:
        """The model's terms added to the training loss (weight or activity penalties), or None if it has none.
        Logged as ``train/penalty`` beside ``train/data_loss``; ``train/loss`` is their sum."""
        return None

    def training_loss(self, data_loss: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``data_loss`` plus ``penalty()``, logged: what every task's ``training_step`` returns."""
        penalty = self.penalty()
        loss = data_loss if penalty is None else data_loss + penalty
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        if penalty is not None:
            self.log("train/data_loss", data_loss, batch_size=batch_size)
            self.log("train/penalty", penalty, batch_size=batch_size)
        return loss

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        problems = []
        for key in self.data_hparams:
            if key in saved and key in self.hparams and _plain(saved[key]) != _plain(self.hparams[key]):
                problems.append(f"{key}: checkpoint {_plain(saved[key])} vs data {_plain(self.hparams[key])}")
        if problems:
            raise ShapeMismatchError(
                f"the checkpoint was trained on data of another shape ({'; '.join(problems)}). "
                "Evaluate it on data like its training data, or train a new model on this data."
            )

    def configure_optimizers(self):
        if self.lr is None:
            raise NotImplementedError(f"{type(self).__name__} gives no lr for the default Adam optimiser and does not "
                                      "define configure_optimizers")
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def picture_callbacks(self) -> list[pl.Callback]:
        """The TensorBoard pictures ``bioviz fit`` logs while this model trains (``--pictures false`` turns them off;
        configuring any ``bioviz.callbacks`` replaces them): the first convolution's filters, a factorised readout's
        spatial masks, and the receptive fields of the layers named in ``rf_layers``. Each costs milliseconds once
        an epoch (BENCHMARKS.md, "Cost of the TensorBoard picture callbacks")."""
        from bioviz.callbacks import FilterLogger, ReadoutMaskLogger, ReceptiveFieldLogger
        from bioviz.hooks import first_conv

        callbacks = []
        try:
            name, conv = first_conv(self)
        except LookupError:  # no convolution (locally connected layers, LISSOM's sheets)
            name = None
        if name is not None:
            channels = conv.weight.shape[1]
            callbacks.append(FilterLogger(name, channel=None if channels in (1, 3) else 0))
        mask = getattr(getattr(self, "readout", None), "mask", None)
        if isinstance(mask, torch.Tensor) and mask.ndim == 3:
            callbacks.append(ReadoutMaskLogger())
        if getattr(self, "rf_layers", None):
            callbacks.append(ReceptiveFieldLogger())
        return callbacks


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value
