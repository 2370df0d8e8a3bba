"""The science-check driver's verdict (bench/rotequi_science.py): which CNNs RotEquiV1 must beat, and whether it did."""

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "rotequi_science.py"


@pytest.fixture(scope="module")
def science():
    return load_script(SCRIPT)


def result(model, corr, params):
    return {"model": model, "test/corr": corr, "params_core": 1, "params_total": params, "best_step": 100,
            "fit_seconds": 1}


def test_claim_counts_only_cnns_with_as_many_or_more_parameters(science):
    results = [result("rotequi_16x8", 0.80, 1000), result("cnn_32", 0.85, 999), result("cnn_64", 0.79, 1000),
               result("cnn_128", 0.70, 5000), result("cnn_128_128_256", 0.75, 6000)]
    verdict = science.claim_verdict(results)
    assert verdict.startswith("claim HOLDS:") and "3 of 3" in verdict and "cnn_32" not in verdict


def test_claim_holds_only_for_the_tested_cnns_when_a_baseline_is_missing(science):
    results = [result("rotequi_16x8", 0.80, 1000), result("cnn_64", 0.79, 1000)]
    verdict = science.claim_verdict(results)
    assert verdict.startswith("claim HOLDS for the tested CNNs only (not tested: cnn_128_128_256, cnn_128, cnn_32)")


def test_claim_not_shown_when_a_larger_cnn_is_as_good(science):
    results = [result("rotequi_16x8", 0.80, 1000), result("cnn_64", 0.80, 2000), result("cnn_128", 0.70, 5000)]
    verdict = science.claim_verdict(results)
    assert verdict.startswith("claim NOT SHOWN") and "1 of 2" in verdict and "cnn_64 0.800" in verdict


def test_claim_undecided_without_rivals_or_with_two_rotequi_runs(science):
    assert "no CNN baseline" in science.claim_verdict([result("rotequi_16x8", 0.8, 1000), result("cnn_32", 0.9, 10)])
    two = [result("rotequi_16x8", 0.8, 1000)] * 2 + [result("cnn_64", 0.7, 2000)]
    assert science.claim_verdict(two).startswith("claim not decided: 2 RotEquiV1")


def test_results_are_read_from_every_driver_sharing_the_directory(science, tmp_path, capsys):
    lines = [result("rotequi_16x8", 0.9, 1000), result("cnn_64", 0.85, 2000)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    science.print_results(science.read_results(tmp_path))
    out = capsys.readouterr().out
    assert "rotequi_16x8" in out and "cnn_64" in out and "claim HOLDS for the tested CNNs only" in out
    with pytest.raises(SystemExit, match="no test results"):
        science.read_results(tmp_path / "missing")


def test_per_neuron_correlation_is_pearson_r_of_each_column(science):
    generator = torch.Generator().manual_seed(0)
    pred, target = torch.randn(50, 3, generator=generator), torch.randn(50, 3, generator=generator)
    expected = [np.corrcoef(pred[:, i], target[:, i])[0, 1] for i in range(3)]
    assert torch.allclose(science.per_neuron_correlation(pred, target).double(), torch.tensor(expected), atol=1e-6)


def test_paired_comparison_resamples_the_same_test_images_for_both_models(science, monkeypatch, tmp_path):
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(200, 30, generator=generator)
    good = target + 0.5 * torch.randn(200, 30, generator=generator)
    bad = target + 1.0 * torch.randn(200, 30, generator=generator)
    runs = {"rotequi_16x8": (good, target), "cnn_64": (bad, target), "cnn_32": (good, target + 1)}
    monkeypatch.setattr(science, "_best_run", lambda out, model: model)
    monkeypatch.setattr(science, "test_predictions", lambda model: runs[model])
    result = science.paired_comparison(tmp_path, "rotequi_16x8", "cnn_64", resamples=200)
    low, high = result["interval_95"]
    assert result["difference"] == pytest.approx(result["corr_first"] - result["corr_second"], abs=1e-6)
    assert 0 < low < result["difference"] < high and result["neurons_first_higher"] > 0.9
    with pytest.raises(SystemExit, match="different data"):
        science.paired_comparison(tmp_path, "rotequi_16x8", "cnn_32")


def test_paired_comparison_names_a_missing_run(science, tmp_path):
    with pytest.raises(SystemExit, match="no best checkpoint of rotequi_16x8"):
        science.paired_comparison(tmp_path, "rotequi_16x8", "cnn_64")
    with pytest.raises(SystemExit, match="unknown model"):
        science.paired_comparison(tmp_path, "resnet", "cnn_64")


def test_a_model_tested_again_replaces_its_earlier_result(science, tmp_path):
    lines = [result("rotequi_16x8", 0.80, 1000), result("cnn_64", 0.85, 2000), result("rotequi_16x8", 0.90, 1000)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    results = science.read_results(tmp_path)
    assert [(r["model"], r["test/corr"]) for r in results] == [("rotequi_16x8", 0.90), ("cnn_64", 0.85)]
    assert science.claim_verdict(results).startswith("claim HOLDS for the tested CNNs only")


@pytest.mark.parametrize("resume", [False, True])
def test_resume_continues_the_last_checkpoint_and_appends_the_log(science, monkeypatch, tmp_path, resume):
    """With --resume, fit gets ``--ckpt_path=last`` (the CLI continues the run in its own folder) and the model's
    log keeps what the first part wrote; without it, a new run and a new log."""
    checkpoints = tmp_path / "runs" / "rotequi_v1_fig2_n16_simulated" / "version_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"state_dict": {"core.w": torch.zeros(3), "readout.b": torch.zeros(2)}, "global_step": 40},
               checkpoints / "best.ckpt")
    (tmp_path / "rotequi_16x8.log").write_text("first part\n")
    commands = []

    class FakePopen:  # what bench/cli_runs.py runs: a process whose output is Lightning's test table
        def __init__(self, command, **kwargs):
            commands.append(command)
            self.stdout, self.returncode = iter(["│ test/corr │ 0.5 │\n"]), 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    args = argparse.Namespace(patience=5, val_steps=50, max_steps=80, extra=[], out=str(tmp_path), resume=resume)
    row = science.run("rotequi_16x8", "fig2_n16_simulated", args)
    fit, test = commands
    assert fit[fit.index("-m") + 2] == "fit" and ("--ckpt_path=last" in fit) == resume
    assert test[-1] == "--ckpt_path=best" and "--trainer.max_steps=80" in fit
    assert row["resumed"] == resume and row["best_step"] == 40 and row["params_core"] == 3
    assert (tmp_path / "rotequi_16x8.log").read_text().startswith("first part") == resume
