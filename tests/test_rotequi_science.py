"""The science-check driver's verdict (bench/rotequi_science.py): which CNNs RotEquiV1 must beat, and whether it did."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "rotequi_science.py"


@pytest.fixture(scope="module")
def science():
    spec = importlib.util.spec_from_file_location("rotequi_science", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
