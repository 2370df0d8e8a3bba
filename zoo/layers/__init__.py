"""nn building blocks with no Lightning in them; they need only torch."""

from zoo.layers.cores import StackedConv2dCore, output_shape
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
from zoo.layers.readouts import SpatialXFeatureReadout, inverse_softplus
from zoo.layers.regularizers import group_sparsity, laplace_smoothness

__all__ = [
    "DivisiveHebbian",
    "DogLGN",
    "LissomNetwork",
    "LissomV1",
    "LocalProjection",
    "LocallyConnected2d",
    "SpatialXFeatureReadout",
    "StackedConv2dCore",
    "group_sparsity",
    "inverse_softplus",
    "laplace_smoothness",
    "output_shape",
    "piecewise_sigmoid",
    "disc_offsets",
]
