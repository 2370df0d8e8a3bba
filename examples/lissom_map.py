"""The orientation map of a trained LISSOM run beside the untrained map: numbers and one figure.

    python examples/lissom_map.py lissom-cortex48 --out docs/lissom          # the zoo's map
    bioviz fit -c configs/lissom/cortex_48.yaml
    python examples/lissom_map.py runs/lissom_cortex_48/version_0/checkpoints/last.ckpt --out docs/lissom

Both maps are measured as the test measures them (``Lissom.measure_map``; the zoo entry's data, or the run's
``config.yaml`` beside its checkpoints, gives the gratings: orientations x phases x frequencies at the configured
contrast; V1's settled response, max over phase, best frequency). The untrained model is built with the trained
one's hyperparameters after ``seed_everything(0)``, which is how the CLI built the model that was trained (the
configs' seed). Printed: mean selectivity, preference-histogram uniformity,
column spacing, pinwheel count and density (pinwheels per squared column spacing; ~pi in cortex, Kaschube et al.
2010), over the whole map and over its interior (``--margin`` pixels in from the edges, by default the lateral
inhibitory radius: inside it every unit has its whole lateral disc). Figure: untrained and trained maps (hue =
preference, brightness = selectivity; pinwheels marked), the preference histograms, and the afferent weights (ON
minus OFF) of 8 x 8 units across the sheet. For comparison it also prints the numbers of the feed-forward maps (each
unit's afferent drive, without sigmoid or lateral interactions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from matplotlib.figure import Figure

from bioviz.plot import orientation_map_rgb
from bioviz.tuning import pinwheel_density
from zoo.data import LissomDataModule
from zoo.models import Lissom
from zoo.registry import load_model_and_data


def measure(model: Lissom, data: LissomDataModule, feedforward: bool = False):
    """The map of V1's settled response, or with ``feedforward`` of the afferent drive alone (no sigmoid, no
    lateral interactions: the orientation preference of each unit's afferent weights)."""
    v1 = model.network.v1
    return model.measure_map(data, (lambda images: v1.afferent(model.network.lgn(images))) if feedforward else None)


def describe(name: str, result, margin: int = 0) -> str:
    pw = result.pinwheels
    if pw is None:
        return f"{name:10s} selectivity {result.selectivity_mean:.3f} (no columns)"
    text = (f"{name:10s} selectivity {result.selectivity_mean:.3f}  uniformity {result.uniformity:.3f}  "
            f"column spacing {pw.column_spacing:.1f} px  pinwheels {pw.count}  density {pw.density:.2f} (pi = 3.14)")
    if margin:
        inner = pinwheel_density(result.preference, result.selectivity, margin=margin)
        text += f"; interior ({margin} px in) {inner.count}, density {inner.density:.2f}"
    return text


def draw_map(ax, result, title):
    ax.imshow(orientation_map_rgb(result.preference, result.selectivity), interpolation="nearest")
    if result.pinwheels is not None and result.pinwheels.count:
        pos, charge = result.pinwheels.positions.numpy(), result.pinwheels.charges.numpy()
        for sign, marker in ((1, "o"), (-1, "s")):
            sel = charge == sign
            ax.scatter(pos[sel, 1], pos[sel, 0], s=10, marker=marker, facecolors="none", edgecolors="white",
                       linewidths=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a zoo name (bioviz zoo list) or a .ckpt written by bioviz fit")
    parser.add_argument("--out", type=Path, default=Path("docs/lissom"))
    parser.add_argument("--contrast", type=float, help="measure with this grating contrast instead of the run's")
    parser.add_argument("--frequencies", type=float, nargs="+", help="grating frequencies instead of the run's")
    parser.add_argument("--margin", type=int, help="interior margin in pixels (default: the inhibitory radius)")
    args = parser.parse_args()
    trained, data_config = load_model_and_data(args.model)
    if not isinstance(trained, Lissom) or not data_config:
        parser.error(f"{args.model} is not a LISSOM model with its run's config.yaml (or a zoo entry)")
    data_args = data_config["init_args"]
    if args.contrast is not None:
        data_args["map_contrast"] = args.contrast
    if args.frequencies:
        data_args["map_frequencies"] = args.frequencies
    data = LissomDataModule(**data_args)
    pl.seed_everything(0)
    untrained = Lissom(**dict(trained.hparams)).eval()
    checkpoint = Path(args.model)
    label = (f"after {torch.load(checkpoint, map_location='cpu', weights_only=True)['global_step']} updates"
             if checkpoint.is_file() else "trained")
    name = checkpoint.resolve().parents[2].name if checkpoint.is_file() else args.model  # runs/<name>/version_N

    margin = args.margin if args.margin is not None else int(float(trained.network.v1.inhibitory.radius))
    before, after = measure(untrained, data), measure(trained, data)
    print(describe("untrained", before, margin))
    print(describe(label, after, margin))
    print("feed-forward maps (afferent drive only):")
    print(describe("untrained", measure(untrained, data, feedforward=True), margin))
    print(describe(label, measure(trained, data, feedforward=True), margin))

    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, 4, width_ratios=[1, 1, 0.9, 1])
    draw_map(axes[0], before, f"untrained: selectivity {before.selectivity_mean:.3f}")
    pw = after.pinwheels
    draw_map(axes[1], after, f"{label}: selectivity {after.selectivity_mean:.3f}"
             + (f"\n{pw.count} pinwheels, {pw.density:.2f} per column spacing$^2$" if pw else ""))
    bins = np.linspace(0, 180, 19)
    axes[2].hist(before.preference.flatten().numpy(), bins=bins, histtype="step", label="untrained")
    axes[2].hist(after.preference.flatten().numpy(), bins=bins, alpha=0.6, label="trained")
    axes[2].set_xlabel("preferred orientation (deg)")
    axes[2].set_ylabel("units")
    axes[2].legend(fontsize=8)
    axes[2].set_title(f"uniformity {before.uniformity:.2f} -> {after.uniformity:.2f}", fontsize=9)
    axes[3].imshow(trained.weight_picture(), interpolation="nearest")
    axes[3].set_title("afferent weights, ON - OFF (8 x 8 units)", fontsize=9)
    axes[3].set_axis_off()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}_map.png"
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
