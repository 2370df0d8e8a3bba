"""DDP on 2 CPU processes: training runs, and metrics over the whole validation/test set equal one device's.

The tiny population has 33 validation and 21 test images, so the shards are uneven: a padded sampler would count
some images twice and change the numbers. Evaluation runs one image per batch, so each prediction is computed
alone on either setup (float32 convolutions may round differently inside batches of other sizes) and only the
sharding and the metric reduction can make a difference.
"""

import re

import pytest
import torch
from torch import nn

from zoo.data import SyntheticV1DataModule
from zoo.models import CNNV1

from conftest import TINY_MODEL_ARGS, TINY_SIM, TINY_SIM_ARGS, run_bioviz

pytestmark = pytest.mark.slow

BASE = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS,
        "--data.init_args.eval_batch_size=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]
DDP = ["--trainer.devices=2", "--trainer.strategy=ddp"]


def printed_metrics(output: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(r"^\s*((?:val|test)/\w+)\s+([-0-9.e]+)\s*$",
                                                                 output, flags=re.MULTILINE)}


def test_ddp_fit_and_evaluation_match_one_device(tmp_path):
    run_bioviz(["fit", *BASE, *DDP, "--trainer.max_epochs=2"], cwd=tmp_path)
    ckpt = next(tmp_path.glob("runs/lightning_logs/version_0/checkpoints/last.ckpt"))
    for stage in ("validate", "test"):
        one = printed_metrics(run_bioviz([stage, *BASE, "--trainer.devices=1", f"--ckpt_path={ckpt}"],
                                         cwd=tmp_path).stdout)
        two = printed_metrics(run_bioviz([stage, *BASE, *DDP, f"--ckpt_path={ckpt}"], cwd=tmp_path).stdout)
        prefix = "val" if stage == "validate" else "test"
        assert f"{prefix}/corr" in one, one
        assert one.keys() == two.keys()
        for name in one:
            assert two[name] == pytest.approx(one[name], rel=1e-5, abs=1e-6), name


def test_precise_batch_norm_averages_the_statistics_of_both_ranks(tmp_path):
    """Each rank recomputes the batch-norm statistics on its half of the training set; the checkpoint holds their
    average, which for the first batch-norm layer (its input does not depend on batch composition) is the mean over
    the whole training set: 96 images = 2 ranks x 3 batches of 16."""
    run_bioviz(["fit", *BASE, *DDP, "--trainer.max_epochs=1", "--data.init_args.batch_size=16",
                "--trainer.callbacks+=zoo.callbacks.PreciseBatchNorm"], cwd=tmp_path)
    ckpt = next(tmp_path.glob("runs/lightning_logs/version_0/checkpoints/last.ckpt"))
    model = CNNV1.load_from_checkpoint(ckpt, map_location="cpu")
    norm = next(m for m in model.core.modules() if isinstance(m, nn.BatchNorm2d))
    saved = norm.running_mean.clone()
    data = SyntheticV1DataModule(**TINY_SIM)
    data.setup("fit")
    images = torch.cat([batch[0] for batch in data.train_dataloader()])
    assert len(images) == 96
    seen = []
    handle = norm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].mean((0, 2, 3))))
    with torch.no_grad():
        model.train()(images)
    handle.remove()
    assert torch.allclose(saved, seen[0], rtol=1e-4, atol=1e-5)
