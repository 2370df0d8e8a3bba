"""The ``bioviz`` command line.

``bioviz fit|validate|test|predict`` is LightningCLI in subclass mode: a config or the command line picks any
LightningModule in ``zoo.models`` and any DataModule in ``zoo.data`` by class name. ``bioviz simulate-v1 PATH``,
``simulate-stringer``, ``simulate-sensorium`` and ``simulate-cadena`` write simulated populations as data files in
those layouts; ``bioviz zoo ...`` is the model zoo.
"""

from __future__ import annotations

import argparse
import ctypes
import difflib
import glob
import importlib.resources
import io
import logging
import os
import pickle
import re
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import BasePredictionWriter, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

import zoo.data
import zoo.models
from zoo import registry, weights
from zoo.callbacks import ChannelsLast, StepSeed
from zoo.errors import DataNotFoundError, UserError
from zoo.files import atomic_file
from zoo.registry import zoo_classes
from zoo.tasks import SelfOrganizingTask

# In-memory tensor loaders need no worker processes; Lightning's advice to add some does not apply.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()  # an advert printed on every run
)

# Data properties a model may take from its DataModule; a link applies only where both sides have the name.
DATA_LINKS = ("n_neurons", "in_shape", "num_classes")
RUNS_DIR = "runs"


def known_classes() -> str:
    return (f"Known models: {', '.join(zoo_classes('zoo.models'))}. "
            f"Known data modules: {', '.join(zoo_classes('zoo.data'))}.")


def unknown_class(message: str) -> str | None:
    """For jsonargparse's error on ``--model X`` / ``--data X`` naming no class: one line with the closest names."""
    key = re.search(r'Parser key "(model|data)"', message)
    given = re.search(r"Given value: ([\w.]+)\s*$", message, re.MULTILINE)
    if not key or not given:
        return None
    kind, value = key.group(1), given.group(1)
    known = list(zoo_classes("zoo.models" if kind == "model" else "zoo.data"))
    if value.rpartition(".")[2] in known:
        return None  # a known class: the error is about something else
    by_lower = {name.lower(): name for name in known}
    close = [by_lower[n] for n in difflib.get_close_matches(value.rpartition(".")[2].lower(), by_lower, n=3,
                                                             cutoff=0.5)]
    what = "model" if kind == "model" else "data module"
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return f"no {what} named {value!r}.{hint} Known {what}s: {', '.join(known)}."


class BiovizArgumentParser(LightningArgumentParser):
    def error(self, message: str, ex: Exception | None = None):
        line = unknown_class(message)
        if line is not None and getattr(self, "exit_on_error", True):
            sys.stderr.write(f"bioviz: error: {line}\n")
            self.exit(2)
        if "import path" in message or "class_path" in message or "subclass" in message:
            message = f"{message}\n{known_classes()}"
        super().error(message, ex)


