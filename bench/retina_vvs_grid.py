"""The RetinaVVS grid of Lindsey et al. (2019): test accuracy over bottleneck width n_bn and VVS depth d_vvs, trained
with the paper's recipe and printed beside the reference grid.

Each cell (n_bn, d_vvs, seed) runs ``configs/retina_vvs/cifar10.yaml`` (20 epochs, RMSprop 1e-4, batch 64, grayscale,
shifts and flips) through the real command line, in its own process, ``--jobs`` cells at a time:

    bioviz fit  -c configs/retina_vvs/cifar10.yaml DATA --model.init_args.n_bn N --model.init_args.d_vvs D \\
        --seed_everything S --trainer.logger.init_args.name nbnN_dD_sS --ckpt_path last
    bioviz test (the same arguments) --ckpt_path last          # the paper reports the last epoch

DATA is ``--data.root ROOT``, the official CIFAR-10 (downloaded into ROOT if it is not there), or, when ROOT holds
``train/`` and ``test/`` image folders (the CIFAR-10 JPEG tree), ``--data zoo.data.ImageFolderDataModule --data.root
ROOT``; the official archive is fetched once, before any cell starts. Arguments after ``--`` go to every fit and
test, e.g. ``--trainer.precision bf16-mixed`` on a CPU with bfloat16 instructions or on a GPU (the processes run
inside ``--out``, so a relative path there is relative to it). Each cell trains on one device; on a machine with
several GPUs the jobs take turns over them.

Everything stays under ``--out``: the runs (``runs/nbnN_dD_sS/version_0``), a log per cell (``logs/``) and
``results.jsonl`` (test metrics, steps, fit seconds per epoch, the machine). The same command run again skips the
cells that have a result and resumes the others from their last checkpoint, so an interrupted grid goes on where it
stopped. At the end, and with ``--results`` alone, it prints the grid beside the reference and draws ``grid.png``.

    python bench/retina_vvs_grid.py --data-root /tmp/cifar10 --n-bn 1 32 --d-vvs 0 2 --out retina_grid \\
        -- --trainer.precision bf16-mixed
    python bench/retina_vvs_grid.py --out retina_grid --results

A cell whose dense layer reads a 32-channel map (d_vvs >= 1, or n_bn 32) holds 33.6 M weights and writes two 270 MB
checkpoints (best and last): about 14 GB of disk per seed of the whole grid. The reference is the mean of 10 seeds
per cell of an independent PyTorch re-implementation of the paper's grid on grayscale CIFAR-10
(docs/models/retina_vvs.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_runs import REPO, bioviz, read_test_metrics  # noqa: E402

CONFIG = REPO / "configs" / "retina_vvs" / "cifar10.yaml"
# n_bn -> mean test accuracy over 10 seeds for d_vvs = 0, 1, 2, 3, 4 (grayscale CIFAR-10, 20 epochs).
REFERENCE = {
    1: (0.488, 0.650, 0.716, 0.734, 0.734),
    2: (0.551, 0.657, 0.710, 0.736, 0.739),
    4: (0.605, 0.672, 0.721, 0.726, 0.743),
    8: (0.651, 0.702, 0.722, 0.741, 0.740),
    16: (0.672, 0.715, 0.736, 0.743, 0.744),
    32: (0.675, 0.727, 0.743, 0.750, 0.751),
}
RESULTS = "results.jsonl"


class Cell(NamedTuple):
    n_bn: int
    d_vvs: int
    seed: int

    @property
    def name(self) -> str:
        return f"nbn{self.n_bn}_d{self.d_vvs}_s{self.seed}"


def reference(n_bn: int, d_vvs: int) -> float | None:
    """The reference grid's accuracy of a cell, None outside the paper's grid."""
    row = REFERENCE.get(n_bn)
    return row[d_vvs] if row is not None and d_vvs < len(row) else None


def data_arguments(root: Path) -> list[str]:
    """The CLI arguments that point the config at ``root``: an image-folder tree or the official CIFAR-10."""
    if not root.is_dir():
        raise SystemExit(f"no folder at {root}: give the CIFAR-10 JPEG tree (train/ and test/ inside) or a folder "
                         "for the official CIFAR-10 (create it; the archive is downloaded into it)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return ["--data", "zoo.data.ImageFolderDataModule", "--data.root", str(root.resolve())]
    return ["--data.root", str(root.resolve())]


def last_checkpoint(out: Path, cell: Cell) -> Path | None:
    """The newest ``last.ckpt`` of the cell's runs: the one ``bioviz fit --ckpt_path last`` resumes."""
    found = list((out / "runs" / cell.name).glob("version_*/checkpoints/last.ckpt"))
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


