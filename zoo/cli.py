"""The ``bioviz`` command line.

``bioviz fit|validate|test|predict`` is LightningCLI in subclass mode: a config or the command line picks any
LightningModule in ``zoo.models`` and any DataModule in ``zoo.data`` by class name. ``bioviz simulate-v1 PATH`` and
``bioviz simulate-stringer PATH`` write simulated populations as data files; ``bioviz zoo ...`` is the model zoo.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.callbacks import BasePredictionWriter, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import zoo.data
import zoo.models
from zoo.errors import DataNotFoundError, UserError

# In-memory tensor loaders need no worker processes; Lightning's advice to add some does not apply.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()  # an advert printed on every run
)

# Data properties a model may take from its DataModule; a link applies only where both sides have the name.
DATA_LINKS = ("n_neurons", "in_shape", "mean_responses", "num_classes")
RUNS_DIR = "runs"


def known_classes() -> str:
    models = [n for n in zoo.models.__all__ if isinstance(getattr(zoo.models, n), type)]
    data = [n for n in zoo.data.__all__
            if isinstance(getattr(zoo.data, n), type) and issubclass(getattr(zoo.data, n), pl.LightningDataModule)]
    return f"Known models: {', '.join(sorted(models))}. Known data modules: {', '.join(sorted(data))}."


class BiovizArgumentParser(LightningArgumentParser):
    def error(self, message: str, ex: Exception | None = None):
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
    metric, learning-rate monitor, seed 0, data properties linked into the model, and ``--ckpt_path best|last``
    resolved to the newest run of the same logger name (also in a new process)."""

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

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        which = config.get("ckpt_path")
        if which not in ("best", "last"):
            return
        found = find_checkpoint(config.trainer, which)
        if found is not None:
            print(f"using {which} checkpoint {found}", file=sys.stderr)
            config.ckpt_path = str(found)
            logger = config.trainer.get("logger")
            if subcommand == "fit" and isinstance(logger, Namespace) and "init_args" in logger:
                # Resume in the run's own folder: its checkpoint callback state (best so far) reloads, and
                # TensorBoard shows one continuing run.
                if logger.init_args.get("version") is None:
                    logger.init_args.version = found.parent.parent.name
        elif subcommand == "fit" and which == "last":
            print(f"no last.ckpt in {_checkpoint_dirs(config.trainer)}; starting a new run", file=sys.stderr)
            config.ckpt_path = None
        else:
            raise DataNotFoundError(
                f"--ckpt_path {which}: no {which}.ckpt in {_checkpoint_dirs(config.trainer)}. "
                f"Train first with `bioviz fit` using the same config, or give the checkpoint's path."
            )

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
        return super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})


# `bioviz NAME PATH [--arg value ...]`: write a simulated population as a data file; the arguments are the simulation
# function's own.
SIMULATIONS = {
    "simulate-v1": ("simulate_v1", "write_synthetic_v1", "a simulated V1 population as a neural-response .npz"),
    "simulate-stringer": ("simulate_stringer", "write_simulated_stringer",
                          "a simulated orientation-tuned population as an .npz in the Stringer layout"),
}


def simulate_command(name: str, argv: list[str]) -> None:
    simulate, write, what = SIMULATIONS[name]
    parser = ArgumentParser(prog=f"bioviz {name}", description=f"Write {what}.")
    parser.add_argument("path", help="where to write the .npz")
    parser.add_function_arguments(getattr(zoo.data, simulate))
    args = parser.parse_args(argv).as_dict()
    path = getattr(zoo.data, write)(args.pop("path"), **args)
    print(f"wrote {path}")


def zoo_command(argv: list[str]) -> None:
    """``bioviz zoo list|info|pull|verify|export``: the model zoo."""
    from zoo import registry

    parser = argparse.ArgumentParser(prog="bioviz zoo", description="Published models by name, with weights "
                                     "downloaded and verified by SHA-256.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the published models").add_argument("pattern", nargs="?", default="*")
    sub.add_parser("info", help="show one entry").add_argument("name")
    sub.add_parser("pull", help="download and verify weights into the cache").add_argument("name", nargs="+")
    sub.add_parser("verify", help="check the sha256 of every local copy (no download)").add_argument(
        "name", nargs="*")
    export = sub.add_parser("export", help="turn a Lightning checkpoint into a weights file and print its entry")
    export.add_argument("checkpoint")
    export.add_argument("--name", required=True, help="the zoo name of the new entry")
    export.add_argument("--out", default="checkpoints", help="folder for the weights file (default: checkpoints)")
    export.add_argument("--metric", action="append", default=[], metavar="KEY=VALUE",
                        help="a measured metric to record in the entry (repeatable)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in registry.list_models(args.pattern):
            info = registry.model_info(name)
            metrics = ", ".join(f"{k} {v}" for k, v in (info.get("metrics") or {}).items())
            print(f"{name:28s} {info['model'].rsplit('.', 1)[-1]:16s} {metrics}")
    elif args.command == "info":
        print(yaml.safe_dump(registry.model_info(args.name), sort_keys=False, default_flow_style=None), end="")
    elif args.command == "pull":
        for name in args.name:
            print(f"{name}: {registry.download_weights(name)}")
    elif args.command == "verify":
        bad = False
        for name in args.name or registry.list_models():
            copies = registry.local_copies(name)
            for path, ok in copies:
                print(f"{name}: {'ok' if ok else 'SHA-256 MISMATCH'} {path}")
                bad = bad or not ok
            if not copies:
                print(f"{name}: not downloaded (bioviz zoo pull {name})")
        if bad:
            sys.exit(1)
    elif args.command == "export":
        metrics = {}
        for item in args.metric:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--metric takes KEY=VALUE, got {item!r}")
            metrics[key] = float(value)
        path, entry = registry.export_checkpoint(args.checkpoint, args.name, args.out, metrics)
        print(f"wrote {path}\n# add to zoo/registry.yaml under models:, with the URLs where the file is published")
        print(yaml.safe_dump(entry, sort_keys=False, default_flow_style=None), end="")


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
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
    """The UserError behind ``err``, also when jsonargparse wrapped it while instantiating a class."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    main()
