"""Filter penalties of Ecker et al. 2019 (Laplacian smoothness and group sparsity; docs/models/rotequi_v1.md), for
weights shaped [out, in, kh, kw]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LAPLACIAN", "laplace_smoothness", "group_sparsity"]

LAPLACIAN = torch.tensor([[0.25, 0.5, 0.25], [0.5, -3.0, 0.5], [0.25, 0.5, 0.25]])


def laplace_smoothness(weight: torch.Tensor) -> torch.Tensor:
    """Sum over output filters of ||L * w||^2 / ||w||^2, with L the 3x3 Laplacian applied to every 2-D slice
    ('same' zero padding) and the norms taken over input channels and space."""
    out_c, in_c, kh, kw = weight.shape
    kernel = LAPLACIAN.to(weight).reshape(1, 1, 3, 3)
    filtered = F.conv2d(weight.reshape(out_c * in_c, 1, kh, kw), kernel, padding=1)
    numerator = filtered.reshape(out_c, -1).pow(2).sum(1)
    denominator = weight.reshape(out_c, -1).pow(2).sum(1).clamp_min(1e-12)
    return (numerator / denominator).sum()


def group_sparsity(weight: torch.Tensor) -> torch.Tensor:
    """Sum over output filters of [sum over inputs of ||w_{o,i}||_2] / ||w_o||_2: favours filters that read few
    input channels."""
    out_c = weight.shape[0]
    per_input = weight.pow(2).sum((2, 3)).clamp_min(1e-12).sqrt()
    total = weight.reshape(out_c, -1).pow(2).sum(1).clamp_min(1e-12).sqrt()
    return (per_input.sum(1) / total).sum()
