"""The model zoo: published models by name, each a typed ``ZooEntry`` with SHA-256-verified weights.

``registry.yaml`` (package data) lists the entries. An entry names the model's class in ``zoo.models`` and its init
arguments, what it was trained on and the DataModule it was tested on, the recipe that trained it (stacked config
files and the exact commands), its measured metrics beside the paper's, the input a user must give it
(``InputSpec``, whose ``transforms()`` prepares an image as torchvision's weights do), and its weights file
(``zoo.weights``: where copies are found and how they are verified). The registry is checked when it is read: class
paths must name a class of ``zoo.models`` / ``zoo.data`` (nothing is imported by name from elsewhere), file names
must be plain names, hashes 64 hex digits, and an entry's input shape must be its model's ``in_shape``.

``load_model(name)`` checks that the init arguments stored in the weights file are the registry's, loads the state
dict strictly, and makes the model refuse an input of the wrong shape with a message naming the shape it expects.
``evaluate(name)`` re-measures an entry's metrics on its data.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

from zoo import weights as weights_files
from zoo.errors import RegistryError, ShapeMismatchError, UnknownModelError, UserError, WeightsError
from zoo.weights import Weights, sha256_of

__all__ = [
    "DATA_ROOT",
    "InputSpec",
    "Recipe",
    "UnknownModelError",
    "WeightsError",
    "ZooEntry",
    "add_weights",
    "download_weights",
    "evaluate",
    "export_checkpoint",
    "list_models",
    "load_model",
    "load_model_and_data",
    "model_info",
]

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
DATA_ROOT = "{data_root}"  # in an entry's data arguments and recipe: the folder of data files the user names
NORMALIZATIONS = ("none", "mean_std", "standardize")


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: images of ``channels`` x ``size`` whose pixels span ``value_range``, then normalised:
    ``none``; ``mean_std`` (``(x - mean) / std`` per channel, as torchvision's ``Normalize``); or ``standardize``
    (each image to mean 0 and SD 1 over its pixels; the simulated populations' images are standardised so)."""

    channels: int
    size: tuple[int, int]
    value_range: tuple[float, float] = (0.0, 1.0)
    normalize: str = "none"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def describe(self) -> str:
        colour = {1: "grey", 3: "RGB"}.get(self.channels, f"{self.channels} channels")
        text = (f"{self.channels} x {self.size[0]} x {self.size[1]} ({colour}), pixels in "
                f"[{self.value_range[0]:g}, {self.value_range[1]:g}]")
        if self.normalize == "mean_std":
            text += f", then (x - mean) / std with mean {list(self.mean)}, std {list(self.std)}"
        elif self.normalize == "standardize":
            text += ", then each image standardised to mean 0, SD 1"
        return text

    def transforms(self) -> Callable:
        """A callable that turns one image (PIL image, ``[H, W, C]`` uint8 array, or ``[C, H, W]`` tensor: uint8, or
        float in [0, 1]) into the ``[channels, *size]`` float tensor the model takes. Scales the image to cover the
        model's size (aspect ratio kept) and crops the centre, converts colour to grey as the data modules do (mean
        of R, G and B) or grey to colour, maps [0, 1] to ``value_range`` and normalises. Stack the results for a
        batch."""
        from torchvision.transforms import v2

        steps = [ToRGB(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True), ResizeToCover(self.size),
                 v2.CenterCrop(list(self.size)), ToChannels(self.channels)]
        if tuple(self.value_range) != (0.0, 1.0):
            steps.append(ToRange(*self.value_range))
        if self.normalize == "mean_std":
            steps.append(v2.Normalize(list(self.mean), list(self.std)))
        elif self.normalize == "standardize":
            steps.append(Standardize())
        return v2.Compose(steps)

    @classmethod
    def from_dict(cls, raw: object, where: str) -> InputSpec:
        raw = _mapping(raw, f"{where}: input", {"channels", "size", "value_range", "normalize", "mean", "std"})
        try:
            spec = cls(int(raw["channels"]), tuple(int(s) for s in raw["size"]),
                       tuple(float(v) for v in raw.get("value_range", (0.0, 1.0))), raw.get("normalize", "none"),
                       tuple(float(v) for v in raw.get("mean", ())), tuple(float(v) for v in raw.get("std", ())))
        except (KeyError, TypeError, ValueError) as err:
            raise RegistryError(f"{where}: input needs channels, size [H, W] and optionally value_range, normalize, "
                                f"mean, std ({err})") from err
        if len(spec.size) != 2 or len(spec.value_range) != 2 or spec.normalize not in NORMALIZATIONS:
            raise RegistryError(f"{where}: input.size and value_range take 2 numbers and normalize one of "
                                f"{', '.join(NORMALIZATIONS)}")
        if spec.normalize == "mean_std" and not (len(spec.mean) == len(spec.std) == spec.channels):
            raise RegistryError(f"{where}: input.normalize mean_std needs a mean and a std per channel")
        return spec


