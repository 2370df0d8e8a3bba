"""nn building blocks with no Lightning in them; they need only torch."""

from zoo.layers.cores import StackedConv2dCore, check_in_shape, output_shape
from zoo.layers.hermite import (
    HermiteConv2d,
    RotationEquivariantCore,
    RotationSharedBatchNorm,
    hermite_basis,
    rotation_matrices,
)
from zoo.layers.lissom import (
    DivisiveHebbian,
    DogLGN,
    LissomNetwork,
    LissomV1,
    LocalProjection,
    disc_offsets,
    piecewise_sigmoid,
)
from zoo.layers.local import LocallyConnected2d
from zoo.layers.noise import GaussianNoise
from zoo.layers.readouts import (
    READOUTS,
    GaussianReadout,
    SpatialL1FeatureL2Readout,
    SpatialXFeatureReadout,
    SpatialXFeatureTransferReadout,
    build_readout,
    inverse_softplus,
)
from zoo.layers.regularizers import group_sparsity, laplace_smoothness

__all__ = [
    "READOUTS",
    "check_in_shape",
    "GaussianNoise",
    "GaussianReadout",
    "HermiteConv2d",
    "DivisiveHebbian",
    "DogLGN",
    "LissomNetwork",
    "LissomV1",
    "LocalProjection",
    "LocallyConnected2d",
    "RotationEquivariantCore",
    "RotationSharedBatchNorm",
    "SpatialL1FeatureL2Readout",
    "SpatialXFeatureReadout",
    "SpatialXFeatureTransferReadout",
    "StackedConv2dCore",
    "build_readout",
    "group_sparsity",
    "hermite_basis",
    "inverse_softplus",
    "laplace_smoothness",
    "output_shape",
    "rotation_matrices",
    "piecewise_sigmoid",
    "disc_offsets",
]
