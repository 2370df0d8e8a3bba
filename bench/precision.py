"""Training step of every paper model in float32 vs ``bf16-mixed`` (and channels_last), side by side in one run.

Each side is a real ``lightning.Trainer`` as ``bioviz fit`` builds it: ``precision="32-true"`` or
``precision="bf16-mixed"`` (autocast to bfloat16 around the forward pass and the loss; weights, gradients and the
optimiser stay float32), optionally with the model's kernels in ``torch.channels_last`` memory format
(``bioviz fit --channels_last true``). It runs the model's own ``training_step`` and optimiser (RMSprop for RetinaVVS,
Adam for the V1 models, SGD for the Stringer model) at the batch size of the model's config; validation,
checkpoints and logging are off, so only training steps are timed. Inputs are random tensors of the config's shape
(the cost of these models does not depend on pixel values), except LISSOM, whose sparse settling does: it trains on
its own data module (elongated Gaussians), and runs float32 under any precision by design (``SelfOrganizingTask``),
so its ratio shows only that the switch costs nothing.

Rounds alternate between the variants; each number is the median step over all rounds (a step = batch start to
batch end, after warm-up steps). Printed: one row per model with ms per step and the ratios to float32.

    python bench/precision.py [--steps 8] [--rounds 2] [--models retina SpatialDenseNet] [--variants fp32 "fp32 cl"]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.callbacks import ChannelsLast  # noqa: E402
from zoo.cli import onednn_supports  # noqa: E402
from zoo.data import LissomDataModule  # noqa: E402
from zoo.models import CNNV1, Lissom, RegularConvNet, RetinaVVS, RotEquiV1, SpatialDenseNet, StringerConvFC  # noqa: E402

WARMUP = 2
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-Trainer banners between the rows
VARIANTS = {  # name: (trainer precision, channels_last)
    "fp32": ("32-true", False),
    "bf16": ("bf16-mixed", False),
    "fp32 cl": ("32-true", True),
    "bf16 cl": ("bf16-mixed", True),
}


def classification(model_fn, shape, batch):
    def data(n):
        return DataLoader(TensorDataset(torch.rand(n * batch, *shape), torch.randint(0, 10, (n * batch,))),
                          batch_size=batch)
    return model_fn, data


def responses(model_fn, shape, batch, n_neurons):
    def data(n):
        return DataLoader(TensorDataset(torch.rand(n * batch, *shape), torch.rand(n * batch, n_neurons)),
                          batch_size=batch)
    return model_fn, data


def lissom_data(n):
    dm = LissomDataModule(image_size=56, n_blobs=2, blob_sigma=[1.59, 7.42], blob_min_separation=20.9,
                          steps_per_epoch=n, batch_size=1, seed=0)
    dm.setup("fit")
    return dm.train_dataloader()


# name: (model factory, data factory(steps) -> DataLoader), each at its config's shapes and batch size.
PAPER_MODELS = {
    **{f"RetinaVVS n_bn {n} / d_vvs {d}": classification(lambda n=n, d=d: RetinaVVS(n_bn=n, d_vvs=d), (1, 32, 32), 64)
       for n, d in ((1, 0), (1, 2), (32, 0), (32, 2))},
    "SpatialDenseNet": classification(lambda: SpatialDenseNet(in_shape=[3, 32, 32], num_classes=10), (3, 32, 32), 64),
    "RegularConvNet": classification(lambda: RegularConvNet(in_shape=[3, 32, 32], num_classes=10), (3, 32, 32), 64),
    "CNNV1 (quickstart)": responses(lambda: CNNV1(n_neurons=100, in_shape=[1, 32, 32], filter_size=[9, 5, 5],
                                                  num_filters=[16, 16, 16]), (1, 32, 32), 64, 100),
    "RotEquiV1 16x8 (science population)": responses(lambda: RotEquiV1(n_neurons=1000, in_shape=[1, 24, 24]),
                                                     (1, 24, 24), 32, 1000),
    "StringerConvFC (1000 neurons)": responses(lambda: StringerConvFC(n_neurons=1000, in_shape=[1, 12, 16]),
                                               (1, 12, 16), 3840, 1000),
    "Lissom cortex 48": (lambda: Lissom(cortex_size=48, border=10, in_shape=[1, 56, 56]), lissom_data),
}


def processor() -> str:
    """The CPU's model name, its AVX-512 and bfloat16 instructions, and whether PyTorch has oneDNN bfloat16 kernels for
    it (bf16 speed depends on all three: without the kernels bfloat16 convolutions take a slow fallback)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    found = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    kernels = "has" if onednn_supports(torch.bfloat16) else "has no"
    return f"{name} ({', '.join(found) or 'no AVX-512'}; PyTorch {kernels} oneDNN bfloat16 kernels for it)"


class StepTimer(pl.Callback):
    def __init__(self):
        self.steps, self.start = [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(time.perf_counter() - self.start)


def step_times(model_fn, data_fn, precision: str, channels_last: bool, steps: int,
               callbacks: tuple[pl.Callback, ...] = ()) -> list[float]:
    """Seconds of each training step after the warm-up, in a fresh model and Trainer (with ``callbacks`` too)."""
    torch.manual_seed(0)
    model = model_fn()
    timer = StepTimer()
    layout = [ChannelsLast()] if channels_last else []  # what `bioviz fit --channels_last true` adds
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=WARMUP + steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer, *layout, *callbacks])
    trainer.fit(model, train_dataloaders=data_fn(WARMUP + steps))
    return timer.steps[WARMUP:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=[""],
                        help="only the models whose name contains one of these texts")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="the variants to time (fp32 is always timed: the ratios are to it)")
    args = parser.parse_args(argv)
    variants = ["fp32", *(v for v in VARIANTS if v in args.variants and v != "fp32")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {processor()}; "
          f"{args.steps} timed steps x {args.rounds} rounds per variant; cl = channels_last")
    print()
    ratios = [v for v in variants if v != "fp32"]
    header = ["model", *variants, *(f"{v} / fp32" for v in ratios)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, (model_fn, data_fn) in PAPER_MODELS.items():
        if not any(text in name for text in args.models):
            continue
        times = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                precision, channels_last = VARIANTS[variant]
                times[variant] += step_times(model_fn, data_fn, precision, channels_last, args.steps)
        ms = {v: 1000 * statistics.median(t) for v, t in times.items()}
        cells = [name, *(f"{ms[v]:.1f} ms" for v in variants), *(f"{ms[v] / ms['fp32']:.2f}x" for v in ratios)]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
