import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.data import write_synthetic_v1

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# The smallest population that still trains: used wherever a test only needs real-format data.
TINY_SIM = dict(n_neurons=6, image_shape=[16, 16], n_train=96, n_val=33, n_test=21, n_repeats=4)
TINY_SIM_ARGS = [f"--data.init_args.{k}={v}" for k, v in TINY_SIM.items()]
TINY_MODEL_ARGS = ["--model.init_args.filter_size=[5,3,3]", "--model.init_args.num_filters=[4,4,4]"]


@pytest.fixture
def tiny_npz(tmp_path):
    """A simulated population written in the neural-response file layout."""
    return write_synthetic_v1(tmp_path / "tiny.npz", seed=1, **TINY_SIM)


def run_bioviz(args, cwd, env_extra=None, check=True, timeout=600):
    """Run the real console entry point in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bioviz {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc
