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
    "Tuning", "OrientationMap", "Pinwheels", "RandomOrientationMap", "orientation_tuning", "tuning_statistics",
    "orientation_map", "pinwheel_density", "find_pinwheels", "local_column_spacing", "spectral_column_spacing",
    "random_orientation_map", "stability_index", "orientation_difference",
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
    """Pinwheels of an orientation map: ``positions`` ``[k, 2]`` (row, column, in pixels: where the zero contours of
    the real and imaginary parts of the complex map cross) and ``charges`` ``[k]`` (+1: the preference grows by 180
    degrees on a turn in the sense of ``atan2(row, column)``, -1: the opposite); ``column_spacing`` (pixels: the mean
    local column spacing over the counted region, ``local_column_spacing``), ``area`` (pixels^2 counted) and
    ``density`` = count * spacing^2 / area (pi in tree shrew, galago and ferret; Kaschube et al. 2010)."""

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


def _complex_map(preference, selectivity) -> torch.Tensor:
    """``selectivity * exp(2 i preference)`` (float64), checking the shapes."""
    preference = torch.as_tensor(preference, dtype=torch.float64)
    if preference.ndim != 2 or min(preference.shape) < 3:
        raise ValueError(f"preference must be a 2-D map [H, W] of at least 3 x 3 pixels, got {tuple(preference.shape)}"
                         "; use orientation_map(...).preference")
    magnitude = torch.ones_like(preference) if selectivity is None else torch.as_tensor(selectivity).double()
    if magnitude.shape != preference.shape:
        raise ValueError(f"selectivity {tuple(magnitude.shape)} and preference {tuple(preference.shape)} differ")
    return magnitude * torch.exp(2j * torch.deg2rad(preference))


def spectral_column_spacing(preference, selectivity=None, periodic: bool = False) -> float:
    """A quick estimate of the column spacing (pixels) of a whole map: ``1 / k``, ``k`` the power-weighted mean
    spatial frequency (cycles/pixel) within +-30 % of the peak of the radial power spectrum of the complex map
    ``selectivity * exp(2 i preference)`` (a Hann window tapers a non-``periodic`` map first). A check, not the
    estimator behind ``pinwheel_density``: on a small map the spectrum's bins are coarse and its peak is broad, so
    the estimate jumps between bins (``local_column_spacing`` is the literature's method)."""
    return _spectral_spacing(_complex_map(preference, selectivity), periodic)


def _spectral_spacing(z: torch.Tensor, periodic: bool) -> float:
    h, w = z.shape
    # The power-weighted mean near the peak: a mean over the whole spectrum would be pulled up by the harmonics of
    # the sharp jumps that a unit-magnitude map (no selectivity) has at its pinwheels.
    centred = z - z.mean()
    if not periodic:
        centred = centred * torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                                        torch.hann_window(w, periodic=False, dtype=torch.float64))
    power = torch.fft.fft2(centred).abs() ** 2
    k = torch.hypot(torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64))
    power[0, 0] = 0
    if power.sum() <= 0:
        raise ValueError("the map is uniform (no orientation columns); its column spacing is undefined")
    step = 1.0 / max(h, w)
    radial = torch.bincount(torch.round(k / step).long().flatten(), weights=power.flatten())
    k_peak = float(radial.argmax()) * step
    near = ((k > 0.7 * k_peak) & (k < 1.3 * k_peak)).double() * power
    return float(near.sum() / (k * near).sum())


