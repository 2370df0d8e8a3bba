"""Writing and downloading files so that readers only ever see a complete, verified file or the previous one."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
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
REDIRECT_SCHEMES = ("https", "http")
CHUNK = 1 << 20
DEADLINE = 3600.0  # seconds for a whole download (BIOVIZ_DOWNLOAD_DEADLINE overrides)
MIN_RATE = 1024.0  # bytes per second on average, checked after the first MIN_RATE_AFTER seconds
MIN_RATE_AFTER = 30.0


class CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an http or https URL (urllib alone would also follow ftp), on every hop."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlparse(newurl).scheme
        if scheme not in REDIRECT_SCHEMES:
            raise DataNotFoundError(f"{req.full_url} redirected to {newurl}: refused, only "
                                    f"{' and '.join(REDIRECT_SCHEMES)} redirects are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(CheckedRedirects)


def deadline_seconds() -> float:
    return float(os.environ.get("BIOVIZ_DOWNLOAD_DEADLINE") or DEADLINE)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: str | Path, algorithm: str, expected: str, size: int | None = None,
             timeout: float = 60.0, deadline: float | None = None) -> Path:
    """Stream ``url`` to ``target``, which appears (atomically) only if the transfer is complete and its
    ``algorithm`` digest equals ``expected``; otherwise nothing is left and the error names the URL.

    Complete means ``size`` bytes when given, else the server's Content-Length; a transfer is stopped one byte past
    ``size``, so a wrong or endless response never fills the disk. Only https, http and file URLs are followed, and
    redirects only to https or http. ``timeout`` bounds each read; ``deadline`` (default ``BIOVIZ_DOWNLOAD_DEADLINE``
    or an hour) bounds the whole transfer, and a transfer slower than ``MIN_RATE`` on average after its first
    ``MIN_RATE_AFTER`` seconds is abandoned, so a server that trickles bytes cannot hang the caller. A transfer
    problem raises DataNotFoundError, a checksum mismatch or an oversized response DataFileError.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ALLOWED_SCHEMES:
        raise DataNotFoundError(f"{url}: refused: only {', '.join(ALLOWED_SCHEMES)} URLs are followed")
    target = Path(target)
    deadline = deadline_seconds() if deadline is None else deadline
    digest, received, start = hashlib.new(algorithm), 0, time.monotonic()
    with atomic_file(target) as out:
        try:
            with _opener.open(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                size = size if size is not None else (int(length) if length else None)
                with tqdm(total=size, unit="B", unit_scale=True, desc=target.name, leave=False) as bar:
                    # read1: what has arrived, so the clock is checked however slowly the bytes come
                    while block := response.read1(CHUNK if size is None else min(CHUNK, size + 1 - received)):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(len(block))
                        if size is not None and received > size:  # never more than the expected file on disk
                            break
                        _check_pace(url, received, time.monotonic() - start, deadline)
        except DataNotFoundError:
            raise
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


def _check_pace(url: str, received: int, elapsed: float, deadline: float) -> None:
    if elapsed > deadline:
        raise DataNotFoundError(f"the download from {url} took longer than {deadline:g} s ({received} bytes); "
                                "nothing was kept. Set BIOVIZ_DOWNLOAD_DEADLINE for a slow connection")
    if elapsed > MIN_RATE_AFTER and received / elapsed < MIN_RATE:
        raise DataNotFoundError(f"the download from {url} is slower than {MIN_RATE:g} bytes/s ({received} bytes in "
                                f"{elapsed:.0f} s); nothing was kept")
