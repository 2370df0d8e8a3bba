"""Shared by the benchmark drivers that train with the real command line: run ``bioviz`` in its own process and read
the test metrics it printed.

A process per command keeps runs apart (memory, threads, a crash) and lets drivers run several at once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"^\W*(test/[a-z_]+)\W+([-+0-9.eE]+)\W*$", re.MULTILINE)  # Lightning's results table


def bioviz(label: str, args: list[str], cwd: Path, log: TextIO, threads: str = "1",
           env: dict[str, str] | None = None) -> str:
    """Run ``bioviz ARGS`` in ``cwd`` with this checkout first on the path, ``OMP_NUM_THREADS`` = ``threads`` unless
    the environment sets it, and ``env`` on top; append its output to ``log`` line by line as it comes (so a long fit
    can be followed with ``tail -f``) and return it. Raises ``RuntimeError`` naming ``label`` and the log when the
    command fails."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
           "PYTHONUNBUFFERED": "1", **(env or {})}
    log.flush()  # what the caller wrote first stays first
    lines = []
    with subprocess.Popen([sys.executable, "-m", "zoo.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            log.write(line)
            log.flush()
    if proc.returncode:
        raise RuntimeError(f"{label}: bioviz {args[0]} failed (exit {proc.returncode}), see {log.name}")
    return "".join(lines)


def read_test_metrics(output: str) -> dict[str, float]:
    """``{"test/acc": ...}`` from the results table that ``bioviz test`` printed (the last one, if several)."""
    return {key: float(value) for key, value in METRIC.findall(output)}
