"""Receptive fields of model units and how oriented or isotropic they are (Lindsey et al. 2019, appendix).

- ``gradient_rf``: the gradient of one unit per channel of a layer (by default the centre position) with respect to
  the input image, taken at an all-zero image or averaged over random images ``noise * N(0, 1)``, each RF divided
  by its RMS. For a linear model it is exactly the model's filter; for a ReLU network it is the linearisation around
  the starting image. With random starts, ``complexity`` measures how much the gradient changes from start to start
  (0 for a linear unit).
- ``orientedness``: the paper's bar-bank index. Each RF is correlated with bars at ``orientations`` angles,
  ``widths`` widths and ``phases`` positions across the bar; the score of an orientation is the best |correlation|
  over phases at the width that fits the RF best; the index is score(preferred) / score(orthogonal). Centre-surround
  RFs score about 1; oriented (Gabor-like) RFs score well above. ``random_rfs`` gives the paper's baseline.
- ``isotropy``: 1 - |sum_k P(k) exp(2i phi_k)| / sum_k P(k) over the RF's power spectrum P (no DC): 1 for a
  rotation-symmetric RF, near 0 for one whose energy lies along one orientation.
- ``center_surround``: difference-of-Gaussians fits around the unit's position: the share of what a centre alone
  leaves unexplained that an opposite-sign surround explains (the index), and the surround's strength. With
  ``isotropy`` it tells a centre-surround RF from a blob (no surround) and from an oriented RF (anisotropic).

Images and RFs are ``[N, C, H, W]`` / ``[N, H, W]``; angles in degrees (0 = a vertical bar, as ``bioviz.stimuli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bioviz.hooks import layer_output
from bioviz.stimuli import bar

__all__ = ["GradientRF", "Orientedness", "bar_bank", "center_crop", "center_surround", "CenterSurround",
           "gradient_rf",
           "isotropy", "orientedness", "random_rfs", "rf_size", "support_size"]


@dataclass
class GradientRF:
    """``rf`` ``[n_channels, C, H, W]``: one RF per channel of the layer (RMS 1 unless ``normalize=False``);
    ``complexity`` ``[n_channels]``: mean over pixels of the SD of the gradient across random starts, relative
    to the RMS of their mean (None for the zero-image start); ``channels`` and ``position`` the units."""

    rf: torch.Tensor
    complexity: torch.Tensor | None
    channels: list[int]
    position: tuple[int, int]


DEFAULT_WIDTHS = torch.linspace(4, 16, 30)  # bar widths of the paper's bank (px)


def _rms(x: torch.Tensor) -> torch.Tensor:
    """RMS over all but the first dimension, shaped to broadcast; 1 where it is 0 (a unit with no gradient)."""
    rms = x.flatten(1).pow(2).mean(1).sqrt()
    return torch.where(rms > 0, rms, torch.ones_like(rms)).view(-1, *[1] * (x.ndim - 1))


def gradient_rf(
    model: nn.Module,
    layer: str,
    shape: Sequence[int],
    channels: Sequence[int] | None = None,
    position: Sequence[int] | None = None,
    starts: int = 0,
    noise: float = 0.1,
    normalize: bool = True,
    seed: int = 0,
) -> GradientRF:
    """Gradient RFs of ``layer``'s units at ``position`` (default the centre of its output) for ``channels``
    (default all).

    ``shape``: the model's input ``[C, H, W]`` (or ``(H, W)`` for one channel). ``starts=0``: gradient at the
    all-zero image (the paper's RFs); ``starts=k``: the mean of the gradients at ``k`` images ``noise * N(0, 1)``
    (its "random starts"), plus ``complexity``. Runs in eval mode on the model's device (the training mode is
    restored) and leaves the parameters' gradients alone; the forward pass stops at ``layer``. Every unit is one
    image of one batch, so the model must treat the images of a batch independently (true in eval mode).
    """
    shape = (1, *shape) if len(shape) == 2 else tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"shape is the model's input [C, H, W] or (H, W), got {list(shape)}")
    if starts < 0:
        raise ValueError(f"starts is a number of random images (0: the zero image), got {starts}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        probe = layer_output(model, layer, torch.zeros(1, *shape, device=device, dtype=dtype), stop=True)
        if probe.ndim != 4:
            raise ValueError(f"layer {layer!r} outputs shape {list(probe.shape)}; gradient RFs need a conv layer's "
                             f"[B, channels, H, W]")
        n_out, h, w = probe.shape[1:]
        channels = list(range(n_out)) if channels is None else [int(c) for c in channels]
        if any(not 0 <= c < n_out for c in channels):
            raise ValueError(f"channels {channels} out of range: layer {layer!r} has {n_out} channels")
        py, px = (h // 2, w // 2) if position is None else (int(position[0]), int(position[1]))
        if not (0 <= py < h and 0 <= px < w):
            raise ValueError(f"position {(py, px)} is outside the layer's {h} x {w} output")
        n_starts = max(starts, 1)
        if starts:
            generator = torch.Generator().manual_seed(seed)
            images = noise * torch.randn(n_starts * len(channels), *shape, generator=generator, dtype=dtype)
        else:
            images = torch.zeros(len(channels), *shape, dtype=dtype)
        images = images.to(device).requires_grad_(True)
        out = layer_output(model, layer, images, stop=True, no_grad=False)
        unit = torch.tensor(channels, device=device).repeat(n_starts)  # image i -> channel of unit i % n_channels
        picked = out[torch.arange(len(images), device=device), unit, py, px].sum()
        # autograd.grad, not backward: the parameters' .grad (e.g. mid-training) stays untouched.
        grads = torch.autograd.grad(picked, images)[0].detach().view(n_starts, len(channels), *shape)
    finally:
        model.train(was_training)
    complexity = None
    if starts:
        mean = grads.mean(0)
        spread = grads.std(0, correction=0).flatten(1).mean(1)
        complexity = spread / mean.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
        rf = mean
    else:
        rf = grads[0]
    if normalize:
        rf = rf / _rms(rf)
    return GradientRF(rf.cpu(), None if complexity is None else complexity.cpu(), channels, (py, px))


def rf_size(kernel_sizes: Sequence[int]) -> int:
    """Extent of the RF of a unit after stride-1 convolutions with these kernel sizes (9, 9 -> 17)."""
    return 1 + sum(int(k) - 1 for k in kernel_sizes)


def center_crop(rfs: torch.Tensor, size: int, position: Sequence[int] | None = None) -> torch.Tensor:
    """The ``size`` x ``size`` pixels of ``[..., H, W]`` centred on ``position`` (default ``(H // 2, W // 2)``,
    where ``gradient_rf`` puts the unit): the part of the image a unit can see."""
    h, w = rfs.shape[-2:]
    py, px = (h // 2, w // 2) if position is None else (int(position[0]), int(position[1]))
    top, left = py - size // 2, px - size // 2
    if size < 1 or top < 0 or left < 0 or top + size > h or left + size > w:
        raise ValueError(f"a {size} x {size} crop around {(py, px)} does not fit in {h} x {w} RFs")
    return rfs[..., top:top + size, left:left + size]


def support_size(rfs: torch.Tensor, position: Sequence[int] | None = None) -> int:
    """The smallest odd square around ``position`` that holds every non-zero pixel of the RFs ``[..., H, W]`` (the
    extent of a conv unit's RF, which its gradient shows exactly)."""
    h, w = rfs.shape[-2:]
    py, px = (h // 2, w // 2) if position is None else (int(position[0]), int(position[1]))
    nonzero = (rfs.reshape(-1, h, w) != 0).any(0).nonzero()
    if len(nonzero) == 0:
        return 1
    half = int(max((nonzero[:, 0] - py).abs().max(), (nonzero[:, 1] - px).abs().max()))
    half = min(half, py, px, h - 1 - py, w - 1 - px)  # keep the square inside the image
    return 2 * half + 1


def random_rfs(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` white-noise RFs ``[n, size, size]``: the baseline of the orientedness index."""
    return torch.randn(n, size, size, generator=torch.Generator().manual_seed(seed))


def _as_maps(rfs: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` from ``[N, H, W]``, ``[N, 1, H, W]`` or ``[H, W]``; colour RFs are averaged over channels."""
    rfs = torch.as_tensor(rfs).detach().float().cpu()
    if rfs.ndim == 2:
        rfs = rfs[None]
    if rfs.ndim == 4:
        rfs = rfs.mean(1)
    if rfs.ndim != 3:
        raise ValueError(f"RFs must be [N, H, W] or [N, C, H, W], got shape {list(rfs.shape)}")
    return rfs


def bar_bank(size: int, orientations: int = 50, widths: Sequence[float] | None = None, phases: int = 30
             ) -> torch.Tensor:
    """Bars ``[orientations, len(widths), phases, size, size]`` spanning the square (length 2 x size), at
    ``orientations`` angles in [0, 180), ``widths`` (default 30 from 4 to 16 px) and ``phases`` offsets across the
    bar from one edge of the square to the other. Each bar is made zero-mean and unit-norm over the square, so a
    uniform RF scores 0 and wide bars are not favoured for their energy."""
    widths = DEFAULT_WIDTHS if widths is None else torch.as_tensor(widths, dtype=torch.float32)
    angles = torch.arange(orientations, dtype=torch.float32) * (180.0 / orientations)
    offsets = torch.linspace(-size / 2, size / 2, phases)
    o, wd, p = torch.meshgrid(angles, widths, offsets, indexing="ij")
    theta = torch.deg2rad(o)
    centers = torch.stack([p * torch.sin(theta), p * torch.cos(theta)], -1).reshape(-1, 2)
    bars = bar((size, size), o.reshape(-1), length=2.0 * size, width=wd.reshape(-1), center=centers)[:, 0]
    bars = bars - bars.mean((1, 2), keepdim=True)
    bars = bars / bars.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return bars.reshape(orientations, len(widths), phases, size, size)


@dataclass
class Orientedness:
    """``index`` ``[N]``: score at the preferred / at the orthogonal orientation (1 = no orientation preference);
    ``preferred`` ``[N]`` degrees; ``width`` ``[N]`` best bar width (px); ``tuning`` ``[N, orientations]`` the scores
    at the best width."""

    index: torch.Tensor
    preferred: torch.Tensor
    width: torch.Tensor
    tuning: torch.Tensor


def orientedness(rfs: torch.Tensor, orientations: int = 50, widths: Sequence[float] | None = None,
                 phases: int = 30, bank: torch.Tensor | None = None) -> Orientedness:
    """The bar-bank orientedness index of RFs ``[N, H, W]`` (crop them to the unit's extent first,
    ``center_crop``). ``orientations`` must be even (so the orthogonal angle is in the bank). ``bank``: a
    precomputed ``bar_bank`` for RFs of this size (reuse it across calls)."""
    maps = _as_maps(rfs)
    if maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"RFs must be square for the bar bank, got {list(maps.shape[-2:])}; crop them first")
    if bank is None:
        if orientations % 2:
            raise ValueError(f"orientations must be even so that the orthogonal angle is in the bank, got "
                             f"{orientations}")
        bank = bar_bank(maps.shape[-1], orientations, widths, phases)
    n_o, n_w, n_p = bank.shape[:3]
    if bank.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"the bar bank is {list(bank.shape[-2:])} but the RFs are {list(maps.shape[-2:])}")
    scores = (maps.flatten(1) @ bank.reshape(-1, maps[0].numel()).T).abs().view(-1, n_o, n_w, n_p)
    by_width = scores.amax(3)  # best phase: [N, orientations, widths]
    best_width = by_width.amax(1).argmax(1)  # the width that fits best at any orientation
    tuning = by_width[torch.arange(len(maps)), :, best_width]
    preferred = tuning.argmax(1)
    orthogonal = (preferred + n_o // 2) % n_o
    rows = torch.arange(len(maps))
    index = tuning[rows, preferred] / tuning[rows, orthogonal].clamp_min(1e-12)
    widths = DEFAULT_WIDTHS if widths is None else torch.as_tensor(widths, dtype=torch.float32)
    width = widths[best_width] if len(widths) == n_w else torch.full((len(maps),), float("nan"))  # unknown bank
    return Orientedness(index, preferred.float() * (180.0 / n_o), width, tuning)


def isotropy(rfs: torch.Tensor) -> torch.Tensor:
    """``[N]`` in [0, 1]: 1 - |sum_k P(k) exp(2i phi_k)| / sum_k P(k) over the power spectrum P of each
    zero-mean RF, without the DC term (phi_k: the direction of frequency k). 1 for rotation-symmetric RFs
    (centre-surround), near 0 for RFs whose energy lies along one orientation (bars, Gabors)."""
    maps = _as_maps(rfs)
    maps = maps - maps.mean((1, 2), keepdim=True)
    h, w = maps.shape[-2:]
    power = torch.fft.fft2(maps).abs().pow(2)
    fy = torch.fft.fftfreq(h).view(h, 1)
    fx = torch.fft.fftfreq(w).view(1, w)
    phi = torch.atan2(fy, fx).expand(h, w)
    weight = torch.ones(h, w)
    weight[0, 0] = 0.0  # no DC
    total = (power * weight).sum((1, 2)).clamp_min(1e-12)
    vector = torch.complex(torch.cos(2 * phi), torch.sin(2 * phi)) * weight
    return 1 - (power * vector).sum((1, 2)).abs() / total




def _centered_gaussians(size: tuple[int, int], sigmas: torch.Tensor) -> torch.Tensor:
    """``[len(sigmas), H * W]``: isotropic Gaussians around the middle pixel, each summing to 1."""
    h, w = size
    y = torch.arange(h, dtype=torch.float64).view(h, 1) - (h - 1) / 2
    x = torch.arange(w, dtype=torch.float64).view(1, w) - (w - 1) / 2
    r2 = (y.square() + x.square()).flatten()
    g = torch.exp(-r2[None] / (2 * sigmas.double()[:, None].square()))
    return g / g.sum(1, keepdim=True)


@dataclass
class CenterSurround:
    """``index`` ``[N]`` in [0, 1]: the share of what a centre alone leaves unexplained that an opposite-sign
    surround explains (0 = a blob or no surround-shaped remainder, 1 = a difference of Gaussians);
    ``surround_strength`` ``[N]``: the fitted surround's volume over the centre's (1 = balanced, no response to
    uniform light; 0 when no opposite-sign fit exists); ``explained`` ``[N]``: the share of the RF's energy the
    difference-of-Gaussians fit explains (low for oriented or noisy RFs, whose index then means little)."""

    index: torch.Tensor
    surround_strength: torch.Tensor
    explained: torch.Tensor


def center_surround(rfs: torch.Tensor, surround_ratios: Sequence[float] = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
                    ) -> CenterSurround:
    """How centre-surround RFs ``[N, H, W]`` are: least-squares fits around the middle pixel (the unit's position
    after ``center_crop``) of the best single isotropic Gaussian ``a G(s_c)`` and the best difference of Gaussians
    ``a G(s_c) - b G(s_s)`` with a surround of the opposite sign (``a b > 0``, the centre's sign kept at the middle),
    ``s_s`` one of ``surround_ratios``
    times ``s_c``, ``s_c`` from 0.5 px to a quarter of the RF's side, each Gaussian summing to 1. A fit's quality is
    the share of the RF's energy it explains (a gradient RF's zero is meaningful, so no mean is subtracted). See
    ``CenterSurround`` for what is returned; ON and OFF centres score alike. Compare with white-noise RFs
    (``random_rfs``), and read it beside ``isotropy``: an oriented RF's remainder can be partly ring-shaped too."""
    maps = _as_maps(rfs).double()
    n, h, w = maps.shape
    flat = maps.flatten(1)
    energy = flat.square().sum(1).clamp_min(1e-30)
    centers = torch.linspace(0.5, max(min(h, w) / 4, 0.6), 16, dtype=torch.float64)
    g = _centered_gaussians((h, w), centers)  # [C, P]
    single = (flat @ g.T).square().div(g.square().sum(1)).amax(1) / energy  # best centre alone: (rf . g)^2 / |g|^2
    ratios = torch.as_tensor(surround_ratios, dtype=torch.float64)
    s = _centered_gaussians((h, w), (centers[:, None] * ratios[None]).flatten()).view(len(centers), len(ratios), -1)
    c = g[:, None].expand_as(s)
    # The 2 x 2 normal equations of x G_c + y G_s for every (centre, surround) pair; the surround is b = -y.
    cc, ss, cs = c.square().sum(-1), s.square().sum(-1), (c * s).sum(-1)  # [C, S]
    rc, rs = torch.einsum("np,csp->ncs", flat, c), torch.einsum("np,csp->ncs", flat, s)
    det = (cc * ss - cs.square()).clamp_min(1e-30)
    x = (rc * ss - rs * cs) / det
    y = (rs * cc - rc * cs) / det
    explained = ((x * rc + y * rs) / energy[:, None, None]).flatten(1)
    middle = (h // 2) * w + w // 2
    # A surround of the opposite sign, and a centre that still has its own sign at the unit's position.
    opposite = ((x * y < 0) & (x * (x * c[..., middle] + y * s[..., middle]) > 0)).flatten(1)
    explained = torch.where(opposite, explained, torch.full_like(explained, -1.0))
    best = explained.argmax(1)
    rows = torch.arange(n)
    fitted = opposite[rows, best] & (explained[rows, best] > single + 1e-6)  # a surround that adds nothing is none
    double = torch.where(fitted, explained[rows, best], single)
    strength = torch.where(fitted, -(y.flatten(1) / x.flatten(1))[rows, best], torch.zeros(n, dtype=torch.float64))
    residual = (1 - single).clamp_min(0)
    index = torch.where(residual > 1e-9, (double - single) / residual.clamp_min(1e-9), torch.zeros_like(single))
    return CenterSurround(index.clamp(0, 1).float(), strength.float(), double.clamp(0, 1).float())
