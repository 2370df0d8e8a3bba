"""CIFAR-10 training throughput: RetinaVVS through `bioviz fit` vs the original notebook's loop, and the data pipelines.

The original notebook (a port of Lindsey et al.'s code, docs/sources.md) trains from torchvision's CIFAR10
dataset: a PIL image per sample, per-image transforms, a DataLoader with worker processes and default collation.
Here its loop gets the paper's augmentation as per-image PIL transforms (``RandomAffine`` translate 10 % +
``RandomHorizontalFlip``, then ``ToTensor`` and the mean of R, G, B), and the same RetinaVVS, optimiser (RMSprop
1e-4), loss and batch size as `bioviz fit -c configs/retina_vvs/cifar10.yaml` (the notebook's own Adam/softmax bugs
aside). Both sides read the same
images, decoded once from the CIFAR-10 JPEG tree into memory (uint8), so JPEG decoding is timed by neither.

Printed, side by side in one run (rounds alternate between the sides; medians):

1. The data pipeline alone, images/s: the seed's DataLoader (per-image PIL) vs bioviz's (one ``index_select`` per
   batch + batch-wise grayscale/shift/flip in ``on_after_batch_transfer``).
2. Whole training steps, images/s, per grid cell: the seed loop, `bioviz fit` (LightningCLI as a user runs it:
   TensorBoard logger, LR monitor, the config's RF logger; validation and checkpointing off so only training steps
   are timed), and the model alone on one fixed batch (the floor no pipeline can beat).

    python bench/cifar_pipeline.py --root /tmp/cifar10 [--cells 1,0 1,2] [--steps 40] [--rounds 2] [--workers 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.cli import BiovizCLI  # noqa: E402
from zoo.data import ImageFolderDataModule  # noqa: E402
from zoo.data.loading import tensor_loader  # noqa: E402
from zoo.models import RetinaVVS  # noqa: E402

CONFIG = REPO / "configs" / "retina_vvs" / "cifar10.yaml"
BATCH = 64
WARMUP = 3


class SeedCIFAR(Dataset):
    """The seed's data path: torchvision's CIFAR10 keeps HWC uint8 arrays and makes a PIL image per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        from torchvision import transforms

        self.images = images.permute(0, 2, 3, 1).numpy()  # [N, H, W, 3], as CIFAR10.data
        self.labels = labels.tolist()
        self.transform = transforms.Compose([
            transforms.RandomAffine(degrees=0, translate=(0.1, 0.1)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        image = self.transform(Image.fromarray(self.images[i]))
        return image.mean(0, keepdim=True), self.labels[i]  # the paper's grayscale


def seed_loader(images, labels, workers: int) -> DataLoader:
    return DataLoader(SeedCIFAR(images, labels), batch_size=BATCH, shuffle=True, num_workers=workers,
                      persistent_workers=False)


def timed_batches(batches, n: int, step=None) -> float:
    """Images/s over batches WARMUP+1 .. WARMUP+n of an iterable (running ``step`` on each, if given)."""
    iterator = iter(batches)
    start, images = None, 0
    for i in range(WARMUP + n):
        if i == WARMUP:
            start = time.perf_counter()
        x, y = next(iterator)
        if step is not None:
            step(x, y)
        if i >= WARMUP:
            images += len(x)
    return images / (time.perf_counter() - start)


def bioviz_batches(dm: ImageFolderDataModule):
    """bioviz's training batches as the Trainer makes them: the tensor loader, then the after-transfer step."""
    loader = tensor_loader(dm.dataset("train"), BATCH, train=True)
    for step, batch in enumerate(loader):
        dm.trainer = SimpleNamespace(training=True, global_step=step, global_rank=0)
        yield dm.on_after_batch_transfer(batch, 0)


def seed_step_fn(model, optimizer):
    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


class StepTimer(pl.Callback):
    def __init__(self):
        self.start, self.end, self.images = None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == WARMUP:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.images += len(batch[1])
            self.end = time.perf_counter()


def through_bioviz_fit(root: str, splits: dict, cell: tuple[int, int], steps: int, workdir: Path) -> float:
    timer = StepTimer()
    cli = BiovizCLI(run=False, args=[
        "-c", str(CONFIG), "--data", "zoo.data.ImageFolderDataModule", "--data.root", root,
        f"--model.init_args.n_bn={cell[0]}", f"--model.init_args.d_vvs={cell[1]}",
        f"--trainer.max_steps={WARMUP + steps}", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
        f"--trainer.logger.init_args.save_dir={workdir}", "--trainer.enable_checkpointing=false",
    ])
    cli.datamodule._splits = dict(splits)  # the images decoded once for the whole bench, not again per round
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.images / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/cifar10", help="CIFAR-10 image-folder tree (train/, test/)")
    parser.add_argument("--cells", nargs="+", default=["1,0", "1,2"], help="grid cells n_bn,d_vvs")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per side and round")
    parser.add_argument("--pipeline-batches", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="seed DataLoader workers (the notebook used 4)")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # LightningCLI below gets its arguments explicitly, not from this command line
    cells = [tuple(int(v) for v in c.split(",")) for c in args.cells]

    t = time.perf_counter()
    dm = ImageFolderDataModule(args.root)  # the config's data options: grayscale, shifts 10 %, flips, batch 64
    dm.setup("fit")
    images, labels = dm.dataset("train").tensors
    print(f"decoded {len(images)} training images in {time.perf_counter() - t:.0f} s (not timed below)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, seed DataLoader workers {args.workers}, "
          f"batch {BATCH}, {WARMUP} warm-up batches per measurement, {args.rounds} rounds, medians")

    # 1. The data pipelines alone.
    seed_rates, ours = [], []
    for round_ in range(args.rounds):
        seed_rates.append(timed_batches(seed_loader(images, labels, args.workers), args.pipeline_batches))
        ours.append(timed_batches(bioviz_batches(dm), args.pipeline_batches))
        print(f"pipeline round {round_ + 1}: seed {seed_rates[-1]:.0f} img/s, bioviz {ours[-1]:.0f} img/s")
    rows = [("data pipeline alone", statistics.median(seed_rates), statistics.median(ours), None)]

    # 2. Whole training steps, per grid cell.
    with tempfile.TemporaryDirectory() as workdir:
        for cell in cells:
            seed_rates, fit_rates, floor = [], [], []
            for round_ in range(args.rounds):
                pl.seed_everything(0, verbose=False)
                model = RetinaVVS(in_shape=[1, 32, 32], n_bn=cell[0], d_vvs=cell[1]).train()
                step = seed_step_fn(model, torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.9))
                seed_rates.append(timed_batches(seed_loader(images, labels, args.workers), args.steps, step))
                fit_rates.append(through_bioviz_fit(args.root, dm._splits, cell, args.steps, Path(workdir)))
                fixed = next(bioviz_batches(dm))
                floor.append(timed_batches(iter([fixed] * (WARMUP + args.steps)), args.steps, step))
                print(f"n_bn {cell[0]}, d_vvs {cell[1]}, round {round_ + 1}: seed loop {seed_rates[-1]:.0f} img/s, "
                      f"bioviz fit {fit_rates[-1]:.0f} img/s, model alone {floor[-1]:.0f} img/s")
            rows.append((f"training, n_bn {cell[0]}, d_vvs {cell[1]}", statistics.median(seed_rates),
                         statistics.median(fit_rates), statistics.median(floor)))

    print()
    print("| what | seed loop (img/s) | bioviz (img/s) | bioviz / seed | model alone, one fixed batch (img/s) |")
    print("|---|---|---|---|---|")
    for name, seed_rate, our_rate, floor_rate in rows:
        floor_text = "" if floor_rate is None else f"{floor_rate:.0f}"
        print(f"| {name} | {seed_rate:.0f} | {our_rate:.0f} | {our_rate / seed_rate:.2f}x | {floor_text} |")
    print(f"\nGPU: {'available, not used by this CPU bench' if torch.cuda.is_available() else 'none on this machine'}")


if __name__ == "__main__":
    main()
