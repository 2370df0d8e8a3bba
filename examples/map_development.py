"""How orientation maps develop in GCAL and LISSOM: pinwheel density, selectivity and stability over seeds.

    bioviz fit -c configs/gcal/cortex_48.yaml --seed_everything 1 --data.init_args.seed 1   # one run per seed
    bioviz fit -c configs/lissom/cortex_48.yaml --seed_everything 1 --data.init_args.seed 1
    python examples/map_development.py --gcal runs/gcal_cortex_48/version_*/checkpoints/last.ckpt \\
        --lissom runs/lissom_cortex_48/version_*/checkpoints/last.ckpt --out docs/gcal

Every run's checkpoint keeps the map measured at each validation (``map_history``). For each run it prints the final
map's pinwheel density by the method of Kaschube et al. (2010) (``bioviz.tuning.pinwheel_density``), the mean local
column spacing, the spectral-peak spacing and the density it would give (the quick check), the mean selectivity, and
the stability index (``bioviz.tuning.stability_index``: 1 - 4 mean|d| / 180 against the run's final map) at each
measurement and averaged over them (the paper's average also counts the untrained map, which the history does not
hold); then the mean and spread over each model's runs. Everything is measured on the region the model counts
pinwheels on (``map_margin``: GCAL's central 1 x 1 sheet units, as in Stevens et al. 2013; LISSOM's whole sheet).
The figure shows the stability and selectivity curves of every run side by side, and the final map of each model's
first run with its pinwheels.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch
from matplotlib.figure import Figure

from bioviz.plot import orientation_map_rgb
from bioviz.tuning import Pinwheels, pinwheel_density, spectral_column_spacing, stability_index
from zoo.models import Gcal, Lissom


def analyse(path: Path, model_class) -> dict:
    """The numbers of one run, from its checkpoint's map history."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    history = checkpoint.get("map_history") or []
    if not history:
        raise SystemExit(f"{path} holds no map history: it was trained before maps were kept in checkpoints")
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}  # CLI's class path
    model = model_class(**hparams)
    final = history[-1]
    margin = model.map_margin
    h, w = final["preference"].shape
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    try:
        pinwheels = pinwheel_density(final["preference"], final["selectivity"], margin=margin)
        spectral = spectral_column_spacing(final["preference"][inner], final["selectivity"][inner])
        spectral_density = pinwheels.count * spectral**2 / pinwheels.area
    except ValueError as err:  # no columns: a map that did not form
        print(f"{path}: no column spacing ({err})")
        pinwheels, spectral, spectral_density = None, math.nan, math.nan
    return {
        "path": path, "step": final["step"], "pinwheels": pinwheels, "spectral_spacing": spectral,
        "spectral_density": spectral_density,
        "selectivity": float(final["selectivity"].mean()), "final": final,
        "steps": [m["step"] for m in history],
        "stability": [stability_index(m["preference"][inner], final["preference"][inner]) for m in history],
        "selectivity_curve": [float(m["selectivity"][inner].mean()) for m in history],
    }


def mean_sd(values) -> str:
    values = list(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {spread:.2f}"


def report(name: str, runs: list[dict]) -> None:
    print(f"\n{name}: {len(runs)} runs")
    print(f"{'run':<44}{'step':>7}{'select.':>9}{'pinwheels':>11}{'spacing':>9}{'density':>9}"
          f"{'spectral':>10}{'-> density':>11}{'SI mean':>9}{'SI @1k':>8}")
    for run in runs:
        pw: Pinwheels | None = run["pinwheels"]
        count, spacing, density = (pw.count, pw.column_spacing, pw.density) if pw else (0, math.nan, math.nan)
        at_1000 = dict(zip(run["steps"], run["stability"], strict=True)).get(1000, math.nan)
        print(f"{str(run['path'])[-44:]:<44}{run['step']:>7}{run['selectivity']:>9.3f}{count:>11}"
              f"{spacing:>9.2f}{density:>9.2f}{run['spectral_spacing']:>10.2f}"
              f"{run['spectral_density']:>11.2f}{statistics.mean(run['stability']):>9.3f}{at_1000:>8.3f}")
    densities = [r["pinwheels"].density for r in runs if r["pinwheels"]]
    if not densities:
        print("no run formed a map with columns")
        return
    within = sum(abs(d - math.pi) <= 0.2 * math.pi for d in densities)
    print(f"density {mean_sd(densities)} (Kaschube), {mean_sd(r['spectral_density'] for r in runs)} (spectral "
          f"peak); {within} of {len(runs)} within pi +- 20 %; mean within 20 %: "
          f"{abs(statistics.mean(densities) - math.pi) <= 0.2 * math.pi}")
    print(f"selectivity {mean_sd(r['selectivity'] for r in runs)}, stability index averaged over development "
          f"{mean_sd(statistics.mean(r['stability']) for r in runs)}")


def figure(groups: dict[str, list[dict]]) -> Figure:
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    axes = fig.subplots(1, 2 + len(groups))
    colours = {"GCAL": "tab:blue", "LISSOM": "tab:red"}
    for name, runs in groups.items():
        for k, run in enumerate(runs):
            label = name if k == 0 else None
            axes[0].plot(run["steps"], run["stability"], color=colours[name], alpha=0.7, label=label)
            axes[1].plot(run["steps"], run["selectivity_curve"], color=colours[name], alpha=0.7, label=label)
    axes[0].set(xlabel="Hebbian updates", ylabel="stability index vs final map", ylim=(-0.2, 1.05))
    axes[1].set(xlabel="Hebbian updates", ylabel="mean selectivity")
    axes[0].legend(frameon=False)
    for ax, (name, runs) in zip(axes[2:], groups.items(), strict=True):
        run, pw = runs[0], runs[0]["pinwheels"]
        ax.imshow(orientation_map_rgb(run["final"]["preference"], run["final"]["selectivity"]),
                  interpolation="nearest")
        ax.set_axis_off()
        if pw is None:
            ax.set_title(f"{name}: no columns", fontsize=9)
            continue
        pos, charge = pw.positions.numpy(), pw.charges.numpy()
        for sign, marker in ((1, "o"), (-1, "s")):
            ax.scatter(pos[charge == sign, 1], pos[charge == sign, 0], s=10, marker=marker, facecolors="none",
                       edgecolors="white", linewidths=0.8)
        ax.set_title(f"{name}: {pw.count} pinwheels, {pw.density:.2f} per $\\Lambda^2$", fontsize=9)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gcal", nargs="*", type=Path, default=[], help="checkpoints of GCAL runs")
    parser.add_argument("--lissom", nargs="*", type=Path, default=[], help="checkpoints of LISSOM runs")
    parser.add_argument("--out", type=Path, help="folder for map_development.png")
    args = parser.parse_args()
    groups = {name: [analyse(p, cls) for p in paths]
              for name, cls, paths in (("GCAL", Gcal, args.gcal), ("LISSOM", Lissom, args.lissom)) if paths}
    if not groups:
        parser.error("give checkpoints with --gcal and/or --lissom")
    for name, runs in groups.items():
        report(name, runs)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        figure(groups).savefig(args.out / "map_development.png", dpi=110)
        print(f"\nwrote {args.out / 'map_development.png'}")


if __name__ == "__main__":
    main()
