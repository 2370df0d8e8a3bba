"""Checked downloads: a file appears at its destination only once its checksum matches.

The transfer streams into a temporary file in the destination folder (so the final rename is atomic on one file
system) while the checksum is computed; a checksum mismatch, a short transfer or a network error removes the
temporary file and raises an error that names the URL. Nothing here runs at import time.
"""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.errors import DataFileError, DataNotFoundError
from zoo.files import download, file_digest

__all__ = ["download_verified", "file_md5"]

def file_md5(path: str | Path) -> str:
    return file_digest(path, "md5")


def download_verified(url: str, dest: str | Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``; it exists afterwards only if its md5 equals ``md5``."""
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    try:
        return download(url, dest, "md5", md5, timeout=timeout)
    except DataNotFoundError as err:
        raise DataNotFoundError(f"{err}. Check the network and retry, or download the file by hand and give its "
                                "path.") from err
    except DataFileError as err:
        raise DataFileError(f"{err}. Retry; if it fails again the file at that address has changed.") from err
