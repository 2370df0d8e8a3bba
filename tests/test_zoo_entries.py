"""Every published zoo entry loads from its verified weights and reproduces the metrics recorded in the registry."""

import importlib

import lightning.pytorch as pl
import pytest

from zoo import registry

ENTRIES = registry.list_models()


def data_of(entry: dict):
    """Instantiate the DataModule an entry was evaluated on (recorded as class_path + init_args)."""
    module, _, name = entry["data"]["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**entry["data"].get("init_args", {}))


def test_there_are_published_models():
    assert "cnnv1-quickstart" in ENTRIES


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_reproduces_its_metrics(name, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOVIZ_HOME", str(tmp_path))  # a fresh cache: the weights come from checkpoints/
    monkeypatch.setenv("BIOVIZ_OFFLINE", "1")
    entry = registry.model_info(name)
    model = registry.load_model(name)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    results = trainer.test(model, datamodule=data_of(entry), verbose=False)[0]
    for metric, value in entry["metrics"].items():
        assert results[metric] == pytest.approx(value, abs=5e-4), metric
