"""Writing and downloading files so that readers only ever see a complete, verified file or the previous one."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from zoo.errors import DataFileError, DataNotFoundError


@contextmanager
def atomic_file(target: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``target`` only if the ``with`` block finishes without an exception.

    The data goes to a temporary file in the same folder (so the final rename is atomic); on any error the
    temporary file is removed and ``target``, if it existed, is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.chmod(tmp, 0o644)  # mkstemp makes files private; these are ordinary data files
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


ALLOWED_SCHEMES = ("https", "http", "file")
CHUNK = 1 << 20


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: str | Path, algorithm: str, expected: str, size: int | None = None,
             timeout: float = 60.0) -> Path:
    """Stream ``url`` to ``target``, which appears (atomically) only if the transfer is complete and its
    ``algorithm`` digest equals ``expected``; otherwise nothing is left and the error names the URL.

    Complete means ``size`` bytes when given, else the server's Content-Length; a transfer is stopped one byte past
    ``size``, so a wrong or endless response never fills the disk. Only https, http and file URLs are followed. A
    transfer problem raises DataNotFoundError, a checksum mismatch or an oversized response DataFileError.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ALLOWED_SCHEMES:
        raise DataNotFoundError(f"{url}: refused: only {', '.join(ALLOWED_SCHEMES)} URLs are followed")
    target = Path(target)
    digest, received = hashlib.new(algorithm), 0
    with atomic_file(target) as out:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                size = size if size is not None else (int(length) if length else None)
                with tqdm(total=size, unit="B", unit_scale=True, desc=target.name, leave=False) as bar:
                    while block := response.read(CHUNK if size is None else min(CHUNK, size + 1 - received)):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(len(block))
                        if size is not None and received > size:  # never more than the expected file on disk
                            break
        except (OSError, http.client.HTTPException) as err:
            raise DataNotFoundError(f"could not download {url} ({err}); nothing was kept") from err
        if size is not None and received > size:
            raise DataFileError(f"the download from {url} is larger than the expected {size} bytes (a different "
                                "file); it was stopped and nothing was kept")
        if size is not None and received != size:
            raise DataNotFoundError(f"the download from {url} broke off after {received} of {size} bytes "
                                    "(truncated or a different file); nothing was kept")
        if digest.hexdigest() != expected:
            raise DataFileError(f"the download from {url} failed the {algorithm} check (got {digest.hexdigest()}, "
                                f"expected {expected}); nothing was kept")
    return target
