"""Additive Gaussian noise during training only (Keras' ``GaussianNoise``), an optional part of Lindsey et al. 2019."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GaussianNoise"]


class GaussianNoise(nn.Module):
    """``x + sigma * N(0, 1)`` in training mode, ``x`` unchanged in eval mode (and when ``sigma`` is 0)."""

    def __init__(self, sigma: float = 0.0):
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma is a standard deviation, >= 0; got {sigma}")
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sigma > 0:
            return x + self.sigma * torch.randn_like(x)
        return x

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
