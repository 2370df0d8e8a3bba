import os
import subprocess
import sys

import pytest

from zoo.cli import BiovizCLI

from conftest import REPO, TINY_MODEL_ARGS, TINY_SIM_ARGS


@pytest.mark.slow
def test_gallery_renders_every_picture_from_a_checkpoint(tmp_path):
    cli = BiovizCLI(run=False, args=[
        "--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS, "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.logger.init_args.name=gallery",
    ])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    checkpoint = next((tmp_path / "gallery").glob("*/checkpoints/last.ckpt"))
    out = tmp_path / "pictures"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "gallery.py"), str(checkpoint), "--out", str(out),
                           "--neurons", "4"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {"filters", "activations", "readout_masks", "receptive_fields", "tuning_curves", "neuron_orientations",
                "in_silico_vs_truth", "orientation_map"}
    assert {p.stem for p in out.glob("*.png")} == expected
    assert "in-silico preferred orientation vs truth" in proc.stdout  # the run's config.yaml gave the ground truth


@pytest.mark.slow
def test_gallery_renders_a_zoo_model_offline(tmp_path):
    out = tmp_path / "pictures"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "gallery.py"), "cnnv1-quickstart", "--out", str(out),
                           "--neurons", "4"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "BIOVIZ_OFFLINE": "1", "BIOVIZ_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(out.glob("*.png"))) == 8
    assert "in-silico preferred orientation vs truth" in proc.stdout  # the entry's data gave the ground truth
