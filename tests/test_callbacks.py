from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bioviz.callbacks import FilterLogger, ReadoutMaskLogger, TuningLogger


class TinyResponseModel(pl.LightningModule):
    """A conv core and a readout with a spatial ``mask`` [n, H, W], like a response model, without zoo."""

    def __init__(self, n=3, size=12):
        super().__init__()
        self.core = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU())
        self.readout = nn.Module()
        self.readout.mask = nn.Parameter(torch.rand(n, size, size))
        self.readout.features = nn.Parameter(torch.rand(n, 4))

    def forward(self, x):
        pooled = torch.einsum("bchw,nhw->bnc", self.core(x), self.readout.mask.abs()) / x[0, 0].numel()
        return (pooled * self.readout.features).sum(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self(x) - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class Sheet(pl.LightningModule):
    """A 4 x 4 sheet of units (output [B, 1, 4, 4]) for the orientation-map image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=3)

    def forward(self, x):
        return self.conv(x)

    def training_step(self, batch, batch_idx):
        return self(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def fit(model, callbacks, tmp_path, epochs=2, size=12):
    data = TensorDataset(torch.randn(16, 1, size, size), torch.randn(16, 3))
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    trainer = pl.Trainer(max_epochs=epochs, logger=logger, callbacks=callbacks, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, DataLoader(data, batch_size=8))
    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    return events


def test_callback_images_are_in_the_tensorboard_event_files(tmp_path):
    events = fit(TinyResponseModel(), [FilterLogger(), ReadoutMaskLogger(),
                                      TuningLogger(every_n_epochs=2, orientations=8, phases=4, frequency=0.15,
                                                   curves=True)],
                 tmp_path)
    tags = events.Tags()
    assert {"filters", "readout/mask", "tuning/curves", "tuning/responses"} <= set(tags["images"])
    assert [e.step for e in events.Images("filters")] == [2, 4]  # every epoch (2 steps each)
    assert [e.step for e in events.Images("tuning/curves")] == [4]  # every second epoch
    filters = events.Images("filters")[-1]
    assert (filters.height, filters.width) == (2 * 6 - 1, 2 * 6 - 1)  # 4 filters of 5 x 5 in a 2 x 2 grid
    masks = events.Images("readout/mask")[-1]
    assert (masks.height, masks.width) == (2 * 13 - 1, 2 * 13 - 1)  # 3 masks of 12 x 12, 2 per row
    assert {"tuning/preferred", "tuning/osi"} <= set(tags["histograms"])
    assert "tuning/osi_mean" in tags["scalars"]


def test_tuning_logger_logs_the_orientation_map_of_a_sheet(tmp_path):
    events = fit(Sheet(), [TuningLogger(every_n_epochs=1, orientations=8, phases=4, frequency=0.15, curves=False)],
                 tmp_path, epochs=1)
    image = events.Images("tuning/orientation_map")[0]
    assert (image.height, image.width) == (4, 4)


def test_filters_of_an_rgb_model_are_logged_in_colour(tmp_path):
    model = TinyResponseModel()
    model.core[0] = nn.Conv2d(3, 4, 5, padding=2)
    calls = []
    writer = SimpleNamespace(add_image=lambda tag, image, step, dataformats: calls.append(image))
    callback = FilterLogger()
    callback.setup(None, model, "fit")
    callback.log_pictures(writer, model, 0)
    assert calls[0].shape == (2 * 6 - 1, 2 * 6 - 1, 3)
    assert not np.allclose(calls[0][..., 0], calls[0][..., 1])  # colour, not a colour map of one channel
    model.core[0] = nn.Conv2d(2, 4, 5, padding=2)
    with pytest.raises(ValueError, match="channel=c"):
        callback.setup(None, model, "fit")


def test_unknown_layer_fails_when_fitting_starts(tmp_path):
    with pytest.raises(KeyError, match="Did you mean 'readout.mask'"):
        fit(TinyResponseModel(), [ReadoutMaskLogger(attribute="readout.masks")], tmp_path)
    with pytest.raises(ValueError, match="name a Conv2d layer"):
        fit(TinyResponseModel(), [FilterLogger(layer="readout.features")], tmp_path)


def test_only_rank_zero_logs():
    calls = []
    writer = SimpleNamespace(add_image=lambda *a, **k: calls.append(a))
    callback = FilterLogger(layer="core.0")
    model = TinyResponseModel()
    for rank_zero in (False, True):
        trainer = SimpleNamespace(is_global_zero=rank_zero, current_epoch=0, global_step=5,
                                  loggers=[SimpleNamespace(experiment=writer)])
        callback.on_train_epoch_end(trainer, model)
        assert len(calls) == int(rank_zero)


def test_callbacks_from_the_command_line_on_a_zoo_model(tmp_path):
    """`bioviz fit ... --trainer.callbacks+=bioviz.callbacks.X` on CNNV1: the generic paths find its layers."""
    from zoo.cli import BiovizCLI

    from conftest import TINY_MODEL_ARGS, TINY_SIM_ARGS

    cli = BiovizCLI(run=False, args=[
        "--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS,
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=cli",
        "--trainer.callbacks+=bioviz.callbacks.FilterLogger",
        "--trainer.callbacks+=bioviz.callbacks.ReadoutMaskLogger",
        "--trainer.callbacks+=bioviz.callbacks.TuningLogger", "--trainer.callbacks.every_n_epochs=1",
        "--trainer.callbacks.orientations=8", "--trainer.callbacks.phases=4",
    ])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert {"filters", "readout/mask", "tuning/responses"} <= set(events.Tags()["images"])
    assert events.Images("filters")[0].width == 2 * 6 - 1  # 4 first-layer filters of 5 x 5