class ToRGB:
    """A PIL image of any mode (palette, grey, with alpha) as RGB; other inputs pass through."""

    def __call__(self, image):
        from PIL import Image

        return image.convert("RGB") if isinstance(image, Image.Image) else image

    def __repr__(self) -> str:
        return "ToRGB()"


class ResizeToCover:
    """Scale ``[C, H, W]`` by one factor so that it covers ``size`` (both sides at least as large), for a centre
    crop; images already of that size are left as they are."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional

        h, w = image.shape[-2:]
        if (h, w) == self.size:
            return image
        scale = max(self.size[0] / h, self.size[1] / w)
        target = [max(self.size[0], round(h * scale)), max(self.size[1], round(w * scale))]
        return functional.resize(image, target, antialias=True)

    def __repr__(self) -> str:
        return f"ResizeToCover({list(self.size)})"


class ToChannels:
    """``[C, H, W]`` -> ``channels``: the mean over colour channels for grey, a repeated grey channel for colour."""

    def __init__(self, channels: int):
        self.channels = channels

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[0] == 4:  # RGBA: drop alpha
            image = image[:3]
        if image.shape[0] == self.channels:
            return image
        if self.channels == 1:
            return image.mean(0, keepdim=True)
        if image.shape[0] == 1:
            return image.expand(self.channels, -1, -1)
        raise ShapeMismatchError(f"cannot turn an image of {image.shape[0]} channels into {self.channels}")

    def __repr__(self) -> str:
        return f"ToChannels({self.channels})"


class ToRange:
    """Map pixel values from [0, 1] to [low, high]."""

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image * (self.high - self.low) + self.low

    def __repr__(self) -> str:
        return f"ToRange({self.low:g}, {self.high:g})"


class Standardize:
    """Each image to mean 0 and SD 1 over all its pixels (a constant image becomes 0)."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image - image.mean()) / image.std().clamp_min(1e-8)

    def __repr__(self) -> str:
        return "Standardize()"


@dataclass(frozen=True)
class Recipe:
    """How an entry was trained: config files stacked in order (``configs/...``, shipped with the package as
    ``zoo.configs``) and further arguments, given to ``bioviz fit`` and then to ``bioviz test --ckpt_path
    <checkpoint>``: ``best`` (the best validation epoch, the default) or ``last`` (for papers that report the last
    epoch). ``{data_root}`` in an argument stands for the data folder the user names."""

    configs: tuple[str, ...]
    args: tuple[str, ...] = ()
    note: str = ""
    checkpoint: str = "best"

    def arguments(self, data_root: str | None = None) -> list[str]:
        args = [a for config in self.configs for a in ("-c", config)] + list(self.args)
        return [a.replace(DATA_ROOT, data_root or "DATA_ROOT") for a in args]

    def commands(self, data_root: str | None = None) -> list[str]:
        args = " ".join(self.arguments(data_root))
        return [f"bioviz fit {args}", f"bioviz test {args} --ckpt_path {self.checkpoint}"]


@dataclass(frozen=True)
class ZooEntry:
    """A published model. ``metrics`` were measured on ``data`` (a DataModule of ``zoo.data``, by class path and
    init arguments) by the recipe's test command; ``headline`` names the one ``bioviz zoo list`` shows; ``paper``
    holds the paper's numbers (``source`` and ``metrics``, usually on the paper's own data) where there are any."""

    name: str
    model: str
    init_args: dict
    trained_on: str
    data: dict
    recipe: Recipe
    metrics: dict[str, float]
    headline: str
    input: InputSpec
    weights: Weights
    paper: dict = field(default_factory=dict)
    notes: str = ""

    @property
    def model_class(self) -> type[pl.LightningModule]:
        return _zoo_class("zoo.models", self.model)

    @property
    def needs_data_root(self) -> bool:
        return DATA_ROOT in str(self.data) or any(DATA_ROOT in a for a in self.recipe.args)

    def transforms(self) -> Callable:
        """Prepare one of your images for this model (``InputSpec.transforms``)."""
        return self.input.transforms()

    def datamodule(self, data_root: str | Path | None = None) -> pl.LightningDataModule:
        """The DataModule the entry's metrics were measured on; ``data_root`` for entries tested on files."""
        if self.needs_data_root and data_root is None:
            raise UserError(f"{self.name} was tested on data files ({self.trained_on}): give their folder "
                            f"(--data-root DIR, or data_root=...)")
        args = _substitute(self.data.get("init_args") or {}, str(data_root))
        return _zoo_class("zoo.data", self.data["class_path"])(**args)

    def location(self) -> str:
        """Where a verified copy of the weights is: packaged, cached, remote or unavailable."""
        return weights_files.location(self.weights)

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "trained_on": self.trained_on,
                "headline": {self.headline: self.metrics.get(self.headline)}, "metrics": dict(self.metrics),
                "paper": dict(self.paper), "input": self.input.describe(), "commands": self.recipe.commands(),
                "recipe_note": self.recipe.note, "notes": self.notes, "init_args": self.init_args, "data": self.data,
                "weights": {"file": self.weights.file, "sha256": self.weights.sha256, "size": self.weights.size,
                            "dtype": self.weights.dtype, "urls": list(self.weights.urls),
                            "location": self.location()}}


