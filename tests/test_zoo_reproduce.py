"""`bioviz zoo reproduce NAME`: an entry's recipe trains again in a fresh folder and its metrics are printed beside
the recorded ones."""

import re

import pytest
import yaml

from zoo import registry
from zoo.cli import main, reproduce

from conftest import TINY_MODEL_ARGS, TINY_SIM_ARGS, run_bioviz

TINY_RECIPE = [*TINY_SIM_ARGS, *TINY_MODEL_ARGS, "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
               "--trainer.enable_model_summary=false"]


@pytest.fixture
def tiny_recipe(tmp_path, monkeypatch):
    """A registry whose entry ``tiny-quickstart`` is the quickstart recipe on a tiny population."""
    dummy = tmp_path / "tiny-quickstart-00000000.safetensors"
    dummy.write_bytes(b"not needed to reproduce")

    def use(metrics, args=TINY_RECIPE, checkpoint=None):
        entry = {"model": "zoo.models.CNNV1", "init_args": {"n_neurons": 6, "in_shape": [1, 16, 16]},
                 "trained_on": "a tiny simulated population",
                 "data": {"class_path": "zoo.data.SyntheticV1DataModule", "init_args": {}},
                 "recipe": {"configs": ["configs/quickstart.yaml"], "args": list(args),
                            **({"checkpoint": checkpoint} if checkpoint else {})},
                 "metrics": metrics, "headline": "test/corr", "paper": {"source": "none", "metrics": {}},
                 "input": {"channels": 1, "size": [16, 16], "normalize": "standardize"},
                 "weights": {"file": dummy.name, "sha256": "0" * 64, "size": 24}}
        (tmp_path / "registry.yaml").write_text(yaml.safe_dump({"models": {"tiny-quickstart": entry}}))
        monkeypatch.setattr(registry, "REGISTRY_FILE", tmp_path / "registry.yaml")
        registry._read_registry.cache_clear()

    use({"test/corr": 0.5})
    yield use
    registry._read_registry.cache_clear()


def test_reproduce_trains_in_a_fresh_folder_and_compares(tiny_recipe, tmp_path, capsys):
    first, measured, _ = reproduce(registry.model_info("tiny-quickstart"), str(tmp_path / "first"), None, [])
    assert (first / "runs" / "quickstart" / "version_0" / "checkpoints" / "best.ckpt").is_file()
    assert {"test/corr", "test/oracle", "test/loss"} <= set(measured)
    recorded = {k: round(measured[k], 4) for k in ("test/corr", "test/oracle")}
    tiny_recipe(recorded)
    capsys.readouterr()
    main(["zoo", "reproduce", "tiny-quickstart", "--out", str(tmp_path / "second")])
    out = capsys.readouterr().out
    assert f"trained again from its recipe in {tmp_path / 'second'}" in out
    rows = dict(re.findall(r"^\s+(test/\w+)\s+[-0-9.]+\s+[-0-9.]+\s+([-+0-9.]+)", out, re.MULTILINE))
    assert rows == {"test/corr": rows["test/corr"], "test/oracle": rows["test/oracle"]}
    assert all(abs(float(d)) <= 1e-4 for d in rows.values())  # deterministic on CPU: the same numbers again
    assert (tmp_path / "second" / "runs" / "quickstart" / "version_0" / "checkpoints" / "best.ckpt").is_file()


def test_reproduce_refuses_a_used_folder_and_missing_data(tiny_recipe, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "reproduce", "tiny-quickstart", "--out", str(used)])
    assert exit_info.value.code == 2 and "is not empty; reproduce runs in a fresh folder" in capsys.readouterr().err
    tiny_recipe({"test/corr": 0.5}, args=["--data.init_args.path={data_root}/sim.npz"])
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "reproduce", "tiny-quickstart", "--out", str(tmp_path / "new")])
    assert exit_info.value.code == 2 and "give their folder with --data-root DIR" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_recipe_that_reports_the_last_epoch_tests_the_last_checkpoint(tiny_recipe, tmp_path, capsys):
    tiny_recipe({"test/corr": 0.5}, checkpoint="last")
    entry = registry.model_info("tiny-quickstart")
    assert entry.recipe.commands()[1].endswith("--ckpt_path last")
    reproduce(entry, str(tmp_path / "run"), None, [])
    out, err = capsys.readouterr()
    assert "--ckpt_path last\n" in out
    assert "using last checkpoint" in err and "using best checkpoint" not in err
    tiny_recipe({"test/corr": 0.5}, checkpoint="middle")
    with pytest.raises(registry.RegistryError, match="recipe.checkpoint must be 'best' or 'last', got 'middle'"):
        registry.model_info("tiny-quickstart")


@pytest.mark.slow
def test_reproduce_the_quickstart_entry(tmp_path):
    """The acceptance check: the quickstart entry retrained from its recipe matches its recorded test correlation."""
    out = run_bioviz(["zoo", "reproduce", "cnnv1-quickstart", "--out", str(tmp_path / "run")], cwd=tmp_path).stdout
    recorded, reproduced = map(float, re.search(r"^\s+test/corr\s+([0-9.]+)\s+([0-9.]+)", out, re.MULTILINE).groups())
    assert recorded == registry.model_info("cnnv1-quickstart").metrics["test/corr"]
    assert abs(reproduced - recorded) <= 0.01
