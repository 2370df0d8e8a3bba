"""Zoo weights: the file format, where a verified copy of a file is found, and how a copy gets there.

A weights file is a safetensors file: tensors and one metadata field, ``bioviz``, whose JSON names the format, the
model's class path, its init arguments and the dtype its floating-point tensors were stored in. Reading one runs no
code (no pickle), and its bytes are reproducible: the same tensors and arguments give the same SHA-256.

A copy is used only after its full SHA-256 matches the entry's. The bytes are read once, hashed and parsed from
memory, so the bytes that were checked are the bytes that are loaded. Copies are looked for in this order:

1. packaged: ``zoo/weights/<file>`` inside the installed package (small weights ship in the wheel, so an offline
   install loads them);
2. cached: ``$BIOVIZ_HOME/weights/<sha256>.safetensors`` (default ``~/.cache/bioviz``), content-addressed and
   re-verified on every use; a damaged copy is removed and fetched again;
3. the mirror ``$BIOVIZ_ZOO_URL/<file>``, then the entry's URLs. https, http and file URLs stream through
   ``zoo.files.download``; ``hf://owner/repo@revision/path/in/repo`` goes through ``huggingface_hub`` (the ``hub``
   extra; ``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured), with the SHA-256 check on top of the library's own. A
   download lands in the cache only if it verifies; a lock file keeps parallel pulls (DDP ranks) from fetching twice.

``BIOVIZ_OFFLINE=1`` stops before the network. A copy obtained any other way is imported with ``add``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
import struct
import tempfile
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from zoo.errors import DataFileError, DataNotFoundError, RegistryError, WeightsError
from zoo.files import CHUNK, atomic_file, download, file_digest

__all__ = ["FORMAT", "Weights", "WeightsContent", "add", "cache_dir", "decode", "encode", "fetch", "fetch_bytes",
           "location",
           "packaged_dir", "read", "sha256_of", "write"]

FORMAT = "bioviz-weights-2"
SUFFIX = ".safetensors"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
URL_SCHEMES = ("https", "http", "file", "hf")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
HOW_TO_GET_WEIGHTS = ("`bioviz zoo add FILE` imports a copy you have, BIOVIZ_ZOO_URL=URL points at a mirror that "
                      "has the file, and `bioviz zoo reproduce {name}` trains the model again from its recipe")


def plain_name(value: object, what: str) -> str:
    """``value`` if it is a plain file name (letters, digits, ``.``, ``_``, ``-``; no folders, no ``..``)."""
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise RegistryError(f"{what} must be a plain file name (letters, digits, '.', '_', '-'), got {value!r}")
    return value


@dataclass(frozen=True)
class Weights:
    """A published weights file: its name, full SHA-256 (lower-case hex), size in bytes, the dtype of its floating
    tensors, and the URLs it can be downloaded from (none for packaged weights)."""

    file: str
    sha256: str
    size: int
    dtype: str = "float32"
    urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: object, where: str) -> Weights:
        if not isinstance(raw, dict):
            raise RegistryError(f"{where}: weights must be a mapping with file, sha256, size, dtype and urls")
        unknown = set(raw) - {"file", "sha256", "size", "dtype", "urls"}
        if unknown:
            raise RegistryError(f"{where}: unknown weights field(s) {sorted(unknown)}")
        file = plain_name(raw.get("file"), f"{where}: weights.file")
        if not file.endswith(SUFFIX):
            raise RegistryError(f"{where}: weights.file must be a {SUFFIX} file, got {file!r}")
        sha256 = str(raw.get("sha256", "")).strip().lower()
        if not _SHA256.fullmatch(sha256):
            raise RegistryError(f"{where}: weights.sha256 must be 64 hexadecimal digits, got {raw.get('sha256')!r}")
        size = raw.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise RegistryError(f"{where}: weights.size must be the file's size in bytes, got {size!r}")
        dtype = raw.get("dtype", "float32")
        if dtype not in DTYPES:
            raise RegistryError(f"{where}: weights.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        urls = tuple(raw.get("urls") or ())
        for url in urls:
            scheme = urllib.parse.urlparse(str(url)).scheme
            if scheme not in URL_SCHEMES:
                raise RegistryError(f"{where}: weights URL {url!r}: only {', '.join(URL_SCHEMES)} URLs are allowed")
            if scheme == "hf":
                parse_hf_url(url)
        return cls(file, sha256, size, dtype, urls)


@dataclass(frozen=True)
class WeightsContent:
    """What a weights file holds: the model's class path and init arguments, and its state dict."""

    model: str
    init_args: dict
    dtype: str
    state_dict: dict[str, torch.Tensor]


