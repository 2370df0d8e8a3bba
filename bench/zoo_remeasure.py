"""Re-measure every zoo entry from its published weights and print the metrics beside the recorded ones.

Entries whose data are embedded (simulated populations, LISSOM's stimuli) need nothing; ``tests/test_zoo_entries.py``
re-measures them too. Entries tested on CIFAR-10 need the data: the CIFAR-10 JPEG tree, or an archive of it, which is
unpacked into a temporary folder. Without it they are skipped with a message. Exits 1 if a metric differs from the
recorded one by more than ``bioviz zoo test``'s tolerance.

    python bench/zoo_remeasure.py                                   # ../shared/data/cifar10-jpg.tar.gz if present
    python bench/zoo_remeasure.py --cifar10 /path/to/cifar10-jpg    # or the archive
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from zoo import registry
from zoo.cli import print_comparison

DEFAULT_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def cifar10_root(path: Path, scratch: Path) -> Path:
    """The folder holding ``train/`` and ``test/``: ``path`` itself, or the archive unpacked into ``scratch``."""
    if path.is_dir():
        return path
    print(f"unpacking {path} ...", flush=True)
    with tarfile.open(path) as archive:
        archive.extractall(scratch, filter="data")
    return next(p.parent for p in scratch.rglob("train") if (p.parent / "test").is_dir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar10", type=Path, default=DEFAULT_CIFAR10,
                        help=f"the CIFAR-10 JPEG tree or its .tar.gz (default: {DEFAULT_CIFAR10})")
    parser.add_argument("names", nargs="*", help="entries to measure (default: all)")
    args = parser.parse_args()
    differ = []
    with tempfile.TemporaryDirectory() as scratch:
        root = None
        for name in args.names or registry.list_models():
            entry = registry.model_info(name)
            if entry.needs_data_root:
                if not args.cifar10.exists():
                    print(f"{name}: skipped, its test data (CIFAR-10) is not at {args.cifar10}; give --cifar10 PATH\n")
                    continue
                root = root or cifar10_root(args.cifar10, Path(scratch))
            start = time.time()
            measured = registry.evaluate(name, root if entry.needs_data_root else None)
            differ += [f"{name} {m}" for m in print_comparison(entry, measured, "re-measured")]
            print(f"  ({time.time() - start:.0f} s)\n")
    if differ:
        print(f"differ from the recorded values: {', '.join(differ)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
