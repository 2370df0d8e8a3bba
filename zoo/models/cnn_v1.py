"""The CNN baseline of Ecker et al. 2019 (Table 1): stacked conv core + factorised readout, Poisson loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zoo.layers import SpatialXFeatureReadout, StackedConv2dCore, output_shape
from zoo.tasks import ResponseTask

__all__ = ["CNNV1"]


class CNNV1(ResponseTask):
    """Stacked-conv core -> per-neuron spatial x feature readout -> softplus.

    Defaults are the paper's 32-32-32 CNN (filter sizes 13, 5, 5; its best penalties). ``n_neurons``, ``in_shape``
    ([C, H, W]) and ``mean_responses`` come from the data (linked by the CLI). Loss: data loss (Poisson by default)
    + core smoothness/group-sparsity penalties + ``readout_sparsity`` * joint L1 of the readout. Adam at ``lr``.
    """

    def __init__(
        self,
        n_neurons: int,
        in_shape: Sequence[int],
        mean_responses: Sequence[float] | None = None,
        filter_size: Sequence[int] = (13, 5, 5),
        num_filters: Sequence[int] = (32, 32, 32),
        stride: Sequence[int] = (1, 1, 1),
        padding: Sequence[str] = ("same", "same", "same"),
        activation_fn: Sequence[str] = ("soft", "soft", "none"),
        rel_smooth_weight: Sequence[float] = (1.0, 0.5, 0.5),
        rel_sparse_weight: Sequence[float] = (0.0, 1.0, 1.0),
        conv_smooth_weight: float = 0.0151716,
        conv_sparse_weight: float = 0.0219826,
        readout_sparsity: float = 0.0193531,
        positive_feature_weights: bool = False,
        init_masks: str = "rand",
        loss: str = "poisson",
        lr: float = 0.002,
    ):
        super().__init__(n_neurons=n_neurons, loss=loss)
        self.save_hyperparameters()
        in_shape = [int(s) for s in in_shape]
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be [channels, height, width], got {in_shape}")
        self.core = StackedConv2dCore(
            in_channels=in_shape[0],
            filter_size=filter_size,
            num_filters=num_filters,
            stride=stride,
            padding=padding,
            activation_fn=activation_fn,
            rel_smooth_weight=rel_smooth_weight,
            rel_sparse_weight=rel_sparse_weight,
            conv_smooth_weight=conv_smooth_weight,
            conv_sparse_weight=conv_sparse_weight,
        )
        self.readout = SpatialXFeatureReadout(
            output_shape(self.core, in_shape),
            n_neurons,
            positive_feature_weights=positive_feature_weights,
            init_masks=init_masks,
            mean_responses=mean_responses,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.readout(self.core(images))

    def regularizer(self) -> torch.Tensor:
        return self.core.penalty() + self.hparams.readout_sparsity * self.readout.penalty()
