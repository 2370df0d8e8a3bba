"""Writing files so that readers only ever see a complete file or the previous one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


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
