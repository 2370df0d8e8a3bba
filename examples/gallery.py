"""Render a gallery of PNGs showing what a trained response model learned.

    python examples/gallery.py cnnv1-quickstart --out gallery        # a zoo model
    bioviz fit -c configs/quickstart.yaml
    python examples/gallery.py runs/quickstart/version_0/checkpoints/best.ckpt --out gallery   # your own run

Pictures: first-layer filters, activations of the first layer for a few stimuli, readout masks, gradient receptive
fields, tuning curves of model neurons measured in silico with gratings, the in-silico preferred orientations against
the simulation's ground truth (when the model trained on ``SyntheticV1DataModule``: the zoo entry's data, or the
run's ``config.yaml`` beside the checkpoint, says how to rebuild the population), a map of the neurons' preferred
orientations at their readout positions, and a demonstration of ``orientation_map`` / ``pinwheel_density`` on a sheet
of Gabor units with a planted orientation map. Every figure comes from ``bioviz`` (or matplotlib for the two
comparison plots).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from bioviz import plot
from bioviz.hooks import first_conv, get_tensor, record
from bioviz.stimuli import gabor, gaussian_blob, pink_noise, sine_grating
from bioviz.tuning import orientation_difference, orientation_map, orientation_tuning, pinwheel_density
from zoo.registry import load_model_and_data


def ground_truth(data: dict | None) -> dict[str, np.ndarray] | None:
    """The simulated population's ``true_*`` arrays, if ``data`` (the model's training data) is one."""
    if not data or not str(data.get("class_path", "")).endswith("SyntheticV1DataModule"):
        return None
    from zoo.data import simulate_v1

    args = {k: v for k, v in data.get("init_args", {}).items() if k not in ("batch_size", "eval_batch_size")}
    return {k: v for k, v in simulate_v1(**args).items() if k.startswith("true_")}


def gradient_rfs(model: nn.Module, shape, neurons) -> torch.Tensor:
    """d response / d image at a grey image: each neuron's linear receptive field around the mean stimulus."""
    image = torch.zeros(1, 1, *shape, requires_grad=True)
    out = model(image)[0]
    rows = [torch.autograd.grad(out[n], image, retain_graph=True)[0][0, 0] for n in neurons]
    return torch.stack(rows)


