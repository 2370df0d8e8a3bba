"""The Cadena et al. (2019) macaque V1 data: its published pickle read safely, cropped, split and scored as the paper's
code does, a simulated file in that layout, and bad files refused with one message."""

import pickle

import numpy as np
import pytest
import torch

from zoo.data import Cadena2019DataModule, read_cadena_file, simulate_v1, write_simulated_cadena
from zoo.errors import DataFileError, DataNotFoundError


@pytest.fixture
def cadena(tmp_path):
    return write_simulated_cadena(tmp_path / "cadena.pkl", seed=2, n_neurons=8, n_photographs=20)


def test_a_simulated_file_has_the_published_layout(cadena):
    with open(cadena, "rb") as handle:
        data = pickle.load(handle)  # our own file: safe to unpickle here
    assert data["images"].shape == (100, 140, 140) and 0 <= data["images"].min() and data["images"].max() <= 255
    assert data["responses"].shape == (4, 100, 8) and set(np.unique(data["repetitions"])) <= {2, 4}
    assert data["image_types"].shape == (100, 1) and [t[0] for t in data["image_types"][:6, 0]] == [
        "original", "conv1", "conv2", "conv3", "conv4", "original"]
    assert (data["image_numbers"][:, 0] == np.repeat(np.arange(1, 21), 5)).all()
    two = data["repetitions"] == 2
    assert np.isnan(data["responses"][2:, :, two]).all() and not np.isnan(data["responses"][:2, 20:, two]).any()
    raw = read_cadena_file(cadena)
    assert raw["image_types"][0] == "original" and raw["image_ids"].shape == (100,)


def test_crop_split_and_normalisation_are_the_papers(cadena):
    dm = Cadena2019DataModule(str(cadena))
    t = dm.tensors
    assert dm.in_shape == [1, 40, 40] and dm.n_neurons == 8
    # The last 20 % of the images in file order are the test set; the rest is split 80 / 20 by RandomState(1000).
    order = np.random.RandomState(1000).permutation(80)
    raw = read_cadena_file(cadena)
    crops = raw["images"][:, 30:-30:2, 30:-30:2]
    z = (crops - crops.mean()) / crops.std()
    torch.testing.assert_close(t["images_test"][:, 0], torch.from_numpy(z[80:]).float())
    assert t["images_train"].shape == (64 * 4, 1, 40, 40) and t["images_val"].shape == (16 * 4, 1, 40, 40)
    first_train = int(np.sort(order[:64])[0])
    torch.testing.assert_close(t["images_train"][:4, 0], torch.from_numpy(z[[first_train] * 4]).float())
    torch.testing.assert_close(t["responses_train"][:4], torch.from_numpy(raw["responses"][:, first_train]).float(),
                               equal_nan=True)
    assert t["responses_test"].shape == (20, 4, 8)
    # Cropping and subsampling give back the simulated 40 x 40 images (up to the 0-255 scaling).
    truth = simulate_v1(seed=2, n_neurons=8, image_shape=(40, 40), n_train=100, n_val=1, n_test=100,
                        n_repeats=4)["images_test"]
    assert np.corrcoef(truth.ravel(), crops.ravel())[0, 1] > 0.999


def test_the_pickle_is_read_without_running_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"images": Payload()}))
    with pytest.raises(DataFileError, match="is not the Cadena et al. \\(2019\\) pickle of numpy arrays"):
        read_cadena_file(evil)
    assert not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda d: d.pop("repetitions"), "has no repetitions"),
    (lambda d: d.update(responses=d["responses"][:, :50]), r"responses has shape \[4, 50, 8\]; expected"),
    (lambda d: d["responses"][:, :, 3].fill(np.nan), r"neurons \[3\] have no recorded response at all"),
    (lambda d: d.update(repetitions=np.array([4, 4])), "repetitions has 2 entries for 8 neurons"),
])
def test_a_damaged_file_is_refused_naming_the_problem(cadena, tmp_path, damage, message):
    with open(cadena, "rb") as handle:
        data = pickle.load(handle)
    damage(data)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(data))
    with pytest.raises(DataFileError, match=message):
        read_cadena_file(bad)


def test_a_truncated_or_missing_file_is_refused(cadena, tmp_path):
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(cadena.read_bytes()[:1000])
    with pytest.raises(DataFileError, match="is not the Cadena et al"):
        read_cadena_file(truncated)
    with pytest.raises(DataNotFoundError, match="no Cadena et al. \\(2019\\) data file at"):
        read_cadena_file(tmp_path / "missing.pkl")


def test_a_model_tests_on_it_with_the_papers_measure(cadena, tmp_path):
    import lightning.pytorch as pl

    from zoo.models import CNNV1

    dm = Cadena2019DataModule(str(cadena), batch_size=32)
    model = CNNV1(n_neurons=8, in_shape=dm.in_shape, filter_size=[5, 3, 3], num_filters=[4, 4, 4])
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # NaN responses never reached a gradient
    results = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/corr", "test/feve_all", "test/corr_single_trial", "test/oracle_true"} <= set(results)
