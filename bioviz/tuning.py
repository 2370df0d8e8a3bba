"""Orientation tuning of any model's units, orientation maps, and pinwheel density: in-silico experiments.

``orientation_tuning`` shows every unit of a layer (or the model's output, e.g. every neuron of a response model)
sine gratings at orientations x phases (x spatial frequencies), keeps the maximum over phase (and the best
frequency), and summarises each tuning curve (angles in degrees, orientations in [0, 180)):

- preferred orientation: half the angle of the vector sum ``z = sum_k r_k exp(2 i theta_k)``;
- circular variance ``1 - |z| / sum_k r_k`` (0: responds to one orientation only, 1: untuned); selectivity is
  ``1 - circular variance``, the normalised vector magnitude used for orientation maps;
- OSI ``(r_pref - r_orth) / (r_pref + r_orth)`` from the sampled peak and the response 90 degrees away.

Responses below 0 count as 0 in these statistics (a rate cannot be negative; the curves keep the raw values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bioviz.hooks import layer_output
from bioviz.stimuli import gaussian, sine_gratings

__all__ = [
    "Tuning", "OrientationMap", "Pinwheels", "orientation_tuning", "tuning_statistics", "orientation_map",
    "pinwheel_density", "orientation_difference",
]


@dataclass
class Tuning:
    """Tuning of a set of units; every per-unit tensor has the units' shape (e.g. ``[n_neurons]`` or
    ``[C, H, W]``), ``responses`` has one more trailing axis of ``len(orientations)``."""

    orientations: torch.Tensor
    responses: torch.Tensor
    preferred: torch.Tensor
    osi: torch.Tensor
    circular_variance: torch.Tensor
    frequency: torch.Tensor

    @property
    def selectivity(self) -> torch.Tensor:
        return 1.0 - self.circular_variance

    @property
    def unit_shape(self) -> tuple[int, ...]:
        return tuple(self.preferred.shape)


def tuning_statistics(curves: torch.Tensor, orientations: torch.Tensor) -> dict[str, torch.Tensor]:
    """Preferred orientation (degrees), OSI and circular variance of tuning ``curves`` ``[..., O]`` sampled at
    ``orientations`` ``[O]`` evenly spaced over 180 degrees."""
    orientations = torch.as_tensor(orientations, dtype=torch.float64).reshape(-1)
    n = orientations.numel()
    if curves.shape[-1] != n:
        raise ValueError(f"curves have {curves.shape[-1]} samples on the last axis but there are {n} orientations; "
                         f"pass curves shaped [..., {n}]")
    step = torch.diff(torch.sort(orientations % 180).values, append=orientations.min().reshape(1) % 180 + 180)
    if n < 2 or not torch.allclose(step, torch.full_like(step, 180.0 / n), atol=1e-3):
        raise ValueError(f"orientations must be evenly spaced over 180 degrees (e.g. torch.arange({max(n, 2)}) * "
                         f"{180 / max(n, 2):g}); got {orientations.tolist()}")
    order = torch.argsort(orientations % 180)
    orientations, r = orientations[order] % 180, curves.double()[..., order].clamp_min(0)
    total = r.sum(-1)
    angle = torch.deg2rad(2 * orientations)
    zx, zy = (r * torch.cos(angle)).sum(-1), (r * torch.sin(angle)).sum(-1)
    magnitude = torch.hypot(zx, zy)
    preferred = torch.rad2deg(torch.atan2(zy, zx)) / 2 % 180
    cv = torch.where(total > 0, 1 - magnitude / total.clamp_min(1e-300), torch.ones_like(total))
    peak = r.argmax(-1, keepdim=True)
    r_pref = r.gather(-1, peak)
    # The sample 90 degrees from the peak; with an odd count, the mean of the two samples either side of it.
    half = n // 2
    r_orth = r.gather(-1, (peak + half) % n)
    if n % 2:
        r_orth = (r_orth + r.gather(-1, (peak + half + 1) % n)) / 2
    denom = r_pref + r_orth
    osi = torch.where(denom > 0, (r_pref - r_orth) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    preferred = preferred.float() % 180  # again after rounding to float32: 179.999999 -> 180.0 -> 0
    return {"preferred": preferred, "osi": osi.squeeze(-1).float(), "circular_variance": cv.float()}


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _in_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 1


def orientation_tuning(
    model: nn.Module,
    shape: Sequence[int],
    layer: str | None = None,
    orientations: int | Sequence[float] = 16,
    phases: int | Sequence[float] = 8,
    frequency: float | Sequence[float] = 0.1,
    contrast: float = 1.0,
    size: float | None = None,
    center: Sequence[float] = (0.0, 0.0),
    unit: str = "all",
    channels: int | None = None,
    batch_size: int = 256,
) -> Tuning:
    """Orientation tuning of every unit of ``layer`` (a name from ``model.named_modules()``; ``None``: the model's
    output, e.g. every neuron of a response model).

    ``shape`` = ``(H, W)`` of the model's input. Gratings (see ``bioviz.stimuli.sine_grating``) at each orientation
    (a count evenly spaced over [0, 180) or the values), phase and ``frequency`` (cycles/pixel; a list sweeps it and
    each unit keeps its best) are repeated over ``channels`` input channels (default: those of the first Conv2d, else
    1). ``unit="center"`` keeps only the central position of a ``[C, H, W]`` feature map, i.e. one tuning per channel
    (what a convolution's filters prefer); ``"all"`` keeps every unit. Runs without gradients in eval mode on the
    model's device, ``batch_size`` images at a time, and restores the model's training mode.
    """
    if unit not in ("all", "center"):
        raise ValueError(f"unit must be 'all' or 'center', got {unit!r}")
    if len(shape) != 2:
        raise ValueError(f"shape must be the model input's (height, width), got {tuple(shape)}")
    device, channels = _device(model), channels or _in_channels(model)
    freqs = [float(f) for f in torch.as_tensor(frequency, dtype=torch.float64).reshape(-1)]
    was_training = model.training
    model.eval()
    per_frequency = []
    try:
        for f in freqs:
            images, ori, pha = sine_gratings(shape, orientations, phases, f, contrast=contrast, size=size,
                                             center=center)
            outputs = []
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size].to(device).expand(-1, channels, -1, -1)
                try:
                    # The full pass (no stop): a layer that runs several times per forward gives its last output.
                    out = layer_output(model, layer, batch)
                except RuntimeError as err:
                    if "shape" not in str(err) and "size" not in str(err):
                        raise
                    raise ValueError(
                        f"{type(model).__name__} rejected gratings shaped {list(batch.shape)} ({err}). Pass the "
                        f"model's input size as shape=(H, W) and its input channels as channels=C."
                    ) from err
                if unit == "center":
                    if out.ndim != 4:
                        raise ValueError(f"unit='center' needs a [B, C, H, W] feature map, but {layer or 'the output'}"
                                         f" is {list(out.shape)}; use unit='all'")
                    out = out[:, :, out.shape[2] // 2, out.shape[3] // 2]
                outputs.append(out.float().cpu())
            out = torch.cat(outputs)
            per_frequency.append(out.reshape(len(ori), len(pha), *out.shape[1:]).amax(1))  # max over phase
    finally:
        model.train(was_training)
    stack = torch.stack(per_frequency)  # [F, O, *units]
    best = stack.amax(1, keepdim=True).argmax(0, keepdim=True)  # each unit's best frequency
    curves = stack.gather(0, best.expand(1, *stack.shape[1:]))[0].movedim(0, -1)  # [*units, O]
    stats = tuning_statistics(curves, ori)
    return Tuning(orientations=ori, responses=curves, frequency=torch.tensor(freqs)[best[0, 0]], **stats)


@dataclass
class OrientationMap:
    """Preference (degrees in [0, 180)) and selectivity (normalised vector magnitude in [0, 1]) of a sheet
    ``[H, W]`` of units."""

    preference: torch.Tensor
    selectivity: torch.Tensor


def orientation_map(
    source: Tuning | torch.Tensor | nn.Module,
    orientations: Sequence[float] | None = None,
    sheet_shape: Sequence[int] | None = None,
    **tuning_kwargs,
) -> OrientationMap:
    """Orientation preference and selectivity maps of a sheet of units.

    ``source``: a ``Tuning``; tuning curves ``[..., O]`` (max over phase) with their ``orientations``; or a model,
    measured with ``orientation_tuning(source, **tuning_kwargs)``. The units must form a 2-D sheet: leading axes of
    size 1 are dropped, and ``sheet_shape=(H, W)`` reshapes flat units (e.g. a LISSOM sheet stored as ``[H * W]``).
    """
    if isinstance(source, nn.Module):
        source = orientation_tuning(source, **tuning_kwargs)
    elif tuning_kwargs:
        raise TypeError(f"{sorted(tuning_kwargs)} only apply when source is a model")
    if isinstance(source, Tuning):
        preference, selectivity = source.preferred, source.selectivity
    else:
        if orientations is None:
            raise ValueError("tuning curves need their orientations: orientation_map(curves, orientations=...)")
        stats = tuning_statistics(torch.as_tensor(source), torch.as_tensor(orientations))
        preference, selectivity = stats["preferred"], 1 - stats["circular_variance"]
    if sheet_shape is not None:
        if math.prod(sheet_shape) != preference.numel():
            raise ValueError(f"sheet_shape {tuple(sheet_shape)} holds {math.prod(sheet_shape)} units but there are "
                             f"{preference.numel()}")
        preference, selectivity = preference.reshape(*sheet_shape), selectivity.reshape(*sheet_shape)
    while preference.ndim > 2 and preference.shape[0] == 1:
        preference, selectivity = preference[0], selectivity[0]
    if preference.ndim != 2:
        raise ValueError(f"the units have shape {tuple(preference.shape)}, not a 2-D sheet; pass sheet_shape=(H, W) "
                         f"for flat units or select one channel (e.g. tuning curves[c]) first")
    return OrientationMap(preference=preference, selectivity=selectivity)


@dataclass
class Pinwheels:
    """Pinwheels of an orientation map: ``positions`` ``[k, 2]`` (row, column; at plaquette centres) and
    ``charges`` ``[k]`` (+1: the preference grows by 180 degrees on a turn in the sense of
    ``atan2(row, column)``, -1: the opposite), ``column_spacing`` (pixels, from the
    power spectrum), ``area`` (pixels^2 searched) and ``density`` = count * spacing^2 / area (~pi in cortex)."""

    positions: torch.Tensor
    charges: torch.Tensor
    column_spacing: float
    area: float
    density: float

    @property
    def count(self) -> int:
        return int(self.charges.numel())


def _smooth(z: torch.Tensor, sigma: float, periodic: bool) -> torch.Tensor:
    radius = int(math.ceil(3 * sigma))
    kernel = gaussian((2 * radius + 1, 2 * radius + 1), sigma, dtype=z.real.dtype)[None, None]
    parts = torch.stack([z.real, z.imag])[:, None]
    padded = F.pad(parts, (radius,) * 4, mode="circular" if periodic else "reflect")
    out = F.conv2d(padded, kernel)[:, 0]
    return torch.complex(out[0], out[1])


def pinwheel_density(
    preference: torch.Tensor,
    selectivity: torch.Tensor | None = None,
    periodic: bool = False,
    smooth: float = 0.0,
    margin: int = 0,
) -> Pinwheels:
    """Find the pinwheels of an orientation ``preference`` map ``[H, W]`` (degrees) and their density per squared
    column spacing.

    Pinwheels are the plaquettes (2x2 pixels) around which the doubled preference angle winds by +-360 degrees.
    The column spacing is ``1 / k``, ``k`` the power-weighted mean spatial frequency (cycles/pixel) within +-30 %
    of the peak of the radial power spectrum of the complex map ``selectivity * exp(2 i preference)`` (selectivity 1
    if not given; a Hann window tapers a non-``periodic`` map first). ``periodic=True`` treats the map as a torus
    (also the plaquettes across its edges).
    ``smooth`` (pixels) low-passes the complex map with a Gaussian before counting, against noise pinwheels.
    ``margin`` (pixels, non-periodic maps only) counts only the plaquettes whose centres lie at least that far inside
    the outermost pixel centres, and divides by that interior's area: the density away from a model sheet's edges,
    where units lack part of their lateral connections. The column spacing still comes from the whole map.
    """
    preference = torch.as_tensor(preference, dtype=torch.float64)
    if preference.ndim != 2 or min(preference.shape) < 3:
        raise ValueError(f"preference must be a 2-D map [H, W] of at least 3 x 3 pixels, got {tuple(preference.shape)}"
                         "; use orientation_map(...).preference")
    magnitude = torch.ones_like(preference) if selectivity is None else torch.as_tensor(selectivity).double()
    if magnitude.shape != preference.shape:
        raise ValueError(f"selectivity {tuple(magnitude.shape)} and preference {tuple(preference.shape)} differ")
    if margin and periodic:
        raise ValueError("a periodic map has no edges: use margin=0 with periodic=True")
    if not 0 <= margin < (min(preference.shape) - 1) / 2:
        raise ValueError(f"margin must be >= 0 and leave plaquettes inside a {tuple(preference.shape)} map, got "
                         f"{margin}")
    z = magnitude * torch.exp(2j * torch.deg2rad(preference))
    if smooth > 0:
        z = _smooth(z, smooth, periodic)
    h, w = z.shape

    # Column spacing from the power spectrum: the power-weighted mean frequency within +-30 % of the peak of the
    # radial spectrum. A mean over the whole spectrum would be pulled up by the harmonics of the sharp jumps that a
    # unit-magnitude map (no selectivity) has at its pinwheels.
    centred = z - z.mean()
    if not periodic:
        centred = centred * torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                                        torch.hann_window(w, periodic=False, dtype=torch.float64))
    power = torch.fft.fft2(centred).abs() ** 2
    k = torch.hypot(torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64))
    power[0, 0] = 0
    if power.sum() <= 0:
        raise ValueError("the map is uniform (no orientation columns); pinwheel density is undefined")
    step = 1.0 / max(h, w)
    radial = torch.bincount(torch.round(k / step).long().flatten(), weights=power.flatten())
    k_peak = float(radial.argmax()) * step
    near = ((k > 0.7 * k_peak) & (k < 1.3 * k_peak)).double() * power
    spacing = float(near.sum() / (k * near).sum())

    # Winding of the doubled angle around each plaquette.
    angle = torch.angle(z)

    def wrap(d):
        return torch.remainder(d + math.pi, 2 * math.pi) - math.pi

    if periodic:
        corners = [angle, angle.roll(-1, 1), angle.roll((-1, -1), (0, 1)), angle.roll(-1, 0)]
    else:
        corners = [angle[:-1, :-1], angle[:-1, 1:], angle[1:, 1:], angle[1:, :-1]]
    winding = sum(wrap(corners[(i + 1) % 4] - corners[i]) for i in range(4)) / (2 * math.pi)
    charge = torch.round(winding).to(torch.int64)
    if margin:
        charge = charge[margin:h - 1 - margin, margin:w - 1 - margin]
    where = charge.nonzero()
    positions = where.double() + 0.5 + margin
    area = float(h * w) if periodic else float(charge.shape[0] * charge.shape[1])
    charges = charge[where[:, 0], where[:, 1]]
    return Pinwheels(positions=positions, charges=charges, column_spacing=spacing, area=area,
                     density=len(charges) * spacing**2 / area)


def orientation_difference(a, b) -> torch.Tensor:
    """Absolute difference of orientations (degrees), on the 180-degree circle: in [0, 90]."""
    d = torch.remainder(torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64), 180.0)
    return torch.minimum(d, 180.0 - d)
