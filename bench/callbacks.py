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

``--defaults`` measures instead what ``bioviz fit`` logs by default for each paper model (``Task.picture_callbacks``,
once an epoch): each callback's time per call beside the time of the training steps of one epoch of the model's
config (batch size and steps per epoch as configured; a median training step on random inputs of the config's shape).

    python bench/callbacks.py --defaults
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

from bench.locally_connected import time_step  # noqa: E402  (median seconds of a call, after a warm-up)
from bioviz.callbacks import FilterLogger, ReadoutMaskLogger, TuningLogger  # noqa: E402
from zoo.cli import BiovizCLI  # noqa: E402
from zoo.models import CNNV1, RegularConvNet, RetinaVVS, RotEquiV1, SpatialDenseNet  # noqa: E402


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


# (model, its config's input shape and batch size, training steps per epoch in that config)
PAPER_MODELS = {
    "CNNV1 (quickstart)": (lambda: CNNV1(n_neurons=100, in_shape=[1, 32, 32], filter_size=[9, 5, 5],
                                         num_filters=[16, 16, 16]), (1, 32, 32), 64, 63),
    "RotEquiV1 16x8 (science population)": (lambda: RotEquiV1(n_neurons=1000, in_shape=[1, 24, 24]), (1, 24, 24),
                                             32, 32),
    "SpatialDenseNet (CIFAR-10)": (lambda: SpatialDenseNet(in_shape=[3, 32, 32], num_classes=10), (3, 32, 32), 64,
                                   704),
    "RegularConvNet (CIFAR-10)": (lambda: RegularConvNet(in_shape=[3, 32, 32], num_classes=10), (3, 32, 32), 64, 704),
    "RetinaVVS n_bn 1 / d_vvs 2 (CIFAR-10)": (lambda: RetinaVVS(n_bn=1, d_vvs=2), (1, 32, 32), 64, 704),
}


class _Writer:  # stands in for TensorBoard's SummaryWriter: the pictures are made, not written
    def add_image(self, *args, **kwargs):
        pass

    add_scalar = add_histogram = add_image


def picture_cost(model, shape, batch: int) -> tuple[list[str], float, float]:
    """Names of the model's default picture callbacks, seconds they take together at an epoch end, and seconds of
    a median training step at ``batch`` (forward, backward and an Adam step on random inputs)."""
    images = torch.randn(batch, *shape)
    optimizer = torch.optim.Adam(model.parameters())

    def step():
        optimizer.zero_grad()
        model(images).float().square().mean().backward()
        optimizer.step()

    callbacks = model.picture_callbacks()
    for callback in callbacks:
        callback.setup(None, model, "fit")
        if getattr(callback, "shape", "unset") is None:  # ReceptiveFieldLogger reads it from a training batch
            callback.shape = shape

    def pictures():
        with torch.no_grad():
            for callback in callbacks:
                callback.log_pictures(_Writer(), model, 0)

    return [type(c).__name__ for c in callbacks], time_step(pictures, 5), time_step(step, 5)


def default_pictures() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | default picture callbacks | time per epoch end | training steps of an epoch | share |")
    print("|---|---|---|---|---|")
    for name, (build, shape, batch, steps) in PAPER_MODELS.items():
        names, spent, step = picture_cost(build(), shape, batch)
        epoch = step * steps
        print(f"| {name} | {', '.join(names)} | {1000 * spent:.1f} ms | {epoch:.1f} s ({steps} steps) | "
              f"{100 * spent / epoch:.3f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--defaults", action="store_true", help="the default pictures of each paper model instead")
    args = parser.parse_args()
    if args.defaults:
        default_pictures()
        return
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