def local_column_spacing(
    preference,
    selectivity=None,
    periodic: bool = False,
    wavelengths: Sequence[float] | None = None,
    orientations: int = 16,
) -> torch.Tensor:
    """The local column spacing ``Lambda(x)`` (pixels) of an orientation map ``[H, W]`` by wavelet analysis
    (Kaschube et al. 2010, supplement; the Wolf group's published implementation).

    The real and imaginary parts of the complex map ``selectivity * exp(2 i preference)`` are filtered with complex
    Morlet wavelets ``(1 / l) exp(-|x|^2 / 2 l^2) exp(i k e_theta . x)`` of wavelength ``2 pi / k`` and envelope
    ``l = 7 / k`` (about seven radians of phase under the envelope), at ``orientations`` directions over 180 degrees
    (enough for real fields). At each pixel, the wavelength whose modulus, averaged over directions and both parts,
    is largest is the local spacing (refined between the sampled wavelengths by a parabola in log wavelength).
    Pixels whose largest modulus lies within two samples of either end of ``wavelengths`` have no estimate (NaN).

    ``wavelengths`` (pixels, increasing): default 25 values spaced geometrically from half to twice the
    ``spectral_column_spacing``. A non-``periodic`` map is padded with zeros; the modulus is divided by the
    fraction of the wavelet's envelope that lies on the map (the border correction of Kaschube's filters, which
    are normalised by their overlap with the region of interest).
    """
    return _local_spacing(_complex_map(preference, selectivity), periodic, wavelengths, orientations)


def _local_spacing(z: torch.Tensor, periodic: bool, wavelengths, orientations: int = 16) -> torch.Tensor:
    h, w = z.shape
    if wavelengths is None:
        guess = _spectral_spacing(z, periodic)
        wavelengths = guess * torch.logspace(-1, 1, 25, base=2, dtype=torch.float64)
    wavelengths = torch.as_tensor(wavelengths, dtype=torch.float64).flatten()
    if len(wavelengths) < 5 or not bool((wavelengths[1:] > wavelengths[:-1]).all()) or wavelengths[0] <= 0:
        raise ValueError(f"wavelengths must be at least 5 increasing positive values (pixels), got "
                         f"{wavelengths.tolist()}")
    if orientations < 2:
        raise ValueError(f"orientations must be >= 2, got {orientations}")
    envelopes = 7.0 * wavelengths / (2 * math.pi)
    pad = 0 if periodic else int(math.ceil(3 * float(envelopes[-1])))
    # Zero-padded to sizes with small prime factors only (the FFTs' speed), a little beyond 3 envelopes.
    size = (h, w) if periodic else (_smooth_size(h + 2 * pad), _smooth_size(w + 2 * pad))
    parts = torch.stack([z.real, z.imag]).float()  # single precision: only the peak's position matters
    spectra = torch.fft.fft2(F.pad(parts, (pad, size[1] - w - pad, pad, size[0] - h - pad)))  # [2, H', W']
    qy = (2 * math.pi * torch.fft.fftfreq(size[0]))[:, None]
    qx = (2 * math.pi * torch.fft.fftfreq(size[1]))[None, :]
    theta = torch.arange(orientations) * math.pi / orientations
    if not periodic:  # where the map is, for the envelope's overlap with it
        inside_spectrum = torch.fft.fft2(F.pad(torch.ones(h, w), (pad, size[1] - w - pad, pad, size[0] - h - pad)))
    modulus = []
    for wavelength, envelope in zip(wavelengths.tolist(), envelopes.tolist(), strict=True):
        k = 2 * math.pi / wavelength
        ky, kx = (k * torch.sin(theta))[:, None, None], (k * torch.cos(theta))[:, None, None]
        wavelet = envelope * torch.exp(-(envelope**2) * ((qy - ky) ** 2 + (qx - kx) ** 2) / 2)  # [O, H', W']
        response = torch.fft.ifft2(spectra[:, None] * wavelet[None]).abs().mean((0, 1))
        if not periodic:  # the fraction of the (normalised) envelope on the map
            gauss = torch.exp(-(envelope**2) * (qy**2 + qx**2) / 2)
            overlap = torch.fft.ifft2(inside_spectrum * gauss).real.clamp_min(1e-6)
            response = response / overlap
        modulus.append(response[pad:pad + h, pad:pad + w])
    modulus = torch.stack(modulus).double()  # [S, H, W]
    best = modulus.argmax(0)
    n = len(wavelengths)
    valid = (best >= 2) & (best <= n - 3)
    j = best.clamp(1, n - 2)
    # The vertex of the parabola through the three samples around the peak, in log wavelength (any spacing).
    before, at, after = (modulus.gather(0, (j + d)[None])[0] for d in (-1, 0, 1))
    log_w = wavelengths.log()
    x0, x1, x2 = log_w[j - 1], log_w[j], log_w[j + 1]
    d0, d2 = x0 - x1, x2 - x1
    numerator = (before - at) * d2**2 - (after - at) * d0**2
    denominator = 2 * ((before - at) * d2 - (after - at) * d0)
    vertex = torch.where(denominator != 0, numerator / denominator, torch.zeros_like(at))
    spacing = torch.exp(x1 + vertex.clamp(d0 / 2, d2 / 2))
    return torch.where(valid, spacing, torch.full_like(spacing, math.nan))


