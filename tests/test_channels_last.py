"""``bioviz fit --channels_last true`` (``zoo.callbacks.ChannelsLast``): the model trains with its convolution kernels
in channels_last memory format, and its checkpoint is an ordinary one that loads into a model in the default layout."""

import sys

import lightning.pytorch as pl
import pytest
import torch

from zoo.callbacks import ChannelsLast
from zoo.cli import BiovizCLI
from zoo.models import CNNV1

from conftest import TINY_MODEL_ARGS, TINY_SIM_ARGS

ARGS = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS, "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]


class KernelLayouts(pl.Callback):
    """Records, at every training step, the layout of each convolution kernel that reads several channels (a kernel
    of one input channel is contiguous in both layouts)."""

    def __init__(self):
        self.layouts = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        kernels = [p for p in pl_module.parameters() if p.dim() == 4 and p.shape[1] > 1]
        assert kernels
        self.layouts.append({"channels_last" if p.is_contiguous(memory_format=torch.channels_last) else
                             "contiguous" if p.is_contiguous() else "other" for p in kernels})


def fit(tmp_path, monkeypatch, *extra):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bioviz"])
    cli = BiovizCLI(args=[*ARGS, *extra], run=False)
    probe = KernelLayouts()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, probe


@pytest.mark.parametrize("flag,layout", [(["--channels_last=true"], "channels_last"), ([], "contiguous")])
def test_the_kernels_train_in_the_layout_asked_for(tmp_path, monkeypatch, flag, layout):
    cli, probe = fit(tmp_path, monkeypatch, *flag)
    assert probe.layouts == [{layout}] * 2
    assert sum(isinstance(c, ChannelsLast) for c in cli.trainer.callbacks) == (1 if flag else 0)


def test_a_channels_last_checkpoint_loads_into_a_default_layout_model(tmp_path, monkeypatch):
    cli, _ = fit(tmp_path, monkeypatch, "--channels_last=true")
    [last] = tmp_path.glob("runs/*/version_0/checkpoints/last.ckpt")
    plain = CNNV1.load_from_checkpoint(last, map_location="cpu", strict=True)
    assert all(p.is_contiguous() for p in plain.parameters())
    images = torch.rand(3, 1, 16, 16)
    cli.model.eval()
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(images), cli.model(images), rtol=1e-5, atol=1e-6)


def test_a_resumed_run_trains_in_channels_last_again(tmp_path, monkeypatch):
    fit(tmp_path, monkeypatch, "--channels_last=true")
    cli = BiovizCLI(args=[*ARGS, "--channels_last=true", "--trainer.max_steps=4"], run=False)
    probe = KernelLayouts()
    cli.trainer.callbacks.append(probe)
    [last] = tmp_path.glob("runs/*/version_0/checkpoints/last.ckpt")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=last)
    assert cli.trainer.global_step == 4 and probe.layouts == [{"channels_last"}] * 2
