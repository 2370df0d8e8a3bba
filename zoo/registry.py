"""The model zoo: published models by name, their weights downloaded and verified by full SHA-256.

An entry of ``registry.yaml`` names the LightningModule class and its init arguments, the data and recipe that
trained it, its measured metrics, and its weights file (name, sha256, size, URLs). A weights file is a
``torch.save``'d dict holding only ``{"format", "model", "init_args", "state_dict"}``.

Weights are looked for, in order, in the cache (``$BIOVIZ_HOME``, default ``~/.cache/bioviz``, content-addressed by
sha256 and re-verified on every use), the repository's ``checkpoints/``, the mirror ``$BIOVIZ_ZOO_URL``, and the
entry's URLs; ``BIOVIZ_OFFLINE=1`` stops before the network. Nothing is deserialised before its hash matches, and
then only with ``torch.load(weights_only=True)``. A download streams to a temporary file beside the cache and is
renamed into place only when its sha256 matches, so a bad or partial download never replaces a good file; a lock
file keeps concurrent pulls (DDP ranks) from fetching twice.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib
import io
import os
import shutil
import urllib.parse
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

from zoo.errors import DataFileError, DataNotFoundError, UserError
from zoo.files import atomic_file, download, file_digest

__all__ = [
    "WEIGHTS_FORMAT",
    "UnknownModelError",
    "WeightsError",
    "cache_dir",
    "download_weights",
    "export_checkpoint",
    "list_models",
    "local_copies",
    "load_model",
    "load_weights_file",
    "model_info",
    "sha256_of",
    "write_weights_file",
]

WEIGHTS_FORMAT = "bioviz-weights-1"
REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
CHECKPOINTS_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


class UnknownModelError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsError(UserError, RuntimeError):
    """Weights could not be found, fetched or verified; the message lists every source tried."""


@cache
def _read_registry(path: Path) -> dict[str, dict]:
    data = yaml.safe_load(path.read_text()) or {}
    return data.get("models") or {}


def _registry() -> dict[str, dict]:
    return _read_registry(REGISTRY_FILE)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the published models matching a shell-style ``pattern``."""
    return sorted(name for name in _registry() if fnmatch.fnmatchcase(name, pattern))


def model_info(name: str) -> dict:
    """The registry entry of ``name`` (model class, init args, data, recipe, metrics, weights)."""
    entries = _registry()
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(f"no model named {name!r} in the zoo.{hint} `bioviz zoo list` shows them all.")
    return {"name": name, **entries[name]}


def cache_dir() -> Path:
    return Path(os.environ.get("BIOVIZ_HOME") or Path.home() / ".cache" / "bioviz") / "weights"


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


def _offline() -> bool:
    return os.environ.get("BIOVIZ_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


@contextmanager
def _lock(path: Path):
    """An exclusive advisory lock on ``path`` (POSIX); other platforms rely on the atomic rename alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:
            pass
        yield


def _urls(weights: dict) -> list[str]:
    urls = []
    mirror = os.environ.get("BIOVIZ_ZOO_URL")
    if mirror:
        urls.append(mirror.rstrip("/") + "/" + urllib.parse.quote(weights["file"]))
    return urls + list(weights.get("urls") or [])


def download_weights(name: str) -> Path:
    """Path of ``name``'s verified weights file in the cache, fetching it if needed."""
    weights = model_info(name)["weights"]
    expected = weights["sha256"]
    target = cache_dir() / f"{expected}.pt"
    failures = []
    with _lock(target.with_name(f".{expected}.lock")):
        if target.exists():
            if sha256_of(target) == expected:
                return target
            target.unlink()  # tampered or corrupted: fetch it again
            failures.append(f"cache {target}: sha256 mismatch, removed")
        local = CHECKPOINTS_DIR / weights["file"]
        if local.exists():
            if sha256_of(local) == expected:
                with atomic_file(target) as out, open(local, "rb") as source:
                    shutil.copyfileobj(source, out)
                return target
            failures.append(f"{local}: sha256 mismatch")
        urls = _urls(weights)
        if _offline():
            failures.append(f"BIOVIZ_OFFLINE is set, so {len(urls)} URL(s) were not tried")
        else:
            for url in urls:
                try:
                    return download(url, target, "sha256", expected, size=weights.get("size"))
                except (DataNotFoundError, DataFileError) as err:
                    failures.append(str(err))
    tried = "\n  - ".join(failures or ["the entry has no URLs and no local copy"])
    raise WeightsError(
        f"no verified weights for {name!r} ({weights['file']}, sha256 {expected[:12]}...). Tried:\n  - {tried}\n"
        "Fix: connect to the network, set BIOVIZ_ZOO_URL to a mirror that has the file, or put the file in "
        f"{CHECKPOINTS_DIR} or the cache {cache_dir()}."
    )


def _model_class(path: str) -> type[pl.LightningModule]:
    module_name, _, class_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
        raise WeightsError(f"{path} is not a LightningModule class")
    return cls


def load_weights_file(path: Path, sha256: str | None = None) -> dict:
    """Read a weights file, after checking its full sha256 when one is given; tensors only, no pickled code."""
    if sha256 is not None and sha256_of(path) != sha256:
        raise WeightsError(f"{path}: sha256 does not match {sha256}; refusing to load it")
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or content.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path} is not a bioviz weights file (format {WEIGHTS_FORMAT})")
    return content


