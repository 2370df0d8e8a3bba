"""The README's code runs as written: its Python example, and every `bioviz` command of its shell blocks (training
commands shortened to a few steps). Installing, TensorBoard and the test commands themselves run in CI."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, run_bioviz

README = (REPO / "README.md").read_text()
SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
         "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false"]
NOT_RUN_HERE = ("python3 -m venv", ". .venv/bin/activate", "pip install", "tensorboard", "pytest", "bash .ci/run")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def shell_commands() -> list[list[str]]:
    commands = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            for command in filter(None, (part.strip() for part in line.split("&&"))):
                if not command.startswith(NOT_RUN_HERE):
                    commands.append(shlex.split(command))
    return commands


def test_the_readme_has_code():
    assert len(blocks("python")) == 1 and len(shell_commands()) >= 5


def test_the_python_example_runs(tmp_path):
    env = {**os.environ, "BIOVIZ_OFFLINE": "1", "BIOVIZ_HOME": str(tmp_path / "home"), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", blocks("python")[0]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "receptive_fields.png").is_file() and (tmp_path / "tuning.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("command", shell_commands(), ids=lambda c: " ".join(c[:3]))
def test_the_shell_commands_run(tmp_path_factory, command):
    """In one folder per README, in order (the test after the fit, the fit on the simulated file after writing it)."""
    folder = tmp_path_factory.getbasetemp() / "readme"
    folder.mkdir(exist_ok=True)
    (folder / "configs").is_symlink() or (folder / "configs").symlink_to(REPO / "configs")
    assert command[0] == "bioviz", command
    args = command[1:] + (SHORT if command[1] in ("fit", "test") else [])
    run_bioviz(args, cwd=folder, env_extra={"BIOVIZ_OFFLINE": "1"})
