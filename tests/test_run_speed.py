"""bench/run_speed.py: seconds per step by epoch from TensorBoard event files, and a run's quiet-machine cost."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "run_speed.py"


@pytest.fixture(scope="module")
def speed():
    return load_script(SCRIPT)


def log_epochs(folder: Path, epochs: dict[int, list[tuple[int, float]]], start: float = 1000.0) -> None:
    """One process's event file: for each epoch, (step, seconds after ``start``) of its logged training steps, with
    the ``epoch`` scalar and a loss at each, as Lightning logs them."""
    writer = SummaryWriter(str(folder))
    for epoch, points in epochs.items():
        for step, seconds in points:
            writer.add_scalar("train/loss", 1.0, step, walltime=start + seconds)
            writer.add_scalar("epoch", float(epoch), step, walltime=start + seconds)
    writer.close()


def test_epochs_are_timed_between_their_first_steps_and_the_fastest_five_give_the_quiet_cost(speed, tmp_path):
    # 10 steps per epoch; epoch 1 shared the cores (3 s/step); the last epoch (5) has no next one.
    log_epochs(tmp_path, {0: [(0, 0), (5, 5)], 1: [(10, 10), (15, 25)], 2: [(20, 40)], 3: [(30, 50)],
                          4: [(40, 62)], 5: [(50, 72), (55, 77)]})
    rates = speed.epoch_seconds_per_step(tmp_path)
    assert rates == pytest.approx({0: 1.0, 1: 3.0, 2: 1.0, 3: 1.2, 4: 1.0})
    assert speed.quiet_cost(rates) == pytest.approx(1.0)  # median of 1.0, 1.0, 1.0, 1.2, 3.0
    assert speed.quiet_cost(rates, fastest=2) == pytest.approx(1.0)
    assert speed.quiet_cost({}) is None


def test_a_resumed_run_is_timed_within_each_process_and_keeps_an_epochs_fastest_time(speed, tmp_path):
    # Checkpoints every 2 epochs: the first process is killed early in epoch 3 and the second resumes at epoch 2,
    # running it again, slower (the cores were shared).
    log_epochs(tmp_path / "a", {0: [(0, 0)], 1: [(10, 20)], 2: [(20, 50)], 3: [(30, 65)]})
    log_epochs(tmp_path / "b", {2: [(20, 0)], 3: [(30, 30)], 4: [(40, 40)]}, start=5000.0)
    rates = speed.epoch_seconds_per_step(tmp_path)
    assert rates == pytest.approx({0: 2.0, 1: 3.0, 2: 1.5, 3: 1.0})


def test_the_command_prints_each_epoch_and_the_cost_of_a_recipe(speed, tmp_path, capsys):
    log_epochs(tmp_path, {0: [(0, 0)], 1: [(100, 60)], 2: [(200, 120)]})
    speed.main([str(tmp_path), "--steps", "14080"])
    out = capsys.readouterr().out
    assert "0: 0.600, 1: 0.600" in out
    assert "quiet cost: 0.600 s/step (median of the 2 fastest epochs); 14080 steps: 2 h 21 min" in out


def test_bad_input_is_refused_with_its_name(speed, tmp_path, capsys):
    with pytest.raises(SystemExit, match=f"{tmp_path}: no TensorBoard event files"):
        speed.epoch_seconds_per_step(tmp_path)
    with pytest.raises(SystemExit):
        speed.main([str(tmp_path), "--fastest", "0"])
    assert "--fastest must be >= 1, got 0" in capsys.readouterr().err
    log_epochs(tmp_path, {0: [(0, 0), (5, 5)]})  # one epoch: nothing complete to time
    speed.main([str(tmp_path)])
    assert "no complete epoch yet" in capsys.readouterr().out