def mask_peaks(mask: torch.Tensor) -> torch.Tensor:
    """Position (row, column) of each |mask| [n, H, W]'s peak: the neuron's location on the feature map (the peak,
    not the centre of mass, which the faint background of a sparse mask pulls to the middle)."""
    flat = mask.abs().flatten(1).argmax(1)
    return torch.stack([flat // mask.shape[2], flat % mask.shape[2]], 1).float()


def planted_map_demo(size: int = 32, spacing: float = 8.0, seed: int = 0):
    """A sheet of ``size`` x ``size`` Gabor units whose orientations follow a random band-pass map (the statistics
    of cortical maps), measured back in silico: returns the measured map and its pinwheels."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.complex(torch.randn(size, size, generator=g, dtype=torch.float64),
                          torch.randn(size, size, generator=g, dtype=torch.float64))
    k = torch.hypot(torch.fft.fftfreq(size, dtype=torch.float64)[:, None], torch.fft.fftfreq(size, dtype=torch.float64))
    z = torch.fft.ifft2(torch.fft.fft2(noise) * ((k * spacing - 1).abs() < 0.25))
    planted = (torch.rad2deg(torch.angle(z)) / 2 % 180).float()
    rows, cols = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2,
                                indexing="ij")
    image = (2 * size, 2 * size)
    filters = gabor(image, planted.flatten(), 0.15, 0.0, 2.0, torch.stack([rows.flatten(), cols.flatten()], 1) * 1.5)
    sheet = nn.Linear(image[0] * image[1], size * size, bias=False)
    with torch.no_grad():
        sheet.weight.copy_(filters.flatten(1))
    model = nn.Sequential(nn.Flatten(), sheet, nn.ReLU())
    measured = orientation_map(model, shape=image, frequency=0.15, sheet_shape=(size, size))
    error = float(orientation_difference(measured.preference, planted).mean())
    return measured, pinwheel_density(measured.preference, measured.selectivity, periodic=True), error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a zoo name (bioviz zoo list) or a .ckpt written by bioviz fit")
    parser.add_argument("--out", type=Path, default=Path("gallery"), help="folder for the PNGs")
    parser.add_argument("--neurons", type=int, default=16, help="neurons shown in per-neuron figures")
    parser.add_argument("--dpi", type=int, default=90)
    args = parser.parse_args()
    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    model, data = load_model_and_data(args.model)
    shape = tuple(model.hparams.in_shape[-2:])
    neurons = list(range(min(args.neurons, model.hparams.n_neurons)))

    def save(fig: Figure, name: str) -> None:
        fig.savefig(args.out / name, dpi=args.dpi)
        print(f"wrote {args.out / name}")

    conv_name, conv = first_conv(model)
    save(plot.filter_grid(conv.weight, ncols=8), "filters.png")

    h, w = shape
    stimuli = torch.cat([sine_grating(shape, 30, 0.1), gaussian_blob(shape, 120, (1.5, 5.0)) * 2,
                         pink_noise(1, shape, seed=1)])
    with record(model, conv_name) as rec, torch.no_grad():  # the first conv's linear responses
        model(stimuli)
    channels = range(min(6, conv.out_channels))
    save(plot.activation_panel(stimuli, rec.outputs[conv_name], channels=channels), "activations.png")

    mask = get_tensor(model, "readout.mask").detach()
    save(plot.weight_grid(mask[:25].abs(), grid=(5, 5), cmap="viridis", scale="tile"), "readout_masks.png")

    truth = ground_truth(data)
    positions = torch.as_tensor(truth["true_position"][neurons]) if truth else None
    save(plot.rf_grid(gradient_rfs(model, shape, neurons), positions=positions, ncols=8), "receptive_fields.png")

    tuning = orientation_tuning(model, shape, orientations=16, phases=8, frequency=[0.06, 0.08, 0.1, 0.13, 0.17])
    save(plot.tuning_curves(tuning, units=neurons, ncols=8), "tuning_curves.png")

    peaks = mask_peaks(mask)
    fig = Figure(figsize=(4.6, 4), layout="constrained")
    ax = fig.subplots()
    colors = plot.orientation_map_rgb(tuning.preferred, tuning.selectivity)
    ax.scatter(peaks[:, 1], peaks[:, 0], c=colors, s=40, edgecolors="0.5")
    ax.set(xlim=(0, w - 1), ylim=(h - 1, 0), aspect="equal", facecolor="0.15",
           title="preferred orientation at readout position")
    fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 180), cmap="hsv"), ax=ax,
                 label="preferred orientation (deg)", ticks=[0, 45, 90, 135, 180])
    save(fig, "neuron_orientations.png")

    if truth is not None:
        true = torch.as_tensor(truth["true_orientation"])
        err = orientation_difference(tuning.preferred, true)
        fig = Figure(figsize=(8, 3.4), layout="constrained")
        left, right = fig.subplots(1, 2)
        complex_ = truth["true_complex"]
        # orientation is periodic in 180 degrees: show each preference as the equivalent angle nearest the truth,
        # so that a neuron at (0, 178) appears at (0, -2), on the diagonal, not as an error of 178 degrees
        shown = true + (tuning.preferred - true + 90) % 180 - 90
        for sel, label, marker in ((~complex_, "simple", "o"), (complex_, "complex", "^")):
            left.scatter(true[sel], shown[sel], s=14, marker=marker, label=label)
        left.plot([0, 180], [0, 180], "k:", linewidth=1)
        left.set(xlabel="true orientation (deg)", ylabel="in-silico preferred (deg, mod 180)",
                 xlim=(-5, 185), ylim=(min(-5, float(shown.min()) - 5), max(185, float(shown.max()) + 5)),
                 title=f"median error {float(err.median()):.1f}°")
        left.legend(fontsize=8)
        right.hist(tuning.osi.numpy(), bins=20, range=(0, 1), color="0.4")
        right.set(xlabel="OSI", ylabel="neurons", title=f"OSI of {len(true)} model neurons")
        save(fig, "in_silico_vs_truth.png")
        print(f"in-silico preferred orientation vs truth: median error {float(err.median()):.2f} deg, "
              f"{int((err < 10).sum())}/{len(err)} within 10 deg; median OSI {float(tuning.osi.median()):.2f}")

    measured, pinwheels, error = planted_map_demo()
    fig = plot.orientation_map(measured.preference, measured.selectivity, pinwheels=pinwheels)
    fig.axes[0].set_title(f"planted map measured in silico (mean error {error:.1f}°)\n"
                          f"{pinwheels.count} pinwheels, {pinwheels.density:.2f} per column$^2$ "
                          f"(cortex: π ≈ {math.pi:.2f})", fontsize=8)
    save(fig, "orientation_map.png")
    print(f"planted map: mean error {error:.2f} deg; {pinwheels.count} pinwheels, column spacing "
          f"{pinwheels.column_spacing:.2f} units, density {pinwheels.density:.2f}")


if __name__ == "__main__":
    main()
