"""The local LISSOM settle-and-learn step of two versions of ``zoo/layers/lissom.py`` side by side: the file at a git
revision against the working tree's, in one process, alternating step by step on the same images (the order swaps
every step), from the same weights. Checks that both settle to the same activity at every step and end with the
same weights. Use it to measure an optimisation: this (virtual) CPU's speed drifts by tens of percent within
minutes, so two runs of ``bench/lissom.py`` minutes apart cannot resolve a 10 % change.

    OMP_NUM_THREADS=1 python bench/lissom_revisions.py REVISION [--steps 60] [--checkpoint last.ckpt] [--flush-mb 100]

``--flush-mb`` streams that many MB through the caches before each step, as the dense step that ``bench/lissom.py``
interleaves does (0: no flush, the caches keep what the previous step left). The model is ``configs/lissom/
cortex_48.yaml``'s (or the checkpoint's); both versions are built through ``zoo.models.Lissom``, with the layer
classes of the revision swapped in, so the revision's layers must take the same constructor arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from bioviz.stimuli import random_gaussian_blobs
from zoo.layers import lissom as current_layers
from zoo.models import Lissom
from zoo.models import lissom as models

REPO = Path(__file__).resolve().parents[1]
SWAPPED = ("DogLGN", "LissomV1", "LissomNetwork", "DivisiveHebbian")


def layers_at(revision: str):
    """``zoo/layers/lissom.py`` as it was at ``revision``, imported as a separate module."""
    source = subprocess.run(["git", "show", f"{revision}:zoo/layers/lissom.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "lissom_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"lissom_at_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def layers_of(module):
    """Build ``Lissom`` models from ``module``'s layer classes."""
    saved = {name: getattr(models, name) for name in SWAPPED}
    try:
        for name in SWAPPED:
            setattr(models, name, getattr(module, name))
        yield
    finally:
        for name, value in saved.items():
            setattr(models, name, value)


def build(module, init: dict, size: int, checkpoint: Path | None):
    with layers_of(module):
        torch.manual_seed(0)
        model = (Lissom.load_from_checkpoint(checkpoint, map_location="cpu") if checkpoint
                 else Lissom(in_shape=[1, size, size], **init))
        optimizer = model.configure_optimizers()
    if checkpoint:  # the learning rates the schedule had reached
        model.before_step(torch.load(checkpoint, weights_only=False)["global_step"], optimizer)
    alphas = optimizer.alphas()

    @torch.no_grad()
    def step(image):
        eta, terms = model.network.hebbian_terms(image, alphas)
        optimizer.step(terms=terms)
        return eta

    return model, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="git revision of zoo/layers/lissom.py to compare against")
    parser.add_argument("--config", default=str(REPO / "configs" / "lissom" / "cortex_48.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--checkpoint", type=Path, help="time the step on these trained weights")
    parser.add_argument("--flush-mb", type=float, default=0.0)
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    data, init = config["data"]["init_args"], config["model"]["init_args"]
    size = data["image_size"]
    versions = {args.revision: layers_at(args.revision), "working tree": current_layers}
    models_and_steps = {name: build(module, init, size, args.checkpoint) for name, module in versions.items()}
    first, second = models_and_steps.values()
    second[0].load_state_dict(first[0].state_dict())
    images = random_gaussian_blobs(args.steps, (size, size), data["n_blobs"], data["blob_sigma"], seed=1,
                                   min_separation=data.get("blob_min_separation", 0.0))
    flush = torch.zeros(int(args.flush_mb * 2**20 / 4))
    times = {name: [] for name in versions}
    for i, image in enumerate(images.view(args.steps, 1, 1, size, size)):
        names = list(versions) if i % 2 == 0 else list(reversed(versions))
        activity = {}
        for name in names:
            flush.add_(1.0)
            start = time.perf_counter()
            activity[name] = models_and_steps[name][1](image)
            times[name].append(time.perf_counter() - start)
        old, new = activity.values()
        assert torch.allclose(old, new, atol=1e-5), f"step {i}: the versions settle differently"
    for (name, projection), other in zip(first[0].network.projections().items(),
                                         second[0].network.projections().values(), strict=True):
        error = (projection.weight - other.weight).abs().max().item()
        assert error < 1e-5, f"{name}: the versions' weights disagree by {error}"
    medians = {name: 1e3 * statistics.median(t[2:]) for name, t in times.items()}
    (old_name, old_ms), (new_name, new_ms) = medians.items()
    weights = f"trained weights ({args.checkpoint})" if args.checkpoint else "untrained weights"
    print(f"LISSOM local settle-and-learn step, {weights}, median of {args.steps - 2} steps, "
          f"{args.flush_mb:g} MB flushed before each step, {torch.get_num_threads()} thread(s)")
    print(f"{old_name}: {old_ms:.2f} ms   {new_name}: {new_ms:.2f} ms   ratio {new_ms / old_ms:.3f}; "
          f"same activity at every step, weights agree")


if __name__ == "__main__":
    main()
