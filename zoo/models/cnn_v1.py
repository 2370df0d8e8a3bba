"""The CNN baseline of Ecker et al. 2019 (Table 1): stacked conv core + factorised readout, Poisson loss.

``CoreReadoutModel`` is what the paper's models share (core -> readout, penalties, the readout variants); ``CNNV1``
here and ``RotEquiV1`` (``zoo.models.rotequi_v1``) differ only in their core.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.layers import StackedConv2dCore, build_readout, output_shape
from zoo.tasks import ResponseTask

__all__ = ["CNNV1", "CoreReadoutModel"]


class CoreReadoutModel(ResponseTask):
    """A core (image -> feature maps, with ``penalty()``) followed by a per-neuron readout (``zoo.layers.READOUTS``).

    Loss: data loss (Poisson by default) + the core's filter penalties + the readout's penalty. Subclasses build
    ``self.core`` and then call ``build_readout_from_hparams(in_shape)``. With the transfer readout, the test also
    reports ``test/corr_core_neurons`` and ``test/corr_transfer_neurons`` (neurons that trained the core, and those
    that only read it through a stop-gradient).
    """

    core: nn.Module

    def build_readout_from_hparams(self, in_shape: Sequence[int]) -> None:
        hp = self.hparams
        self.readout = build_readout(
            hp.readout,
            output_shape(self.core, in_shape),
            hp.n_neurons,
            positive_feature_weights=hp.positive_feature_weights,
            init_masks=hp.init_masks,
            mean_responses=hp.mean_responses,
            readout_sparsity=hp.readout_sparsity,
            mask_sparsity=hp.mask_sparsity,
            feature_l2=hp.feature_l2,
            k_transfer=hp.k_transfer,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.readout(self.core(images))

    def regularizer(self) -> torch.Tensor:
        return self.core.penalty() + self.readout.penalty()

    def on_test_epoch_end(self):
        super().on_test_epoch_end()
        trains_core = getattr(self.readout, "trains_core", None)
        if trains_core is not None:
            corr = self.test_corr.compute()
            self.log("test/corr_core_neurons", corr[trains_core].mean().float(), sync_dist=True)
            self.log("test/corr_transfer_neurons", corr[~trains_core].mean().float(), sync_dist=True)


def check_in_shape(in_shape: Sequence[int]) -> list[int]:
    in_shape = [int(s) for s in in_shape]
    if len(in_shape) != 3:
        raise ValueError(f"in_shape must be [channels, height, width], got {in_shape}")
    return in_shape


class CNNV1(CoreReadoutModel):
    """Stacked-conv core -> per-neuron spatial x feature readout -> softplus.

    Defaults are the paper's 32-32-32 CNN (filter sizes 13, 5, 5; its best penalties). ``n_neurons``, ``in_shape``
    ([C, H, W]) and ``mean_responses`` come from the data (linked by the CLI). Loss: data loss (Poisson by default)
    + core smoothness/group-sparsity penalties + the readout's penalty. Adam at ``lr``.

    ``readout``: ``joint_l1`` (the paper's, weighted by ``readout_sparsity``), ``l1_mask_l2_features`` (weighted by
    ``mask_sparsity`` and ``feature_l2``) or ``transfer`` (joint L1; only every ``k_transfer``-th neuron trains the
    core).
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
        readout: str = "joint_l1",
        readout_sparsity: float = 0.0193531,
        positive_feature_weights: bool = False,
        init_masks: str = "rand",
        mask_sparsity: float = 0.0,
        feature_l2: float = 0.0,
        k_transfer: int = 2,
        loss: str = "poisson",
        lr: float = 0.002,
    ):
        super().__init__(n_neurons=n_neurons, loss=loss)
        self.save_hyperparameters()
        in_shape = check_in_shape(in_shape)
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
        self.build_readout_from_hparams(in_shape)
