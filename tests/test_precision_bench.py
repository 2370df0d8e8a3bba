"""bench/precision.py: the chosen variants of the chosen models, side by side, with their ratios to float32."""

import re

import pytest

from conftest import REPO, load_script


@pytest.fixture(scope="module")
def bench():
    return load_script(REPO / "bench" / "precision.py")


def test_prints_one_row_per_model_with_each_variant_and_its_ratio_to_float32(bench, capsys):
    bench.main(["--models", "CNNV1", "Lissom", "--variants", "fp32 cl", "--steps", "1", "--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert "PyTorch" in lines[0] and "oneDNN bfloat16 kernels" in lines[0]  # the processor, as bf16 speed needs it
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| model | fp32 | fp32 cl | fp32 cl / fp32 |"
    rows = [re.fullmatch(r"\| (.+) \| ([0-9.]+) ms \| ([0-9.]+) ms \| ([0-9.]+)x \|", line) for line in table[2:]]
    assert [row[1] for row in rows] == ["CNNV1 (quickstart)", "Lissom cortex 48"]
    for row in rows:
        fp32, cl, ratio = (float(row[i]) for i in (2, 3, 4))
        assert fp32 > 0 and cl > 0 and ratio == pytest.approx(cl / fp32, rel=0.03, abs=0.006)  # all 3 rounded


def test_an_unknown_variant_is_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--variants", "fp64"])
    assert "invalid choice: 'fp64'" in capsys.readouterr().err
