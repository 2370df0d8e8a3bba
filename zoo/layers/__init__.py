"""nn building blocks with no Lightning in them; they need only torch."""

from zoo.layers.cores import StackedConv2dCore, output_shape
from zoo.layers.local import LocallyConnected2d
from zoo.layers.noise import GaussianNoise
from zoo.layers.readouts import SpatialXFeatureReadout, inverse_softplus
from zoo.layers.regularizers import group_sparsity, laplace_smoothness

__all__ = [
    "GaussianNoise",
    "LocallyConnected2d",
    "SpatialXFeatureReadout",
    "StackedConv2dCore",
    "group_sparsity",
    "inverse_softplus",
    "laplace_smoothness",
    "output_shape",
]
