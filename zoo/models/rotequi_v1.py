"""The rotation-equivariant V1 model of Ecker et al. 2019 (ICLR): Hermite-basis core at 8 rotations + readout."""

from __future__ import annotations

from collections.abc import Sequence

from zoo.layers import RotationEquivariantCore, build_readout, output_shape
from zoo.tasks import CoreReadoutModel

__all__ = ["RotEquiV1"]


class RotEquiV1(CoreReadoutModel):
    """Rotation-equivariant core (``zoo.layers.RotationEquivariantCore``) -> per-neuron readout -> softplus.

    Hyperparameters use the names of the paper's code. Defaults are the model of Table 1 and Fig. 2 with
    16 features in every layer (3 layers, filter sizes 13, 5, 5, 16 x 8 features, upsampling 2) and its best
    penalties. ``model.core(images)`` gives the feature maps ``[B, num_rotations * num_filters[-1], H, W]`` in
    rotation-major order (channel ``r * features + f``). ``n_neurons`` and ``in_shape`` come from the data (linked by
    the CLI); the readout's bias starts at each neuron's mean training response (``ResponseTask.setup``).

    ``readout``: ``joint_l1`` (the paper's, weighted by ``readout_sparsity``; ``positive_feature_weights`` for the
    Table 1 variant), ``l1_mask_l2_features`` (the "dense L2 features" variant, weighted by ``mask_sparsity`` and
    ``feature_l2``), ``transfer`` (the control: only every ``k_transfer``-th neuron trains the core) or ``gaussian``
    (Lurz et al. 2021: one learned position per neuron, for mouse data; feature L1 weighted by ``readout_sparsity``).
    """

    def __init__(
        self,
        n_neurons: int,
        in_shape: Sequence[int],
        num_rotations: int = 8,
        upsampling: int = 2,
        shared_biases: bool = False,
        filter_size: Sequence[int] = (13, 5, 5),
        num_filters: Sequence[int] = (16, 16, 16),
        stride: Sequence[int] = (1, 1, 1),
        rate: Sequence[int] = (1, 1, 1),
        padding: Sequence[str] = ("same", "same", "same"),
        activation_fn: Sequence[str] = ("soft", "soft", "none"),
        rel_smooth_weight: Sequence[float] = (1.0, 0.5, 0.5),
        rel_sparse_weight: Sequence[float] = (0.0, 1.0, 1.0),
        conv_smooth_weight: float = 0.0249692,
        conv_sparse_weight: float = 0.0152482,
        readout: str = "joint_l1",
        readout_sparsity: float = 0.0170696,
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
        self.core = RotationEquivariantCore(
            in_channels=self.in_shape[0],
            num_rotations=num_rotations,
            upsampling=upsampling,
            shared_biases=shared_biases,
            filter_size=filter_size,
            num_filters=num_filters,
            stride=stride,
            rate=rate,
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
