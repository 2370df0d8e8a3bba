"""The RetinaVVS grid driver (bench/retina_vvs_grid.py): which data it points the recipe at, the table beside the
reference grid, and, on tiny images, that it trains every cell, skips finished ones and resumes rather than retrains."""

import json
from pathlib import Path

import pytest

from conftest import load_script, write_image_folder

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "retina_vvs_grid.py"
# A tiny RetinaVVS on tiny images: the recipe's structure, seconds per cell.
TINY = ["--data.val_size=4", "--data.batch_size=4", "--model.init_args.retina_width=4",
        "--model.init_args.vvs_width=4", "--model.init_args.kernel_size=3", "--model.init_args.dense_width=8",
        "--trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def grid():
    return load_script(SCRIPT)


def result(cell, acc, seconds=100.0):
    n_bn, d_vvs, seed = cell
    return {"cell": f"nbn{n_bn}_d{d_vvs}_s{seed}", "n_bn": n_bn, "d_vvs": d_vvs, "seed": seed, "test/acc": acc,
            "seconds_per_epoch": seconds, "machine": "cpu"}


def test_the_table_averages_seeds_and_sets_each_cell_beside_the_reference(grid):
    rows = grid.summarize([result((1, 2, 0), 0.69), result((1, 2, 1), 0.71, 300.0), result((32, 0, 0), 0.70),
                           result((64, 0, 0), 0.80)])
    assert [(r["n_bn"], r["d_vvs"], len(r["seeds"])) for r in rows] == [(1, 2, 2), (32, 0, 1), (64, 0, 1)]
    first = rows[0]
    assert first["mean"] == pytest.approx(0.70) and first["sd"] == pytest.approx(0.0141421, abs=1e-6)
    assert first["reference"] == 0.716 and first["difference"] == pytest.approx(-0.016)
    assert first["seconds_per_epoch"] == 200.0
    table = grid.format_table(rows).splitlines()
    assert table[2] == "| 1 | 2 | 2 | 0.7000 (SD 0.0141) | 0.716 | -1.6 points | 200 | cpu |"
    assert table[3].startswith("| 32 | 0 | 1 | 0.7000 | 0.675 | +2.5 points |")
    assert table[4].startswith("| 64 | 0 | 1 | 0.8000 |  |  |")  # outside the paper's grid: no reference


def test_a_cell_tested_again_replaces_its_earlier_result(grid, tmp_path):
    lines = [result((1, 0, 0), 0.40), result((1, 2, 0), 0.68), result((1, 0, 0), 0.44)]
    (tmp_path / grid.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert {name: r["test/acc"] for name, r in grid.read_results(tmp_path).items()} == {
        "nbn1_d0_s0": 0.44, "nbn1_d2_s0": 0.68}


def test_the_data_root_chooses_the_image_folder_tree_or_the_official_cifar10(grid, tmp_path):
    tree = write_image_folder(tmp_path / "tree", per_class=(1, 1))
    assert grid.data_arguments(tree) == ["--data", "zoo.data.ImageFolderDataModule", "--data.root", str(tree)]
    (tmp_path / "official").mkdir()
    assert grid.data_arguments(tmp_path / "official") == ["--data.root", str(tmp_path / "official")]
    with pytest.raises(SystemExit, match="no folder at .*missing: give the CIFAR-10 JPEG tree"):
        grid.data_arguments(tmp_path / "missing")


def test_the_official_cifar10_is_fetched_once_by_the_driver_not_by_each_cell(grid, tmp_path, monkeypatch):
    from zoo.data import CIFAR10DataModule

    fetched = []
    monkeypatch.setattr(CIFAR10DataModule, "prepare_data", lambda self: fetched.append((self.root, self.download)))
    grid.prepare_official_cifar10(grid.data_arguments(write_image_folder(tmp_path / "tree", per_class=(1, 1))))
    assert fetched == []
    (tmp_path / "official").mkdir()
    grid.prepare_official_cifar10(grid.data_arguments(tmp_path / "official"))
    assert fetched == [(tmp_path / "official", True)]


def test_bad_arguments_are_refused_before_anything_is_written(grid, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        grid.main(["--out", str(out)])
    assert "--data-root is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grid.main(["--data-root", str(tmp_path), "--n-bn", "0", "--out", str(out)])
    assert "n_bn must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no results in"):
        grid.main(["--out", str(out), "--results"])
    assert not out.exists()


@pytest.mark.slow
def test_the_grid_trains_each_cell_once_and_resumes_an_interrupted_one(grid, tmp_path, capsys):
    root = write_image_folder(tmp_path / "images", per_class=(4, 2), size=(16, 16))
    out = tmp_path / "grid"
    command = ["--data-root", str(root), "--n-bn", "1", "2", "--d-vvs", "0", "--out", str(out), "--jobs", "2", "--",
               *TINY]
    grid.main(command)
    results = grid.read_results(out)
    assert sorted(results) == ["nbn1_d0_s0", "nbn2_d0_s0"]
    for r in results.values():
        assert 0 <= r["test/acc"] <= 1 and r["epochs"] == 1 and r["steps_trained"] == r["global_step"] > 0
        assert r["seconds_per_epoch"] > 0 and r["arguments"] == TINY
    assert (out / "grid.png").is_file() and "| 2 | 0 | 1 |" in capsys.readouterr().out

    # Run again: nothing to train.
    logs = {p.name: p.read_text() for p in (out / "logs").iterdir()}
    grid.main(command)
    assert "2 with results" in capsys.readouterr().out
    assert {p.name: p.read_text() for p in (out / "logs").iterdir()} == logs

    # An interrupted cell (no result; a second epoch asked for) continues from its checkpoint instead of starting
    # again; a finished cell keeps its result and says that it was made with other arguments.
    kept = results["nbn1_d0_s0"]
    (out / grid.RESULTS).write_text(json.dumps(results["nbn2_d0_s0"]) + "\n")
    grid.main([*command[:-1], "--trainer.max_epochs=2"])
    printed = capsys.readouterr().out
    assert "nbn2_d0_s0: kept its result, made with other arguments" in printed and "1 to train" in printed
    again = grid.read_results(out)["nbn1_d0_s0"]
    assert again["epochs"] == 2 and again["global_step"] == 2 * kept["global_step"]
    assert again["steps_trained"] == kept["global_step"] and again["seconds_per_epoch"] > 0
    assert sorted(p.name for p in (out / "runs" / "nbn1_d0_s0").iterdir()) == ["version_0"]


@pytest.mark.slow
def test_failed_cells_are_named_with_their_logs_and_leave_no_result(grid, tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=(4, 2), size=(16, 16))
    out = tmp_path / "grid"
    failed = r"1 of 1 cells failed: nbn1_d0_s0: bioviz fit failed \(exit 2\), see .*nbn1_d0_s0.log"
    with pytest.raises(SystemExit, match=failed):
        grid.main(["--data-root", str(root), "--n-bn", "1", "--d-vvs", "0", "--out", str(out), "--",
                   *TINY, "--trainer.max_epochs=many"])
    assert not (out / grid.RESULTS).exists()
    assert "max_epochs" in (out / "logs" / "nbn1_d0_s0.log").read_text()
