import numpy as np
import pytest
import torch

from zoo.data import (
    NeuralResponseDataModule,
    SyntheticV1DataModule,
    load_response_file,
    normalise_responses,
    simulate_v1,
    write_synthetic_v1,
)
from zoo.data.loading import EvalShardSampler, TensorBatchDataset, tensor_loader
from zoo.errors import DataFileError, DataNotFoundError

from conftest import TINY_SIM


def save(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def arrays():
    return simulate_v1(seed=3, **TINY_SIM)


def test_simulation_is_deterministic_in_seed_and_has_ground_truth(arrays):
    again = simulate_v1(seed=3, **TINY_SIM)
    other = simulate_v1(seed=4, **TINY_SIM)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], again[key])
    assert not np.array_equal(arrays["responses_train"], other["responses_train"])
    assert arrays["responses_test"].shape == (4, 21, 6)
    assert set(np.unique(arrays["true_orientation"])) <= {22.5 * k for k in range(8)}
    assert arrays["true_filters"].shape == (6, 16, 16)
    # Responses are Poisson counts drawn from the kept noise-free rates.
    assert np.all(arrays["responses_train"] == np.round(arrays["responses_train"]))
    np.testing.assert_allclose(arrays["responses_test"].mean((0, 1)), arrays["rates_test"].mean(0), rtol=0.5)


def test_write_and_load_round_trip_leaves_no_temporary_files(tmp_path):
    path = write_synthetic_v1(tmp_path / "sim.npz", seed=3, **TINY_SIM)
    loaded = load_response_file(path)
    for key, value in simulate_v1(seed=3, **TINY_SIM).items():
        np.testing.assert_array_equal(loaded[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["sim.npz"]


def test_normalisation_follows_the_paper(arrays):
    arrays["responses_train"][0, 0] = -3.0  # negative responses are clipped to 0
    t = normalise_responses(arrays)
    train = t["images_train"]
    assert train.shape == (96, 1, 16, 16)
    assert abs(train.mean().item()) < 1e-5 and abs(train.double().std(unbiased=False).item() - 1) < 1e-4
    clipped = np.clip(arrays["responses_train"], 0, None)
    np.testing.assert_allclose(t["responses_train"].numpy(), clipped / clipped.std(0), rtol=1e-5)
    sd = clipped.std(0)
    np.testing.assert_allclose(t["responses_test"].numpy(), arrays["responses_test"].transpose(1, 0, 2) / sd,
                               rtol=1e-5)
    np.testing.assert_allclose(t["rates_test"].numpy(), arrays["rates_test"] / sd, rtol=1e-5)


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="bioviz simulate-v1"):
        NeuralResponseDataModule(path=str(tmp_path / "nope.npz"))


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataFileError, match="not a readable .npz"):
        load_response_file(path)


def test_missing_key_is_named(tmp_path, arrays):
    del arrays["responses_val"]
    with pytest.raises(DataFileError, match=r"missing key\(s\) \['responses_val'\]"):
        load_response_file(save(tmp_path / "f.npz", arrays))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("responses_train", np.zeros((96, 6, 2), np.float32), r"has shape \[96, 6, 2\]; expected \[N, n\]"),
        ("responses_test", np.zeros((21, 6), np.float32), r"expected \[repeats, N_test, n\]"),
        ("responses_val", np.zeros((30, 6), np.float32), "responses_val has 30 images .* images_val has 33"),
        ("responses_val", np.zeros((33, 5), np.float32), "neuron counts differ"),
        ("images_val", np.zeros((33, 8, 8), np.float32), "image shapes differ between splits"),
        ("images_train", np.array([["a"]] * 96), "images_train has dtype <U1"),
        ("images_train", np.zeros((96, 16), np.float32), r"images_train has shape \[96, 16\]; expected \[N, H, W\] or"),
        ("images_train", np.zeros((0, 16, 16), np.float32), r"images_train is empty \(shape \[0, 16, 16\]\)"),
        ("responses_train", np.zeros((0, 6), np.float32), r"responses_train is empty"),
        ("images_test", np.zeros((0, 16, 16), np.float32), r"images_test is empty"),
        ("images_val", np.full((33, 16, 16), 1e300), r"images_val has values up to 1e\+300; rescale it"),
        ("responses_test", np.full((4, 21, 6), -1e300), r"responses_test has values up to 1e\+300"),
    ],
)
def test_wrong_shapes_and_dtypes_are_described(tmp_path, arrays, key, value, message):
    arrays[key] = value
    with pytest.raises(DataFileError, match=message):
        load_response_file(save(tmp_path / "f.npz", arrays))


