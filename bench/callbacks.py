"""Cost of bioviz's TensorBoard callbacks: the same `bioviz fit` with and without them, side by side in one run.

Both sides train the quickstart model (CNNV1 on the simulated population) through BiovizCLI for the same number of
epochs, validation off, so only training and the callbacks' epoch-end work are timed. The "with" side logs first-layer
filters, readout masks and the orientation tuning of all neurons (16 orientations x 8 phases x 3 frequencies, tuning
image, histograms; no matplotlib figure, as by default) at the end of EVERY epoch, the worst case (TuningLogger's default is every 5 epochs).
Rounds alternate between the sides; medians are reported, and the time spent inside each callback is measured too.

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


def run(config: Path, epochs: int, workdir: Path, with_callbacks: bool, spent: dict) -> float:
    """Seconds per epoch of `bioviz fit` (wall time of trainer.fit / epochs)."""
    cli = BiovizCLI(run=False, args=[
        "-c", str(config), f"--trainer.max_epochs={epochs}", "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={workdir}",
    ])
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
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            without.append(run(args.config, args.epochs, Path(workdir), False, spent))
            with_.append(run(args.config, args.epochs, Path(workdir), True, spent))
            print(f"round {round_ + 1}: without {without[-1]:.3f} s/epoch, with callbacks {with_[-1]:.3f} s/epoch")
    base, cb = statistics.median(without), statistics.median(with_)
    print()
    print("| run | time per epoch (median) | ratio to without |")
    print("|---|---|---|")
    print(f"| bioviz fit, no bioviz callbacks | {base:.3f} s | 1.000 |")
    print(f"| + FilterLogger, ReadoutMaskLogger, TuningLogger every epoch | {cb:.3f} s | {cb / base:.3f} |")
    print()
    print("| callback | time per call (median) | share of an epoch |")
    print("|---|---|---|")
    for name, times in spent.items():
        t = statistics.median(times)
        print(f"| {name} | {1000 * t:.1f} ms | {100 * t / base:.2f} % |")
    print(f"\ncallback cost: {100 * (cb / base - 1):+.1f} % time per epoch (logging every epoch)")


if __name__ == "__main__":
    main()
