"""Checked downloads: a file appears at its destination only once its checksum matches.

The transfer streams into a temporary file in the destination folder (so the final rename is atomic on one file
system) while the checksum is computed; a checksum mismatch, a short transfer or a network error removes the
temporary file and raises an error that names the URL. Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from zoo.errors import DataFileError, DataNotFoundError

__all__ = ["download_verified", "file_md5"]

CHUNK = 1 << 20


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(url: str, dest: str | Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``; it exists afterwards only if its md5 equals ``md5``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.chmod(tmp, 0o644)  # mkstemp makes files private; this is an ordinary data file
    digest, received, expected_size = hashlib.md5(), 0, None
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    expected_size = int(length) if length is not None else None
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                raise DataNotFoundError(
                    f"could not download {url} ({err}); nothing was kept. Check the network and retry, or download "
                    f"the file by hand and give its path."
                ) from err
        if expected_size is not None and received != expected_size:
            raise DataNotFoundError(
                f"the download from {url} broke off after {received} of {expected_size} bytes; nothing was kept. "
                "Retry the download."
            )
        actual = digest.hexdigest()
        if actual != md5:
            raise DataFileError(
                f"the download from {url} failed the md5 check (got {actual}, expected {md5}); nothing was kept. "
                "Retry; if it fails again the file at that address has changed."
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