def find_pinwheels(preference, selectivity=None, periodic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The pinwheels of an orientation map ``[H, W]`` (degrees): where the zero contours of the real and imaginary
    parts of ``selectivity * exp(2 i preference)`` cross, as ``(positions [k, 2] (row, column), charges [k])``
    (``Pinwheels`` explains the charge). ``periodic=True`` also searches between the last and first rows and
    columns."""
    return _zero_crossings(_complex_map(preference, selectivity), periodic)


def _smooth_size(n: int) -> int:
    """The smallest integer >= ``n`` whose prime factors are 2, 3 and 5."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _defined_plaquettes(z: torch.Tensor, periodic: bool) -> torch.Tensor:
    """The plaquettes whose four corners all have an orientation (``z != 0``): a silent, untuned unit (selectivity
    0) leaves the map undefined around it, and its zero would read as a pinwheel."""
    nonzero = z != 0
    if periodic:
        return nonzero & nonzero.roll(-1, 1) & nonzero.roll(-1, 0) & nonzero.roll((-1, -1), (0, 1))
    return nonzero[:-1, :-1] & nonzero[:-1, 1:] & nonzero[1:, :-1] & nonzero[1:, 1:]


def _zero_crossings(z: torch.Tensor, periodic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the zero contours of ``Re z`` and ``Im z`` cross, with ``z`` interpolated bilinearly between pixel
    centres: ``(positions [k, 2] (row, column), charges [k])``. In each plaquette of 2 x 2 pixels both parts are
    ``a0 + a1 x + a2 y + a3 x y``; eliminating ``y`` leaves a quadratic in ``x``, whose roots inside the plaquette
    are the crossings (two of opposite charge may share a plaquette). The charge is the sign of the Jacobian
    ``d(Re z, Im z) / d(column, row)``. Plaquettes with a corner where ``z = 0`` are skipped."""

    def coefficients(f):
        if periodic:
            f00, f01, f10, f11 = f, f.roll(-1, 1), f.roll(-1, 0), f.roll((-1, -1), (0, 1))
        else:
            f00, f01, f10, f11 = f[:-1, :-1], f[:-1, 1:], f[1:, :-1], f[1:, 1:]
        return f00, f01 - f00, f10 - f00, f00 - f01 - f10 + f11

    a0, a1, a2, a3 = coefficients(z.real)
    b0, b1, b2, b3 = coefficients(z.imag)
    defined = _defined_plaquettes(z, periodic)
    quad, lin, const = a1 * b3 - b1 * a3, a0 * b3 + a1 * b2 - b0 * a3 - b1 * a2, a0 * b2 - b0 * a2
    disc = lin * lin - 4 * quad * const
    root = disc.clamp_min(0).sqrt()
    q = -0.5 * (lin + torch.where(lin >= 0, root, -root))  # the numerically stable pair of roots
    nan = torch.full_like(q, math.nan)
    rows, cols = torch.meshgrid(torch.arange(a0.shape[0], dtype=torch.float64),
                                torch.arange(a0.shape[1], dtype=torch.float64), indexing="ij")
    positions, charges = [], []
    for x in (torch.where(quad != 0, q / quad, nan), torch.where(q != 0, const / q, nan)):
        den_a, den_b = a2 + a3 * x, b2 + b3 * x
        y = torch.where(den_a.abs() >= den_b.abs(), -(a0 + a1 * x) / den_a, -(b0 + b1 * x) / den_b)
        found = defined & (disc > 0) & (x >= 0) & (x < 1) & (y >= 0) & (y < 1)
        jacobian = (a1 + a3 * y) * den_b - den_a * (b1 + b3 * y)
        positions.append(torch.stack([rows[found] + y[found], cols[found] + x[found]], 1))
        charges.append(torch.sign(jacobian[found]).long())
    positions, charges = torch.cat(positions), torch.cat(charges)
    if periodic:
        positions = positions % torch.tensor(z.shape, dtype=torch.float64)
    order = torch.argsort(positions[:, 0] * (z.shape[1] + 1) + positions[:, 1])
    return positions[order], charges[order]


def pinwheel_density(
    preference: torch.Tensor,
    selectivity: torch.Tensor | None = None,
    periodic: bool = False,
    smooth: float = 0.0,
    margin: int = 0,
    wavelengths: Sequence[float] | None = None,
) -> Pinwheels:
    """The pinwheels of an orientation ``preference`` map ``[H, W]`` (degrees) and their density per squared column
    spacing, by the method of Kaschube et al. (2010): pinwheels where the zero contours of the real and imaginary
    parts of ``z = selectivity * exp(2 i preference)`` cross (``selectivity`` 1 if not given), the column spacing
    the mean of the wavelet estimate ``local_column_spacing`` over the counted region, and the density
    ``count * spacing^2 / area`` (their count estimate; their band-pass filtering and scan over low-pass cut-offs,
    made for noisy imaging data, are not applied). The wavelet spacing reads a few % long, more on broadband or
    small maps, so on Gaussian random maps with a thin ring spectrum the density comes out ~4 % above pi (Wolf &
    Geisel 1998; BENCHMARKS.md, pinwheel-density estimator); ``spectral_column_spacing`` is a quicker, coarser check.
    Plaquettes with a silent unit (``selectivity`` 0) at a corner hold no pinwheel and no area.

    ``periodic=True`` treats the map as a torus. ``margin`` (pixels, non-periodic maps only) counts only the
    pinwheels and spacings at least that far inside the outermost pixel centres, and divides by that interior's
    area: the density away from a model sheet's edges, where units lack part of their lateral connections.
    ``smooth`` (pixels) low-passes the complex map with a Gaussian first. ``wavelengths``: those of
    ``local_column_spacing``.
    """
    z = _complex_map(preference, selectivity)
    if margin and periodic:
        raise ValueError("a periodic map has no edges: use margin=0 with periodic=True")
    h, w = z.shape
    if not 0 <= margin < (min(h, w) - 1) / 2:
        raise ValueError(f"margin must be >= 0 and leave part of a {(h, w)} map inside, got {margin}")
    if float(z.abs().max()) == 0 or float((z - z.mean()).abs().max()) < 1e-12:
        raise ValueError("the map is uniform (no orientation columns); pinwheel density is undefined")
    if smooth > 0:
        z = _smooth(z, smooth, periodic)
    spacing_map = _local_spacing(z, periodic, wavelengths)
    positions, charges = _zero_crossings(z, periodic)
    defined = _defined_plaquettes(z, periodic)
    if periodic:
        area = float(defined.sum())
        region = spacing_map
    else:
        low, high = float(margin), torch.tensor([h - 1.0 - margin, w - 1.0 - margin], dtype=torch.float64)
        keep = ((positions >= low) & (positions <= high)).all(1)
        positions, charges = positions[keep], charges[keep]
        area = float(defined[margin:h - 1 - margin, margin:w - 1 - margin].sum())  # plaquettes of unit area
        region = spacing_map[margin:h - margin, margin:w - margin]
    if bool(region.isnan().all()):
        raise ValueError("no pixel of the region has a local column spacing inside the wavelengths searched; pass "
                         "wavelengths that bracket the map's column spacing")
    spacing = float(region.nanmean())
    return Pinwheels(positions=positions, charges=charges, column_spacing=spacing, area=area,
                     density=len(charges) * spacing**2 / area)


@dataclass
class RandomOrientationMap(OrientationMap):
    """A Gaussian random orientation map (``random_orientation_map``) with what theory says of it:
    ``column_spacing`` = 1 / mean spatial frequency of its spectrum (pixels), ``pinwheels_per_area`` =
    ``<K^2> / 4 pi`` (``K`` angular wavenumber; Berry & Dennis 2000) and ``expected_density`` = pinwheels per
    squared ``column_spacing`` = ``pi <k^2> / <k>^2`` (pi for a thin ring)."""

    column_spacing: float = math.nan
    pinwheels_per_area: float = math.nan
    expected_density: float = math.nan


def random_orientation_map(shape: Sequence[int], column_spacing: float, bandwidth: float = 0.1,
                           seed: int | torch.Generator = 0) -> RandomOrientationMap:
    """A periodic Gaussian random orientation map ``[H, W]``: complex white noise filtered by a ring
    ``exp(-(k - k0)^2 / 2 (bandwidth k0)^2)`` in amplitude-squared (``k0 = 1 / column_spacing`` cycles/pixel);
    preference = half its angle (degrees), selectivity = its modulus over the largest. The standard model of
    orientation maps with a known pinwheel density (Wolf & Geisel 1998; Schnabel et al. 2007)."""
    if len(shape) != 2 or column_spacing <= 2 or not 0 < bandwidth:
        raise ValueError(f"need shape (H, W), column_spacing > 2 pixels and bandwidth > 0; got {tuple(shape)}, "
                         f"{column_spacing}, {bandwidth}")
    h, w = int(shape[0]), int(shape[1])
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    noise = torch.complex(torch.randn(h, w, generator=g, dtype=torch.float64),
                          torch.randn(h, w, generator=g, dtype=torch.float64))
    k = torch.hypot(torch.fft.fftfreq(h, dtype=torch.float64)[:, None], torch.fft.fftfreq(w, dtype=torch.float64))
    k0 = 1.0 / column_spacing
    power = torch.exp(-((k - k0) ** 2) / (2 * (bandwidth * k0) ** 2))
    power[0, 0] = 0
    z = torch.fft.ifft2(torch.fft.fft2(noise) * power.sqrt())
    mean_k, mean_k2 = float((k * power).sum() / power.sum()), float((k * k * power).sum() / power.sum())
    return RandomOrientationMap(preference=torch.rad2deg(torch.angle(z)) / 2 % 180, selectivity=z.abs() / z.abs().max(),
                                column_spacing=1.0 / mean_k, pinwheels_per_area=math.pi * mean_k2,
                                expected_density=math.pi * mean_k2 / mean_k**2)


def stability_index(preference, reference) -> float:
    """Similarity of two orientation maps (degrees): ``1 - 4 mean|d| / 180``, ``d`` the orientation difference in
    [0, 90] (Stevens et al. 2013, Eq. 1): 1 for identical maps, about 0 for unrelated ones, -1 for maps 90 degrees
    apart everywhere. The map's stability at a time of development is its index against the final map."""
    difference = orientation_difference(preference, reference)
    return float(1 - 4 * difference.mean() / 180)


def orientation_difference(a, b) -> torch.Tensor:
    """Absolute difference of orientations (degrees), on the 180-degree circle: in [0, 90]."""
    d = torch.remainder(torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64), 180.0)
    return torch.minimum(d, 180.0 - d)
