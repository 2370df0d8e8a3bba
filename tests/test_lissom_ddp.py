"""LISSOM under DDP on 2 CPU processes: the processes train on different images, yet average their Hebbian terms
before every update, so their weights stay identical (bit for bit), and the map is measured on each."""

import pytest
import torch

from conftest import run_bioviz

pytestmark = pytest.mark.slow

ARGS = ["--model=Lissom", "--data=LissomDataModule", "--model.init_args.cortex_size=10",
        "--data.init_args.image_size=16", "--data.init_args.steps_per_epoch=6", "--data.init_args.map_orientations=4",
        "--data.init_args.map_phases=2", "--data.init_args.eval_batch_size=4", "--trainer.max_epochs=2",
        "--model.init_args.schedule_scale=0.002", "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.strategy=ddp", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=lissom_ranks.SaveRankState"]


def test_ddp_keeps_identical_weights_on_both_processes(tmp_path):
    out = run_bioviz(["fit", *ARGS], cwd=tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert len(ranks[0]["image_sums"]) == len(ranks[1]["image_sums"]) == 12
    assert ranks[0]["image_sums"] != ranks[1]["image_sums"], "the processes should see different images"
    for name, value in ranks[0]["end"].items():
        assert torch.equal(value, ranks[1]["end"][name]), name
    weight = "network.v1.afferent.weight"
    assert not torch.equal(ranks[0]["start"][weight], ranks[0]["end"][weight]), "training should change the weights"
    assert (tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").exists(), out.stderr
