"""Per-neuron readouts from a core's feature maps [B, C, H, W] to responses [B, n]: the factorised readouts of
Ecker et al. (2019) (a spatial mask x a feature vector) and the Gaussian readout of Lurz et al. (2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "READOUTS",
    "GaussianReadout",
    "SpatialL1FeatureL2Readout",
    "SpatialXFeatureReadout",
    "SpatialXFeatureTransferReadout",
    "build_readout",
    "inverse_softplus",
]


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x such that softplus(x) = y, for y > 0 (numerically safe for large y)."""
    y = y.clamp_min(1e-6)
    return y + torch.log(-torch.expm1(-y))


class SpatialXFeatureReadout(nn.Module):
    """Factorised readout of Ecker et al. 2019 ("SpatialXFeatureJointL1").

    Neuron n: ``softplus(sum_c w[n, c] * sum_xy |m[n, x, y]| * x[c, x, y] + b[n])`` with a positive spatial mask m over
    the full feature map and a feature vector w. ``penalty()`` is the joint sparsity
    ``sparsity * sum_n ||m_n||_1 * ||w_n||_1`` (``sparsity`` is the paper's ``readout_sparsity``).

    ``positive_feature_weights`` uses |w|. The bias starts at 0; ``initialize_bias(mean_responses)`` sets it from
    the train mean of each neuron, as the reference code does.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        n_neurons: int,
        positive_feature_weights: bool = False,
        init_masks: str = "rand",
        sparsity: float = 1.0,
    ):
        super().__init__()
        channels, height, width = (int(s) for s in in_shape)
        self.positive_feature_weights = positive_feature_weights
        self.sparsity = sparsity
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

    @torch.no_grad()
    def initialize_bias(self, mean_responses: torch.Tensor) -> None:
        """Bias = 0.5 * inverse_softplus(mean) of each neuron's mean training response (the reference code's)."""
        mean = torch.as_tensor(mean_responses, dtype=self.bias.dtype, device=self.bias.device)
        if mean.shape != self.bias.shape:
            raise ValueError(f"mean_responses has {mean.numel()} values for {self.bias.numel()} neurons")
        self.bias.copy_(0.5 * inverse_softplus(mean))

    def feature_weights(self) -> torch.Tensor:
        return self.features.abs() if self.positive_feature_weights else self.features

    def drive(self, x: torch.Tensor, neurons: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """The linear drive ``[B, n]`` of the given neurons (all by default), before bias and softplus."""
        b, c, h, w = x.shape
        # Spatial pooling first: [B, C, HW] x [HW, n] -> [B, C, n] is the smallest intermediate.
        pooled = torch.matmul(x.reshape(b, c, h * w), self.mask[neurons].abs().reshape(-1, h * w).t())
        return (pooled * self.feature_weights()[neurons].t().unsqueeze(0)).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.drive(x) + self.bias)

    def penalty(self) -> torch.Tensor:
        mask_l1 = self.mask.abs().flatten(1).sum(1)
        feature_l1 = self.features.abs().sum(1)
        return self.sparsity * (mask_l1 * feature_l1).sum()

    def extra_repr(self) -> str:
        n, h, w = self.mask.shape
        return f"neurons={n}, channels={self.features.shape[1]}, grid={h}x{w}"



class SpatialL1FeatureL2Readout(SpatialXFeatureReadout):
    """The "dense L2 features" variant of Table 1 ("SpatialSparseXFeatureDenseSeparate"): the same prediction, but
    the mask and the feature weights are penalised separately, ``mask_sparsity * sum |m| + feature_l2 * sum w^2``
    (sparse masks, dense feature vectors)."""

    def __init__(
        self,
        in_shape: Sequence[int],
        n_neurons: int,
        positive_feature_weights: bool = False,
        init_masks: str = "rand",
        mask_sparsity: float = 0.0,
        feature_l2: float = 0.0,
    ):
        super().__init__(in_shape, n_neurons, positive_feature_weights, init_masks, sparsity=0.0)
        self.mask_sparsity, self.feature_l2 = mask_sparsity, feature_l2

    def penalty(self) -> torch.Tensor:
        return self.mask_sparsity * self.mask.abs().sum() + self.feature_l2 * self.features.pow(2).sum()


class SpatialXFeatureTransferReadout(SpatialXFeatureReadout):
    """The transfer control of Ecker et al. 2019 ("SpatialXFeatureJointL1Transfer"): only every ``k_transfer``-th
    neuron (index divisible by ``k_transfer``) trains the core; the other neurons read it through a stop-gradient
    (``detach``) and train only their own mask, features and bias. ``trains_core`` marks the first kind.
    Predictions and the joint-L1 penalty are those of ``SpatialXFeatureReadout``."""

    def __init__(
        self,
        in_shape: Sequence[int],
        n_neurons: int,
        positive_feature_weights: bool = False,
        init_masks: str = "rand",
        sparsity: float = 1.0,
        k_transfer: int = 2,
    ):
        super().__init__(in_shape, n_neurons, positive_feature_weights, init_masks, sparsity)
        if k_transfer < 2:
            raise ValueError(f"k_transfer must be >= 2 (every k-th neuron trains the core), got {k_transfer}")
        self.k_transfer = k_transfer
        trains_core = torch.arange(n_neurons) % k_transfer == 0
        self.register_buffer("trains_core", trains_core, persistent=False)
        self.register_buffer("core_neurons", trains_core.nonzero().flatten(), persistent=False)
        self.register_buffer("transfer_neurons", (~trains_core).nonzero().flatten(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drive = x.new_empty(x.shape[0], self.bias.shape[0])
        drive[:, self.core_neurons] = self.drive(x, self.core_neurons)
        drive[:, self.transfer_neurons] = self.drive(x.detach(), self.transfer_neurons)
        return F.softplus(drive + self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k_transfer={self.k_transfer}"



class GaussianReadout(nn.Module):
    """The Gaussian readout of Lurz et al. (2021, ICLR, "Generalization in data-driven models of primary visual
    cortex"), the standard for mouse V1: each neuron reads the feature vector at one learned position of the core's
    output. Neuron n: ``softplus(sum_c w[n, c] * x[c, p_n] + b[n])`` with ``x[:, p]`` bilinearly interpolated at
    ``p_n`` (image coordinates in [-1, 1]). In training ``p_n`` is drawn from a Gaussian around the learned mean
    ``mu[n]`` with a learned SD ``sigma[n]`` (one per neuron, isotropic), so the gradient reaches the position from
    the neighbourhood of the current one; in evaluation ``p_n = mu[n]``. ``penalty()`` is ``feature_l1`` times the
    sum of |w| (neuralpredictors' ``feature_reg``). ``mu`` starts uniform in [-``init_mu_range``, ``init_mu_range``],
    ``sigma`` at ``init_sigma``, ``w`` at 1 / channels; the bias at 0 until ``initialize_bias``."""

    def __init__(self, in_shape: Sequence[int], n_neurons: int, positive_feature_weights: bool = False,
                 feature_l1: float = 0.0, init_mu_range: float = 0.3, init_sigma: float = 0.1):
        super().__init__()
        channels = int(in_shape[0])
        self.positive_feature_weights, self.feature_l1 = positive_feature_weights, feature_l1
        self.mu = nn.Parameter(torch.empty(n_neurons, 2).uniform_(-init_mu_range, init_mu_range))
        self.sigma = nn.Parameter(torch.full((n_neurons,), float(init_sigma)))
        self.features = nn.Parameter(torch.full((n_neurons, channels), 1.0 / channels))
        self.bias = nn.Parameter(torch.zeros(n_neurons))

    def positions(self, batch: int) -> torch.Tensor:
        """``[batch, n, 2]`` in [-1, 1] (x, y as ``grid_sample`` reads them): drawn in training, the means otherwise."""
        mu = self.mu[None].expand(batch, -1, -1)
        if self.training:
            mu = mu + self.sigma.abs()[None, :, None] * torch.randn_like(mu)
        return mu.clamp(-1, 1)

    def feature_weights(self) -> torch.Tensor:
        return self.features.abs() if self.positive_feature_weights else self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.positions(x.shape[0])[:, :, None, :].to(x.dtype)
        sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)[..., 0]
        drive = (sampled * self.feature_weights().t()[None].to(x.dtype)).sum(1)  # [B, C, n] -> [B, n]
        return F.softplus(drive + self.bias)

    @torch.no_grad()
    def initialize_bias(self, mean_responses: torch.Tensor) -> None:
        """Bias = inverse_softplus(mean): a neuron whose drive is 0 predicts its mean training response."""
        mean = torch.as_tensor(mean_responses, dtype=self.bias.dtype, device=self.bias.device)
        if mean.shape != self.bias.shape:
            raise ValueError(f"mean_responses has {mean.numel()} values for {self.bias.numel()} neurons")
        self.bias.copy_(inverse_softplus(mean))

    def penalty(self) -> torch.Tensor:
        return self.feature_l1 * self.features.abs().sum()

    def extra_repr(self) -> str:
        return f"neurons={self.mu.shape[0]}, channels={self.features.shape[1]}"


# readout name (the ``readout`` argument of the response models) -> its class and the options it takes, as
# {option name in the models and build_readout: argument name of the class}
READOUTS: dict[str, tuple[type[nn.Module], dict[str, str]]] = {
    "joint_l1": (SpatialXFeatureReadout, {"positive_feature_weights": "positive_feature_weights",
                                          "init_masks": "init_masks", "readout_sparsity": "sparsity"}),
    "l1_mask_l2_features": (SpatialL1FeatureL2Readout, {"positive_feature_weights": "positive_feature_weights",
                                                        "init_masks": "init_masks", "mask_sparsity": "mask_sparsity",
                                                        "feature_l2": "feature_l2"}),
    "transfer": (SpatialXFeatureTransferReadout, {"positive_feature_weights": "positive_feature_weights",
                                                  "init_masks": "init_masks", "readout_sparsity": "sparsity",
                                                  "k_transfer": "k_transfer"}),
    "gaussian": (GaussianReadout, {"positive_feature_weights": "positive_feature_weights",
                                   "readout_sparsity": "feature_l1"}),
}


def build_readout(readout: str, in_shape: Sequence[int], n_neurons: int, **options) -> nn.Module:
    """The readout named ``readout`` (a key of ``READOUTS``). ``options`` are the settings of all readouts
    (``positive_feature_weights``, ``init_masks``, ``readout_sparsity``, ``mask_sparsity``, ``feature_l2``,
    ``k_transfer``), so a model can pass all of its arguments; each readout takes the ones its ``READOUTS`` row
    names (e.g. ``joint_l1`` weights its penalty by ``readout_sparsity``, ``gaussian`` its feature L1 by it)."""
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; choose one of {sorted(READOUTS)}")
    known = {name for _, takes in READOUTS.values() for name in takes}
    if set(options) - known:
        raise TypeError(f"unknown readout options {sorted(set(options) - known)}; known: {sorted(known)}")
    cls, takes = READOUTS[readout]
    return cls(in_shape, n_neurons, **{arg: options[name] for name, arg in takes.items() if name in options})