def checkpoint_progress(path: Path | None) -> tuple[int, int]:
    """(global step, epochs completed) of a checkpoint saved at an epoch's end; (0, 0) without one."""
    if path is None:
        return 0, 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt["global_step"]), int(ckpt["epoch"]) + 1


def machine(fit_output: str) -> str:
    """The GPU the fit used, or else the processor."""
    if "used: True" in next((line for line in fit_output.splitlines() if line.startswith("GPU available")), ""):
        return torch.cuda.get_device_name(0)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def prepare_official_cifar10(data: list[str]) -> None:
    """Download and unpack the official CIFAR-10 once, so that parallel cells do not each fetch it."""
    if "--data" not in data:
        from zoo.data import CIFAR10DataModule

        CIFAR10DataModule(root=data[-1], download=True).prepare_data()


def train_cell(cell: Cell, out: Path, data: list[str], extra: list[str], threads: str,
               env: dict[str, str] | None = None) -> dict:
    """Fit (resuming from the cell's last checkpoint) and test one cell; returns its result."""
    common = ["-c", str(CONFIG), *data, "--model.init_args.n_bn", str(cell.n_bn), "--model.init_args.d_vvs",
              str(cell.d_vvs), "--seed_everything", str(cell.seed), "--trainer.logger.init_args.save_dir",
              str(out / "runs"), "--trainer.logger.init_args.name", cell.name, "--trainer.devices", "1",
              "--trainer.enable_progress_bar", "false", *extra]
    step_before, _ = checkpoint_progress(last_checkpoint(out, cell))
    with open(out / "logs" / f"{cell.name}.log", "a") as log:
        log.write(f"== {datetime.datetime.now().isoformat(timespec='seconds')}: bioviz fit {' '.join(common)} "
                  f"--ckpt_path last (from step {step_before})\n")
        start = time.time()
        fit_output = bioviz(cell.name, ["fit", *common, "--ckpt_path", "last"], out, log, threads, env)
        fit_seconds = time.time() - start
        step, epochs = checkpoint_progress(last_checkpoint(out, cell))
        metrics = read_test_metrics(bioviz(cell.name, ["test", *common, "--ckpt_path", "last"], out, log, threads,
                                           env))
    if "test/acc" not in metrics:
        raise RuntimeError(f"{cell.name}: bioviz test printed no test/acc, see {out / 'logs' / cell.name}.log")
    trained = step - step_before
    return {"cell": cell.name, "n_bn": cell.n_bn, "d_vvs": cell.d_vvs, "seed": cell.seed, **metrics,
            "global_step": step, "epochs": epochs, "steps_trained": trained, "fit_seconds": round(fit_seconds, 1),
            # fit time over the steps this process trained (start-up and validation included), per epoch
            "seconds_per_epoch": round(fit_seconds / trained * step / epochs, 1) if trained and epochs else None,
            "machine": machine(fit_output), "arguments": extra,
            "date": datetime.date.today().isoformat()}


def read_results(out: Path) -> dict[str, dict]:
    """{cell name: result} of every cell tested under ``out``; a cell tested again replaces its earlier result."""
    path = out / RESULTS
    results = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                result = json.loads(line)
                results[result["cell"]] = result
    return results


def summarize(results: list[dict]) -> list[dict]:
    """One row per (n_bn, d_vvs): test accuracy over its seeds (mean, SD), the reference, seconds per epoch."""
    groups: dict[tuple[int, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["n_bn"], r["d_vvs"]), []).append(r)
    rows = []
    for (n_bn, d_vvs), group in sorted(groups.items()):
        accs = [r["test/acc"] for r in sorted(group, key=lambda r: r["seed"])]
        times = [r["seconds_per_epoch"] for r in group if r.get("seconds_per_epoch")]
        ref = reference(n_bn, d_vvs)
        mean = statistics.fmean(accs)
        rows.append({"n_bn": n_bn, "d_vvs": d_vvs, "seeds": [r["seed"] for r in group], "accs": accs,
                     "mean": mean, "sd": statistics.stdev(accs) if len(accs) > 1 else None, "reference": ref,
                     "difference": None if ref is None else mean - ref,
                     "seconds_per_epoch": statistics.median(times) if times else None,
                     "machines": sorted({r["machine"] for r in group})})
    return rows


