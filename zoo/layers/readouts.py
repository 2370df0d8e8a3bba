"""Per-neuron readouts from a core's feature maps [B, C, H, W] to responses [B, n]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpatialXFeatureReadout", "inverse_softplus"]


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x such that softplus(x) = y, for y > 0 (numerically safe for large y)."""
    y = y.clamp_min(1e-6)
    return y + torch.log(-torch.expm1(-y))


class SpatialXFeatureReadout(nn.Module):
    """Factorised readout of Ecker et al. 2019 ("SpatialXFeatureJointL1").

    Neuron n: ``softplus(sum_c w[n, c] * sum_xy |m[n, x, y]| * x[c, x, y] + b[n])`` with a positive spatial mask m over
    the full feature map and a feature vector w. ``penalty()`` is the joint sparsity
    ``sum_n ||m_n||_1 * ||w_n||_1`` (unweighted; the model multiplies it by ``readout_sparsity``).

    ``positive_feature_weights`` uses |w|. ``mean_responses`` (the train mean of each neuron) initialises the bias to
    0.5 * inverse_softplus(mean) as in the reference code; without it the bias starts at 0.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_neurons: int,
        positive_feature_weights: bool = False,
        init_masks: str = "rand",
        mean_responses: Sequence[float] | None = None,
    ):
        super().__init__()
        channels, height, width = (int(s) for s in in_shape)
        self.positive_feature_weights = positive_feature_weights
        self.mask = nn.Parameter(torch.empty(n_neurons, height, width))
        self.features = nn.Parameter(torch.empty(n_neurons, channels))
        self.bias = nn.Parameter(torch.zeros(n_neurons))
        if init_masks == "rand":
            nn.init.trunc_normal_(self.mask, std=0.01, a=-0.02, b=0.02)
        elif init_masks == "uniform":
            nn.init.constant_(self.mask, 1.0 / (height * width))
        else:
            raise ValueError(f"unknown init_masks {init_masks!r}; choose 'rand' or 'uniform'")
        nn.init.trunc_normal_(self.features, std=0.01, a=-0.02, b=0.02)
        if mean_responses is not None:
            mean = torch.as_tensor(list(mean_responses), dtype=torch.float32)
            if mean.shape != (n_neurons,):
                raise ValueError(f"mean_responses has {mean.numel()} values for {n_neurons} neurons")
            with torch.no_grad():
                self.bias.copy_(0.5 * inverse_softplus(mean))

    def feature_weights(self) -> torch.Tensor:
        return self.features.abs() if self.positive_feature_weights else self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # Spatial pooling first: [B, C, HW] x [HW, n] -> [B, C, n] is the smallest intermediate.
        pooled = torch.matmul(x.reshape(b, c, h * w), self.mask.abs().reshape(-1, h * w).t())
        drive = (pooled * self.feature_weights().t().unsqueeze(0)).sum(1)
        return F.softplus(drive + self.bias)

    def penalty(self) -> torch.Tensor:
        mask_l1 = self.mask.abs().flatten(1).sum(1)
        feature_l1 = self.features.abs().sum(1)
        return (mask_l1 * feature_l1).sum()

    def extra_repr(self) -> str:
        n, h, w = self.mask.shape
        return f"neurons={n}, channels={self.features.shape[1]}, grid={h}x{w}"

