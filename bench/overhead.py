"""Framework overhead: training steps/s of the quickstart model through bioviz's CLI vs a bare PyTorch loop.

Both sides train the same CNNV1 (quickstart hyperparameters) on the same in-memory simulated population, with the
same batch size, optimiser, loss and penalties, on the same number of threads. The CLI side is `bioviz fit` as a
user runs it (TensorBoard logging, checkpoint and LR-monitor callbacks, progress bar, the DataModule's loaders);
validation is switched off on both sides so only training steps are timed. Rounds alternate between the two sides
and the median round is reported.

    python bench/overhead.py [--steps 60] [--rounds 3] [--config configs/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.cli import BiovizCLI  # noqa: E402
from zoo.data import SyntheticV1DataModule  # noqa: E402
from zoo.models import CNNV1  # noqa: E402

WARMUP = 5


class StepTimer(pl.Callback):
    """Wall time of training steps WARMUP+1 .. last."""

    def __init__(self):
        self.start = self.end = None
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == WARMUP:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.steps += 1
            self.end = time.perf_counter()

    def rate(self) -> float:
        return self.steps / (self.end - self.start)


def through_cli(config: Path, steps: int, workdir: Path) -> float:
    timer = StepTimer()
    cli = BiovizCLI(run=False, args=[
        "-c", str(config), f"--trainer.max_steps={WARMUP + steps}", "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0", f"--trainer.logger.init_args.save_dir={workdir}",
    ])
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.rate()


def bare_loop(data: SyntheticV1DataModule, model_args: dict, steps: int) -> float:
    pl.seed_everything(0)
    model = CNNV1(n_neurons=data.n_neurons, in_shape=data.in_shape, mean_responses=data.mean_responses, **model_args)
    optimizer = torch.optim.Adam(model.parameters(), lr=model.hparams.lr)
    images, responses = data.tensors["images_train"], data.tensors["responses_train"]
    batch_size = data.batch_size
    order = torch.randperm(len(images))
    model.train()
    start = None
    for step in range(WARMUP + steps):
        if step == WARMUP:
            start = time.perf_counter()
        i = (step * batch_size) % (len(images) - batch_size + 1)
        index = order[i:i + batch_size]
        pred = model(images[index])
        loss = model.loss_fn(pred, responses[index]).mean() + model.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "quickstart.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = yaml.safe_load(args.config.read_text())
    data = SyntheticV1DataModule(**config["data"]["init_args"])
    model_args = config["model"].get("init_args", {})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; config {args.config.name}; "
          f"batch {data.batch_size}; {args.steps} timed steps after {WARMUP} warm-up, {args.rounds} rounds")
    bare, cli = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            bare.append(bare_loop(data, model_args, args.steps))
            cli.append(through_cli(args.config, args.steps, Path(workdir)))
            print(f"round {round_ + 1}: bare {bare[-1]:.3f} steps/s, bioviz fit {cli[-1]:.3f} steps/s")
    bare_rate, cli_rate = statistics.median(bare), statistics.median(cli)
    print()
    print("| path | steps/s (median) | time per step | ratio to bare |")
    print("|---|---|---|---|")
    print(f"| bare PyTorch loop | {bare_rate:.3f} | {1000 / bare_rate:.1f} ms | 1.00 |")
    print(f"| bioviz fit (LightningCLI) | {cli_rate:.3f} | {1000 / cli_rate:.1f} ms | {bare_rate / cli_rate:.3f} |")
    print(f"\nframework overhead: {100 * (bare_rate / cli_rate - 1):+.1f} % time per step (target <= +10 %)")


if __name__ == "__main__":
    main()