def _substitute(value, data_root: str):
    if isinstance(value, str):
        return value.replace(DATA_ROOT, data_root)
    if isinstance(value, dict):
        return {k: _substitute(v, data_root) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, data_root) for v in value]
    return value


def zoo_classes(package: str) -> dict[str, type]:
    """The LightningModules ``zoo.models`` exports, or the LightningDataModules ``zoo.data`` exports, by name."""
    import importlib

    module = importlib.import_module(package)
    base = pl.LightningModule if package == "zoo.models" else pl.LightningDataModule
    return {n: getattr(module, n) for n in sorted(module.__all__)
            if isinstance(getattr(module, n), type) and issubclass(getattr(module, n), base)}


def _zoo_class(package: str, path: str) -> type:
    """The class ``path`` names, which must be one of ``zoo_classes(package)`` (nothing else is imported)."""
    module_name, _, class_name = path.rpartition(".")
    if module_name != package:
        raise RegistryError(f"{path!r} is not a class of {package}")
    classes = zoo_classes(package)
    if class_name not in classes:
        raise RegistryError(f"{package} has no class {class_name!r} (it has {', '.join(classes)})")
    return classes[class_name]


def _mapping(raw: object, where: str, allowed: set[str]) -> dict:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where} must be a mapping")
    unknown = set(raw) - allowed
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return raw


ENTRY_FIELDS = {"model", "init_args", "trained_on", "data", "recipe", "metrics", "headline", "paper", "input",
                "weights", "notes"}


def parse_entry(name: str, raw: object) -> ZooEntry:
    """A registry entry as a ``ZooEntry``, checked field by field (``RegistryError`` names what is wrong)."""
    where = f"zoo entry {name!r}"
    weights_files.plain_name(name, "a zoo entry name")
    raw = _mapping(raw, where, ENTRY_FIELDS)
    missing = sorted(ENTRY_FIELDS - {"paper", "notes"} - set(raw))
    if missing:
        raise RegistryError(f"{where}: missing field(s) {missing}")
    for key, package in (("model", "zoo.models"), ("data", "zoo.data")):
        path = raw[key] if key == "model" else (raw[key] or {}).get("class_path", "")
        if not str(path).startswith(package + "."):
            raise RegistryError(f"{where}: {key} must be a class of {package}, got {path!r}")
        _zoo_class(package, path)  # the name must be one the package exports
    recipe = _mapping(raw["recipe"], f"{where}: recipe", {"configs", "args", "note", "checkpoint"})
    if not recipe.get("configs"):
        raise RegistryError(f"{where}: recipe.configs must list the config files that trained it")
    if recipe.get("checkpoint", "best") not in ("best", "last"):
        raise RegistryError(f"{where}: recipe.checkpoint must be 'best' or 'last', got {recipe['checkpoint']!r}")
    try:
        metrics = {str(k): float(v) for k, v in (raw["metrics"] or {}).items()}
    except (AttributeError, TypeError, ValueError) as err:
        raise RegistryError(f"{where}: metrics must map metric names to numbers ({err})") from err
    if raw["headline"] not in metrics:
        raise RegistryError(f"{where}: headline {raw['headline']!r} is not one of its metrics {sorted(metrics)}")
    spec = InputSpec.from_dict(raw["input"], where)
    in_shape = (raw["init_args"] or {}).get("in_shape")
    if in_shape is not None and tuple(int(s) for s in in_shape) != spec.shape:
        raise RegistryError(f"{where}: input {list(spec.shape)} differs from the model's in_shape {list(in_shape)}")
    paper = _mapping(raw.get("paper") or {}, f"{where}: paper", {"source", "metrics", "note"})
    return ZooEntry(name=name, model=raw["model"], init_args=dict(raw["init_args"] or {}),
                    trained_on=str(raw["trained_on"]), data=dict(raw["data"]),
                    recipe=Recipe(tuple(recipe["configs"]), tuple(str(a) for a in recipe.get("args") or ()),
                                  str(recipe.get("note", "")), str(recipe.get("checkpoint", "best"))),
                    metrics=metrics, headline=raw["headline"], input=spec,
                    weights=Weights.from_dict(raw["weights"], where), paper=dict(paper),
                    notes=str(raw.get("notes", "")))


