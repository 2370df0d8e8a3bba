"""What every bioviz LightningModule shares: a monitored metric, input checks, and checkpoint compatibility."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch

from zoo.errors import ShapeMismatchError


class Task(pl.LightningModule):
    """Base LightningModule of a paper model.

    Subclasses call ``save_hyperparameters()`` with plain arguments (including ``in_shape`` = [C, H, W], which
    ``check_images`` uses, and ``lr`` for the default Adam optimiser), build their network, and implement ``forward``.
    ``monitor``/``monitor_mode`` name the metric the CLI's checkpoint callback keeps the best of.
    ``data_hparams`` are the hyperparameters that come from the data (linked by the CLI); a checkpoint whose values
    differ from the data's cannot be loaded, and ``on_load_checkpoint`` says so instead of a state-dict size error.
    """

    monitor: str = "val/loss"
    monitor_mode: str = "min"
    data_hparams: tuple[str, ...] = ("in_shape",)
    # Hyperparameters that only initialise parameters the trained weights overwrite; a published model omits them.
    init_only_hparams: tuple[str, ...] = ()

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a clear error if ``images`` do not have the shape [B, *in_shape] the model was built for."""
        expected = tuple(self.hparams.in_shape)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ShapeMismatchError(
                f"{type(self).__name__} was built for images of shape [B, {', '.join(map(str, expected))}] "
                f"but got {list(images.shape)}. Use data with that image size (or channel count), or build the "
                f"model for this data (the CLI links --model.init_args.in_shape from the data)."
            )

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
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

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
