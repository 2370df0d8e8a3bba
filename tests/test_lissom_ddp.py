"""LISSOM and GCAL under DDP on 2 CPU processes: the processes train on different images, yet average their Hebbian
terms (and GCAL its units' activities) before every update, so their weights and thresholds stay identical (bit for
bit), and the map is measured on each."""

import pytest
import torch

from conftest import run_bioviz

pytestmark = pytest.mark.slow

COMMON = ["--data.init_args.steps_per_epoch=6", "--data.init_args.map_orientations=4",
          "--data.init_args.map_phases=2", "--data.init_args.eval_batch_size=4", "--trainer.max_epochs=2",
          "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
          "--trainer.enable_progress_bar=false", "--trainer.callbacks+=lissom_ranks.SaveRankState"]
MODELS = {
    "lissom": ["--model=Lissom", "--model.init_args.cortex_size=10", "--data.init_args.image_size=16",
               "--model.init_args.schedule_scale=0.002"],
    # GCAL also averages each unit's activity over the processes for its homeostatic thresholds.
    "gcal": ["--model=Gcal", "--model.init_args.area=1.0", "--model.init_args.cortex_density=10",
             "--model.init_args.lgn_density=8", "--data.init_args.image_size=24", "--data.init_args.margin=0"],
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_ddp_keeps_identical_weights_on_both_processes(tmp_path, model):
    out = run_bioviz(["fit", "--data=LissomDataModule", *MODELS[model], *COMMON], cwd=tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert len(ranks[0]["image_sums"]) == len(ranks[1]["image_sums"]) == 12
    assert ranks[0]["image_sums"] != ranks[1]["image_sums"], "the processes should see different images"
    for name, value in ranks[0]["end"].items():
        assert torch.equal(value, ranks[1]["end"][name]), name
    weight = "network.v1.afferent.weight"
    assert not torch.equal(ranks[0]["start"][weight], ranks[0]["end"][weight]), "training should change the weights"
    assert (tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").exists(), out.stderr
