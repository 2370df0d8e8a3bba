"""Training step of the paper models with glibc's default malloc vs ``zoo.cli.keep_freed_memory``, side by side.

glibc maps every allocation over 32 MB afresh and unmaps it when freed, so a model with large tensors faults in and
zeroes new pages at every step; ``keep_freed_memory`` (which ``bioviz`` applies) makes freed blocks reusable. The
setting is process-wide, so each variant runs in a fresh process (``--worker``), rounds alternating between the
two; each process trains the model of ``bench/precision.py`` (its config's shapes and batch size, random inputs) with
a real Lightning Trainer. Printed per model: the median step, the ratio, page faults and kernel (system) time per
step, and each process's peak resident memory.

    python bench/memory_reuse.py [--steps 8] [--rounds 2] [--models RetinaVVS] [--precision bf16-mixed]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision import PAPER_MODELS, REPO, WARMUP, processor, step_times  # noqa: E402

VARIANTS = ("default", "keep")


class KernelCost(pl.Callback):
    """Page faults and system time of the timed steps (after the warm-up), from the process's resource usage."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.start = resource.getrusage(resource.RUSAGE_SELF)

    def on_train_end(self, trainer, pl_module):
        self.end = resource.getrusage(resource.RUSAGE_SELF)


def worker(model: str, variant: str, precision: str, steps: int) -> dict:
    """One variant in this process: the step times after warm-up, their page faults and kernel time per step, and
    the process's peak resident memory."""
    if variant == "keep":
        from zoo.cli import keep_freed_memory
        if not keep_freed_memory():
            raise SystemExit("keep_freed_memory does not apply here (needs glibc, and MALLOC_MMAP_MAX_ unset)")
    model_fn, data_fn = PAPER_MODELS[model]
    cost = KernelCost()
    times = step_times(model_fn, data_fn, precision, False, steps, callbacks=(cost,))
    return {"steps": times, "faults_per_step": (cost.end.ru_minflt - cost.start.ru_minflt) / steps,
            "system_s_per_step": (cost.end.ru_stime - cost.start.ru_stime) / steps,
            "peak_rss_mb": cost.end.ru_maxrss / 1024}


def run_worker(model: str, variant: str, precision: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, __file__, "--worker", model, variant, "--precision", precision,
                          "--steps", str(steps)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{model} ({variant}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default="", help="only the models whose name contains this text")
    parser.add_argument("--precision", default="bf16-mixed", help="the Trainer's precision (default bf16-mixed)")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.precision, args.steps)))
        return
    models = [name for name in PAPER_MODELS if args.models in name]
    if not models:
        parser.error(f"no model name contains {args.models!r}; the models: {', '.join(PAPER_MODELS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {processor()}; {args.precision}; "
          f"{args.steps} timed steps x {args.rounds} rounds per variant, each in its own process")
    print()
    print("| model | glibc default | freed memory kept | kept / default | page faults per step | kernel time per "
          "step | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for name in models:
        runs = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                runs[variant].append(run_worker(name, variant, args.precision, args.steps))
        ms = {v: 1000 * statistics.median([t for r in runs[v] for t in r["steps"]]) for v in VARIANTS}
        faults = {v: statistics.median(r["faults_per_step"] for r in runs[v]) for v in VARIANTS}
        system = {v: 1000 * statistics.median(r["system_s_per_step"] for r in runs[v]) for v in VARIANTS}
        rss = {v: max(r["peak_rss_mb"] for r in runs[v]) for v in VARIANTS}
        print(f"| {name} | {ms['default']:.1f} ms | {ms['keep']:.1f} ms | {ms['keep'] / ms['default']:.2f}x | "
              f"{faults['default']:,.0f} / {faults['keep']:,.0f} | {system['default']:.0f} / {system['keep']:.0f} ms | "
              f"{rss['default']:,.0f} / {rss['keep']:,.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