@cache
def _read_registry(path: Path) -> dict[str, ZooEntry]:
    data = yaml.safe_load(path.read_text()) or {}
    return {name: parse_entry(name, raw) for name, raw in (data.get("models") or {}).items()}


def _registry() -> dict[str, ZooEntry]:
    return _read_registry(REGISTRY_FILE)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the published models matching a shell-style ``pattern``."""
    return sorted(name for name in _registry() if fnmatch.fnmatchcase(name, pattern))


def model_info(name: str) -> ZooEntry:
    """The entry of ``name``: model class, init args, data, recipe, metrics, input spec (``.transforms()``), weights."""
    entries = _registry()
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(f"no model named {name!r} in the zoo.{hint} `bioviz zoo list` shows them all.")
    return entries[name]


def download_weights(name: str) -> Path:
    """Path of a verified copy of ``name``'s weights (packaged, cached, or downloaded into the cache)."""
    return weights_files.fetch(name, model_info(name).weights)


def add_weights(path: str | Path, name: str | None = None) -> tuple[str, Path]:
    """Import a weights file obtained elsewhere into the cache, as the weights of ``name`` or, without a name, of
    the entry whose sha256 it has. Returns the entry's name and the cached path."""
    if name is None:
        if not Path(path).is_file():
            raise UserError(f"no file at {path}")
        digest = sha256_of(path)
        matches = [n for n, entry in _registry().items() if entry.weights.sha256 == digest]
        if not matches:
            raise WeightsError(f"{path} (sha256 {digest[:12]}...) is the weights file of no zoo entry; nothing was "
                               "added. `bioviz zoo list` shows the entries; name one to see what it expects")
        name = matches[0]
    return name, weights_files.add(path, name, model_info(name).weights)


class InputCheck:
    """A forward pre-hook that refuses input of another shape than the entry's, naming the shape it expects."""

    def __init__(self, name: str, spec: InputSpec):
        self.name, self.spec = name, spec

    def __call__(self, module, args):
        images = args[0] if args else None
        if isinstance(images, torch.Tensor) and images.ndim == 4 and tuple(images.shape[1:]) == self.spec.shape:
            return None
        got = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeMismatchError(
            f"{self.name} takes a batch of images [B, {', '.join(map(str, self.spec.shape))}] "
            f"({self.spec.describe()}), got {got}. Prepare each image with "
            f"zoo.model_info({self.name!r}).transforms() and stack them.")


def load_model(name: str, pretrained: bool = True, device: str | torch.device = "cpu") -> pl.LightningModule:
    """The published model ``name`` on ``device`` in eval mode, with its verified weights unless
    ``pretrained=False``. It refuses input of any other shape than its entry's ``input``."""
    entry = model_info(name)
    cls = entry.model_class
    if pretrained:
        path, data = weights_files.fetch_bytes(name, entry.weights)  # verified: these bytes are the ones loaded
        content = weights_files.decode(data, str(path))
        if content.model != entry.model or _comparable(content.init_args) != _comparable(entry.init_args):
            raise WeightsError(f"{path} holds {content.model} with init args {content.init_args}, but the registry "
                               f"says {entry.model} with {entry.init_args}; refusing to load a mismatched file")
        if content.dtype != entry.weights.dtype:
            raise WeightsError(f"{path} stores {content.dtype} tensors, but the registry says {entry.weights.dtype}")
    model = cls(**copy.deepcopy(entry.init_args))
    if pretrained:
        model.load_state_dict(content.state_dict)  # strict; stored half-precision tensors are cast to the model's
    model.register_forward_pre_hook(InputCheck(name, entry.input))
    return model.to(device).eval()