def test_an_npy_file_is_named_as_such(tmp_path, arrays):
    path = tmp_path / "images.npy"
    np.save(path, arrays["images_train"])
    with pytest.raises(DataFileError, match=r"holds one array \(an .npy file\); the data file is an .npz"):
        load_response_file(path)


def test_nan_and_inf_are_counted_and_nothing_is_loaded(tmp_path, arrays):
    arrays["responses_train"][:3, 0] = np.nan
    arrays["responses_test"][0, 0, 0] = np.inf
    dm = NeuralResponseDataModule(path=str(save(tmp_path / "f.npz", arrays)))
    with pytest.raises(DataFileError) as err:
        _ = dm.n_neurons
    assert "responses_train has 3 NaN and 0 inf values" in str(err.value)
    assert "responses_test has 0 NaN and 1 inf values" in str(err.value)
    assert dm._tensors is None  # no partial state


def test_datamodule_properties_and_batches(tiny_npz):
    dm = NeuralResponseDataModule(path=str(tiny_npz), batch_size=32, eval_batch_size=10)
    assert dm.n_neurons == 6 and dm.in_shape == [1, 16, 16] and len(dm.mean_responses) == 6
    images, responses = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 16, 16) and responses.shape == (32, 6)
    images, responses, rates = next(iter(dm.test_dataloader()))
    assert images.shape == (10, 1, 16, 16) and responses.shape == (10, 4, 6) and rates.shape == (10, 6)
    assert sum(len(b[0]) for b in dm.val_dataloader()) == 33


def test_synthetic_datamodule_equals_its_file(tiny_npz):
    from_file = NeuralResponseDataModule(path=str(tiny_npz))
    in_memory = SyntheticV1DataModule(seed=1, **TINY_SIM)
    for key, value in from_file.tensors.items():
        torch.testing.assert_close(in_memory.tensors[key], value)
    assert set(in_memory.ground_truth) >= {"true_orientation", "true_complex", "true_filters"}


def test_eval_shards_cover_every_sample_once():
    dataset = TensorBatchDataset(torch.arange(11))
    for world in (1, 2, 3):
        seen = [i for rank in range(world) for i in EvalShardSampler(dataset, world, rank)]
        assert sorted(seen) == list(range(11))
        assert sum(len(EvalShardSampler(dataset, world, rank)) for rank in range(world)) == 11


def test_train_order_is_reproducible_per_epoch():
    dataset = TensorBatchDataset(torch.arange(50))

    def order(epoch):
        loader = tensor_loader(dataset, 8, train=True)
        loader.sampler.set_epoch(epoch)
        return torch.cat([b[0] for b in loader]).tolist()

    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(1)) == list(range(50))


def test_tensor_batch_dataset_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="share their first dimension"):
        TensorBatchDataset(torch.zeros(3), torch.zeros(4))


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = write_synthetic_v1(tmp_path / "sim.npz", seed=3, **TINY_SIM)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_v1(path, seed=4, **TINY_SIM)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sim.npz"]


def test_simulation_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_repeats >= 2"):
        simulate_v1(**{**TINY_SIM, "n_repeats": 1})
    with pytest.raises(ValueError, match="at least 8x8"):
        simulate_v1(**{**TINY_SIM, "image_shape": [4, 4]})
