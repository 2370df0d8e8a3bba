"""bench/cli_runs.py, which the benchmark drivers run ``bioviz`` through: a cell's log shows the output while the
command runs (a 2-hour fit can be followed), and a failure names the cell and its log."""

import io
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO, load_script


@pytest.fixture(scope="module")
def cli_runs():
    return load_script(REPO / "bench" / "cli_runs.py")


class FlagOnFirstLine(io.StringIO):
    """A log that creates ``flag`` once it has received the line ``first``."""

    name = "cell.log"

    def __init__(self, flag: Path):
        super().__init__()
        self.flag = flag

    def write(self, text):
        if text == "first\n":
            self.flag.touch()
        return super().write(text)


def fake_python(tmp_path: Path, exit_code: int = 0) -> str:
    """A stand-in for the interpreter: prints ``first``, waits (up to 30 s) for the flag file, then prints ``second``
    if it appeared and ``late`` if not."""
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\necho first\ni=0\n"
                      'while [ ! -e "$FLAG" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n'
                      f'if [ -e "$FLAG" ]; then echo second; else echo late; fi\nexit {exit_code}\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.skipif(os.name != "posix", reason="the stand-in interpreter is a shell script")
def test_the_log_gets_each_line_while_the_command_runs(cli_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path))
    flag = tmp_path / "flag"
    log = FlagOnFirstLine(flag)
    log.write("== header\n")
    output = cli_runs.bioviz("cell", ["fit"], tmp_path, log, env={"FLAG": str(flag)})
    # the command saw its first line reach the log before it ended; the log holds it after the header
    assert output == "first\nsecond\n"
    assert log.getvalue() == "== header\nfirst\nsecond\n"


@pytest.mark.skipif(os.name != "posix", reason="the stand-in interpreter is a shell script")
def test_a_failing_command_names_the_cell_and_keeps_its_output_in_the_log(cli_runs, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, exit_code=3))
    flag = tmp_path / "flag"
    log = FlagOnFirstLine(flag)
    with pytest.raises(RuntimeError, match=r"nbn1_d2_s0: bioviz fit failed \(exit 3\), see cell.log"):
        cli_runs.bioviz("nbn1_d2_s0", ["fit"], tmp_path, log, env={"FLAG": str(flag)})
    assert log.getvalue() == "first\nsecond\n"
