"""Pictures of what a model learned, as matplotlib figures (or RGB arrays for TensorBoard).

Every function builds a ``matplotlib.figure.Figure`` directly, not through pyplot: it works under any backend (Agg
on a cluster), leaves no global figure state behind, and shows inline in Jupyter when it is the cell's value.
Save with ``fig.savefig(path)``. Nothing here calls ``plt.show``.

Colour conventions: weights, filters and receptive fields use a diverging map centred on 0 (``bwr``: red
positive, blue negative, white 0) with a symmetric range; orientation maps use hue for preference on a cyclic map
(0 and 180 degrees meet) and brightness for selectivity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure

__all__ = [
    "filter_grid", "rf_grid", "rf_panels", "weight_grid", "activation_panel", "tuning_curves", "orientation_map",
    "orientation_map_rgb", "tile_images", "tuning_image",
]


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def _grid_shape(n: int, ncols: int | None) -> tuple[int, int]:
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / ncols), min(ncols, n)


def _as_tiles(weights, channel: int | None, what: str) -> np.ndarray:
    """``[N, H, W]`` from ``[N, H, W]`` or ``[N, C, H, W]`` (one ``channel``, or the only one)."""
    w = _numpy(weights)
    if w.ndim == 4:
        if channel is None:
            if w.shape[1] != 1:
                raise ValueError(f"{what} has {w.shape[1]} input channels; pick one with channel=c "
                                 f"(0 <= c < {w.shape[1]})")
            channel = 0
        if not 0 <= channel < w.shape[1]:
            raise ValueError(f"channel={channel} is out of range for {w.shape[1]} input channels")
        w = w[:, channel]
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3:
        raise ValueError(f"{what} must be [N, H, W] or [N, C, H, W], got shape {list(w.shape)}")
    return w


def filter_grid(
    weights,
    ncols: int | None = None,
    channel: int | None = None,
    titles: Sequence[str] | None = None,
    scale: str = "shared",
    cmap: str = "bwr",
    tile_size: float = 1.3,
    max_tiles: int = 256,
) -> Figure:
    """One tile per filter of ``weights`` (``[N, C, H, W]`` conv weights, or ``[N, H, W]``).

    ``scale="shared"``: one symmetric colour range ``[-max|w|, max|w|]`` for all tiles, with a colour bar (filters
    compare directly); ``"tile"``: each tile its own symmetric range (shapes of filters of very different size).
    """
    w = _as_tiles(weights, channel, "weights")
    if len(w) > max_tiles:
        raise ValueError(f"{len(w)} filters is more than max_tiles={max_tiles}; pass weights[:k] or raise max_tiles")
    if scale not in ("shared", "tile"):
        raise ValueError(f"scale must be 'shared' or 'tile', got {scale!r}")
    rows, cols = _grid_shape(len(w), ncols)
    fig = Figure(figsize=(tile_size * cols + (0.8 if scale == "shared" else 0.2), tile_size * rows + 0.3),
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = float(np.abs(w).max()) or 1.0
    image = None
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(w):
            fig.delaxes(ax)  # unused grid cells: fig.axes is then the tiles (+ the colour bar)
            continue
        limit = vmax if scale == "shared" else (float(np.abs(w[i]).max()) or 1.0)
        image = ax.imshow(w[i], cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(titles[i] if titles is not None else str(i), fontsize=8)
    if scale == "shared":
        fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    return fig


def rf_grid(rfs, ncols: int | None = None, positions=None, titles: Sequence[str] | None = None,
            tile_size: float = 1.3) -> Figure:
    """Receptive fields ``[N, H, W]``, one tile each on its own symmetric colour range (RFs of different neurons
    differ in gain). ``positions`` ``[N, 2]`` (``(dy, dx)`` from the image centre, e.g. a simulation's true RF
    centres) are marked with a cross."""
    fig = filter_grid(rfs, ncols=ncols, titles=titles, scale="tile", tile_size=tile_size)
    if positions is not None:
        pos, (h, w) = _numpy(positions), _as_tiles(rfs, None, "rfs").shape[1:]
        for ax, (dy, dx) in zip(fig.axes, pos, strict=False):
            ax.plot(dx + (w - 1) / 2, dy + (h - 1) / 2, "k+", markersize=8, markeredgewidth=1.5)
    return fig


def rf_panels(panels: Mapping[str, object], ncols: int = 8, max_rfs: int = 32,
              labels: Mapping[str, Sequence[str]] | None = None, tile_size: float = 1.0) -> Figure:
    """Receptive fields of several layers, one block of tiles per layer (e.g. ``{"bottleneck": rfs,
    "vvs1": rfs}``, each ``[N, H, W]`` or ``[N, 1, H, W]``), each tile on its own symmetric colour range (red +,
    blue -). ``labels[name]``: a short text per tile (e.g. the orientedness index). At most ``max_rfs`` per layer."""
    if not panels:
        raise ValueError("rf_panels needs at least one {name: rfs} entry")
    blocks = {name: _as_tiles(rfs, None, f"RFs of {name!r}")[:max_rfs] for name, rfs in panels.items()}
    rows = {name: _grid_shape(len(t), ncols)[0] for name, t in blocks.items()}
    cols = max(_grid_shape(len(t), ncols)[1] for t in blocks.values())
    fig = Figure(figsize=(tile_size * cols + 0.2, sum(tile_size * r + 0.4 for r in rows.values())),
                 layout="constrained")
    subfigs = fig.subfigures(len(blocks), 1, squeeze=False, height_ratios=[r + 0.4 for r in rows.values()])[:, 0]
    for sub, (name, tiles) in zip(subfigs, blocks.items(), strict=True):
        sub.suptitle(name, fontsize=10)
        axes = sub.subplots(rows[name], cols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if i >= len(tiles):
                continue
            limit = float(np.abs(tiles[i]).max()) or 1.0
            ax.imshow(tiles[i], cmap="bwr", vmin=-limit, vmax=limit, interpolation="nearest")
            if labels is not None and name in labels:
                ax.set_title(labels[name][i], fontsize=7)
    return fig


def tile_images(
    images,
    ncols: int | None = None,
    pad: int = 1,
    cmap: str = "bwr",
    symmetric: bool = True,
    scale: str = "shared",
    pad_color: Sequence[float] = (0.55, 0.55, 0.55),
) -> np.ndarray:
    """Images ``[N, H, W]`` tiled into one RGB array ``[rows * (H + pad) - pad, cols * (W + pad) - pad, 3]`` in
    [0, 1] (for ``SummaryWriter.add_image(..., dataformats="HWC")``; no figure is made, so it is cheap).
    ``symmetric``: colour range ``[-m, m]`` (m = max |x|), else ``[min, max]``; over all tiles (``"shared"``) or
    per tile (``"tile"``). Colour filters ``[N, 3, H, W]`` (first layer of an RGB model) are shown in their own
    colours, 0 as grey: ``0.5 + 0.5 w / m`` (``cmap`` and ``symmetric`` do not apply)."""
    arr = _numpy(images)
    colour = arr.ndim == 4 and arr.shape[1] == 3
    x = arr.transpose(0, 2, 3, 1) if colour else _as_tiles(arr, None, "images")
    n, h, w = x.shape[:3]
    rows, cols = _grid_shape(n, ncols)
    axes = (1, 2) if scale == "tile" else (0, 1, 2)
    if colour:
        axes = axes + (3,)
        rgb = 0.5 + 0.5 * x / np.maximum(np.abs(x).max(axis=axes, keepdims=True), 1e-12)
    elif symmetric:
        hi = np.abs(x).max(axis=axes, keepdims=True)
        lo = -hi
    else:
        lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    if not colour:
        normed = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
        rgb = matplotlib.colormaps[cmap](np.clip(normed, 0, 1))[..., :3]
    out = np.empty((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), dtype=np.float32)
    out[:] = pad_color
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = rgb[i]
    return out


def weight_grid(weights, grid: Sequence[int] | None = None, in_shape: Sequence[int] | None = None,
                cmap: str = "gray", symmetric: bool = False, scale: str = "shared", size: float = 6.0) -> Figure:
    """A layer's weights, one tile per unit, arranged as the units' sheet (pylissom's ``plot_layer_weights``).

    ``weights``: ``[n_units, H, W]``, or ``[n_units, in_features]`` with ``in_shape=(H, W)`` (a linear layer from an
    image). ``grid=(rows, cols)`` lays the units out as their sheet (default: as square as possible). Drawn as one
    mosaic, so sheets of thousands of units stay fast; ``fig.mosaic`` holds the RGB array.
    """
    w = _numpy(weights)
    if w.ndim == 2:
        if in_shape is None or int(np.prod(in_shape)) != w.shape[1]:
            raise ValueError(f"weights of shape {list(w.shape)} are flat; pass in_shape=(H, W) with H * W = "
                             f"{w.shape[1]}")
        w = w.reshape(len(w), *in_shape)
    rows, cols = grid if grid is not None else _grid_shape(len(w), None)
    if rows * cols < len(w):
        raise ValueError(f"grid {rows} x {cols} has room for {rows * cols} units, not {len(w)}")
    mosaic = tile_images(w, ncols=cols, cmap=cmap, symmetric=symmetric, scale=scale,
                         pad_color=(0.3, 0.45, 0.75) if cmap == "gray" else (0.55, 0.55, 0.55))
    fig = Figure(figsize=(size, size * mosaic.shape[0] / mosaic.shape[1] + 0.2), layout="constrained")
    ax = fig.subplots()
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    fig.mosaic = mosaic
    return fig


def activation_panel(stimuli, activations, channels: Sequence[int] | None = None, max_channels: int = 8,
                     tile_size: float = 1.5) -> Figure:
    """Stimuli ``[N, 1, H, W]`` (first column, grey) beside the chosen ``channels`` of their activations
    ``[N, C, h, w]`` (diverging colours, one symmetric range for the whole panel, colour bar)."""
    s, a = _numpy(stimuli), _numpy(activations)
    if s.ndim == 4:
        s = s[:, 0]
    if s.ndim == 2:
        s = s[None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or len(a) != len(s):
        raise ValueError(f"activations must be [N, C, h, w] for the N = {len(s)} stimuli, got {list(a.shape)}")
    channels = list(range(min(a.shape[1], max_channels))) if channels is None else list(channels)
    if any(not 0 <= c < a.shape[1] for c in channels):
        raise ValueError(f"channels {channels} out of range for {a.shape[1]} channels")
    rows, cols = len(s), 1 + len(channels)
    fig = Figure(figsize=(tile_size * cols + 0.8, tile_size * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = float(np.abs(a[:, channels]).max()) or 1.0
    image = None
    for i in range(rows):
        axes[i, 0].imshow(s[i], cmap="gray", interpolation="nearest")
        axes[i, 0].set_title("stimulus", fontsize=8)
        for j, c in enumerate(channels, start=1):
            image = axes[i, j].imshow(a[i, c], cmap="bwr", vmin=-vmax, vmax=vmax, interpolation="nearest")
            axes[i, j].set_title(f"channel {c}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="activation")
    return fig


def tuning_curves(tuning, units: Sequence[int] | None = None, max_units: int = 16, ncols: int | None = None,
                  tile_size: float = 1.8) -> Figure:
    """Orientation tuning curves of a ``bioviz.tuning.Tuning``, one panel per unit (index into the flattened
    units; default the first ``max_units``), with the preferred orientation marked and OSI in the title."""
    curves = _numpy(tuning.responses).reshape(-1, len(tuning.orientations))
    preferred, osi = _numpy(tuning.preferred).reshape(-1), _numpy(tuning.osi).reshape(-1)
    units = list(range(min(len(curves), max_units))) if units is None else list(units)
    if not units or any(not 0 <= u < len(curves) for u in units):
        raise ValueError(f"units {units} must index the {len(curves)} units")
    ori = _numpy(tuning.orientations)
    order = np.argsort(ori % 180)
    x = np.append(ori[order] % 180, ori[order][0] % 180 + 180)  # close the 180-degree cycle
    rows, cols = _grid_shape(len(units), ncols)
    fig = Figure(figsize=(tile_size * cols, tile_size * 0.85 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(units):]:
        fig.delaxes(ax)
    for ax, u in zip(axes.flat, units, strict=False):
        ax.plot(x, np.append(curves[u][order], curves[u][order][0]), "k.-", markersize=3, linewidth=1)
        ax.axvline(preferred[u], color="tab:red", linewidth=1)
        ax.set_title(f"{u}: {preferred[u]:.0f}°, OSI {osi[u]:.2f}", fontsize=7)
        ax.set_xticks([0, 90, 180])
        ax.tick_params(labelsize=6)
    fig.supxlabel("orientation (deg)", fontsize=8)
    fig.supylabel("response", fontsize=8)
    return fig


def tuning_image(tuning, max_units: int = 512, cell: tuple[int, int] = (2, 8), cmap: str = "viridis") -> np.ndarray:
    """All tuning curves at once as an RGB array ``[units * cell[0], orientations * cell[1], 3]``: one row per unit
    (each scaled to its own maximum), sorted by preferred orientation, so a tuned population shows a diagonal band.
    Orientations run left to right from the smallest. Cheap (no figure), for logging every few epochs."""
    curves = _numpy(tuning.responses).reshape(-1, len(tuning.orientations))[:max_units]
    preferred = _numpy(tuning.preferred).reshape(-1)[:max_units]
    curves = curves[np.argsort(preferred, kind="stable")][:, np.argsort(_numpy(tuning.orientations) % 180)]
    lo, hi = curves.min(1, keepdims=True), curves.max(1, keepdims=True)
    normed = (curves - lo) / np.where(hi > lo, hi - lo, 1.0)
    rgb = matplotlib.colormaps[cmap](normed)[..., :3].astype(np.float32)
    return np.repeat(np.repeat(rgb, cell[0], axis=0), cell[1], axis=1)


def orientation_map_rgb(preference, selectivity=None, normalize: bool = True) -> np.ndarray:
    """RGB array ``[H, W, 3]`` of an orientation map: hue = preference (degrees, cyclic over 180), brightness =
    selectivity (scaled to its maximum if ``normalize``)."""
    pref = _numpy(preference)
    value = np.ones_like(pref) if selectivity is None else _numpy(selectivity)
    if value.shape != pref.shape:
        raise ValueError(f"selectivity {list(value.shape)} and preference {list(pref.shape)} must match")
    if normalize and value.max() > 0:
        value = value / value.max()
    hsv = np.stack([(pref % 180) / 180, np.ones_like(pref), np.clip(value, 0, 1)], axis=-1)
    return hsv_to_rgb(hsv).astype(np.float32)


def orientation_map(preference, selectivity=None, pinwheels=None, size: float = 4.0) -> Figure:
    """An orientation map (hue = preference, brightness = selectivity) with a cyclic colour key; ``pinwheels``
    (a ``bioviz.tuning.Pinwheels``) are marked (circles: +1, squares: -1)."""
    rgb = orientation_map_rgb(preference, selectivity)
    fig = Figure(figsize=(size + 0.9, size * rgb.shape[0] / rgb.shape[1]), layout="constrained")
    ax = fig.subplots()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    if pinwheels is not None and pinwheels.count:
        pos, charge = _numpy(pinwheels.positions), _numpy(pinwheels.charges)
        # Pinwheel centres are unselective, hence dark: mark both charges in white, by shape.
        for sign, marker in ((1, "o"), (-1, "s")):
            sel = charge == sign
            ax.scatter(pos[sel, 1], pos[sel, 0], s=14, marker=marker, facecolors="none", edgecolors="white",
                       linewidths=1)
        ax.set_title(f"{pinwheels.count} pinwheels, {pinwheels.density:.2f} per column$^2$", fontsize=9)
    key = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 180), cmap="hsv")
    bar = fig.colorbar(key, ax=ax, shrink=0.8, ticks=[0, 45, 90, 135, 180])
    bar.set_label("preferred orientation (deg)")
    return fig
