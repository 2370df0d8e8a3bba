"""Visual stimuli as float tensors shaped for a model.

Angles are in degrees (0 = vertical stripes, varying along x; positive angles turn counter-clockwise with y pointing
up, which is clockwise on an image shown with row 0 at the top, as ``imshow`` does), lengths in pixels,
spatial frequencies in cycles per pixel. Every generator takes a ``torch.Generator`` (or a seed) where it is random,
so stimuli are reproducible, and returns ``[N, 1, H, W]`` for images or ``[H, W]`` / ``[N, H, W]`` for filters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "gabor", "grating", "gratings", "filters", "pink_noise", "dead_leaves", "natural_images",
    "sine_grating", "sine_gratings", "gaussian", "center_surround", "difference_of_gaussians", "gaussian_blob",
    "random_gaussian_blobs", "bar",
]


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


def _as_column(value, dtype) -> torch.Tensor:
    """A scalar or 1-D sequence as an [N, 1, 1] tensor so parameters broadcast over a batch of filters."""
    return torch.as_tensor(value, dtype=dtype).reshape(-1, 1, 1)


def gabor(
    shape: Sequence[int],
    orientation=0.0,
    frequency=0.1,
    phase=0.0,
    sigma=3.0,
    center=(0.0, 0.0),
    aspect: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gabor function(s) on an ``shape = (H, W)`` pixel grid.

    ``orientation`` (degrees), ``frequency`` (cycles/pixel), ``phase`` (degrees), ``sigma`` (envelope SD, pixels) and
    ``center`` (``(dy, dx)`` offset from the image centre, pixels; or an ``[N, 2]`` tensor) may each be a scalar or
    one value per filter. Returns ``[H, W]`` when every parameter is scalar, else ``[N, H, W]``.
    ``aspect`` < 1 elongates the envelope along the stripes.
    """
    u, v = _frame(shape, orientation, center, dtype)  # u runs across the stripes, v along them
    freq, phi, sig = _as_column(frequency, dtype), torch.deg2rad(_as_column(phase, dtype)), _as_column(sigma, dtype)
    envelope = torch.exp(-(u**2 + (aspect * v) ** 2) / (2 * sig**2))
    out = envelope * torch.cos(2 * math.pi * freq * u + phi)  # [N, H, W]: every parameter broadcast
    scalar = len(out) == 1 and all(torch.as_tensor(p).ndim == 0 for p in (orientation, frequency, phase, sigma))
    scalar = scalar and torch.as_tensor(center).ndim == 1
    return out[0] if scalar else out.contiguous()


def grating(angle: float, sf: float = 1 / 28, res: float = 0.1, patch: bool = False) -> torch.Tensor:
    """The binarised grating of the Neuromatch W1D5 tutorial (Week 1 Day 5, Tutorial 2 of Neuromatch Academy's
    Computational Neuroscience course; docs/sources.md), value for value.

    ``angle``: degrees from vertical; ``sf``: radians of phase per pixel at ``res = 1``; ``res``: scale of the
    480 x 640 image (0.1 -> 48 x 64, 0.025 -> 12 x 16); ``patch``: a circular patch on the right of a grey field.
    Values are +-0.5 (0 for grey). Returns ``[round(480 res), round(640 res)]``.
    """
    theta = math.radians(angle)
    width, height = 640, 480
    xs = sf * torch.arange(0, width * res, dtype=torch.float64) / res
    ys = sf * torch.arange(0, height * res, dtype=torch.float64) / res
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    if patch:
        theta += 0.1  # the tutorial's phase shift, so the stripes fit the patch better
    wave = torch.cos(xx * math.cos(theta) + yy * math.sin(theta))
    image = (wave > 0).double()  # the tutorial maps cos < 0 to 0 and cos > 0 to 1 (and keeps cos == 0 at 0)
    if patch:
        rows, cols = image.shape
        yc, xc = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                                indexing="ij")
        inside = ((xc - cols * 0.75) ** 2 + (yc - rows / 2) ** 2).sqrt() < width / 3 / 2 * res
        image = torch.where(inside, image, torch.full_like(image, 0.5))
    return (image - 0.5).float()


