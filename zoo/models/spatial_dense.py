"""Convolution without weight transport: SpatialDenseNet and its weight-shared twin, RegularConvNet, from the original
notebook "Convolutional Layer Without Weight Transport" (docs/sources.md).

SpatialDenseNet is the notebook's network with every convolution replaced by a locally connected layer (each output
position has its own filter, so no weight is shared or transported). The notebook stored those layers as a dense 6-D
tensor with no mask, so its "local" weights spread over the whole image after the first update;
``zoo.layers.LocallyConnected2d`` stores only the receptive fields, so locality holds by construction, and holds
the notebook's 225.5 M parameters in 7.26 M.

Both nets follow one plan: three blocks of two layers, ``layer -> BatchNorm -> ReLU -> layer -> ReLU``, each block
optionally followed by 2x2 max pooling, ``Dropout2d`` after the second block; then a head
``Dropout -> Linear -> ReLU -> (Linear -> ReLU ...) -> Dropout -> Linear(num_classes)``. The defaults are the notebook's
layer sizes; its recipe (Adam 3e-4, batch 64, random crop with 4 px zero padding + flips, its channel
normalisation, 5 epochs) is ``configs/spatial_dense/``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.layers import LocallyConnected2d, check_in_shape, output_shape
from zoo.tasks import ClassificationTask

__all__ = ["RegularConvNet", "SpatialDenseNet", "notebook_plan_network"]


def notebook_plan_network(
    in_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int],
    kernel_sizes: Sequence[int],
    padding: int,
    pool: Sequence[bool],
    hidden: Sequence[int],
    dropout: float,
    dropout2d: float,
    locally_connected: bool,
    shared_bias: bool = False,
) -> nn.Sequential:
    """The notebook's network plan with convolutions (``locally_connected=False``) or untied local layers.

    ``channels``/``kernel_sizes``: one entry per spatial layer (two per block); ``pool``: one entry per block;
    ``hidden``: widths of the hidden Linear layers of the head.
    """
    if len(channels) != len(kernel_sizes) or len(channels) != 2 * len(pool):
        raise ValueError(f"channels ({len(channels)}) and kernel_sizes ({len(kernel_sizes)}) need two entries per "
                         f"block, pool ({len(pool)}) one")
    if not hidden:
        raise ValueError("hidden needs at least one width")
    c, h, w = check_in_shape(in_shape, what="this network")
    layers: list[nn.Module] = []
    for i, (out_c, k) in enumerate(zip(channels, kernel_sizes, strict=True)):
        out_h, out_w = h + 2 * padding - k + 1, w + 2 * padding - k + 1
        if min(out_h, out_w) < 1:
            raise ValueError(f"images of {in_shape[1]} x {in_shape[2]} pixels are too small for these layers "
                             f"(layer {i + 1} gets {h} x {w} and would output {out_h} x {out_w}); use larger "
                             "images or smaller kernel_sizes / fewer pooling steps")
        layer = LocallyConnected2d(c, out_c, (h, w), k, padding=padding, shared_bias=shared_bias) \
            if locally_connected else nn.Conv2d(c, out_c, k, padding=padding)
        h, w = out_h, out_w
        first_of_block = i % 2 == 0
        layers += [layer, nn.BatchNorm2d(out_c), nn.ReLU(inplace=True)] if first_of_block else \
            [layer, nn.ReLU(inplace=True)]
        c = out_c
        if not first_of_block:
            block = i // 2
            if pool[block]:
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            if block == 1 and dropout2d > 0:
                layers.append(nn.Dropout2d(p=dropout2d))
    features = nn.Sequential(*layers)
    flat = int(torch.tensor(output_shape(features, in_shape)).prod())
    head: list[nn.Module] = [nn.Flatten(), nn.Dropout(p=dropout)]
    for width in hidden:
        head += [nn.Linear(flat, width), nn.ReLU(inplace=True)]
        flat = width
    head += [nn.Dropout(p=dropout), nn.Linear(flat, num_classes)]
    return nn.Sequential(features, nn.Sequential(*head))


class _NotebookPlanClassifier(ClassificationTask):
    locally_connected: bool

    def __init__(self, in_shape, num_classes, channels, kernel_sizes, padding, pool, hidden, dropout, dropout2d,
                 lr, shared_bias=False):
        super().__init__(in_shape, num_classes, lr)
        self.save_hyperparameters()
        self.net = notebook_plan_network(self.in_shape, num_classes, channels, kernel_sizes, padding, pool, hidden,
                                         dropout, dropout2d, self.locally_connected, shared_bias)
        self.rf_layers = {"layer1": "net.0.0"}  # gradient receptive fields that bioviz fit logs to TensorBoard

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class SpatialDenseNet(_NotebookPlanClassifier):
    """The notebook's SpatialDenseNet on ``LocallyConnected2d`` (valid padding, per-position bias as in the notebook or
    ``shared_bias``). 7,256,446 parameters with the defaults on 3 x 32 x 32 images (the notebook's layout: 225.5 M)."""

    locally_connected = True

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (10, 20, 32, 64, 128, 256),
        kernel_sizes: Sequence[int] = (3, 3, 3, 3, 2, 2),
        pool: Sequence[bool] = (True, True, False),
        hidden: Sequence[int] = (512,),
        dropout: float = 0.1,
        dropout2d: float = 0.05,
        shared_bias: bool = False,
        lr: float = 3e-4,
    ):
        super().__init__(in_shape, num_classes, channels, kernel_sizes, 0, pool, hidden, dropout, dropout2d, lr,
                         shared_bias)


class RegularConvNet(_NotebookPlanClassifier):
    """The notebook's weight-shared baseline: the same plan with 3x3 'same' convolutions and wider layers."""

    locally_connected = False

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128, 128, 256, 256),
        kernel_sizes: Sequence[int] = (3, 3, 3, 3, 3, 3),
        pool: Sequence[bool] = (True, True, True),
        hidden: Sequence[int] = (1024, 512),
        dropout: float = 0.1,
        dropout2d: float = 0.05,
        lr: float = 3e-4,
    ):
        super().__init__(in_shape, num_classes, channels, kernel_sizes, 1, pool, hidden, dropout, dropout2d, lr)