def load_model_and_data(source: str | Path) -> tuple[pl.LightningModule, dict | None]:
    """A model in eval mode on the CPU from a zoo name or from a checkpoint written by ``bioviz fit``, and the data
    it was trained on as ``{"class_path", "init_args"}`` (the entry's, or the run's ``config.yaml`` beside the
    checkpoint; None when there is none). For scripts that accept either, such as ``examples/``."""
    path = Path(source)
    if not path.is_file():
        if path.suffix == ".ckpt" or "/" in str(source):
            raise WeightsError(f"no checkpoint at {source} (and it is no zoo name: `bioviz zoo list` shows them)")
        entry = model_info(str(source))
        return load_model(entry.name), copy.deepcopy(entry.data)
    cls, init_args, ckpt = _read_checkpoint(path)
    model = cls(**init_args)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), _run_data(path)


def _read_checkpoint(path: Path) -> tuple[type[pl.LightningModule], dict, dict]:
    """A ``bioviz fit`` checkpoint's model class (resolved within ``zoo.models`` only), its init arguments and the
    whole checkpoint, read with ``weights_only=True`` (no code runs)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - not a checkpoint, or one holding more than tensors and plain values
        raise WeightsError(f"{path} is not a checkpoint of `bioviz fit` that loads without running code "
                           f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from err
    hparams = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    class_path = str(hparams.get("_class_path", ""))
    if not class_path or "state_dict" not in ckpt:
        raise WeightsError(f"{path} does not name its model class or has no state dict (train it with `bioviz fit`)")
    cls = _zoo_class("zoo.models", "zoo.models." + class_path.rpartition(".")[2])  # LightningCLI may record a module
    retired = set(getattr(cls, "retired_hparams", ()))
    return cls, {k: v for k, v in hparams.items() if not k.startswith("_") and k not in retired}, ckpt


def _run_data(ckpt_path: Path) -> dict | None:
    """The data section of the run's ``config.yaml`` (``runs/<name>/version_N/config.yaml`` beside ``checkpoints/``)."""
    config = ckpt_path.resolve().parent.parent / "config.yaml"
    return yaml.safe_load(config.read_text()).get("data") if config.is_file() else None


def _comparable(value):
    """``value`` with tuples as lists and numbers as floats, for comparing arguments read from YAML and JSON."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def evaluate(name: str, data_root: str | Path | None = None, accelerator: str = "auto") -> dict[str, float]:
    """Re-measure ``name``'s metrics: its verified weights, tested on its entry's data (``data_root`` for entries
    tested on files). Returns every metric the test logs."""
    entry = model_info(name)
    data = entry.datamodule(data_root)
    model = load_model(name)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False)
    return {k: float(v) for k, v in trainer.test(model, datamodule=data, verbose=False)[0].items()}


def export_checkpoint(ckpt_path: str | Path, name: str, folder: str | Path = ".",
                      metrics: dict[str, float] | None = None, dtype: str = "float32") -> tuple[Path, dict]:
    """Turn a Lightning checkpoint into a weights file; returns its path and a registry entry to complete.

    The file holds the model class, its init arguments and the state dict in ``dtype``. The model is rebuilt from
    them and loaded strictly before anything is written, so an entry that cannot load is never published.
    """
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise WeightsError(f"no checkpoint at {ckpt_path}")
    cls, init_args, ckpt = _read_checkpoint(ckpt_path)
    state_dict = ckpt["state_dict"]
    model_path = f"zoo.models.{cls.__name__}"
    try:
        cls(**copy.deepcopy(init_args)).load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError) as err:
        raise WeightsError(f"{ckpt_path}: its weights do not load into {model_path} rebuilt from its "
                           f"hyperparameters ({' '.join(str(err).split())[:300]}); nothing was written") from err
    path = weights_files.write(folder, name, model_path, init_args, state_dict, dtype)
    data = _run_data(ckpt_path)
    in_shape = init_args.get("in_shape") or [1, 1, 1]
    entry = {
        "model": model_path,
        "init_args": init_args,
        "trained_on": "WHAT IT WAS TRAINED ON",
        "data": data,
        "recipe": {"configs": ["CONFIG FILES"], "args": [],
                   "note": f"{ckpt_path.name} at epoch {ckpt.get('epoch')}, step {ckpt.get('global_step')}"},
        "metrics": dict(metrics or {}),
        "headline": next(iter(metrics or {}), "METRIC"),
        "input": {"channels": in_shape[0], "size": list(in_shape[1:]), "value_range": [0.0, 1.0],
                  "normalize": "none"},
        "weights": {"file": path.name, "sha256": sha256_of(path), "size": path.stat().st_size, "dtype": dtype,
                    "urls": []},
    }
    return path, {name: entry}
