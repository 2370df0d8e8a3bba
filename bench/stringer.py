"""The W1D5 models on what this machine can train them on: the ConvFC encoding model on the simulated Stringer-layout
population (with and without ``reference_neurons``), and the tilt CNN on generated gratings.

Prints one table: test loss before and after training, per-neuron test correlation (and the true-rate oracle), test
accuracy for the classifier, and training time. The settings are those of ``configs/stringer/*.yaml``.

    python bench/stringer.py [--n_neurons 1000] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch

from zoo.data import SimulatedStringerDataModule, TiltGratingsDataModule
from zoo.models import StringerConvFC, TiltCNN

warnings.filterwarnings("ignore")


def trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)


def fit_and_test(model, dm, epochs):
    t = trainer(epochs)
    before = t.test(model, dm, verbose=False)[0]
    start = time.perf_counter()
    t.fit(model, dm)
    seconds = time.perf_counter() - start
    return before, t.test(model, dm, verbose=False)[0], seconds


def convfc(seed: int, n_neurons: int, reference_neurons: int | None):
    pl.seed_everything(seed, verbose=False)
    dm = SimulatedStringerDataModule(seed=seed, n_neurons=n_neurons)
    model = StringerConvFC(n_neurons=dm.n_neurons, in_shape=dm.in_shape, mean_responses=dm.mean_responses,
                           reference_neurons=reference_neurons)
    return fit_and_test(model, dm, 200)


def tilt(seed: int):
    pl.seed_everything(seed, verbose=False)
    dm = TiltGratingsDataModule(seed=seed)
    return fit_and_test(TiltCNN(in_shape=dm.in_shape), dm, 25)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_neurons", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seeds {args.seeds}")
    print("| model | data | test loss before | test loss after | test corr (median) | true-rate oracle "
          "| test acc before / after | fit time |")
    print("|---|---|---|---|---|---|---|---|")
    for label, reference in (("reference_neurons 20000 (config)", 20000), ("tutorial loss as written", None)):
        runs = [convfc(seed, args.n_neurons, reference) for seed in args.seeds]
        for seed, (before, after, seconds) in zip(args.seeds, runs, strict=True):
            print(f"| StringerConvFC, {label} | simulated, {args.n_neurons} neurons, seed {seed} "
                  f"| {before['test/loss']:.4f} | {after['test/loss']:.4f} "
                  f"| {after['test/corr']:.3f} ({after['test/corr_median']:.3f}) | {after['test/oracle_true']:.3f} "
                  f"| - | {seconds:.1f} s |")
        if len(runs) > 1:
            corr = [after["test/corr"] for _, after, _ in runs]
            print(f"| StringerConvFC, {label} | mean over seeds | | | {statistics.mean(corr):.3f} "
                  f"(SD {statistics.stdev(corr):.3f}) | | | |")
    for seed in args.seeds:
        before, after, seconds = tilt(seed)
        print(f"| TiltCNN | 1000 generated gratings 48x64, seed {seed} | {before['test/loss']:.4f} "
              f"| {after['test/loss']:.4f} | - | - | {before['test/acc']:.3f} / {after['test/acc']:.3f} "
              f"| {seconds:.1f} s |")


if __name__ == "__main__":
    main()
