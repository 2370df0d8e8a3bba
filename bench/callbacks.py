"""Cost of bioviz's TensorBoard callbacks: the same `bioviz fit` with and without them, side by side in one run.

Both sides train the quickstart model (CNNV1 on the simulated population) through BiovizCLI for the same number of
epochs, validation off, so only training and the callbacks' epoch-end work are timed. The "with" side logs first-layer
filters, readout masks and the orientation tuning of all neurons (16 orientations x 8 phases x 3 frequencies, tuning
image, histograms; no matplotlib figure, as by default) at the end of EVERY epoch, the worst case (TuningLogger's
default is every 5 epochs).
Rounds alternate between the sides; medians are reported. Besides the wall time per epoch, the bench records the
duration of every training step (the callbacks should not slow steps at all) and the time spent inside each callback,
whose share of a median epoch is the cost that remains measurable when other jobs share the machine and make epoch
wall times noisy.

    python bench/callbacks.py [--epochs 3] [--rounds 3] [--config configs/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import lightning.pytorch as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bioviz.callbacks import FilterLogger, ReadoutMaskLogger, TuningLogger  # noqa: E402
from zoo.cli import BiovizCLI  # noqa: E402


def timed(callback, spent: dict[str, list[float]]):
    """Wrap the callback's epoch-end hook to record the seconds it takes."""
    hook = callback.on_train_epoch_end
    name = type(callback).__name__

    def wrapper(trainer, pl_module):
        start = time.perf_counter()
        hook(trainer, pl_module)
        spent[name].append(time.perf_counter() - start)

    callback.on_train_epoch_end = wrapper
    return callback


class StepTimer(pl.Callback):
    """Durations of training steps (batch start to batch end)."""

    def __init__(self, steps: list[float]):
        self.steps, self.start = steps, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(time.perf_counter() - self.start)


def run(config: Path, epochs: int, workdir: Path, with_callbacks: bool, spent: dict, steps: list) -> float:
    """Seconds per epoch of `bioviz fit` (wall time of trainer.fit / epochs); step durations go to ``steps``."""
    cli = BiovizCLI(run=False, args=[
        "-c", str(config), f"--trainer.max_epochs={epochs}", "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={workdir}",
    ])
    cli.trainer.callbacks.append(StepTimer(steps))
    if with_callbacks:
        cli.trainer.callbacks.extend(timed(c, spent) for c in (
            FilterLogger(every_n_epochs=1), ReadoutMaskLogger(every_n_epochs=1), TuningLogger(every_n_epochs=1)))
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; config {args.config.name}; "
          f"{args.epochs} epochs per fit, {args.rounds} rounds")
    without, with_, spent = [], [], defaultdict(list)
    steps_without, steps_with = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            without.append(run(args.config, args.epochs, Path(workdir), False, spent, steps_without))
            with_.append(run(args.config, args.epochs, Path(workdir), True, spent, steps_with))
            print(f"round {round_ + 1}: without {without[-1]:.3f} s/epoch, with callbacks {with_[-1]:.3f} s/epoch")
    base, cb = statistics.median(without), statistics.median(with_)
    step_base, step_cb = statistics.median(steps_without), statistics.median(steps_with)
    steps_per_epoch = len(steps_without) // (args.rounds * args.epochs)
    epoch = step_base * steps_per_epoch  # a median epoch's training time, robust to bursts of load
    print()
    print("| run | median step | ratio | epoch wall time (median of rounds) | ratio |")
    print("|---|---|---|---|---|")
    print(f"| bioviz fit, no bioviz callbacks | {1000 * step_base:.1f} ms | 1.000 | {base:.2f} s | 1.000 |")
    print(f"| + FilterLogger, ReadoutMaskLogger, TuningLogger every epoch | {1000 * step_cb:.1f} ms | "
          f"{step_cb / step_base:.3f} | {cb:.2f} s | {cb / base:.3f} |")
    print()
    print(f"| callback | time per call (median) | share of an epoch ({steps_per_epoch} median steps = {epoch:.2f} s) |")
    print("|---|---|---|")
    share = {}
    for name, times in spent.items():
        t = statistics.median(times)
        share[name] = t / epoch
        print(f"| {name} | {1000 * t:.1f} ms | {100 * share[name]:.2f} % |")
    every_epoch = sum(share.values())
    defaults = share.get("FilterLogger", 0) + share.get("ReadoutMaskLogger", 0) + share.get("TuningLogger", 0) / 5
    print(f"\ncallback cost per epoch: {100 * every_epoch:.2f} % with all three every epoch; {100 * defaults:.2f} % "
          f"at their defaults (filters and masks every epoch, tuning every 5)")


if __name__ == "__main__":
    main()
