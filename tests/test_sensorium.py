"""Sensorium 2022 scans: the published layout read and normalised as the benchmark does, the test tier grouped by
image, a simulated scan written in the layout, and each kind of bad file refused with one message naming it."""

import sys
import zipfile

import numpy as np
import pytest
import torch

from zoo.data import SensoriumDataModule, read_sensorium_scan, write_simulated_sensorium
from zoo.data.sensorium import _normalised
from zoo.errors import DataFileError, DataNotFoundError

SMALL = dict(n_neurons=5, image_shape=[16, 16], n_train=30, n_val=6, n_test=4, n_repeats=3)


@pytest.fixture
def scan(tmp_path):
    return write_simulated_sensorium(tmp_path / "static1-1-1-GrayImageNet-0.zip", seed=1, **SMALL)


def extracted(scan_zip, folder):
    with zipfile.ZipFile(scan_zip) as archive:
        archive.extractall(folder)
    return folder / scan_zip.name.removesuffix(".zip")


def test_a_simulated_scan_has_the_published_layout(scan):
    with zipfile.ZipFile(scan) as archive:
        names = set(archive.namelist())
    top = scan.name.removesuffix(".zip")
    n_trials = 30 + 6 + 4 * 3
    for key in ("images", "responses", "behavior", "pupil_center"):
        assert {f"{top}/data/{key}/{i}.npy" for i in range(n_trials)} <= names
        assert {f"{top}/meta/statistics/{key}/all/{s}.npy" for s in ("mean", "std", "min", "max", "median")} <= names
    assert {f"{top}/meta/trials/tiers.npy", f"{top}/meta/trials/frame_image_id.npy",
            f"{top}/meta/neurons/unit_ids.npy"} <= names
    raw = read_sensorium_scan(scan, behavior=True, pupil_center=True)
    assert raw["images"].shape == (n_trials, 1, 16, 16) and raw["responses"].shape == (n_trials, 5)
    assert raw["behavior"].shape == (n_trials, 3) and raw["pupil_center"].shape == (n_trials, 2)
    assert sorted(np.unique(raw["tiers"], return_counts=True)[1]) == [6, 12, 30]
    test_ids = raw["image_ids"][raw["tiers"] == "test"]
    assert sorted(np.unique(test_ids, return_counts=True)[1]) == [3, 3, 3, 3]  # each test image shown 3 times
    assert not np.array_equal(raw["tiers"], np.sort(raw["tiers"]))  # trials in random order, as in the real scans


