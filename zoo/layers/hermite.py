"""Rotation-equivariant convolutions built from a 2-D Hermite basis (Ecker et al. 2019; docs/models/rotequi_v1.md).

Every filter is a linear combination of 2-D Hermite functions ``f_{mu,nu}(r) * exp(i mu theta)``. A function of
angular frequency ``mu`` rotated by an angle ``a`` is the same function times ``exp(-i mu a)``, so a filter is rotated
*exactly* by rotating each (real, imaginary) pair of its coefficients by ``mu * a``: no pixel interpolation. A layer
computes its filters at ``num_rotations`` rotations from one set of coefficients; its output channels are
rotation-major (channel ``r * features + f`` is feature ``f`` at rotation ``r``). A layer fed by such a layer also
shifts the input rotation groups by ``r`` for its output rotation ``r``, so the whole stack is equivariant: rotating
the image by ``360 / num_rotations * k`` degrees rotates every feature map by the same angle and shifts the rotation
groups by ``k`` (exactly for multiples of 90 degrees, where the pixel grid maps onto itself).

Sense of rotation: with images shown as usual (row 0 at the top), rotation group ``r`` holds the filters of group 0
turned by ``r * 360 / num_rotations`` degrees counter-clockwise, and ``torch.rot90(image, 1, (-2, -1))`` (a
counter-clockwise quarter turn) maps the output to ``torch.rot90(output, 1, (-2, -1))`` with the rotation groups
shifted by ``num_rotations / 4`` (group ``r`` moves to ``r + num_rotations / 4``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.cores import ACTIVATIONS, ConvLayerStack, per_layer

__all__ = [
    "HermiteConv2d",
    "RotationEquivariantCore",
    "RotationSharedBatchNorm",
    "hermite_basis",
    "rotation_matrices",
]


def hermite_basis(filter_size: int, upsampling: int = 1, extent: float | None = None,
                  dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The 2-D Hermite functions of rank < ``filter_size`` sampled on a ``filter_size * upsampling`` square grid.

    Returns ``(basis [n, npts, npts], mu [n], kinds)`` with ``n = filter_size * (filter_size + 1) / 2``. Rank ``k``
    holds the functions of angular frequency ``mu = k, k - 2, ... >= 0`` and radial order ``nu = (k - mu) / 2``:
    ``(r / sqrt 2)^mu L_nu^mu(r^2 / 2) exp(-r^2 / 4) exp(i mu theta)`` (``L`` the generalised Laguerre polynomial,
    ``theta = atan2(row, column)``). ``kinds[i]`` is ``"z"`` for a rotationally symmetric function (``mu = 0``), ``"r"``
    / ``"i"`` for the real / imaginary part of a pair, which always come in that order. The grid is
    ``linspace(-m, m, npts)`` on both axes with ``m = extent * (1 - 1 / npts)``, ``extent = 2 sqrt(filter_size)`` by
    default (the reference code's), and each function is scaled to unit L2 norm on it.

    The reference code multiplies the same envelope ``exp(-r^2 / 4)`` by Laguerre polynomials of ``2 r^2``; for each
    ``mu`` those span the same polynomials as the ones here, so the filters a layer can express are the same, but
    only these are the orthonormal Hermite functions of that envelope. On the grid they are orthonormal up to
    sampling: the largest off-diagonal of the Gram matrix is below 0.02 for filter sizes 5 and 13 with
    ``upsampling >= 2`` (tests), and grows to ~0.4 at ``upsampling = 1``, where the highest ranks are under-sampled.
    """
    if filter_size < 1 or upsampling < 1:
        raise ValueError(f"filter_size and upsampling must be >= 1, got {filter_size} and {upsampling}")
    npts = filter_size * upsampling
    extent = 2 * math.sqrt(filter_size) if extent is None else extent
    m = extent * (1 - 1 / npts)
    coords = torch.linspace(-m, m, npts, dtype=torch.float64)
    rows, cols = coords[:, None].expand(npts, npts), coords[None, :].expand(npts, npts)
    theta = torch.atan2(rows, cols)
    half_r2 = (rows**2 + cols**2) / 2
    envelope = torch.exp(-half_r2 / 2)
    functions, mus, kinds = [], [], []
    for rank in range(filter_size):
        for mu in range(rank % 2, rank + 1, 2):
            nu = (rank - mu) // 2
            laguerre = sum((-1) ** k * math.comb(nu + mu, nu - k) / math.factorial(k) * half_r2**k
                           for k in range(nu + 1))
            radial = half_r2 ** (mu / 2) * laguerre * envelope
            if mu == 0:
                functions.append(radial)
                kinds.append("z")
                mus.append(0)
            else:
                functions += [radial * torch.cos(mu * theta), radial * torch.sin(mu * theta)]
                kinds += ["r", "i"]
                mus += [mu, mu]
    basis = torch.stack(functions)
    basis = basis / basis.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    return basis.to(dtype), torch.tensor(mus, dtype=torch.float64), kinds


