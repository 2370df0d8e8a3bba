"""Reading ``.npz`` data files and the checks every layout shares (keys, dtypes, finiteness)."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo.errors import DataFileError, DataNotFoundError
from zoo.files import atomic_file

__all__ = ["read_npz", "check_values", "write_npz"]

FLOAT32_SAFE = 1e15  # largest magnitude accepted in a data array: its square and sums over many items fit float32


def read_npz(path: str | Path, missing: str) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` at ``path`` (no pickles). ``missing`` completes the error for a missing file:
    what was expected there and how to get it."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no {missing}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as archive:
                return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataFileError(f"{path} is not a readable .npz file ({err}); write it with numpy.savez") from err
    raise DataFileError(f"{path} holds one array (an .npy file); the data file is an .npz of named arrays: "
                        "write it with numpy.savez(path, key=array, ...)")


def check_values(arrays: dict[str, np.ndarray], required: Sequence[str], optional: Sequence[str] = ()
                 ) -> tuple[list[str], list[str]]:
    """Problems with missing keys, non-numeric dtypes and NaN/inf values, and the keys that are numeric (the ones
    worth checking further)."""
    problems = []
    missing = [key for key in required if key not in arrays]
    if missing:
        problems.append(f"missing key(s) {missing} (found {sorted(arrays)})")
    numeric = []
    for key in (k for k in (*required, *optional) if k in arrays):
        array = arrays[key]
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            problems.append(f"{key} has dtype {array.dtype}; expected an integer or floating type")
            continue
        numeric.append(key)
        if array.size == 0:
            problems.append(f"{key} is empty (shape {list(array.shape)})")
            continue
        if np.issubdtype(array.dtype, np.floating):
            n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
            if n_nan or n_inf:
                problems.append(f"{key} has {n_nan} NaN and {n_inf} inf values; remove or impute them")
                continue
        largest = float(np.abs(array).max())
        if largest > FLOAT32_SAFE:  # the models compute in float32: squares and sums would overflow
            problems.append(f"{key} has values up to {largest:.3g}; rescale it (the models compute in float32, "
                            f"values must stay below {FLOAT32_SAFE:g})")
    return problems, numeric


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Save ``arrays`` to ``path``; the file appears only when complete (see ``zoo.files.atomic_file``)."""
    path = Path(path)
    with atomic_file(path) as f:
        np.savez(f, **arrays)
    return path