def test_normalisation_is_the_benchmarks(scan):
    dm = SensoriumDataModule(str(scan), scale=1.0)
    train = dm.tensors["responses_train"].double()
    torch.testing.assert_close(train.std(0, unbiased=False), torch.ones(5, dtype=torch.float64), rtol=1e-4, atol=0)
    images = dm.tensors["images_train"].double()
    assert abs(float(images.mean())) < 1e-4 and float(images.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    raw = {"images": np.ones((2, 1, 4, 4)), "images_mean": np.array(0.5), "images_std": np.array(2.0),
           "responses": np.ones((2, 3)), "responses_std": np.array([1.0, 2.0, 1e-6]),
           "behavior": np.full((2, 3), 4.0), "behavior_mean": np.full(3, 9.0), "behavior_std": np.full(3, 2.0),
           "pupil_center": np.full((2, 2), 4.0), "pupil_center_mean": np.full(2, 1.0),
           "pupil_center_std": np.full(2, 3.0)}
    out = _normalised(raw, scale=1.0)
    assert torch.allclose(out["images"][:, 0], torch.tensor(0.25))
    # A neuron whose std is below 1 % of the mean std is divided by that 1 % instead of its own.
    threshold = 0.01 * np.mean([1.0, 2.0, 1e-6])
    torch.testing.assert_close(out["responses"][0], torch.tensor([1.0, 0.5, 1 / threshold], dtype=torch.float32))
    assert torch.allclose(out["images"][:, 1:4], torch.tensor(2.0))  # behaviour / std, its mean not subtracted
    assert torch.allclose(out["images"][:, 4:6], torch.tensor(1.0))  # eye position z-scored
    assert _normalised(raw, scale=0.5)["images"].shape == (2, 6, 2, 2)


def test_the_test_tier_is_grouped_by_image_with_missing_repeats_as_nan(scan, tmp_path):
    folder = extracted(scan, tmp_path / "x")
    ids = np.load(folder / "meta/trials/frame_image_id.npy")
    tiers = np.load(folder / "meta/trials/tiers.npy")
    test_trials = np.flatnonzero(tiers == "test")
    first_image = ids[test_trials[0]]
    moved = test_trials[ids[test_trials] == first_image][0]
    ids[moved] = 999  # one repeat of the first test image becomes an image of its own
    np.save(folder / "meta/trials/frame_image_id.npy", ids)
    dm = SensoriumDataModule(str(folder), scale=1.0, behavior=True)
    assert (dm.n_neurons, dm.in_shape, dm._tensors) == (5, [4, 16, 16], None)  # from the metadata: nothing read yet
    assert SensoriumDataModule(str(folder), scale=0.5).in_shape == [1, 8, 8]
    responses = dm.tensors["responses_test"]
    assert responses.shape == (5, 3, 5) and dm.in_shape == [4, 16, 16]
    repeats = (~responses[:, :, 0].isnan()).sum(1).sort().values.tolist()
    assert repeats == [1, 2, 3, 3, 3] and list(dm.tensors["images_train"].shape[1:]) == dm.in_shape
    assert dm.tensors["rates_test"].shape == (5, 5) and dm.tensors["rates_test"].isfinite().all()
    from_zip = SensoriumDataModule(str(scan), scale=1.0, behavior=True)
    torch.testing.assert_close(from_zip.tensors["images_train"], dm.tensors["images_train"])  # zip = folder


def test_withheld_test_responses_are_refused(scan, tmp_path):
    folder = extracted(scan, tmp_path / "x")
    tiers = np.load(folder / "meta/trials/tiers.npy")
    for i in np.flatnonzero(tiers == "test"):
        np.save(folder / f"data/responses/{i}.npy", np.zeros(5, dtype=np.float32))
    dm = SensoriumDataModule(str(folder), scale=1.0)
    assert len(dm.dataset("train")) == 30
    with pytest.raises(DataFileError, match="test tier are all zero: withheld"):
        dm.dataset("test")


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "meta/trials/tiers.npy").unlink(), "has no meta/trials/tiers.npy"),
    (lambda f: (f / "data/responses/7.npy").unlink(), "data/responses has 47 trial files but meta/trials/tiers.npy "
                                                      "has 48 trials"),
    (lambda f: np.save(f / "meta/neurons/unit_ids.npy", np.arange(6)), "unit_ids.npy has 6 neurons but "
                                                                      "data/responses has 5"),
    (lambda f: np.save(f / "data/responses/3.npy", np.zeros(4, np.float32)), "data/responses holds arrays of "
                                                                            "several shapes"),
    (lambda f: np.save(f / "meta/trials/tiers.npy", np.array(["train"] * 47 + ["holdout"])), "unknown tiers"),
])
def test_a_damaged_scan_is_refused_naming_the_file(scan, tmp_path, damage, message):
    folder = extracted(scan, tmp_path / "x")
    damage(folder)
    with pytest.raises(DataFileError, match=message):
        read_sensorium_scan(folder)


def test_a_corrupt_or_missing_zip_is_one_line_through_the_cli(scan, tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    from conftest import REPO

    (tmp_path / "configs").symlink_to(REPO / "configs")
    with pytest.raises(DataNotFoundError, match="no Sensorium scan at"):
        read_sensorium_scan(tmp_path / "missing.zip")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(scan.read_bytes()[: scan.stat().st_size // 2])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bioviz"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", "configs/rotequi_v1/base.yaml", "-c", "configs/rotequi_v1/sensorium.yaml", "-c",
              "configs/rotequi_v1/table1_cnn_32.yaml", f"--data.init_args.path={broken}", "--trainer.max_steps=1"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert "broken.zip is not a readable zip archive" in error and "download it again" in error


def test_simulate_sensorium_writes_a_scan_named_like_a_real_one(tmp_path):
    from conftest import run_bioviz

    run_bioviz(["simulate-sensorium", str(tmp_path), "--n_neurons=4", "--image_shape=[16, 16]", "--n_train=10",
                "--n_val=4", "--n_test=2", "--n_repeats=2"], cwd=tmp_path)
    [written] = tmp_path.glob("static*-GrayImageNet-*.zip")
    assert SensoriumDataModule(str(written), scale=1.0).n_neurons == 4


def test_a_model_tests_on_a_scan_with_the_benchmarks_metrics(scan, tmp_path):
    import lightning.pytorch as pl

    from zoo.models import CNNV1

    dm = SensoriumDataModule(str(scan), scale=1.0, batch_size=10)
    model = CNNV1(n_neurons=dm.n_neurons, in_shape=dm.in_shape, filter_size=[5, 3, 3], num_filters=[4, 4, 4])
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    results = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/corr", "test/corr_single_trial", "test/oracle", "test/oracle_true"} <= set(results)
    assert "correlation" in model.test_summary