def format_table(rows: list[dict]) -> str:
    """The grid as a Markdown table, one row per cell, beside the reference."""
    lines = ["| n_bn | d_vvs | seeds | test acc | reference (10 seeds) | difference | fit s/epoch | machine |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = f"{r['mean']:.4f}" + (f" (SD {r['sd']:.4f})" if r["sd"] is not None else "")
        ref = "" if r["reference"] is None else f"{r['reference']:.3f}"
        diff = "" if r["difference"] is None else f"{100 * r['difference']:+.1f} points"
        sec = "" if r["seconds_per_epoch"] is None else f"{r['seconds_per_epoch']:.0f}"
        lines.append(f"| {r['n_bn']} | {r['d_vvs']} | {len(r['seeds'])} | {acc} | {ref} | {diff} | {sec} | "
                     f"{'; '.join(r['machines'])} |")
    return "\n".join(lines)


def draw(rows: list[dict], path: Path) -> None:
    """Test accuracy over n_bn, a line per d_vvs; the reference dashed in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    colours = plt.get_cmap("viridis")
    for d_vvs in sorted({r["d_vvs"] for r in rows}):
        colour = colours(d_vvs / 4 * 0.9)
        ours = [r for r in rows if r["d_vvs"] == d_vvs]
        ax.errorbar([r["n_bn"] for r in ours], [r["mean"] for r in ours], yerr=[r["sd"] or 0 for r in ours],
                    color=colour, marker="o", capsize=3, label=f"d_vvs {d_vvs}")
        if d_vvs <= 4:
            widths = sorted(REFERENCE)
            ax.plot(widths, [REFERENCE[n][d_vvs] for n in widths], color=colour, linestyle="--", marker="o",
                    markerfacecolor="none", alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(REFERENCE), [str(n) for n in sorted(REFERENCE)])
    ax.set_xlabel("bottleneck width n_bn (channels)")
    ax.set_ylabel("test accuracy (last epoch)")
    ax.set_title("RetinaVVS on grayscale CIFAR-10: ours (solid), reference (dashed)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(out: Path) -> None:
    results = list(read_results(out).values())
    if not results:
        raise SystemExit(f"no results in {out / RESULTS}; train the grid with --out {out} first")
    rows = summarize(results)
    print(format_table(rows))
    draw(rows, out / "grid.png")
    print(f"figure: {out / 'grid.png'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, help="the CIFAR-10 JPEG tree, or a folder for the official one")
    parser.add_argument("--n-bn", type=int, nargs="+", default=sorted(REFERENCE), help="bottleneck widths")
    parser.add_argument("--d-vvs", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="VVS depths")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("retina_vvs_grid"))
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once (several fit on one GPU)")
    parser.add_argument("--results", action="store_true", help="print the table and draw the figure, train nothing")
    parser.add_argument("extra", nargs="*", help="more bioviz arguments for every fit and test, after --")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the cells' processes run inside it
    if args.results:
        report(args.out)
        return
    if args.data_root is None:
        parser.error("--data-root is required to train (or --results to report)")
    if min(args.n_bn) < 1 or min(args.d_vvs) < 0 or args.jobs < 1:
        parser.error("n_bn must be >= 1, d_vvs >= 0 and --jobs >= 1")
    data = data_arguments(args.data_root)
    prepare_official_cifar10(data)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // args.jobs))
    done = read_results(args.out)
    # Each cell once, the biggest first, so that parallel jobs end together.
    cells = sorted({Cell(n, d, s) for n in args.n_bn for d in args.d_vvs for s in args.seeds},
                   key=lambda c: (-c.d_vvs, -c.n_bn, c.seed))
    todo = [c for c in cells if c.name not in done]
    for cell in cells:
        if cell.name in done and done[cell.name].get("arguments") != args.extra:
            print(f"{cell.name}: kept its result, made with other arguments after -- "
                  f"({' '.join(done[cell.name].get('arguments') or []) or 'none'}); delete its line in "
                  f"{args.out / RESULTS} to test it again", flush=True)
    print(f"{len(cells)} cells, {len(cells) - len(todo)} with results in {args.out / RESULTS}, {len(todo)} to train "
          f"({args.jobs} at a time, {threads} threads each)", flush=True)
    lock, failed = threading.Lock(), []
    gpus = queue.SimpleQueue()  # with several GPUs, each running cell holds one
    for slot in range(args.jobs):
        gpus.put(str(slot % torch.cuda.device_count()) if torch.cuda.device_count() > 1 else None)

    def run(cell: Cell) -> None:
        gpu = gpus.get()
        try:
            result = train_cell(cell, args.out, data, args.extra, threads,
                                None if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu})
        except Exception as err:  # a cell's failure is reported; the others go on
            with lock:
                failed.append(str(err))
                print(f"{cell.name}: FAILED: {err}", flush=True)
            return
        finally:
            gpus.put(gpu)
        with lock:
            with open(args.out / RESULTS, "a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"{cell.name}: test acc {result['test/acc']:.4f} (reference {reference(cell.n_bn, cell.d_vvs)}), "
                  f"{result['fit_seconds'] / 60:.1f} min", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, todo))
    if read_results(args.out):
        report(args.out)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(todo)} cells failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
