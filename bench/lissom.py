"""One settle-and-learn step of a self-organising map (LISSOM, or GCAL with ``--config configs/gcal/cortex_48.yaml``):
local weights (zoo.layers.lissom) against the dense-matrix formulation of the same model (what pylissom does: every
projection a dense [units, inputs] matrix times a mask).

Both start from the same weights (the dense matrices are the local weights scattered into place), see the same
images and must end with the same weights (checked). A step = LGN, afferent drive, settling with lateral excitation
and inhibition, Hebbian terms from the settled activity, divisive normalisation of the learning projections, and for
GCAL the homeostatic update of every unit's threshold (each formulation keeps its own thresholds).

    OMP_NUM_THREADS=1 python bench/lissom.py [--config configs/lissom/cortex_48.yaml] [--steps 30] [--batch 1]
        [--checkpoint runs/lissom_cortex_48/version_0/checkpoints/last.ckpt]

Without ``--checkpoint`` the step is timed on the untrained model (5-30 % of V1 responds: settling scatters from
the active units, and gathers every unit's disc at the steps where more than a quarter are active); with it, on
trained weights and the schedule state they reached (~1 % active). ``bench/lissom_revisions.py`` compares two
versions of the local step side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from bioviz.stimuli import random_gaussian_blobs
from zoo.layers.lissom import HomeostaticV1, LocalProjection, piecewise_sigmoid
from zoo.models import Gcal, Lissom

REPO = Path(__file__).resolve().parents[1]


def dense_matrix(projection: LocalProjection) -> tuple[torch.Tensor, torch.Tensor]:
    """The projection as a dense ``[units, C * in^2]`` matrix and its 0/1 mask (float, as pylissom keeps it)."""
    c, n_in = projection.in_channels, projection.in_size
    index = projection.patches(torch.arange(c * n_in * n_in, dtype=torch.float32).view(1, c, n_in, n_in) + 1)[0]
    inside = (index > 0) & projection.connected()[:, None]  # padding reads 0; inputs are numbered from 1
    dense = torch.zeros(projection.n_units, c * n_in * n_in)
    mask = torch.zeros_like(dense)
    units = torch.arange(projection.n_units).expand_as(index)
    dense[units[inside], index[inside].long() - 1] = projection.weight.detach()[inside]
    mask[units[inside], index[inside].long() - 1] = 1.0
    return dense, mask


class DenseNetwork:
    """The same network with dense matrices: settling and learning as pylissom does them (but with ON/OFF kept
    apart and learning from the settled activity, so that the two formulations compute the same thing). GCAL's
    thresholds are copied, and adapted here as ``HomeostaticV1.adapt`` does."""

    def __init__(self, model: Lissom | Gcal, alphas: dict[str, float]):
        v1 = model.network.v1
        self.lgn, self.v1, self.alphas = model.network.lgn, v1, alphas
        self.weights, self.masks = {}, {}
        for name in ("afferent", "excitatory", "inhibitory"):
            self.weights[name], self.masks[name] = dense_matrix(getattr(v1, name))
        self.homeostatic = isinstance(v1, HomeostaticV1)
        if self.homeostatic:
            self.thresholds, self.average = v1.unit_thresholds.clone(), v1.average_activity.clone()
        else:
            self.lower, self.upper = v1.thresholds.tolist()

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.homeostatic:
            return (x - self.thresholds).clamp_min(0.0)
        return piecewise_sigmoid(x, self.lower, self.upper)

    @torch.no_grad()
    def step(self, retina: torch.Tensor) -> None:
        v1, w = self.v1, self.weights
        lgn = self.lgn(retina).flatten(1)  # [B, 2 * L^2]
        drive = v1.gamma_a * lgn @ w["afferent"].T
        eta = self.activation(drive)
        for _ in range(int(v1.settling_steps)):
            lateral = v1.gamma_e * eta @ w["excitatory"].T - v1.gamma_i * eta @ w["inhibitory"].T
            eta = self.activation(drive + lateral)
        for name, pre in (("afferent", lgn), ("excitatory", eta), ("inhibitory", eta)):
            if self.alphas[name] == 0:  # GCAL's fixed lateral excitation
                continue
            weight = w[name]
            weight.addmm_(eta.T, pre, alpha=self.alphas[name] / len(eta))  # outer products summed over the batch
            weight.mul_(self.masks[name])
            weight.div_(weight.sum(1, keepdim=True))
        if self.homeostatic:
            self.average.mul_(v1.smoothing).add_(eta.mean(0), alpha=1 - v1.smoothing)
            self.thresholds.add_(self.average - v1.target_activity, alpha=v1.homeostatic_rate)


def timed(fn, image) -> float:
    start = time.perf_counter()
    fn(image)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "lissom" / "cortex_48.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--checkpoint", type=Path, help="time the step on these trained weights")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    data, init = config["data"]["init_args"], config["model"].get("init_args") or {}
    model_class = {"Lissom": Lissom, "Gcal": Gcal}[config["model"]["class_path"].rsplit(".", 1)[-1]]
    size = data["image_size"]
    torch.manual_seed(0)
    if args.checkpoint:
        model = model_class.load_from_checkpoint(args.checkpoint, map_location="cpu")
    else:
        model = model_class(in_shape=[1, size, size], **init)
    optimizer = model.configure_optimizers()
    if args.checkpoint:  # the learning rates a schedule had reached
        model.before_step(torch.load(args.checkpoint, weights_only=False)["global_step"], optimizer)
    alphas = optimizer.alphas()
    dense = DenseNetwork(model, alphas)
    images = random_gaussian_blobs(args.steps * args.batch, (size, size), data["n_blobs"], data["blob_sigma"],
                                   data.get("margin", 0.0), seed=1, min_separation=data.get("blob_min_separation", 0.0),
                                   scale=data.get("blob_scale", 1.0)).view(args.steps, args.batch, 1, size, size)

    activity = []

    def local_step(image):
        eta, terms = model.network.hebbian_terms(image, alphas)
        optimizer.step(terms=terms)
        if dense.homeostatic:  # what Gcal.adapt does in training (less its logging)
            model.network.v1.adapt(eta.mean(0))
        activity.append(float((eta > 0).float().mean()))

    # Interleaved, step by step, so that both see the same machine state (timings on a shared or virtual CPU
    # drift by tens of percent between blocks of steps run minutes apart).
    local_times, dense_times = [], []
    for image in images:
        local_times.append(timed(local_step, image))
        dense_times.append(timed(dense.step, image))
    # Same model, same images: the same weights after every step (checked at the end).
    for name, local_weight in model.network.projections().items():
        scattered, _ = dense_matrix(local_weight)
        error = (scattered - dense.weights[name]).abs().max().item()
        assert error < 1e-5, f"{name}: the formulations disagree by {error}"
    if dense.homeostatic:
        error = (dense.thresholds - model.network.v1.unit_thresholds).abs().max().item()
        assert error < 1e-5, f"thresholds: the formulations disagree by {error}"

    active = statistics.mean(activity)
    local_ms, dense_ms = (1e3 * statistics.median(t[2:]) for t in (local_times, dense_times))
    local_mb = sum(p.weight.numel() for p in model.network.projections().values()) * 4 / 2**20
    dense_mb = sum(w.numel() for w in dense.weights.values()) * 4 / 2**20
    mask_mb = sum(m.numel() for m in dense.masks.values()) * 4 / 2**20
    n = model.sheet_shape[0]
    weights = f"trained weights ({args.checkpoint})" if args.checkpoint else "untrained weights"
    print(f"{model_class.__name__} settle-and-learn step, V1 {n}x{n}, retina {size}x{size}, batch {args.batch}, "
          f"{weights}, {int(model.network.v1.settling_steps)} settling steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); median of {args.steps - 2} steps; V1 active fraction "
          f"{active:.3f}")
    print(f"{'formulation':<28}{'ms/step':>10}{'weights MB':>12}{'+ masks MB':>12}")
    print(f"{'local (zoo.layers.lissom)':<28}{local_ms:>10.1f}{local_mb:>12.1f}{0.0:>12.1f}")
    print(f"{'dense matrix + mask':<28}{dense_ms:>10.1f}{dense_mb:>12.1f}{mask_mb:>12.1f}")
    print(f"speed-up {dense_ms / local_ms:.1f}x, weight memory {dense_mb / local_mb:.1f}x less "
          f"({(dense_mb + mask_mb) / local_mb:.1f}x counting the masks); weights agree after {args.steps} steps")


if __name__ == "__main__":
    main()