def gratings(angles, sf: float = 1 / 28, res: float = 0.1, patch: bool = False) -> torch.Tensor:
    """``grating`` at each of ``angles`` (degrees), stacked as model input ``[N, 1, H, W]``."""
    return torch.stack([grating(float(a), sf=sf, res=res, patch=patch) for a in angles]).unsqueeze(1)


def filters(out_channels: int = 6, K: int = 7) -> torch.Tensor:
    """The filter bank of the same Neuromatch tutorial, value for value: a center-surround filter, its negative, and
    ``out_channels - 2`` Gabors at orientations evenly spaced in [0, 180) degrees; each scaled to max |w| = 1 and
    then made zero-mean. Returns ``[out_channels, 1, K, K]``.

    As in the tutorial, the Gaussians fall off with the distance r itself, exp(-r / (2 sigma^2)), not r^2, and the
    grid is built with ``indexing="ij"``, so the Gabor the tutorial calls 0 degrees varies along rows: in this module's
    convention it prefers 90-degree gratings (and its "90 degrees" prefers 0; measured with ``bioviz.tuning``).
    """
    grid = torch.linspace(-K / 2, K / 2, K, dtype=torch.float32)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    r = (xx**2 + yy**2).sqrt()
    sigma = 1.1
    center_surround = torch.exp(-r / (2 * sigma**2)) - 0.5 * torch.exp(-r / (2 * (2 * sigma) ** 2))
    thetas = torch.deg2rad(torch.linspace(0, 180, out_channels - 1)[:-1])
    envelope = torch.exp(-r / (2 * (0.4 * sigma) ** 2))
    gabors = [envelope * torch.cos(2 * math.pi * (xx * torch.cos(t) + yy * torch.sin(t)) / 10 + math.pi / 2)
              for t in thetas]
    bank = torch.stack([center_surround, -center_surround, *gabors])
    bank = bank / bank.abs().amax(dim=(1, 2), keepdim=True)
    bank = bank - bank.mean(dim=(1, 2), keepdim=True)
    return bank.unsqueeze(1)