def load_model(name: str, pretrained: bool = True, map_location: str | torch.device = "cpu") -> pl.LightningModule:
    """The published model ``name`` in eval mode, with its verified weights unless ``pretrained=False``."""
    info = model_info(name)
    cls = _model_class(info["model"])
    if not pretrained:
        return cls(**info.get("init_args", {})).eval()
    path = download_weights(name)
    content = load_weights_file(path)  # download_weights has just checked its sha256
    if content["model"] != info["model"]:
        raise WeightsError(f"{path} holds a {content['model']}, but the registry says {info['model']}")
    model = cls(**content["init_args"])
    model.load_state_dict(content["state_dict"])
    return model.to(map_location).eval()


def write_weights_file(model_path: str, init_args: dict, state_dict: dict, folder: Path, name: str) -> Path:
    """Write a weights file named ``<name>-<sha256 prefix>.pt`` into ``folder``; returns its path."""
    content = {"format": WEIGHTS_FORMAT, "model": model_path, "init_args": init_args,
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}}
    buffer = io.BytesIO()  # torch.save names its archive after the file; a buffer keeps the bytes reproducible
    torch.save(content, buffer)
    data = buffer.getvalue()
    target = Path(folder) / f"{name}-{hashlib.sha256(data).hexdigest()[:8]}.pt"
    with atomic_file(target) as out:
        out.write(data)
    return target


def export_checkpoint(ckpt_path: str | Path, name: str, folder: str | Path = "checkpoints",
                      metrics: dict[str, float] | None = None) -> tuple[Path, dict]:
    """Turn a Lightning checkpoint into a slim weights file; returns its path and its registry entry.

    The file holds the model class, its init arguments (minus the model's ``init_only_hparams``, which only
    initialise parameters the weights overwrite) and the state dict. The model is rebuilt from them and loaded
    strictly before anything is written, so an entry that cannot load is never published.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise WeightsError(f"no checkpoint at {ckpt_path}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    hparams = dict(ckpt.get("hyper_parameters") or {})
    model_path = hparams.get("_class_path")
    if not model_path:
        raise WeightsError(f"{ckpt_path} does not name its model class (train it with `bioviz fit`)")
    cls = _model_class(model_path)
    skip = set(getattr(cls, "init_only_hparams", ()))
    init_args = {k: v for k, v in hparams.items() if not k.startswith("_") and k not in skip}
    cls(**init_args).load_state_dict(ckpt["state_dict"])  # raises if the file would not load
    path = write_weights_file(model_path, init_args, ckpt["state_dict"], Path(folder), name)
    run_config = ckpt_path.parent.parent / "config.yaml"
    recipe = f"epoch {ckpt.get('epoch')}, step {ckpt.get('global_step')} of a `bioviz fit` run"
    entry = {
        "model": model_path,
        "init_args": init_args,
        "data": yaml.safe_load(run_config.read_text()).get("data") if run_config.exists() else None,
        "recipe": f"{recipe} (config: {run_config})" if run_config.exists() else recipe,
        "metrics": dict(metrics or {}),
        "weights": {"file": path.name, "sha256": sha256_of(path), "size": path.stat().st_size, "urls": []},
    }
    return path, {name: entry}


def local_copies(name: str) -> list[tuple[Path, bool]]:
    """Every local copy of ``name``'s weights (cache, repository ``checkpoints/``) and whether its sha256 matches."""
    weights = model_info(name)["weights"]
    candidates = [cache_dir() / f"{weights['sha256']}.pt", CHECKPOINTS_DIR / weights["file"]]
    return [(path, sha256_of(path) == weights["sha256"]) for path in candidates if path.exists()]
