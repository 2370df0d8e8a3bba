"""LISSOM (Miikkulainen, Bednar, Choe & Sirosh 2005): retina -> LGN ON/OFF -> V1 with lateral interactions, learning
by Hebbian adaptation with divisive normalisation. No backprop: everything here runs under ``torch.no_grad``.

Sheets are square grids of units. A unit of a sheet of size N at row i sits at ``(i + 0.5) / N`` of the sheet, so
sheets of different densities cover the same area and a V1 unit's afferent field is centred on the LGN unit nearest
its own position (snapped to the grid, as in Topographica).

``LocalProjection`` stores only the weights inside each unit's connective radius: ``weight[k, u]`` is the weight from
disc offset ``k`` (of ``K`` offsets with ``dy^2 + dx^2 <= r^2``, per input channel) to unit ``u``. A 48 x 48 sheet
with an inhibitory radius of 11 stores 377 weights per unit instead of 2304 (a dense matrix with a mask, as in
pylissom). Input outside the sheet reads as zero, so the weights there start at zero and Hebbian learning never
makes them grow (the presynaptic activity is zero).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "disc_offsets",
    "piecewise_sigmoid",
    "sheet_centres",
    "LocalProjection",
    "DogLGN",
    "LissomV1",
    "GainControlLGN",
    "HomeostaticV1",
    "LateralWeights",
    "DivisiveHebbian",
    "HebbianTerm",
    "LissomNetwork",
]


def piecewise_sigmoid(x: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """LISSOM's activation: 0 below ``lower``, 1 above ``upper``, linear in between."""
    if not upper > lower:
        raise ValueError(f"the sigmoid's upper threshold ({upper}) must be above its lower one ({lower})")
    return ((x - lower) / (upper - lower)).clamp(0.0, 1.0)