def rotation_matrices(mu: torch.Tensor, kinds: Sequence[str], num_rotations: int) -> torch.Tensor:
    """``[num_rotations, n, n]``: matrix ``r`` maps Hermite coefficients to those of the filter rotated by
    ``a = r * 2 pi / num_rotations``; each (real, imaginary) pair of frequency ``mu`` turns by
    ``[[cos mu a, sin mu a], [-sin mu a, cos mu a]]`` (as in the reference code), symmetric functions stay."""
    n = len(kinds)
    matrices = torch.zeros(num_rotations, n, n, dtype=torch.float64)
    for r in range(num_rotations):
        angle = r * 2 * math.pi / num_rotations
        for i, kind in enumerate(kinds):
            if kind == "z":
                matrices[r, i, i] = 1.0
            elif kind == "r":
                c, s = math.cos(mu[i] * angle), math.sin(mu[i] * angle)
                matrices[r, i : i + 2, i : i + 2] = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
    return matrices


class HermiteConv2d(nn.Module):
    """A convolution whose ``out_features`` filters are Hermite-coefficient vectors, applied at ``num_rotations``
    rotations: ``[B, in_channels, H, W] -> [B, num_rotations * out_features, H', W']`` (rotation-major, no bias).

    ``coeffs`` (``[n_basis, in_channels, out_features]``, truncated normal with SD 0.1) are the parameters.
    ``rotation_major_input``: the input comes from another rotation-equivariant layer (``in_channels`` =
    ``num_rotations * in_features``), so output rotation ``r`` reads the input groups shifted by ``r``.
    ``upsampling``: the basis is sampled on a ``upsampling``-times finer grid and each ``upsampling x upsampling``
    block summed back to ``filter_size x filter_size`` (anti-aliasing).

    ``weight`` is the built filter bank ``[num_rotations * out_features, in_channels, filter_size, filter_size]``, a
    plain conv weight (for penalties, plots and ``bioviz`` callbacks). Building it is one small matmul per step.
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        filter_size: int,
        num_rotations: int = 8,
        upsampling: int = 1,
        rotation_major_input: bool = False,
        stride: int = 1,
        padding: str | int = "same",
        dilation: int = 1,
    ):
        super().__init__()
        if rotation_major_input and in_channels % num_rotations:
            raise ValueError(f"rotation_major_input needs in_channels divisible by num_rotations, got {in_channels} "
                             f"channels and {num_rotations} rotations")
        if num_rotations < 1 or out_features < 1 or in_channels < 1:
            raise ValueError(f"in_channels, out_features and num_rotations must be >= 1, got {in_channels}, "
                             f"{out_features}, {num_rotations}")
        self.in_channels, self.out_features, self.num_rotations = in_channels, out_features, num_rotations
        self.filter_size, self.upsampling, self.rotation_major_input = filter_size, upsampling, rotation_major_input
        self.stride, self.padding, self.dilation = stride, padding, dilation
        basis, mu, kinds = hermite_basis(filter_size, upsampling)
        if upsampling > 1:  # linear, so summing the basis' blocks sums every filter's blocks
            basis = basis.reshape(len(kinds), filter_size, upsampling, filter_size, upsampling).sum((2, 4))
        # filter_r = sum_a basis[a] (R_r c)[a] = sum_b (R_r^T basis)[b] c[b]: rotate the basis once, here.
        rotated = torch.einsum("rab,ahw->rbhw", rotation_matrices(mu, kinds, num_rotations), basis)
        self.register_buffer("rotated_basis", rotated.to(torch.get_default_dtype()))
        self.coeffs = nn.Parameter(torch.empty(len(kinds), in_channels, out_features))
        nn.init.trunc_normal_(self.coeffs, std=0.1, a=-0.2, b=0.2)
        if rotation_major_input:
            in_features = in_channels // num_rotations
            channel = torch.arange(in_channels)
            # Output rotation r reads input rotation group (g - r) where the unrolled filter reads group g.
            groups = (channel[None] // in_features - torch.arange(num_rotations)[:, None]) % num_rotations
            self.register_buffer("input_order", groups * in_features + channel % in_features, persistent=False)
        else:
            self.input_order = None

    @property
    def weight(self) -> torch.Tensor:
        filters = torch.einsum("rbhw,bj->rjhw", self.rotated_basis, self.coeffs.reshape(len(self.coeffs), -1))
        r, k = self.num_rotations, self.filter_size
        filters = filters.reshape(r, self.in_channels, self.out_features, k, k)
        if self.input_order is not None:
            filters = filters[torch.arange(r, device=filters.device)[:, None], self.input_order]
        return filters.transpose(1, 2).reshape(r * self.out_features, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding, dilation=self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.num_rotations} x {self.out_features}, filter_size={self.filter_size}, "
                f"upsampling={self.upsampling}, rotation_major_input={self.rotation_major_input}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}")


class RotationSharedBatchNorm(nn.Module):
    """Batch norm of rotation-major maps ``[B, R * F, H, W]`` whose statistics, scale and shift belong to the
    feature and are shared by its ``R`` rotations, so the layer commutes with rotations in training and eval mode."""

    def __init__(self, num_rotations: int, num_features: int, affine_scale: bool = True):
        super().__init__()
        self.num_rotations = num_rotations
        self.norm = nn.BatchNorm2d(num_features)
        if not affine_scale:
            self.norm.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        grouped = x.reshape(b, self.num_rotations, c // self.num_rotations, h * w).transpose(1, 2)
        return self.norm(grouped).transpose(1, 2).reshape(b, c, h, w)


class RotationEquivariantCore(ConvLayerStack):
    """The core of Ecker et al. 2019: per layer a ``HermiteConv2d`` at ``num_rotations`` rotations -> batch norm (no
    scale in the last layer) -> activation; output ``[B, num_rotations * num_filters[-1], H, W]``, rotation-major.

    ``shared_biases=False`` (the paper's setting): one batch-norm channel per feature and rotation, so biases and
    scales may differ between rotations and the core is exactly equivariant only through its convolutions.
    ``shared_biases=True``: batch-norm statistics, scale and shift are shared by a feature's rotations
    (``RotationSharedBatchNorm``), and the whole core is equivariant. Penalties (``penalty()``): Laplacian smoothness
    and group sparsity of every layer's rotated filters (``weight``), weighted by ``conv_smooth_weight *
    rel_smooth_weight[l]`` and ``conv_sparse_weight * rel_sparse_weight[l]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_rotations: int = 8,
        upsampling: int = 2,
        shared_biases: bool = False,
        filter_size: Sequence[int] = (13, 5, 5),
        num_filters: Sequence[int] = (16, 16, 16),
        stride: Sequence[int] | int = 1,
        rate: Sequence[int] | int = 1,
        padding: Sequence[str] | str = "same",
        activation_fn: Sequence[str] | str = ("soft", "soft", "none"),
        rel_smooth_weight: Sequence[float] = (1.0, 0.5, 0.5),
        rel_sparse_weight: Sequence[float] = (0.0, 1.0, 1.0),
        conv_smooth_weight: float = 0.0,
        conv_sparse_weight: float = 0.0,
    ):
        super().__init__()
        n = len(num_filters)
        filter_size, stride, padding, activation_fn = self._layer_settings(
            num_filters, filter_size, stride, padding, activation_fn, rel_smooth_weight, rel_sparse_weight,
            conv_smooth_weight, conv_sparse_weight)
        rate = per_layer(rate, n, "rate")
        for k in filter_size:
            if k % 2 == 0:
                raise ValueError(f"filter sizes must be odd (a centred grid that maps onto itself when rotated), "
                                 f"got {list(filter_size)}")
        self.num_rotations = num_rotations
        self.layers = nn.ModuleList()
        channels = in_channels
        for i, (k, c, s, d, pad, act) in enumerate(
            zip(filter_size, num_filters, stride, rate, padding, activation_fn, strict=True)
        ):
            conv = HermiteConv2d(channels, c, k, num_rotations, upsampling, rotation_major_input=i > 0, stride=s,
                                 padding=pad, dilation=d)
            last = i == n - 1
            if shared_biases:
                norm = RotationSharedBatchNorm(num_rotations, c, affine_scale=not last)
            else:
                norm = nn.BatchNorm2d(num_rotations * c)
                if last:
                    norm.weight.requires_grad_(False)  # shift only in the last layer
            self.layers.append(nn.Sequential(conv, norm, ACTIVATIONS[act]()))
            channels = num_rotations * c
        self.out_channels = channels
