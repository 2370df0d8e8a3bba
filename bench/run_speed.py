"""Seconds per training step of each epoch of finished or running trainings, read from their TensorBoard event files,
and the cost of a run on a quiet machine: the median of its five fastest epochs.

A run that shared the cores with other work, or was paused and resumed, has a wall time that says little about what
it costs; its fast epochs do. An epoch's time runs from its first logged training step to the next epoch's first
logged step, so validation, checkpoints and epoch-end callbacks are included; it is measured only between steps
logged by the same process (a resumed run starts a new event file), and a run's last epoch, which has no next one, is
not measured. Lightning logs the ``epoch`` scalar with every training metric, which is what marks the epochs.

    python bench/run_speed.py RUN_FOLDER [RUN_FOLDER ...] [--fastest 5] [--steps 14080]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util


def epoch_starts(event_file: Path) -> dict[int, tuple[int, float]]:
    """``{epoch: (first logged step, its wall time)}`` from the ``epoch`` scalar of one event file."""
    starts: dict[int, tuple[int, float]] = {}
    for event in EventFileLoader(str(event_file)).Load():
        for value in event.summary.value:
            if value.tag == "epoch":  # the loader gives every scalar as a 0-d tensor, whatever the writer used
                starts.setdefault(int(tensor_util.make_ndarray(value.tensor)), (event.step, event.wall_time))
    return starts


def epoch_seconds_per_step(run: Path) -> dict[int, float]:
    """Seconds per step of each epoch of ``run`` (a folder holding event files, searched recursively) that has a
    next epoch logged by the same process; an epoch measured in several files keeps its fastest measurement."""
    files = sorted(Path(run).rglob("events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"{run}: no TensorBoard event files (events.out.tfevents.*) in it or below it")
    result: dict[int, float] = {}
    for file in files:
        starts = epoch_starts(file)
        for epoch, (step, wall) in starts.items():
            if epoch + 1 in starts and starts[epoch + 1][0] > step:
                next_step, next_wall = starts[epoch + 1]
                rate = (next_wall - wall) / (next_step - step)
                result[epoch] = min(rate, result.get(epoch, rate))
    return dict(sorted(result.items()))


def quiet_cost(rates: dict[int, float], fastest: int = 5) -> float | None:
    """The median seconds per step of the ``fastest`` fastest epochs (all of them if fewer), or None."""
    return statistics.median(sorted(rates.values())[:fastest]) if rates else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (e.g. runs/NAME/version_0)")
    parser.add_argument("--fastest", type=int, default=5, help="epochs whose median is the quiet cost (default 5)")
    parser.add_argument("--steps", type=int, default=None, help="also print the quiet cost of this many steps")
    args = parser.parse_args(argv)
    if args.fastest < 1:
        parser.error(f"--fastest must be >= 1, got {args.fastest}")
    for run in args.runs:
        rates = epoch_seconds_per_step(run)
        cost = quiet_cost(rates, args.fastest)
        print(f"{run}: seconds per step by epoch: " + ", ".join(f"{e}: {r:.3f}" for e, r in rates.items()))
        if cost is None:
            print("  no complete epoch yet")
            continue
        line = f"  quiet cost: {cost:.3f} s/step (median of the {min(args.fastest, len(rates))} fastest epochs)"
        if args.steps:
            minutes = cost * args.steps / 60
            line += f"; {args.steps} steps: {int(minutes // 60)} h {round(minutes % 60):02d} min"
        print(line)


if __name__ == "__main__":
    main()