def encode(model: str, init_args: dict, state_dict: dict[str, torch.Tensor], dtype: str = "float32") -> bytes:
    """The bytes of a weights file. Floating-point tensors are stored in ``dtype``, others as they are."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(DTYPES[dtype])
        tensors[key] = value.contiguous().clone()  # safetensors refuses tensors that share memory
    # One metadata field: safetensors writes several in an arbitrary order, which would change the file's hash.
    meta = json.dumps({"format": FORMAT, "model": model, "init_args": init_args, "dtype": dtype}, sort_keys=True)
    return save_tensors(tensors, metadata={"bioviz": meta})


def decode(data: bytes, origin: str) -> WeightsContent:
    """Parse the bytes of a weights file (``origin`` names it in errors)."""
    try:
        (header_size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + header_size])
        meta = json.loads(header["__metadata__"]["bioviz"])
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        content = WeightsContent(str(meta["model"]), dict(meta["init_args"]), str(meta["dtype"]), load_tensors(data))
    except Exception as err:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise WeightsError(f"{origin} is not a bioviz weights file ({FORMAT}, safetensors): "
                           f"{type(err).__name__}: {err}") from err
    return content


def write(folder: str | Path, name: str, model: str, init_args: dict, state_dict: dict[str, torch.Tensor],
          dtype: str = "float32") -> Path:
    """Write ``<folder>/<name>-<sha256 prefix>.safetensors`` atomically; returns its path."""
    data = encode(model, init_args, state_dict, dtype)
    target = Path(folder) / f"{plain_name(name, 'the entry name')}-{sha256_bytes(data)[:8]}{SUFFIX}"
    with atomic_file(target) as out:
        out.write(data)
    return target


def read(path: str | Path, sha256: str | None = None) -> WeightsContent:
    """Read a weights file, after checking its full SHA-256 when one is given."""
    data = Path(path).read_bytes()
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise WeightsError(f"{path}: sha256 does not match {sha256}; refusing to load it")
    return decode(data, str(path))


def sha256_of(path: str | Path) -> str:
    return file_digest(path, "sha256")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("BIOVIZ_HOME") or Path.home() / ".cache" / "bioviz") / "weights"


def packaged_dir() -> Path:
    """The folder of the weights that ship inside the package."""
    return Path(str(importlib.resources.files("zoo") / "weights"))


def offline() -> bool:
    return os.environ.get("BIOVIZ_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def remote_urls(weights: Weights) -> list[str]:
    """The mirror's URL for the file (if ``BIOVIZ_ZOO_URL`` is set), then the entry's URLs."""
    mirror = os.environ.get("BIOVIZ_ZOO_URL")
    return ([mirror.rstrip("/") + "/" + urllib.parse.quote(weights.file)] if mirror else []) + list(weights.urls)


def _cached(weights: Weights) -> Path:
    return cache_dir() / f"{weights.sha256}{SUFFIX}"


def location(weights: Weights) -> str:
    """Where a verified copy is: ``packaged``, ``cached``, ``remote`` (only at a URL) or ``unavailable``."""
    for where, path in (("packaged", packaged_dir() / weights.file), ("cached", _cached(weights))):
        if path.is_file() and sha256_of(path) == weights.sha256:
            return where
    return "remote" if remote_urls(weights) else "unavailable"


@contextmanager
def _lock(path: Path):
    """An exclusive advisory lock on ``path`` (POSIX); other platforms rely on the atomic rename alone."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - closed below
    except OSError as err:
        raise WeightsError(f"the weights cache {path.parent} is not writable ({err.strerror}); set BIOVIZ_HOME to "
                           "a folder you can write") from err
    with handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:
            pass
        yield


def fetch(name: str, weights: Weights) -> Path:
    """Path of a verified copy of ``name``'s weights: packaged, cached, or downloaded into the cache."""
    return fetch_bytes(name, weights)[0]


def _verified_bytes(path: Path, weights: Weights) -> bytes | None:
    """The bytes of ``path`` if their sha256 is the entry's, else None: read once, so the bytes that were checked
    are the bytes a caller parses."""
    data = path.read_bytes()
    return data if sha256_bytes(data) == weights.sha256 else None


