"""A run killed with SIGKILL, mid-epoch or while it writes a checkpoint, resumes with `--ckpt_path last` to exactly
the weights of an uninterrupted run, also for a model with dropout (RegularConvNet: dropout 0.5 and 2-D dropout)."""

import pytest
import torch

from conftest import TINY_MODEL_ARGS, TINY_SIM_ARGS, run_bioviz, write_image_folder

KILL_AT_STEP = '--trainer.callbacks+={"class_path": "killer.KillAtStep", "init_args": {"step": 7}}'
KILL_DURING_SAVE = '--trainer.callbacks+={"class_path": "killer.KillDuringSave", "init_args": {"step": 10}}'
RUN = "runs/lightning_logs/version_0/checkpoints"


def dropout_args(root):
    # 3 classes x 16 images, 8 held out: 5 steps per epoch of 8 images; checkpoints at steps 5, 10 and 15.
    return ["--model=RegularConvNet", "--data=ImageFolderDataModule", f"--data.root={root}", "--data.val_size=8",
            "--data.batch_size=8", "--data.eval_batch_size=8", "--trainer.max_epochs=3",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture
def dropout_run(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=(16, 4), size=(32, 32))
    args = dropout_args(root)
    whole = tmp_path / "whole"
    whole.mkdir()
    run_bioviz(["fit", *args], cwd=whole)
    return args, torch.load(whole / RUN / "last.ckpt", weights_only=True)


def assert_same_training(resumed, whole):
    assert resumed["global_step"] == whole["global_step"] == 15
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("kill", [KILL_AT_STEP, KILL_DURING_SAVE], ids=["mid-epoch", "during-a-save"])
def test_a_dropout_model_killed_resumes_exactly(dropout_run, tmp_path, kill):
    args, whole = dropout_run
    broken = tmp_path / "broken"
    broken.mkdir()
    died = run_bioviz(["fit", *args, kill], cwd=broken, check=False)
    assert died.returncode == -9, died.stderr[-2000:]
    folder = broken / RUN
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 5  # the last one saved, whole
    # a kill during a save leaves that save's temporary file; last.ckpt above is the previous checkpoint
    assert bool(list(folder.glob(".*.part"))) == (kill == KILL_DURING_SAVE)
    run_bioviz(["fit", *args, "--ckpt_path=last"], cwd=broken)
    assert_same_training(torch.load(folder / "last.ckpt", weights_only=True), whole)
    assert list(folder.glob(".*.part")) == []  # removed by the next save of that checkpoint


def test_a_run_killed_before_its_first_checkpoint_starts_again_in_its_folder(tmp_path):
    args = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS,
            "--data.init_args.batch_size=16", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
    kill = '--trainer.callbacks+={"class_path": "killer.KillAtStep", "init_args": {"step": 2}}'
    died = run_bioviz(["fit", *args, kill], cwd=tmp_path, check=False)
    assert died.returncode == -9 and (tmp_path / "runs/lightning_logs/version_0").is_dir()
    assert not (tmp_path / "runs/lightning_logs/version_0/checkpoints").exists()
    again = run_bioviz(["fit", *args, "--ckpt_path=last"], cwd=tmp_path)
    assert "starting again in that run's folder" in again.stderr
    assert (tmp_path / "runs/lightning_logs/version_0/checkpoints/last.ckpt").is_file()
    assert not (tmp_path / "runs/lightning_logs/version_1").exists()