def disc_offsets(radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer offsets ``(dy, dx)`` with ``dy^2 + dx^2 <= radius^2`` in raster order; always includes (0, 0)."""
    if radius < 0:
        raise ValueError(f"a connective radius must be >= 0, got {radius}")
    r = int(math.floor(radius))
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    inside = (dy**2 + dx**2) <= radius**2 + 1e-9
    return dy[inside], dx[inside]


def sheet_centres(in_size: int, out_size: int) -> torch.Tensor:
    """Index of the input unit nearest to each output unit's position, for sheets covering the same area."""
    position = (torch.arange(out_size, dtype=torch.float64) + 0.5) * in_size / out_size - 0.5
    return torch.floor(position + 0.5).long().clamp(0, in_size - 1)


class LocalProjection(nn.Module):
    """Connections from a ``[in_channels, in_size, in_size]`` sheet to a ``[out_size, out_size]`` sheet, each unit
    connected to the input units within ``radius`` (input units) of its retinotopic centre. The output sheet covers
    the input sheet less ``border`` units on each side (a border gives the edge units whole receptive fields).

    ``weight`` ``[in_channels * K, out_size^2]``: Gaussian ``exp(-d^2 / 2 sigma^2)`` times uniform noise in [0, 1)
    (``noise=False``: the plain Gaussian), zero outside the input sheet, each unit's column summing to 1 over all
    channels (joint normalisation of ON and OFF afferents). ``radius`` is a buffer: ``shrink(r)`` cuts the
    connections beyond ``r`` and renormalises (LISSOM's shrinking lateral excitation), so the storage keeps the
    initial disc and a checkpoint restores the current radius.
    """

    def __init__(self, in_channels: int, in_size: int, out_size: int, radius: float, sigma: float,
                 noise: bool = True, generator: torch.Generator | None = None, border: int = 0):
        super().__init__()
        if min(in_channels, in_size, out_size) < 1:
            raise ValueError(f"in_channels, in_size and out_size must be >= 1, got {in_channels}, {in_size}, "
                             f"{out_size}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if not 0 <= 2 * border < in_size:
            raise ValueError(f"border ({border}) must leave part of the {in_size}-unit input sheet uncovered")
        self.in_channels, self.in_size, self.out_size = in_channels, in_size, out_size
        self.reach = int(math.floor(radius))  # the input is zero-padded by this much
        span = 2 * self.reach + 1
        dy, dx = disc_offsets(radius)
        self.n_offsets = len(dy)
        centres = border + sheet_centres(in_size - 2 * border, out_size)
        # Gathering: for each row offset dy, the units' input rows, and within them the contiguous dx range of the
        # disc, are strided views of the (column-expanded) padded input, copied once into [K, units].
        self.row_widths = [int(math.floor(math.sqrt(max(radius**2 - a * a, 0.0) + 1e-9)))
                           for a in range(-self.reach, self.reach + 1)]
        self.identity_map = in_size == out_size and border == 0
        self.register_buffer("centres", centres, persistent=False)
        # input_rows[dy + reach]: the padded input row each output row reads at row offset dy.
        self.register_buffer("input_rows", centres + torch.arange(span)[:, None], persistent=False)
        self.register_buffer("column_index", (torch.arange(span)[:, None] + centres[None, :]).flatten(),
                             persistent=False)
        self.register_buffer("disc_rows", (dy + self.reach) * span + (dx + self.reach), persistent=False)
        self.register_buffer("distance", torch.sqrt((dy**2 + dx**2).double()).float().repeat(in_channels),
                             persistent=False)
        # Gathering for a few units: element (c, k) of unit (i, j)'s patch sits in the flattened padded input at
        # unit_starts[(i, j)] + patch_offsets[(c, k)].
        padded_size = in_size + 2 * self.reach
        self.register_buffer("patch_offsets", (torch.arange(in_channels)[:, None] * padded_size**2
                                               + dy * padded_size + dx).flatten(), persistent=False)
        starts = (centres + self.reach)[:, None] * padded_size + (centres + self.reach)[None, :]
        self.register_buffer("unit_starts", starts.flatten(), persistent=False)
        self.register_buffer("radius", torch.tensor(float(radius)))
        weight = torch.exp(-self.distance[:, None] ** 2 / (2 * sigma**2)).expand(-1, out_size**2).clone()
        if noise:
            weight *= torch.rand(weight.shape, generator=generator)
        ones = torch.ones(1, in_channels, in_size, in_size)
        weight *= self.patches(ones)[0]  # no connections from outside the input sheet
        self.weight = nn.Parameter(weight / weight.sum(0, keepdim=True))

    @property
    def n_units(self) -> int:
        return self.out_size**2

    def connected(self) -> torch.Tensor:
        """``[in_channels * K]`` bool: the offsets within the current radius."""
        return self.distance <= self.radius + 1e-6

    def patches(self, x: torch.Tensor, units: torch.Tensor | None = None) -> torch.Tensor:
        """The input each unit sees: ``x`` ``[B, C, in, in]`` -> ``[B, C * K, out^2]`` (zeros outside the sheet);
        with ``units`` (indices), only theirs: ``[B, C * K, len(units)]``."""
        self._check_input(x)
        b, c = x.shape[:2]
        if units is not None:  # a gather through flat indices: cheaper than the strided copies below for a few units
            index = self.patch_offsets[:, None] + self.unit_starts.index_select(0, units)
            padded = F.pad(x, (self.reach,) * 4)
            return padded.view(b, -1).index_select(1, index.view(-1)).view(b, c * self.n_offsets, len(units))
        out = x.new_empty(b, c, self.n_offsets, self.out_size, self.out_size)
        for k, rows in self._disc_rows(x):
            out[:, :, k:k + rows.shape[2]] = rows
        return out.view(b, c * self.n_offsets, self.n_units)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted input of every unit, ``(patches(x) * weight).sum(1)``: ``[B, C, in, in]`` -> ``[B, out^2]``.
        ``weight`` (laid out as ``self.weight``) replaces the projection's own. One row of the disc at a time, each
        multiplied into a small accumulator, so the patches (as large as the weights) are never written out."""
        self._check_input(x)
        b, c = x.shape[:2]
        n = self.out_size
        weight = (self.weight if weight is None else weight).view(c, self.n_offsets, n, n)
        total = x.new_zeros(b, c, max(self.row_widths) * 2 + 1, n, n)
        for k, rows in self._disc_rows(x):
            width = rows.shape[2]
            total[:, :, :width].addcmul_(rows, weight[:, k:k + width])
        return total.sum((1, 2)).view(b, self.n_units)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, self.in_size, self.in_size):
            raise ValueError(f"{type(self).__name__} expects input [B, {self.in_channels}, {self.in_size}, "
                             f"{self.in_size}], got {list(x.shape)}")

    def _disc_rows(self, x: torch.Tensor):
        """For each row offset dy of the disc, its first offset k and what the units see at the offsets of that
        row, ``[B, C, row width, out, out]`` (a view of the zero-padded input, or a small copy)."""
        b, c = x.shape[:2]
        n, r, span = self.out_size, self.reach, 2 * self.reach + 1
        padded = F.pad(x, (r,) * 4)
        if self.identity_map:  # unit (i, j) reads padded[i + r + dy, j + r + dx]
            size = padded.shape[-1]
            view = padded.as_strided((b, c, span, span, n, n), (c * size * size, size * size, size, 1, size, 1))
        else:  # expanded[..., y, s, j] = padded[..., y, centre_j + s]; rows picked per dy below
            view = padded.index_select(3, self.column_index).view(b, c, -1, span, n)
        k = 0
        for dy, width in zip(range(-r, r + 1), self.row_widths, strict=True):
            cols = slice(r - width, r + width + 1)
            if self.identity_map:
                yield k, view[:, :, dy + r, cols]
            else:  # [B, C, n, span, n] -> the row's columns, offsets before units
                yield k, view.index_select(2, self.input_rows[dy + r])[:, :, :, cols].transpose(2, 3)
            k += 2 * width + 1

    @torch.no_grad()
    def shrink(self, radius: float) -> None:
        """Cut the connections beyond ``radius`` (never grows back) and renormalise each unit's weights."""
        if radius >= float(self.radius):
            return
        self.radius.fill_(radius)
        self.weight.mul_(self.connected()[:, None])
        self.weight.div_(self.weight.sum(0, keepdim=True).clamp_min(1e-30))

    def weight_fields(self) -> torch.Tensor:
        """Each unit's weights laid out on its ``span x span`` box: ``[out^2, C, span, span]`` (for pictures)."""
        span = 2 * self.reach + 1
        out = self.weight.new_zeros(self.in_channels, span * span, self.n_units)
        out[:, self.disc_rows] = self.weight.view(self.in_channels, self.n_offsets, -1)
        return out.permute(2, 0, 1).reshape(self.n_units, self.in_channels, span, span)


class DogLGN(nn.Module):
    """LGN ON and OFF sheets: difference-of-Gaussians receptive fields (ON: centre minus surround, OFF: the
    reverse), each Gaussian cut at ``radius`` (a square of side ``2 radius + 1``, where the Gaussians are separable:
    at the usual 4.7 surround sigmas a disc would cut only values below 2e-5 of the peak) and normalised to sum 1,
    times ``strength``, through a piecewise-linear sigmoid (``lower``, ``upper``). The LGN has the retina's density.
    Returns ``[B, 2, H, W]``: channel 0 ON, 1 OFF, kept apart all the way into V1 (summing them, as pylissom does,
    loses the polarity).
    """

    def __init__(self, sigma_center: float, sigma_surround: float, radius: float, strength: float = 2.33,
                 lower: float = 0.0, upper: float = 1.0):
        super().__init__()
        if not 0 < sigma_center < sigma_surround:
            raise ValueError(f"need 0 < sigma_center < sigma_surround, got {sigma_center}, {sigma_surround}")
        self.strength, self.lower, self.upper = strength, lower, upper
        d = torch.arange(-int(radius), int(radius) + 1, dtype=torch.float64)
        profiles = torch.stack([torch.exp(-d**2 / (2 * s**2)) for s in (sigma_center, sigma_surround)])
        # [2 (centre, surround), 1, k]: 1-D profiles each summing to 1, so their outer products do too.
        self.register_buffer("profiles", (profiles / profiles.sum(1, keepdim=True))[:, None].float(),
                             persistent=False)
        self._blur_cache: dict = {}

    def kernel(self) -> torch.Tensor:
        """The ON receptive field ``[k, k]`` (the OFF one is its negative)."""
        p = self.profiles[:, 0]
        return torch.outer(p[0], p[0]) - torch.outer(p[1], p[1])

    def linear(self, retina: torch.Tensor) -> torch.Tensor:
        """The DoG responses before the sigmoid, ``[B, 2, H, W]`` (retina outside the image reads as 0)."""
        if retina.ndim != 4 or retina.shape[1] != 1:
            raise ValueError(f"the retina must be grey images [B, 1, H, W], got {list(retina.shape)}")
        rows, cols = (self._blur_matrices(n, retina) for n in retina.shape[-2:])
        blurred = rows @ retina @ cols.transpose(1, 2)  # [B, 2, H, W]: separable blurs as two small matmuls
        on = self.strength * (blurred[:, :1] - blurred[:, 1:])
        return torch.cat([on, -on], 1)

    def _blur_matrices(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """``[2, n, n]``: row i holds each 1-D profile centred on i (zero padding beyond the image); cached."""
        key = (n, like.device, like.dtype)
        if key not in self._blur_cache:
            self._blur_cache[key] = self._make_blur_matrices(n, like)
        return self._blur_cache[key]

    def _make_blur_matrices(self, n: int, like: torch.Tensor) -> torch.Tensor:
        pad = self.profiles.shape[-1] // 2
        offset = torch.arange(n, device=like.device)[None, :] - torch.arange(n, device=like.device)[:, None] + pad
        inside = (offset >= 0) & (offset <= 2 * pad)
        profiles = self.profiles[:, 0].to(like.dtype)
        # The centre Gaussian's tails fall below the dtype's normal range (subnormal numbers, e.g. < 1.2e-38 in
        # float32): zero them, which changes no sum, because arithmetic on subnormals is many times slower on CPUs.
        profiles = profiles.masked_fill(profiles < torch.finfo(like.dtype).tiny, 0.0)
        return torch.where(inside, profiles[:, offset.clamp(0, 2 * pad)], torch.zeros((), dtype=like.dtype,
                                                                                         device=like.device))

    def forward(self, retina: torch.Tensor) -> torch.Tensor:
        return piecewise_sigmoid(self.linear(retina), self.lower, self.upper)


class GainControlLGN(DogLGN):
    """GCAL's LGN (Stevens et al. 2013): the ``DogLGN``'s ON and OFF difference of Gaussians, half-rectified and
    divided by the local activity of its own channel (contrast-gain control), as Topographica's LGN sheets settle it
    in two steps (``tsettle=2``; V1 receives only the second):

        a1 = [D]+ / c;   a2 = [D]+ / (c + g * G(a1))

    ``D`` the DoG response (``strength`` times centre minus surround), ``G`` a Gaussian pool (``gain_sigma``, cut at
    ``gain_radius``, normalised to sum 1) over the same channel, ``g`` = ``gain_strength``, ``c`` = ``gain_constant``.
    At high contrast ``a2`` tends to ``D / (g / c * G([D]+))``: the LGN's response no longer grows with contrast.
    ``crop`` units are cut from each side of the retina after filtering (Topographica's retina extends beyond the LGN
    by the DoG's radius, so that edge LGN units see a whole retina).
    """

    def __init__(self, sigma_center: float, sigma_surround: float, radius: float, strength: float = 2.33,
                 gain_sigma: float = 3.0, gain_radius: float = 6.0, gain_strength: float = 0.6,
                 gain_constant: float = 0.11, crop: int = 0):
        super().__init__(sigma_center, sigma_surround, radius, strength)
        if gain_sigma <= 0 or gain_radius < 0 or gain_strength < 0 or gain_constant <= 0 or crop < 0:
            raise ValueError(f"need gain_sigma > 0, gain_radius >= 0, gain_strength >= 0, gain_constant > 0 and "
                             f"crop >= 0; got {gain_sigma}, {gain_radius}, {gain_strength}, {gain_constant}, {crop}")
        self.gain_strength, self.gain_constant, self.crop = gain_strength, gain_constant, crop
        dy, dx = disc_offsets(gain_radius)
        r = int(math.floor(gain_radius))
        pool = torch.zeros(2 * r + 1, 2 * r + 1, dtype=torch.float64)
        pool[dy + r, dx + r] = torch.exp(-(dy**2 + dx**2).double() / (2 * gain_sigma**2))
        # [2, 1, k, k]: each channel pools only itself (a grouped convolution).
        self.register_buffer("pool", (pool / pool.sum()).float().expand(2, 1, -1, -1).contiguous(),
                             persistent=False)

    def forward(self, retina: torch.Tensor) -> torch.Tensor:
        response = self.linear(retina)
        if self.crop:
            if 2 * self.crop >= min(response.shape[-2:]):
                raise ValueError(f"crop ({self.crop}) leaves nothing of a {list(retina.shape[-2:])} retina")
            response = response[..., self.crop:-self.crop, self.crop:-self.crop]
        rectified = response.clamp_min(0.0)
        first = rectified / self.gain_constant
        pooled = F.conv2d(first, self.pool, padding=self.pool.shape[-1] // 2, groups=2)
        return rectified / (self.gain_constant + self.gain_strength * pooled)


class LissomV1(nn.Module):
    """V1: afferent input from the LGN's ON and OFF channels (one jointly normalised projection), then settling with
    lateral excitation and inhibition:

        s = gamma_a * A(lgn);  eta = sigma(s);  repeat settling_steps: eta = sigma(s + gamma_e E(eta) - gamma_i I(eta))

    ``lower``, ``upper`` (the sigmoid's thresholds) and ``settling_steps`` are buffers, so a checkpoint keeps the
    values a training schedule reached. The lateral projections are combined into one set of weights on the
    inhibitory disc (the excitatory disc lies inside it, ``LateralWeights``), so each settling step reads the activity
    once: every unit gathers its disc, or, when few units are active (one image), the active ones scatter what they
    send.
    """

    def __init__(self, lgn_size: int, size: int, afferent_radius: float, afferent_sigma: float,
                 excitatory_radius: float, excitatory_sigma: float, inhibitory_radius: float,
                 inhibitory_sigma: float, gamma_a: float = 1.0, gamma_e: float = 0.9, gamma_i: float = 0.9,
                 lower: float = 0.083, upper: float = 0.633, settling_steps: int = 9,
                 generator: torch.Generator | None = None, lgn_border: int = 0):
        super().__init__()
        if excitatory_radius >= inhibitory_radius:
            raise ValueError(f"the lateral excitatory radius ({excitatory_radius}) must be smaller than the "
                             f"inhibitory one ({inhibitory_radius})")
        self.size, self.gamma_a, self.gamma_e, self.gamma_i = size, gamma_a, gamma_e, gamma_i
        self.afferent = LocalProjection(2, lgn_size, size, afferent_radius, afferent_sigma, generator=generator,
                                        border=lgn_border)
        self.excitatory = LocalProjection(1, size, size, excitatory_radius, excitatory_sigma, noise=False)
        self.inhibitory = LocalProjection(1, size, size, inhibitory_radius, inhibitory_sigma, generator=generator)
        # Rows of the inhibitory disc that hold the excitatory offsets.
        ey, ex = disc_offsets(excitatory_radius)
        iy, ix = disc_offsets(inhibitory_radius)
        lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(iy, ix, strict=True))}
        self.register_buffer("excitatory_rows", torch.tensor([lookup[(int(a), int(b))] for a, b in zip(ey, ex,
                                                                                                     strict=True)]),
                             persistent=False)
        # For sparse activity (one image): presynaptic unit v reaches unit v - offset_k. Settling scatters into a
        # sheet padded by the inhibitory reach r, where v sits at padded_units[v] and its targets at
        # padded_units[v] + target_offsets (targets outside the sheet land in the padding, which is dropped).
        # The weight v sends along offset k sits at flat index v + weight_offsets[k] of the [K, n^2] inhibitory
        # weights (and v + excitatory_weight_offsets[k] of the [K_E, n^2] excitatory ones). Indices are computed
        # per active unit rather than read from [n^2, K] tables, which would be as large as the weights; int32
        # halves the traffic where they fit.
        n, r = size, self.inhibitory.reach
        padded = n + 2 * r
        index_dtype = torch.int32 if len(iy) * max(n, padded) ** 2 < 2**31 else torch.long
        units = torch.arange(n * n)
        self.register_buffer("padded_units", ((units // n + r) * padded + units % n + r).to(index_dtype),
                             persistent=False)
        self.register_buffer("target_offsets", (-(iy * padded + ix)).to(index_dtype), persistent=False)
        self.register_buffer("weight_offsets", (torch.arange(len(iy)) * n * n - (iy * n + ix)).to(index_dtype),
                             persistent=False)
        self.register_buffer("excitatory_weight_offsets", (torch.arange(len(ey)) * n * n - (ey * n + ex))
                             .to(index_dtype), persistent=False)
        self.sparse_below = 0.25  # active fraction under which settling scatters from the active units
        self.register_buffer("thresholds", torch.tensor([lower, upper]))
        self.register_buffer("settling_steps", torch.tensor(int(settling_steps)))

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        lower, upper = self.thresholds.tolist()
        return piecewise_sigmoid(x, lower, upper)

    def lateral_weights(self) -> torch.Tensor:
        """``gamma_e E - gamma_i I`` on the inhibitory disc, ``[K_I, units]``."""
        combined = torch.mul(self.inhibitory.weight, -self.gamma_i)
        return combined.index_add_(0, self.excitatory_rows, self.excitatory.weight, alpha=self.gamma_e)

    def outgoing_weights(self, units: torch.Tensor) -> torch.Tensor:
        """The lateral weights that ``units`` send, ``[len(units), K_I]``: row i holds what ``units[i]`` = v sends to
        unit v - offset_k, the same values as ``lateral_weights()``, by presynaptic unit. Where v - offset_k lies
        outside the sheet, the entry is some other weight (settling drops what it sends there)."""
        weights = self.inhibitory.weight.view(-1)
        index = (units.to(self.weight_offsets.dtype)[:, None] + self.weight_offsets).clamp_(0, len(weights) - 1)
        rows = weights.index_select(0, index.view(-1)).view_as(index).mul_(-self.gamma_i)
        weights = self.excitatory.weight.view(-1)
        index = (units.to(self.weight_offsets.dtype)[:, None] + self.excitatory_weight_offsets).clamp_(
            0, len(weights) - 1)
        excitatory = weights.index_select(0, index.view(-1)).view_as(index)
        return rows.index_add_(1, self.excitatory_rows, excitatory, alpha=self.gamma_e)

    def settle(self, lgn: torch.Tensor) -> torch.Tensor:
        """Settled activity ``[B, units]``."""
        drive = self.gamma_a * self.afferent(lgn)
        eta = self.activation(drive)
        lateral = LateralWeights(self)
        for _ in range(int(self.settling_steps)):
            eta = self.activation(drive + self.lateral_input(eta, lateral))
        return eta

    def lateral_input(self, eta: torch.Tensor, lateral: LateralWeights | None = None) -> torch.Tensor:
        """``sum_k lateral[k, u] eta[u + offset_k]`` for every unit u, ``[B, units]``. For one image with sparse
        activity, the active units scatter their outgoing weights (work in proportion to the active units);
        otherwise every unit gathers its disc. ``lateral``: the weights of this settling (made here if not given)."""
        lateral = lateral if lateral is not None else LateralWeights(self)
        units = eta.shape[1]
        active = eta[0].nonzero().squeeze(1) if len(eta) == 1 else None
        if active is None or len(active) > self.sparse_below * units:
            return self.inhibitory(eta.view(-1, 1, self.size, self.size), lateral.by_target())
        values = lateral.outgoing(active).mul_(eta[0].index_select(0, active)[:, None])
        targets = self.padded_units.index_select(0, active)[:, None] + self.target_offsets
        n, r = self.size, self.inhibitory.reach
        out = eta.new_zeros((n + 2 * r) ** 2).index_add_(0, targets.view(-1), values.view(-1))
        return out.view(n + 2 * r, -1)[r:r + n, r:r + n].reshape(1, units)

    def forward(self, lgn: torch.Tensor) -> torch.Tensor:
        return self.settle(lgn).view(-1, 1, self.size, self.size)


class HomeostaticV1(LissomV1):
    """GCAL's V1 (Stevens et al. 2013): ``LissomV1``'s projections and settling, with LISSOM's sigmoid replaced by
    each unit's own threshold, half-rectified without saturation, that homeostasis adapts (Topographica's
    ``HomeostaticResponse``): after every input, ``adapt(activity)`` updates each unit's smoothed activity
    ``a <- smoothing a + (1 - smoothing) y`` and its threshold ``t <- t + rate (a - target_activity)``, so every unit
    settles to the same mean activity without a hand-made schedule. Thresholds and smoothed activities are buffers
    (a checkpoint resumes them exactly).
    """

    def __init__(self, lgn_size: int, size: int, afferent_radius: float, afferent_sigma: float,
                 excitatory_radius: float, excitatory_sigma: float, inhibitory_radius: float,
                 inhibitory_sigma: float, gamma_a: float, gamma_e: float, gamma_i: float, settling_steps: int,
                 threshold_init: float = 0.15, target_activity: float = 0.024, homeostatic_rate: float = 0.01,
                 smoothing: float = 0.991, lgn_border: int = 0):
        super().__init__(lgn_size, size, afferent_radius, afferent_sigma, excitatory_radius, excitatory_sigma,
                         inhibitory_radius, inhibitory_sigma, gamma_a, gamma_e, gamma_i,
                         settling_steps=settling_steps, lgn_border=lgn_border)
        if not 0 <= smoothing < 1 or homeostatic_rate < 0 or target_activity <= 0:
            raise ValueError(f"need 0 <= smoothing < 1, homeostatic_rate >= 0 and target_activity > 0; got "
                             f"{smoothing}, {homeostatic_rate}, {target_activity}")
        del self.thresholds  # LISSOM's two sigmoid thresholds: replaced by one threshold per unit
        self.target_activity, self.homeostatic_rate, self.smoothing = target_activity, homeostatic_rate, smoothing
        self.register_buffer("unit_thresholds", torch.full((size * size,), float(threshold_init)))
        self.register_buffer("average_activity", torch.full((size * size,), float(target_activity)))

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.unit_thresholds).clamp_min_(0.0)

    @torch.no_grad()
    def adapt(self, activity: torch.Tensor) -> None:
        """One homeostatic update from each unit's settled ``activity`` ``[units]`` (one input's, or a batch mean)."""
        self.average_activity.mul_(self.smoothing).add_(activity, alpha=1.0 - self.smoothing)
        self.unit_thresholds.add_(self.average_activity - self.target_activity, alpha=self.homeostatic_rate)


class LateralWeights:
    """V1's lateral weights ``gamma_e E - gamma_i I`` during one settling, in the two layouts settling reads, each
    made when first needed: ``by_target()`` ``[K_I, units]`` (every unit's inhibitory disc, for gathering when
    activity is broad) and ``outgoing(active)`` (what each active unit sends, for scattering when few are active).
    A unit's outgoing row is made once and kept: LISSOM's activity shrinks while it settles, so the units active at
    the first sparse step are nearly all that ever are, and rows for the others are never made."""

    def __init__(self, v1: LissomV1):
        self.v1 = v1
        self._by_target: torch.Tensor | None = None
        self._rows = v1.inhibitory.weight.new_empty(v1.inhibitory.n_units, v1.inhibitory.n_offsets)
        self._made = torch.zeros(v1.inhibitory.n_units, dtype=torch.bool, device=self._rows.device)

    def by_target(self) -> torch.Tensor:
        if self._by_target is None:
            self._by_target = self.v1.lateral_weights()
        return self._by_target

    def outgoing(self, active: torch.Tensor) -> torch.Tensor:
        """``[len(active), K_I]``: the rows of ``LissomV1.outgoing_weights(active)`` (a copy)."""
        missing = active[~self._made.index_select(0, active)]
        if len(missing):
            rows = self.v1.outgoing_weights(missing)
            self._rows.index_copy_(0, missing, rows)
            self._made.index_fill_(0, missing, True)
            if len(missing) == len(active):  # all new (the first sparse step): these rows are already a copy
                return rows
        return self._rows.index_select(0, active)


class HebbianTerm(NamedTuple):
    """The Hebbian term of a projection for the units that responded: ``values[:, i]`` belongs to unit
    ``units[i]``; every other unit's term is zero."""

    units: torch.Tensor
    values: torch.Tensor

    def dense(self, n_units: int) -> torch.Tensor:
        """``[K, n_units]`` with zeros for the units that did not respond."""
        out = self.values.new_zeros(self.values.shape[0], n_units)
        return out.index_copy_(1, self.units, self.values)

    @classmethod
    def from_dense(cls, term: torch.Tensor) -> HebbianTerm:
        return cls(torch.arange(term.shape[1], device=term.device), term)


class DivisiveHebbian(torch.optim.Optimizer):
    """The LISSOM learning rule as an optimiser: ``w' = (w + alpha x eta) / sum(w + alpha x eta)``.

    One parameter group per projection (``name``; ``lr``: the learning rate per unit, spread over its connections:
    ``alpha = lr / connections`` within the current radius, Topographica's convention, so the rate does not depend on
    the density). ``term`` makes the Hebbian term, ``alpha`` times the presynaptic input of each connection times
    the *settled* postsynaptic activity, averaged over the batch; ``step(terms={name: term})`` adds the terms and
    renormalises each unit's connections (those within the projection's current radius) to sum 1. Between the
    two, DDP processes average their terms so that all keep identical weights. LISSOM's activity is sparse: a term
    covers only the units that responded (``HebbianTerm``); the others keep their weights, as the rule gives them.
    """

    def __init__(self, projections: dict[str, LocalProjection], lrs: dict[str, float]):
        self.projections = dict(projections)
        groups = [{"params": [p.weight], "name": name, "lr": float(lrs[name])} for name, p in projections.items()]
        super().__init__(groups, defaults={})

    def alphas(self) -> dict[str, float]:
        """Learning rate per connection of each projection."""
        return {g["name"]: g["lr"] / self.connections(g["name"]) for g in self.param_groups}

    def connections(self, name: str) -> int:
        return int(self.projections[name].connected().sum())

    @staticmethod
    def responding(post: torch.Tensor) -> torch.Tensor:
        """Indices of the units with ``post != 0`` in any image of ``post`` ``[B, units]``."""
        return (post != 0).any(0).nonzero().squeeze(1)

    @staticmethod
    def term(pre_patches: torch.Tensor, post: torch.Tensor, alpha: float,
             units: torch.Tensor | None = None) -> HebbianTerm:
        """``pre_patches`` ``[B, K, units]``, ``post`` ``[B, units]`` -> the term of the units with ``post != 0``.
        Given ``units`` (``responding(post)``), ``pre_patches`` holds only theirs, ``[B, K, len(units)]``."""
        if units is None:
            units = DivisiveHebbian.responding(post)
            pre_patches = pre_patches.index_select(2, units)
        post = post.index_select(1, units).mul_(alpha / len(post))
        if len(post) == 1:  # one image: a product (einsum would go through a batched matmul)
            return HebbianTerm(units, pre_patches[0] * post)
        return HebbianTerm(units, torch.einsum("bka,ba->ka", pre_patches, post))

    @torch.no_grad()
    def step(self, closure=None, terms: dict[str, HebbianTerm] | None = None):
        loss = closure() if closure is not None else None
        if terms is None:
            raise ValueError("DivisiveHebbian.step needs terms={projection name: HebbianTerm}")
        unknown = set(terms) - set(self.projections)
        if unknown:
            raise ValueError(f"no projection named {sorted(unknown)}; known: {sorted(self.projections)}")
        for name, (units, values) in terms.items():
            if not len(units):
                continue
            projection = self.projections[name]
            weight = projection.weight.index_select(1, units).add_(values)
            connected = projection.connected()
            if not connected.all():  # a shrunk projection: keep the cut connections at zero
                weight.mul_(connected[:, None])
            projection.weight.index_copy_(1, units, weight.div_(weight.sum(0, keepdim=True).clamp_min(1e-30)))
        return loss


class LissomNetwork(nn.Module):
    """Retina ``[B, 1, R, R]`` -> ``DogLGN`` -> ``LissomV1``; ``forward`` returns V1's settled activity
    ``[B, 1, N, N]``. ``hebbian_terms`` settles and returns the Hebbian terms of the three V1 projections, which
    ``DivisiveHebbian(network.projections(), lrs).step(terms=...)`` applies."""

    def __init__(self, lgn: DogLGN, v1: LissomV1):
        super().__init__()
        self.lgn, self.v1 = lgn, v1

    @torch.no_grad()
    def forward(self, retina: torch.Tensor) -> torch.Tensor:
        return self.v1(self.lgn(retina))

    @torch.no_grad()
    def hebbian_terms(self, retina: torch.Tensor, alphas: dict[str, float]) -> tuple[torch.Tensor, dict]:
        """Settle on ``retina``; return (settled activity ``[B, units]``, {projection name: Hebbian term}) for
        ``alphas`` = {"afferent", "excitatory", "inhibitory": learning rate per connection}; a projection whose alpha
        is 0 gets no term."""
        v1 = self.v1
        lgn = self.lgn(retina)
        eta = v1.settle(lgn)
        # Only the units that responded learn, so only their presynaptic input is gathered.
        units = DivisiveHebbian.responding(eta)
        lateral_patches = v1.inhibitory.patches(eta.view(-1, 1, v1.size, v1.size), units)
        term = DivisiveHebbian.term
        patches = {"afferent": lambda: v1.afferent.patches(lgn, units),
                   "excitatory": lambda: lateral_patches.index_select(1, v1.excitatory_rows),
                   "inhibitory": lambda: lateral_patches}
        # A projection with learning rate 0 (GCAL's lateral excitation) keeps its weights: no term.
        return eta, {name: term(patch(), eta, alphas[name], units) for name, patch in patches.items()
                     if alphas[name] != 0}

    def projections(self) -> dict[str, LocalProjection]:
        return {"afferent": self.v1.afferent, "excitatory": self.v1.excitatory, "inhibitory": self.v1.inhibitory}