def fetch_bytes(name: str, weights: Weights) -> tuple[Path, bytes]:
    """``fetch``, and the verified bytes of the copy it found (for loading them without reading the file again)."""
    failures = []
    packaged = packaged_dir() / weights.file
    if packaged.is_file():
        if (data := _verified_bytes(packaged, weights)) is not None:
            return packaged, data
        failures.append(f"the packaged copy {packaged} fails the sha256 check (reinstall bioviz)")
    target = _cached(weights)
    with _lock(target.with_name(f".{weights.sha256}.lock")):
        if target.exists():
            if (data := _verified_bytes(target, weights)) is not None:
                return target, data
            target.unlink()  # tampered or damaged: fetch it again
            failures.append(f"the cached copy {target} failed the sha256 check and was removed")
        urls = remote_urls(weights)
        if urls and offline():
            failures.append(f"BIOVIZ_OFFLINE is set, so {len(urls)} URL(s) were not tried (unset it to download)")
        elif urls:
            for url in urls:
                try:
                    _download(url, target, weights)
                except (DataNotFoundError, DataFileError, WeightsError) as err:
                    failures.append(" ".join(str(err).split()))
                    continue
                if (data := _verified_bytes(target, weights)) is not None:
                    return target, data
                target.unlink(missing_ok=True)  # changed on disk since it was verified
                failures.append(f"{target} changed after its download was verified")
        else:
            failures.append("it is not packaged with this install and has no download URL")
    raise WeightsError(f"no verified weights for {name!r} ({weights.file}, sha256 {weights.sha256[:12]}...): "
                       f"{'; '.join(failures)}. To get them: {HOW_TO_GET_WEIGHTS.format(name=name)}.")


def _download(url: str, target: Path, weights: Weights) -> Path:
    if urllib.parse.urlparse(url).scheme == "hf":
        return _download_hf(url, target, weights)
    return download(url, target, "sha256", weights.sha256, size=weights.size)


def parse_hf_url(url: str) -> tuple[str, str | None, str]:
    """``hf://owner/repo[@revision]/path/in/repo`` -> (repo id, revision or None, path in the repository)."""
    parts = url.removeprefix("hf://").split("/")
    if not url.startswith("hf://") or len(parts) < 3 or not all(parts):
        raise RegistryError(f"{url!r} is not a Hugging Face Hub location: hf://owner/repo@revision/path/in/repo")
    repo, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{repo}", revision or None, "/".join(parts[2:])


def _download_hf(url: str, target: Path, weights: Weights) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise WeightsError(f"{url}: Hugging Face Hub locations need huggingface_hub: "
                           "pip install 'bioviz[hub]'") from err
    repo_id, revision, filename = parse_hf_url(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".hf-", dir=target.parent) as folder:
        try:
            path = Path(hf_hub_download(repo_id, filename, revision=revision, local_dir=folder,
                                        endpoint=os.environ.get("HF_ENDPOINT")))
        except Exception as err:  # noqa: BLE001 - the library raises many kinds; each means "not from here"
            raise DataNotFoundError(f"could not download {url} ({type(err).__name__}: {err}); nothing was kept") \
                from err
        size = path.stat().st_size
        if size != weights.size:
            raise DataNotFoundError(f"the download from {url} has {size} bytes, expected {weights.size} "
                                    "(truncated or a different file); nothing was kept")
        digest = sha256_of(path)
        if digest != weights.sha256:
            raise DataFileError(f"the download from {url} failed the sha256 check (got {digest}, expected "
                                f"{weights.sha256}); nothing was kept")
        os.replace(path, target)
    return target


def add(path: str | Path, name: str, weights: Weights) -> Path:
    """Copy a weights file obtained elsewhere into the cache as ``name``'s weights. The bytes are hashed as they
    are copied and the copy is kept only if they match ``weights``; otherwise the cache is left as it was."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no file at {path}")
    target = _cached(weights)
    with _lock(target.with_name(f".{weights.sha256}.lock")):
        with atomic_file(target) as out, open(path, "rb") as source:
            digest = hashlib.sha256()
            while block := source.read(CHUNK):
                out.write(block)
                digest.update(block)
            if digest.hexdigest() != weights.sha256:
                raise WeightsError(f"{path} has sha256 {digest.hexdigest()[:12]}..., but {name!r} needs "
                                   f"{weights.sha256[:12]}... ({weights.file}): it is another file or a damaged "
                                   f"copy; nothing was added. Get the file again, or `bioviz zoo reproduce {name}`")
    return target