def _checkpoint_dirs(trainer_config: Namespace) -> Path:
    """Glob pattern of the folders where this config's runs keep checkpoints, as Lightning lays them out."""
    root = Path(trainer_config.get("default_root_dir") or ".")
    logger = trainer_config.get("logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else False
    if isinstance(logger, Namespace) and "init_args" in logger:
        args = logger.init_args
        name = args.get("name")
        return Path(args.get("save_dir") or root) / ("lightning_logs" if name is None else name) / "*" / "checkpoints"
    if not logger:
        return root / "checkpoints"
    return root / "lightning_logs" / "*" / "checkpoints"


def _log_into_run_of(checkpoint: Path, config: Namespace) -> None:
    """Let the logger write into the run folder of ``checkpoint`` (``<save_dir>/<name>/version_N/checkpoints/X.ckpt``)
    unless a version was given."""
    logger = config.trainer.get("logger")
    run = checkpoint.resolve().parent.parent
    if (isinstance(logger, Namespace) and "init_args" in logger and logger.init_args.get("version") is None
            and checkpoint.resolve().parent.name == "checkpoints" and run.name.startswith("version_")
            and run.parent == Path(logger.init_args.get("save_dir") or ".").resolve()
            / (logger.init_args.get("name") or "lightning_logs")):
        logger.init_args.version = run.name


def _unsaved_run(trainer_config: Namespace) -> Path | None:
    """The newest ``version_N`` folder of this config's logger if it holds no checkpoint (its run died first)."""
    pattern = _checkpoint_dirs(trainer_config)
    if pattern.parent.name != "*":  # no logger: no version folders
        return None
    versions = [p for p in pattern.parent.parent.glob("version_*") if p.name.removeprefix("version_").isdigit()]
    newest = max(versions, key=lambda p: int(p.name.removeprefix("version_")), default=None)
    return newest if newest is not None and not list(newest.glob("checkpoints/*.ckpt")) else None


def find_checkpoint(trainer_config: Namespace, which: str) -> Path | None:
    """The newest ``best.ckpt`` or ``last.ckpt`` among the runs of this config's logger, or None."""
    candidates = [Path(p) for p in glob.glob(str(_checkpoint_dirs(trainer_config) / f"{which}.ckpt"))]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None



def default_checkpoints(monitor: str | None, mode: str = "min") -> list[ModelCheckpoint]:
    """``best.ckpt`` on the monitored metric and ``last.ckpt`` refreshed at every save point.

    ``last.ckpt`` has its own unmonitored callback because Lightning 2.6's ``save_last`` rewrites it only when a
    top-k checkpoint was written at the same step: once the metric stopped improving, "last" would be the best.
    """
    if monitor is None:
        return [ModelCheckpoint(filename="{epoch}-{step}", save_top_k=1, save_last=True)]
    return [ModelCheckpoint(monitor=monitor, mode=mode, filename="best", save_top_k=1),
            ModelCheckpoint(filename=ModelCheckpoint.CHECKPOINT_NAME_LAST, save_top_k=1)]

class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it and renames it into place (``zoo.files.atomic_file``),
    so a process killed while saving leaves the previous checkpoint whole. A killed save leaves its temporary file
    behind (nothing runs after SIGKILL); the next save of that checkpoint removes it. Remote paths (``s3://``, ...)
    are written by Lightning's own checkpoint IO."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
            stale.unlink(missing_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_file(path) as out:
            out.write(buffer.getbuffer())


class PredictionFileWriter(BasePredictionWriter):
    """Saves what ``bioviz predict`` returns, in data order, to ``<run folder>/predictions.pt``.

    Under DDP each rank writes ``predictions_rank<r>.pt`` holding ``{"predictions", "indices"}``.
    """

    def __init__(self):
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        values = torch.cat([torch.as_tensor(p) for p in predictions])
        if trainer.world_size == 1:
            path = folder / "predictions.pt"
            torch.save(values, path)
        else:
            path = folder / f"predictions_rank{trainer.global_rank}.pt"
            indices = torch.as_tensor([i for batch in batch_indices for i in batch])
            torch.save({"predictions": values, "indices": indices}, path)
        print(f"wrote predictions {list(values.shape)} to {path}")


class BiovizCLI(LightningCLI):
    """LightningCLI with bioviz defaults: TensorBoard under runs/, best + last checkpoints on the model's monitored
    metric written atomically, learning-rate monitor, seed 0 and every training step seeded (``StepSeed``), data
    properties linked into the model, and ``--ckpt_path best|last`` resolved to the newest run of the same logger
    name (also in a new process)."""

    def __init__(self, args=None, run: bool = True):
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_class=BiovizArgumentParser,
            seed_everything_default=0,
            trainer_defaults={
                "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                           "init_args": {"save_dir": RUNS_DIR}},
            },
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in DATA_LINKS:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_argument("--pictures", type=bool, default=True,
                            help="log the model's pictures to TensorBoard while it trains (its picture_callbacks: "
                                 "filters, readout masks, receptive fields) unless bioviz.callbacks are configured")
        parser.add_argument("--channels_last", type=bool, default=False,
                            help="store the model's convolution kernels in channels_last memory format (NHWC): "
                                 "faster for some models (RetinaVVS on CPU); measure yours with bench/precision.py")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.get("logger")
        if isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
            logger.init_args.default_hp_metric = False  # no placeholder hp_metric point at -1
        # validate/test/predict log into the folder of the run they evaluate; keep that run's config.yaml
        if self.subcommand not in (None, "fit"):
            self.save_config_kwargs["config_filename"] = f"config_{self.subcommand}.yaml"

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        which = config.get("ckpt_path")
        found = find_checkpoint(config.trainer, which) if which in ("best", "last") else None
        if which not in ("best", "last"):
            if which is not None and subcommand != "fit":
                _log_into_run_of(Path(which), config)
            return
        if found is not None:
            print(f"using {which} checkpoint {found}", file=sys.stderr)
            config.ckpt_path = str(found)
            # fit resumes in the run's own folder (its checkpoint callback state reloads and TensorBoard shows one
            # continuing run); validate, test and predict log there, beside the training curves
            _log_into_run_of(found, config)
        elif subcommand == "fit" and which == "last":
            config.ckpt_path = None
            logger = config.trainer.get("logger")
            unsaved = _unsaved_run(config.trainer)
            if unsaved is not None and isinstance(logger, Namespace) and logger.init_args.get("version") is None:
                # A run killed before its first checkpoint: start again in its folder, not in a new version.
                logger.init_args.version = unsaved.name
                print(f"no last.ckpt in {unsaved}; starting again in that run's folder", file=sys.stderr)
            else:
                print(f"no last.ckpt in {_checkpoint_dirs(config.trainer)}; starting a new run", file=sys.stderr)
        else:
            raise DataNotFoundError(
                f"--ckpt_path {which}: no {which}.ckpt in {_checkpoint_dirs(config.trainer)}. "
                f"Train first with `bioviz fit` using the same config, or give the checkpoint's path."
            )

    def _parse_ckpt_path(self) -> None:
        """As Lightning's: the checkpoint's hyperparameters become the model's config; but arguments that an older
        version of the model saved and the model no longer takes (its ``retired_hparams``) are dropped, so old
        checkpoints keep loading."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - not a checkpoint Lightning can read: it says so when it loads it
            return
        hparams = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
        hparams.pop("_instantiator", None)
        class_path = hparams.pop("_class_path", None)
        if not hparams:
            return
        model = hparams
        if class_path:
            module, _, name = str(class_path).rpartition(".")
            cls = getattr(sys.modules.get(module) or zoo.models, name, None)
            retired = set(getattr(cls, "retired_hparams", ()))
            model = {"class_path": class_path, "dict_kwargs": {k: v for k, v in hparams.items() if k not in retired}}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

    def _log_at_checkpoint_step(self) -> None:
        """Evaluation metrics are logged at the step of the checkpoint they evaluate, so that in TensorBoard
        ``test/corr`` sits at the end of the training curves rather than at step 0. (Lightning logs at
        ``fit_loop.epoch_loop._batches_that_stepped``, which an evaluation does not restore; a test checks this.)"""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        try:
            step = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
        except Exception:  # noqa: BLE001 - not a checkpoint Lightning can read: it says so when it loads it
            return
        if isinstance(step, int) and step > 0:  # a validation during fit logs at global_step - 1
            self.trainer.fit_loop.epoch_loop._batches_that_stepped = step - 1

    before_validate = before_test = _log_at_checkpoint_step

    def after_test(self) -> None:
        summary = getattr(self.model, "test_summary", None)
        if summary and self.trainer.is_global_zero:
            print(summary)

    def instantiate_trainer(self, **kwargs) -> pl.Trainer:
        config = self._get(self.config_init, "trainer", default={})
        callbacks = list(config.get("callbacks") or [])
        has_checkpoint = any(isinstance(c, ModelCheckpoint) for c in callbacks)
        if self.subcommand in ("validate", "test", "predict") and not has_checkpoint:
            kwargs.setdefault("enable_checkpointing", False)  # nothing to save when evaluating
            warnings.filterwarnings("ignore", ".*callbacks used to create the checkpoint need to be provided.*")
        elif config.get("enable_checkpointing") is not False and not has_checkpoint:
            callbacks += default_checkpoints(getattr(self.model, "monitor", None),
                                             getattr(self.model, "monitor_mode", "min"))
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in callbacks):
            callbacks.append(PredictionFileWriter())
        if config.get("logger") and not any(isinstance(c, LearningRateMonitor) for c in callbacks):
            callbacks.append(LearningRateMonitor())
        if self.subcommand == "fit" and not any(isinstance(c, StepSeed) for c in callbacks):
            callbacks.append(StepSeed())
        if (self.subcommand == "fit" and self._get(self.config_init, "pictures", default=True) and config.get("logger")
                and not any(type(c).__module__ == "bioviz.callbacks" for c in callbacks)):
            callbacks += self.model.picture_callbacks() if hasattr(self.model, "picture_callbacks") else []
        if self._get(self.config_init, "channels_last", default=False) and not any(
                isinstance(c, ChannelsLast) for c in callbacks):
            callbacks.append(ChannelsLast())
        if not config.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        trainer = super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})
        warn_slow_cpu_precision(trainer, self.model)
        return trainer


def onednn_supports(dtype: torch.dtype) -> bool:
    """Whether PyTorch's oneDNN backend has ``dtype`` kernels for this CPU, as PyTorch checks before it computes a
    convolution in that type there (bfloat16: AVX-512 or AVX-NE-CONVERT, fast with AVX-512 BF16 or AMX; float16:
    AVX-512 FP16 or AVX-NE-CONVERT). False in a build without oneDNN; True where this PyTorch has no such check."""
    if not torch.backends.mkldnn.is_available():
        return False
    checks = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}
    try:
        return bool(getattr(torch.ops.mkldnn, checks[dtype])())
    except (AttributeError, RuntimeError):
        return True


def warn_slow_cpu_precision(trainer: pl.Trainer, model: pl.LightningModule | None = None) -> bool:
    """Warn when a CPU run is set to compute in a 16-bit type that oneDNN has no kernels for on this processor.

    PyTorch then computes bfloat16 (or float16) convolutions in a scalar fallback, many times slower than float32
    (BENCHMARKS.md, "... on a CPU without AVX-512"), so a run meant to be faster is slower. Self-organising models
    switch mixed precision's autocast off and are not warned about under ``*-mixed``; under ``*-true`` their weights
    are 16-bit too. Returns whether it warned."""
    precision = str(trainer.precision)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16 if precision.startswith("16") else None
    float32_anyway = isinstance(model, SelfOrganizingTask) and precision.endswith("-mixed")
    if (dtype is None or not isinstance(trainer.accelerator, CPUAccelerator) or float32_anyway
            or onednn_supports(dtype)):
        return False
    name = {torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    needs = "AVX-512 or AVX-NE-CONVERT" if dtype == torch.bfloat16 else "AVX-512 FP16 or AVX-NE-CONVERT"
    rank_zero_warn(f"--trainer.precision {precision} will be slow on this CPU: PyTorch has no {name} kernels for it "
                   f"(they need {needs}) and computes {name} convolutions in a fallback many times slower than "
                   "float32. Use --trainer.precision 32-true on this machine.")
    return True


# `bioviz NAME PATH [--arg value ...]`: write a simulated population as a data file; the arguments are the simulation
# function's own.
SIMULATIONS = {
    "simulate-v1": ("simulate_v1", "write_synthetic_v1", "a simulated V1 population as a neural-response .npz"),
    "simulate-stringer": ("simulate_stringer", "write_simulated_stringer",
                          "a simulated orientation-tuned population as an .npz in the Stringer layout"),
    "simulate-sensorium": ("write_simulated_sensorium", "write_simulated_sensorium",
                           "a simulated V1 population as a zip in the Sensorium 2022 layout (PATH: a .zip, or a "
                           "folder for a zip named like a real scan)"),
    "simulate-cadena": ("write_simulated_cadena", "write_simulated_cadena",
                        "a simulated V1 population as a pickle in the layout of the Cadena et al. (2019) data"),
}


def simulate_command(name: str, argv: list[str]) -> None:
    simulate, write, what = SIMULATIONS[name]
    parser = ArgumentParser(prog=f"bioviz {name}", description=f"Write {what}.")
    parser.add_argument("path", help="where to write the file")
    parser.add_function_arguments(getattr(zoo.data, simulate), skip={"path"})
    args = parser.parse_args(argv).as_dict()
    path = getattr(zoo.data, write)(args.pop("path"), **args)
    print(f"wrote {path}")


ZOO_TOLERANCE = 5e-4  # a re-measured metric within this of the recorded one matches (CPU vs GPU, library versions)


def zoo_command(argv: list[str]) -> None:
    """``bioviz zoo list|info|pull|verify|add|test|reproduce|export``: the model zoo."""
    parser = argparse.ArgumentParser(prog="bioviz zoo", description="Published models by name, with weights "
                                     "verified by SHA-256.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the published models as a table").add_argument("pattern", nargs="?", default="*")
    sub.add_parser("info", help="one entry: metrics, recipe, input, weights").add_argument("name")
    sub.add_parser("pull", help="fetch and verify weights into the cache").add_argument("name", nargs="+")
    sub.add_parser("verify", help="check the sha256 of every local copy (no download)").add_argument(
        "name", nargs="*")
    add = sub.add_parser("add", help="import a weights file obtained elsewhere (checked against its entry)")
    add.add_argument("file")
    add.add_argument("--name", help="the entry it must be (default: the entry whose sha256 it has)")
    test = sub.add_parser("test", help="re-measure entries' metrics from their weights, beside the recorded ones")
    test.add_argument("name", nargs="+")
    test.add_argument("--data-root", help="the data folder, for entries tested on files (CIFAR-10)")
    repro = sub.add_parser("reproduce", help="train an entry again from its recipe (fit + test) in a fresh folder "
                           "and compare its metrics with the recorded ones")
    repro.add_argument("name")
    repro.add_argument("--data-root", help="the data folder, for entries trained on files (CIFAR-10)")
    repro.add_argument("--out", help="the run folder (default: zoo-reproduce/NAME-TIME); must be new or empty")
    repro.epilog = "Arguments after -- go to both fit and test, e.g. -- --trainer.devices 2"
    export = sub.add_parser("export", help="turn a Lightning checkpoint into a weights file and print its entry")
    export.add_argument("checkpoint")
    export.add_argument("--name", required=True, help="the zoo name of the new entry")
    export.add_argument("--out", default=".", help="folder for the weights file (default: .; zoo/weights to "
                        "ship it in the package)")
    export.add_argument("--metric", action="append", default=[], metavar="KEY=VALUE",
                        help="a measured metric to record in the entry (repeatable)")
    export.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="storage dtype of the floating-point tensors")
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(overrides) - 1] if "--" in argv else argv)
    if overrides and args.command != "reproduce":
        parser.error("arguments after -- are for `bioviz zoo reproduce` only")

    if args.command == "list":
        print_zoo_table([registry.model_info(name) for name in registry.list_models(args.pattern)])
    elif args.command == "info":
        info = registry.model_info(args.name).to_dict()
        info["configs_folder"] = str(importlib.resources.files("zoo.configs"))  # where configs/ is in this install
        print(yaml.safe_dump(info, sort_keys=False, width=116), end="")
    elif args.command == "pull":
        for name in args.name:
            print(f"{name}: {registry.download_weights(name)}")
    elif args.command == "verify":
        verify_copies(args.name or registry.list_models())
    elif args.command == "add":
        name, path = registry.add_weights(args.file, args.name)
        print(f"{args.file}: verified as the weights of {name}, added to the cache as {path}")
    elif args.command == "test":
        differ = []
        for name in args.name:
            entry = registry.model_info(name)
            measured = registry.evaluate(name, args.data_root)
            differ += [f"{name} {m}" for m in print_comparison(entry, measured, "re-measured")]
        if differ:
            print(f"differ by more than {ZOO_TOLERANCE}: {', '.join(differ)}")
            sys.exit(1)
    elif args.command == "reproduce":
        entry = registry.model_info(args.name)
        folder, measured, seconds = reproduce(entry, args.out, args.data_root, overrides)
        print(f"\n{entry.name}: trained again from its recipe in {folder} ({seconds / 60:.1f} min for fit + test)")
        print_comparison(entry, measured, "reproduced")
    elif args.command == "export":
        metrics = {}
        for item in args.metric:
            key, sep, value = item.partition("=")
            try:
                metrics[key] = float(value) if sep else None
            except ValueError:
                metrics[key] = None
            if metrics[key] is None:
                parser.error(f"--metric takes KEY=NUMBER, got {item!r}")
        path, entry = registry.export_checkpoint(args.checkpoint, args.name, args.out, metrics, args.dtype)
        print(f"wrote {path}\n# complete it and add it to zoo/registry.yaml under models: (docs/zoo.md)")
        print(yaml.safe_dump(entry, sort_keys=False, default_flow_style=None), end="")


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.0f} kB"


def print_zoo_table(entries: list) -> None:
    """Name, model, what it was trained on, its headline metric, weights size, and where the weights are."""
    rows = [("name", "model", "trained on", "headline metric", "size", "weights")]
    for e in entries:
        trained = e.trained_on if len(e.trained_on) <= 48 else e.trained_on[:47] + "…"
        rows.append((e.name, e.model.rpartition(".")[2], trained, f"{e.headline} {e.metrics[e.headline]:.4g}",
                     _size(e.weights.size), e.location()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if any(row[-1] == "unavailable" for row in rows):
        print("unavailable: not packaged, not cached, no URL; `bioviz zoo add FILE`, a mirror (BIOVIZ_ZOO_URL) or "
              "`bioviz zoo reproduce NAME` gets them")


def print_comparison(entry, measured: dict[str, float], label: str) -> list[str]:
    """Recorded, ``label`` (re-measured) and the paper's value of each of the entry's metrics; returns the metrics
    that differ from the recorded value by more than ``ZOO_TOLERANCE``."""
    paper = entry.paper.get("metrics") or {}
    print(f"{entry.name}  ({entry.trained_on})")
    print(f"  {'metric':28s} {'recorded':>10s} {label:>12s} {'difference':>11s} {'paper':>8s}")
    differ = []
    for metric, recorded in entry.metrics.items():
        value = measured.get(metric)
        difference = value - recorded if value is not None and abs(value - recorded) >= 5e-5 else 0.0
        text = f"{value:12.4f} {difference:+11.4f}" if value is not None else f"{'missing':>12s} {'':11s}"
        print(f"  {metric:28s} {recorded:10.4f} {text} {paper[metric] if metric in paper else '':>8}")
        if value is None or abs(value - recorded) > ZOO_TOLERANCE:
            differ.append(metric)
    if paper:
        print(f"  paper: {entry.paper.get('source', '')}")
    return differ


def verify_copies(names: list[str]) -> None:
    """Check the sha256 of every local copy of each entry's weights; exit 1 if any fails."""
    bad = False
    for name in names:
        w = registry.model_info(name).weights
        copies = [p for p in (weights.packaged_dir() / w.file, weights.cache_dir() / f"{w.sha256}{weights.SUFFIX}")
                  if p.is_file()]
        for path in copies:
            ok = weights.sha256_of(path) == w.sha256
            print(f"{name}: {'ok' if ok else 'SHA-256 MISMATCH'} {path}")
            bad = bad or not ok
        if not copies:
            print(f"{name}: no local copy (`bioviz zoo pull {name}`)")
    if bad:
        sys.exit(1)


@contextmanager
def working_directory(folder: Path):
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def config_file(path: str) -> str:
    """A recipe's ``configs/...`` path as a file of the installed ``zoo.configs`` package (checkout or wheel)."""
    if not path.startswith("configs/"):
        return str(Path(path).resolve())
    resource = importlib.resources.files("zoo.configs").joinpath(*path.split("/")[1:])
    if not resource.is_file():
        raise DataNotFoundError(f"the recipe's config {path} is not in this install ({resource})")
    return str(resource)


def reproduce(entry, out: str | None, data_root: str | None, overrides: list[str]) -> tuple[Path, dict, float]:
    """Run ``entry``'s recipe (``bioviz fit`` then ``bioviz test --ckpt_path best``, or ``last`` where the recipe
    says so) in a fresh folder; returns the folder, the test metrics and the wall time."""
    if entry.needs_data_root and data_root is None:
        raise UserError(f"{entry.name} trains on data files ({entry.trained_on}): give their folder with "
                        "--data-root DIR")
    folder = Path(out or f"zoo-reproduce/{entry.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if folder.exists() and any(folder.iterdir()):
        raise UserError(f"{folder} is not empty; reproduce runs in a fresh folder: give another --out")
    folder.mkdir(parents=True, exist_ok=True)
    args = entry.recipe.arguments(str(Path(data_root).resolve()) if data_root else None)
    args = [config_file(a) if i and args[i - 1] == "-c" else a for i, a in enumerate(args)] + list(overrides)
    checkpoint = entry.recipe.checkpoint
    print(f"reproducing {entry.name} in {folder}:\n  bioviz fit {' '.join(args)}\n  bioviz test {' '.join(args)} "
          f"--ckpt_path {checkpoint}")
    start = time.time()
    with working_directory(folder):
        BiovizCLI(args=["fit", *args])
        cli = BiovizCLI(args=["test", *args, "--ckpt_path", checkpoint])
    measured = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    return folder, measured, time.time() - start


COMMANDS = {
    "fit": "train a model: bioviz fit -c CONFIG (--ckpt_path last resumes)",
    "validate": "evaluate a checkpoint on the validation set",
    "test": "evaluate a checkpoint on the test set: bioviz test -c CONFIG --ckpt_path best",
    "predict": "write a model's predictions on the test images",
    "zoo": "pretrained models by name: list, info, test, reproduce, pull, verify, add, export",
    **{name: f"write {what}" for name, (_, _, what) in SIMULATIONS.items()},
}


def print_commands() -> None:
    print("usage: bioviz COMMAND [options]\n\nTrain, test and load biologically constrained models of vision.\n\n"
          "commands:")
    for name, text in COMMANDS.items():
        print(f"  {name:18s} {text}")
    print("\n`bioviz COMMAND --help` shows a command's options; fit, validate, test and predict are LightningCLI's.")


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for the next allocation instead of giving it back to the system.

    glibc maps every allocation over 32 MB afresh with mmap and unmaps it when it is freed, so a model with a large
    tensor (RetinaVVS's 134 MB dense layer: its gradient, its bfloat16 copy under autocast, the activations that
    touch it) faults in and zeroes hundreds of MB of new pages at every CPU training step, in the kernel. With mmap
    off and the heap trimmed only above 2 GB of free space, freed blocks are reused; the process keeps the memory of
    its peak. ``bioviz`` calls this first (BENCHMARKS.md, "Memory reuse on CPU"). Nothing is changed where the C
    library is not glibc or ``MALLOC_MMAP_MAX_`` is set in the environment (glibc's own switch, which then wins).
    Returns whether it applied.
    """
    if sys.platform != "linux" or "MALLOC_MMAP_MAX_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # no glibc (musl, ...)
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):
        print_commands()
        sys.exit(0 if argv else 2)
    keep_freed_memory()
    try:
        if argv[:1] and argv[0] in SIMULATIONS:
            simulate_command(argv[0], argv[1:])
        elif argv[:1] == ["zoo"]:
            zoo_command(argv[1:])
        else:
            BiovizCLI(args=args)
    except Exception as err:
        cause = _user_error(err)
        if cause is None:
            raise
        print(f"bioviz: error: {cause}", file=sys.stderr)
        sys.exit(2)


def _user_error(err: BaseException | None) -> UserError | None:
    """The UserError behind ``err``, also when jsonargparse wrapped it while instantiating a class; a checkpoint that
    ``torch.load(weights_only=True)`` refused is one too."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        if isinstance(err, pickle.UnpicklingError):
            first = " ".join(str(err).split(". ")[0].split())[:200]
            return UserError(f"a checkpoint could not be loaded without running the code it names ({first}); "
                             "give a checkpoint written by `bioviz fit`, from a source you trust")
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    main()
