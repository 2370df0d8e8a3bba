"""zoo.cli.keep_freed_memory: large freed tensors are reused instead of being mapped afresh by glibc's malloc."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import zoo.cli

from conftest import REPO, load_script

# 64 MB tensors, over glibc's largest mmap threshold (32 MB): allocated, filled and freed eight times after two
# warm-up ones (the heap grows to hold them); prints whether the setting applied and the page faults the eight cost.
PROBE = """
import resource, sys, torch
from zoo.cli import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    x = torch.ones(16 * 2**20); del x
before = faults()
for _ in range(8):
    x = torch.ones(16 * 2**20); del x
print(applied, faults() - before)
"""

glibc = pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc (Linux)")


def probe(mode: str, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=environment, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@glibc
def test_freed_large_tensors_are_reused_without_new_page_faults():
    applied, kept = probe("keep")
    _, default = probe("default")  # the negative control: glibc maps each 64 MB tensor afresh
    assert applied == "True"
    # a 64 MB tensor is 16,384 pages of 4 kB: by default each of the eight faults them all in again; kept, the heap
    # reuses its block (at most one more growth was seen while the heap settles)
    assert default > 0 and kept * 4 < default, (kept, default)


def test_glibcs_own_environment_switch_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    assert zoo.cli.keep_freed_memory() is False


def test_elsewhere_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert zoo.cli.keep_freed_memory() is False


def test_the_command_line_applies_it_before_any_command(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(zoo.cli, "keep_freed_memory", lambda: calls.append("applied"))
    zoo.cli.main(["zoo", "list"])
    assert calls == ["applied"]


@pytest.fixture(scope="module")
def memory_bench():
    return load_script(REPO / "bench" / "memory_reuse.py")


def test_the_benchmark_refuses_an_unknown_model(memory_bench, capsys):
    with pytest.raises(SystemExit):
        memory_bench.main(["--models", "no such model"])
    assert "no model name contains 'no such model'; the models: RetinaVVS n_bn 1 / d_vvs 0" in capsys.readouterr().err


@glibc
@pytest.mark.slow
def test_the_benchmark_times_both_variants_in_their_own_processes(memory_bench):
    runs = {v: memory_bench.run_worker("RetinaVVS n_bn 1 / d_vvs 2", v, "32-true", 2) for v in ("default", "keep")}
    for run in runs.values():
        assert len(run["steps"]) == 2 and run["peak_rss_mb"] > 0
    # its 134 MB dense layer: mapped afresh at every step by default, reused when kept
    assert runs["keep"]["faults_per_step"] * 4 < runs["default"]["faults_per_step"]
