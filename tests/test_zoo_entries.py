"""Every published zoo entry loads offline from its verified weights and reproduces the metrics recorded in the
registry, and its input spec describes the images it was tested on.

Entries whose data are embedded (simulated populations, LISSOM's stimuli) are re-measured here. Entries tested on
data files (CIFAR-10) are re-measured by ``bench/zoo_remeasure.py`` (README, "The zoo"), which needs the data.
"""

from pathlib import Path

import pytest
import torch

from zoo import registry, weights
from zoo.cli import config_file

ENTRIES = registry.list_models()
EMBEDDED = [name for name in ENTRIES if not registry.model_info(name).needs_data_root]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOVIZ_HOME", str(tmp_path))  # an empty cache: packaged weights only
    monkeypatch.setenv("BIOVIZ_OFFLINE", "1")


def test_the_zoo_holds_the_paper_models():
    models = {registry.model_info(name).model.rpartition(".")[2] for name in ENTRIES}
    assert len(ENTRIES) >= 7 and {"SpatialDenseNet", "RegularConvNet", "RotEquiV1", "CNNV1", "Lissom"} <= models


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_loads_offline_in_eval_mode(name, offline):
    entry = registry.model_info(name)
    if entry.location() != "packaged":
        pytest.skip(f"{name}: weights are not packaged ({entry.location()})")
    model = registry.load_model(name)
    assert not model.training and isinstance(model, entry.model_class)
    with torch.no_grad():
        model(torch.rand(2, *entry.input.shape))


@pytest.mark.parametrize("name", EMBEDDED)
def test_entry_reproduces_its_metrics(name, offline):
    entry = registry.model_info(name)
    measured = registry.evaluate(name, accelerator="cpu")
    for metric, value in entry.metrics.items():
        assert measured[metric] == pytest.approx(value, abs=5e-4), metric


@pytest.mark.parametrize("name", EMBEDDED)
def test_input_spec_describes_the_training_images(name):
    """What ``transforms()`` promises is what the model learned from: the shape, and the range or normalisation."""
    spec = registry.model_info(name).input
    data = registry.model_info(name).datamodule()
    data.prepare_data()
    data.setup("fit")
    images = next(iter(data.train_dataloader()))[0][:64].double()
    assert tuple(images.shape[1:]) == spec.shape
    if spec.normalize == "standardize":
        flat = images.flatten(1)
        torch.testing.assert_close(flat.mean(1), torch.zeros(len(flat), dtype=flat.dtype), atol=1e-4, rtol=0)
        torch.testing.assert_close(flat.std(1), torch.ones(len(flat), dtype=flat.dtype), atol=5e-3, rtol=0)
    else:
        if spec.normalize == "mean_std":
            images = images * torch.tensor(spec.std)[:, None, None] + torch.tensor(spec.mean)[:, None, None]
        low, high = spec.value_range
        assert low - 1e-6 <= float(images.min()) and float(images.max()) <= high + 1e-6


@pytest.mark.parametrize("name", ENTRIES)
def test_packaged_weights_are_small_and_named_after_their_hash(name):
    w = registry.model_info(name).weights
    path = weights.packaged_dir() / w.file
    if not path.is_file():
        assert w.urls, f"{name}: weights neither packaged nor at a URL"
        return
    assert w.size <= 20_000_000 and path.stat().st_size == w.size
    assert w.file.rsplit("-", 1)[1] == f"{w.sha256[:8]}.safetensors"


@pytest.mark.parametrize("name", ENTRIES)
def test_the_recipes_configs_are_installed(name):
    """`bioviz zoo reproduce` finds them in a checkout and in a wheel install (as ``zoo.configs``)."""
    for config in registry.model_info(name).recipe.configs:
        assert Path(config_file(config)).is_file(), config


def test_the_lissom_map_is_measured_again_in_one_call(offline):
    entry = registry.model_info("lissom-cortex48")
    result = registry.load_model(entry.name).measure_map(entry.datamodule())
    assert result.preference.shape == result.selectivity.shape == (48, 48)
    assert result.selectivity_mean == pytest.approx(entry.metrics["test/selectivity"], abs=5e-4)
    assert result.pinwheels.density == pytest.approx(entry.metrics["test/pinwheel_density"], abs=5e-4)