def pink_noise(
    n: int,
    shape: Sequence[int],
    exponent: float = 1.0,
    seed: int | torch.Generator | None = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian noise images with a 1/f^exponent amplitude spectrum (natural images have exponent ~1).

    Returns ``[n, 1, H, W]``, each image z-scored.
    """
    h, w = int(shape[0]), int(shape[1])
    g = _generator(seed)
    fy = torch.fft.fftfreq(h, dtype=torch.float64).reshape(h, 1)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64).reshape(1, -1)
    radius = torch.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    amplitude = radius**-exponent
    amplitude[0, 0] = 0.0  # zero mean
    white = torch.randn((n, h, w), generator=g, dtype=torch.float64)
    images = torch.fft.irfft2(torch.fft.rfft2(white) * amplitude, s=(h, w))
    images = (images - images.mean((1, 2), keepdim=True)) / images.std((1, 2), keepdim=True)
    return images.to(dtype).unsqueeze(1)


def dead_leaves(
    n: int,
    shape: Sequence[int],
    n_discs: int = 200,
    radius_range: tuple[float, float] = (1.0, 16.0),
    seed: int | torch.Generator | None = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dead-leaves images: occluding discs with power-law radii (density ~ r^-3, scale invariant) and uniform grey
    levels, the later disc on top. Returns ``[n, 1, H, W]``, each image z-scored."""
    h, w = int(shape[0]), int(shape[1])
    g = _generator(seed)
    r_min, r_max = radius_range
    ys = torch.arange(h, dtype=torch.float32).reshape(1, 1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).reshape(1, 1, 1, w)
    out = torch.empty((n, h, w), dtype=torch.float32)
    chunk = max(1, 2**24 // (n_discs * h * w))  # bound the [chunk, discs, H, W] mask to ~16 M elements
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        u = torch.rand((m, n_discs), generator=g)
        # Inverse CDF of p(r) ~ r^-3 on [r_min, r_max].
        radius = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
        cy = torch.rand((m, n_discs), generator=g) * h
        cx = torch.rand((m, n_discs), generator=g) * w
        grey = torch.rand((m, n_discs), generator=g)
        covered = (ys - cy[..., None, None]) ** 2 + (xs - cx[..., None, None]) ** 2 <= radius[..., None, None] ** 2
        order = torch.arange(1, n_discs + 1, dtype=torch.float32).reshape(1, -1, 1, 1)
        top = (covered * order).argmax(dim=1)  # index of the last disc covering each pixel (0 if none)
        background = torch.rand((m, 1, 1), generator=g)
        painted = torch.gather(grey, 1, top.flatten(1)).reshape(m, h, w)
        out[start : start + m] = torch.where(covered.any(dim=1), painted, background)
    out = (out - out.mean((1, 2), keepdim=True)) / out.std((1, 2), keepdim=True).clamp_min(1e-6)
    return out.to(dtype).unsqueeze(1)


def natural_images(
    kind: str, n: int, shape: Sequence[int], seed: int | torch.Generator | None = 0, dtype=torch.float32
) -> torch.Tensor:
    """Natural-like images by name: ``"pink"`` (1/f noise) or ``"dead_leaves"``."""
    makers = {"pink": pink_noise, "dead_leaves": dead_leaves}
    if kind not in makers:
        raise ValueError(f"unknown natural image kind {kind!r}; choose one of {sorted(makers)}")
    return makers[kind](n, shape, seed=seed, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Parametric stimuli for in-silico experiments. Parameters are scalars or one value per image (they broadcast, as in
# ``gabor``); images come back as ``[N, 1, H, W]`` (N = 1 when every parameter is scalar).


def _frame(shape: Sequence[int], orientation, center, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated pixel coordinates ``u`` (across the stripes of a grating at ``orientation``) and ``v`` (along them),
    each ``[N, H, W]``, relative to ``center`` = ``(dy, dx)`` from the image centre (pixels)."""
    if len(shape) != 2:
        raise ValueError(f"shape must be (height, width) in pixels, got {tuple(shape)}")
    h, w = int(shape[0]), int(shape[1])
    centers = torch.as_tensor(center, dtype=dtype).reshape(-1, 2)
    theta = torch.deg2rad(_as_column(orientation, dtype))
    ys = torch.arange(h, dtype=dtype).reshape(1, h, 1) - (h - 1) / 2 - centers[:, 0].reshape(-1, 1, 1)
    xs = torch.arange(w, dtype=dtype).reshape(1, 1, w) - (w - 1) / 2 - centers[:, 1].reshape(-1, 1, 1)
    u = xs * torch.cos(theta) + ys * torch.sin(theta)
    v = -xs * torch.sin(theta) + ys * torch.cos(theta)
    return u, v


def _batch(out: torch.Tensor) -> torch.Tensor:
    """Add the channel axis; every parameter already broadcast into ``out``'s batch axis."""
    return out.contiguous().unsqueeze(1)


def sine_grating(
    shape: Sequence[int],
    orientation=0.0,
    frequency=0.1,
    phase=0.0,
    contrast=1.0,
    size=None,
    center=(0.0, 0.0),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sine grating(s) ``contrast * cos(2 pi frequency u + phase)`` on a zero (grey) background.

    ``orientation`` in degrees (0 = vertical stripes, the orientation a ``gabor`` of the same angle prefers),
    ``frequency`` in cycles/pixel, ``phase`` in degrees, ``contrast`` the amplitude (Michelson contrast around a grey
    of 0). ``size`` = ``None`` fills the image; a number is the diameter (pixels) of a circular patch at ``center``
    (``(dy, dx)`` from the image centre), grey outside. Each parameter is a scalar or one value per image.
    Returns ``[N, 1, H, W]``.
    """
    u, v = _frame(shape, orientation, center, dtype)
    freq, phi, amp = (_as_column(p, dtype) for p in (frequency, phase, contrast))
    out = amp * torch.cos(2 * math.pi * freq * u + torch.deg2rad(phi))
    if size is not None:
        radius = _as_column(size, dtype) / 2
        out = torch.where(u**2 + v**2 <= radius**2, out, torch.zeros((), dtype=dtype))
    return _batch(out)


def sine_gratings(
    shape: Sequence[int],
    orientations: int | Sequence[float] = 16,
    phases: int | Sequence[float] = 8,
    frequency=0.1,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every combination of orientations x phases, as used for tuning experiments.

    ``orientations`` / ``phases``: a count (evenly spaced over [0, 180) and [0, 360) degrees) or the values.
    ``frequency`` and ``kwargs`` (``contrast``, ``size``, ``center``, ``dtype``) are those of ``sine_grating``.
    Returns ``(images [O * P, 1, H, W], orientations [O], phases [P])``, orientation-major: image ``o * P + p`` has
    orientation ``o`` and phase ``p``.
    """
    dtype = kwargs.get("dtype", torch.float32)
    ori = _even(orientations, 180.0, dtype, "orientations")
    pha = _even(phases, 360.0, dtype, "phases")
    images = sine_grating(shape, ori.repeat_interleave(len(pha)), frequency, pha.repeat(len(ori)), **kwargs)
    return images, ori, pha


def _even(values, period: float, dtype, name: str) -> torch.Tensor:
    if isinstance(values, int):
        if values < 1:
            raise ValueError(f"{name} must be a positive count or a list of angles, got {values}")
        return torch.arange(values, dtype=dtype) * (period / values)
    out = torch.as_tensor(values, dtype=dtype).reshape(-1)
    if out.numel() == 0:
        raise ValueError(f"{name} is empty; give a positive count or a list of angles in degrees")
    return out


def gaussian(shape: Sequence[int], sigma=1.0, center=(0.0, 0.0), normalize: bool = True,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Isotropic Gaussian(s) ``exp(-r^2 / 2 sigma^2)`` on an ``(H, W)`` grid, each summing to 1 if ``normalize``.
    Returns ``[H, W]`` for scalar parameters, else ``[N, H, W]`` (a filter, like ``gabor``)."""
    u, v = _frame(shape, 0.0, center, dtype)
    sig = _as_column(sigma, dtype)
    out = torch.exp(-(u**2 + v**2) / (2 * sig**2))
    if normalize:
        out = out / out.sum((1, 2), keepdim=True)
    n = max(out.shape[0], sig.shape[0])
    out = out.expand(n, *out.shape[1:]).contiguous()
    scalar = torch.as_tensor(sigma).ndim == 0 and torch.as_tensor(center).ndim == 1
    return out[0] if scalar else out


def center_surround(
    shape: Sequence[int],
    sigma_center=1.0,
    sigma_surround=3.0,
    surround_strength=1.0,
    center=(0.0, 0.0),
    on: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Difference of Gaussians (an LGN / retinal ganglion cell receptive field), as a filter.

    Each Gaussian is normalised to sum 1, so with ``surround_strength = 1`` the filter sums to ~0 (balanced: no
    response to uniform light). ``on=True`` is centre minus surround (ON cell), ``on=False`` the negative (OFF cell).
    Returns ``[H, W]`` for scalar parameters, else ``[N, H, W]``.
    """
    if torch.any(torch.as_tensor(sigma_surround) <= torch.as_tensor(sigma_center)):
        raise ValueError(f"sigma_surround ({sigma_surround}) must be larger than sigma_center ({sigma_center})")
    c = gaussian(shape, sigma_center, center, dtype=dtype)
    s = gaussian(shape, sigma_surround, center, dtype=dtype)
    k = torch.as_tensor(surround_strength, dtype=dtype)
    dog = c - (k.reshape(-1, 1, 1) if k.ndim else k) * s  # one strength per filter broadcasts to [N, H, W]
    return dog if on else -dog


difference_of_gaussians = center_surround


def gaussian_blob(
    shape: Sequence[int],
    orientation=0.0,
    sigma=(0.75, 2.5),
    center=(0.0, 0.0),
    amplitude=1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Elongated, oriented Gaussian blob(s), the training stimulus of LISSOM orientation maps.

    ``sigma = (across, along)`` the long axis in pixels (LISSOM: 0.75 x 2.5); the long axis lies along the stripes of
    a grating of the same ``orientation`` (0 degrees: a vertical blob). ``center`` is ``(dy, dx)`` from the image
    centre, or an ``[N, 2]`` tensor. Peak value ``amplitude``. Returns ``[N, 1, H, W]``.
    """
    u, v = _frame(shape, orientation, center, dtype)
    across, along = (torch.as_tensor(s, dtype=dtype).reshape(-1, 1, 1) for s in sigma)
    out = _as_column(amplitude, dtype) * torch.exp(-(u**2) / (2 * across**2) - v**2 / (2 * along**2))
    return _batch(out)


def random_gaussian_blobs(
    n: int,
    shape: Sequence[int],
    n_blobs: int = 2,
    sigma=(0.75, 2.5),
    margin: float = 0.0,
    seed: int | torch.Generator | None = 0,
    dtype: torch.dtype = torch.float32,
    min_separation: float = 0.0,
    scale: float = 1.0,
) -> torch.Tensor:
    """LISSOM training images: each has ``n_blobs`` elongated Gaussians of peak ``scale`` at uniformly random
    positions (at least ``margin`` pixels inside the border) and orientations, combined by their maximum as in
    Topographica's LISSOM scripts. ``min_separation`` (pixels) keeps the centres of an image's blobs that far apart, as
    Topographica's ``SeparatedComposite`` does for the book's maps (2.2 afferent radii): a blob's position is
    redrawn up to 100 times, then the last draw is kept. Returns ``[n, 1, H, W]``."""
    h, w = int(shape[0]), int(shape[1])
    g = _generator(seed)
    m = n * n_blobs
    orientation = torch.rand(m, generator=g, dtype=torch.float64) * 180.0
    if min_separation > 0:
        offsets = _separated_offsets(n, n_blobs, h, w, margin, min_separation, g)
    else:
        dy = (torch.rand(m, generator=g, dtype=torch.float64) - 0.5) * max(h - 1 - 2 * margin, 0)
        dx = (torch.rand(m, generator=g, dtype=torch.float64) - 0.5) * max(w - 1 - 2 * margin, 0)
        offsets = torch.stack([dy, dx], 1)
    blobs = gaussian_blob((h, w), orientation.to(dtype), sigma, offsets.to(dtype), dtype=dtype)
    return blobs.reshape(n, n_blobs, h, w).amax(1, keepdim=True) * scale


def _separated_offsets(n: int, n_blobs: int, h: int, w: int, margin: float, min_separation: float,
                       g: torch.Generator, trials: int = 100) -> torch.Tensor:
    """``[n * n_blobs, 2]`` blob centres (from the image centre), each image's at least ``min_separation`` apart."""
    extent = torch.tensor([max(h - 1 - 2 * margin, 0), max(w - 1 - 2 * margin, 0)], dtype=torch.float64)
    out = []
    for _ in range(n):
        placed: list[torch.Tensor] = []
        for _ in range(n_blobs):
            for _ in range(trials):
                centre = (torch.rand(2, generator=g, dtype=torch.float64) - 0.5) * extent
                if all(float(torch.dist(centre, other)) >= min_separation for other in placed):
                    break
            placed.append(centre)
        out.extend(placed)
    return torch.stack(out)


def bar(
    shape: Sequence[int],
    orientation=0.0,
    length=8.0,
    width=2.0,
    center=(0.0, 0.0),
    contrast=1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Oriented bar(s): a ``length`` x ``width`` rectangle (pixels) of value ``contrast`` on a zero background,
    long axis along the stripes of a grating of the same ``orientation`` (0 degrees: a vertical bar). Edges are
    anti-aliased (each pixel is covered by the fraction of a pixel the bar spans), so sub-pixel shifts and any angle
    give a smooth change. Returns ``[N, 1, H, W]``."""
    u, v = _frame(shape, orientation, center, dtype)
    half_w, half_l = _as_column(width, dtype) / 2, _as_column(length, dtype) / 2
    # Coverage along each axis: the overlap of a unit pixel interval with the bar's extent, in [0, 1].
    cover_u = (half_w + 0.5 - u.abs()).clamp(0, 1).minimum((2 * half_w).clamp(max=1))
    cover_v = (half_l + 0.5 - v.abs()).clamp(0, 1).minimum((2 * half_l).clamp(max=1))
    out = _as_column(contrast, dtype) * cover_u * cover_v
    return _batch(out)
