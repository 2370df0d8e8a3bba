"""The CNN baseline of Ecker et al. 2019 (Table 1): stacked conv core + factorised readout, Poisson loss.

``CNNV1`` and ``RotEquiV1`` (``zoo.models.rotequi_v1``) differ only in their core; what they share is
``zoo.tasks.CoreReadoutModel``.
"""

from __future__ import annotations

from collections.abc import Sequence

from zoo.layers import StackedConv2dCore, build_readout, output_shape
from zoo.tasks import CoreReadoutModel

__all__ = ["CNNV1"]


class CNNV1(CoreReadoutModel):
    """Stacked-conv core -> per-neuron spatial x feature readout -> softplus.

    Defaults are the paper's 32-32-32 CNN (filter sizes 13, 5, 5; its best penalties). ``n_neurons`` and
    ``in_shape`` ([C, H, W]) come from the data (linked by the CLI); the readout's bias starts at each neuron's mean
    training response (``ResponseTask.setup``). Loss: data loss (Poisson by default) + core smoothness/group-sparsity
    penalties + the readout's penalty. Adam at ``lr``.

    ``readout``: ``joint_l1`` (the paper's, weighted by ``readout_sparsity``), ``l1_mask_l2_features`` (weighted by
    ``mask_sparsity`` and ``feature_l2``), ``transfer`` (joint L1; only every ``k_transfer``-th neuron trains the
    core) or ``gaussian`` (Lurz et al. 2021: one learned position per neuron, for mouse data; feature L1 weighted by
    ``readout_sparsity``).
    """

    def __init__(
        self,
        n_neurons: int,
        in_shape: Sequence[int],
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
        super().__init__(in_shape, n_neurons, loss, lr)
        self.save_hyperparameters()
        self.core = StackedConv2dCore(
            in_channels=self.in_shape[0],
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
        self.readout = build_readout(readout, output_shape(self.core, self.in_shape), n_neurons,
                                     positive_feature_weights=positive_feature_weights, init_masks=init_masks,
                                     readout_sparsity=readout_sparsity, mask_sparsity=mask_sparsity,
                                     feature_l2=feature_l2, k_transfer=k_transfer)
