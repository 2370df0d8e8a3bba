"""Convolutional cores: image [B, C, H, W] -> feature maps shared by all neurons' readouts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.errors import ShapeMismatchError
from zoo.layers.regularizers import group_sparsity, laplace_smoothness

__all__ = ["ACTIVATIONS", "ConvLayerStack", "StackedConv2dCore", "check_in_shape", "output_shape", "per_layer"]

ACTIVATIONS = {"soft": nn.Softplus, "relu": nn.ReLU, "elu": nn.ELU, "none": nn.Identity}


def per_layer(value, n_layers: int, name: str) -> list:
    """A per-layer setting given once for all layers or as a list of one value per layer."""
    if isinstance(value, (str, int, float)):
        return [value] * n_layers
    value = list(value)
    if len(value) != n_layers:
        raise ValueError(f"{name} has {len(value)} entries for {n_layers} layers: {value}")
    return value


class ConvLayerStack(nn.Module):
    """What the stacked cores share: ``self.layers`` of ``Sequential(conv, norm, activation)``, the per-layer
    settings of Ecker et al.'s cores checked in one place, and the filter penalties (Laplacian smoothness and group
    sparsity of each layer's ``weight``, weighted by ``conv_smooth_weight * rel_smooth_weight[l]`` and
    ``conv_sparse_weight * rel_sparse_weight[l]``)."""

    def _layer_settings(self, num_filters, filter_size, stride, padding, activation_fn, rel_smooth_weight,
                        rel_sparse_weight, conv_smooth_weight, conv_sparse_weight):
        """``filter_size, stride, padding, activation_fn`` as one checked value per layer; sets the penalty weights."""
        n = len(num_filters)
        filter_size = per_layer(filter_size, n, "filter_size")
        stride = per_layer(stride, n, "stride")
        padding = [p.lower() for p in per_layer(padding, n, "padding")]
        activation_fn = per_layer(activation_fn, n, "activation_fn")
        self.smooth_weights = [conv_smooth_weight * w for w in per_layer(rel_smooth_weight, n, "rel_smooth_weight")]
        self.sparse_weights = [conv_sparse_weight * w for w in per_layer(rel_sparse_weight, n, "rel_sparse_weight")]
        for act in activation_fn:
            if act not in ACTIVATIONS:
                raise ValueError(f"unknown activation_fn {act!r}; choose one of {sorted(ACTIVATIONS)}")
        for pad, s in zip(padding, stride, strict=True):
            if pad not in ("same", "valid"):
                raise ValueError(f"padding must be 'same' or 'valid', got {pad!r}")
            if pad == "same" and s != 1:
                raise ValueError("padding 'same' needs stride 1; use padding 'valid' with strides")
        return filter_size, stride, padding, activation_fn

    @property
    def convs(self) -> list[nn.Module]:
        return [layer[0] for layer in self.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def penalty(self) -> torch.Tensor:
        total = next(self.parameters()).new_zeros(())
        for conv, smooth, sparse in zip(self.convs, self.smooth_weights, self.sparse_weights, strict=True):
            if not (smooth or sparse):
                continue
            weight = conv.weight  # built once: a Hermite layer computes its filters on access
            if smooth:
                total = total + smooth * laplace_smoothness(weight)
            if sparse:
                total = total + sparse * group_sparsity(weight)
        return total


class StackedConv2dCore(ConvLayerStack):
    """The CNN core of Ecker et al. 2019: per layer conv (no bias) -> batch norm -> activation.

    Batch norm learns scale and shift, except in the last layer where only the shift is learned (its scale would be
    redundant with the readout's feature weights). Penalties (``penalty()``): Laplacian smoothness and group sparsity of
    each layer's filters, weighted by ``conv_smooth_weight * rel_smooth_weight[l]`` and
    ``conv_sparse_weight * rel_sparse_weight[l]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        filter_size: Sequence[int] = (13, 5, 5),
        num_filters: Sequence[int] = (32, 32, 32),
        stride: Sequence[int] | int = 1,
        padding: Sequence[str] | str = "same",
        activation_fn: Sequence[str] | str = ("soft", "soft", "none"),
        rel_smooth_weight: Sequence[float] = (1.0, 0.5, 0.5),
        rel_sparse_weight: Sequence[float] = (0.0, 1.0, 1.0),
        conv_smooth_weight: float = 0.0,
        conv_sparse_weight: float = 0.0,
    ):
        super().__init__()
        n = len(num_filters)
        filter_size, stride, padding, activation_fn = self._layer_settings(
            num_filters, filter_size, stride, padding, activation_fn, rel_smooth_weight, rel_sparse_weight,
            conv_smooth_weight, conv_sparse_weight)
        self.layers = nn.ModuleList()
        channels = in_channels
        for i, (k, c, s, pad, act) in enumerate(
            zip(filter_size, num_filters, stride, padding, activation_fn, strict=True)
        ):
            conv = nn.Conv2d(channels, c, k, stride=s, padding=pad, bias=False)
            nn.init.trunc_normal_(conv.weight, std=0.1, a=-0.2, b=0.2)
            norm = nn.BatchNorm2d(c)
            if i == n - 1:
                norm.weight.requires_grad_(False)  # shift only in the last layer
            self.layers.append(nn.Sequential(conv, norm, ACTIVATIONS[act]()))
            channels = c
        self.out_channels = channels


def check_in_shape(in_shape: Sequence[int], channels: int | None = None, square: bool = False,
                   min_size: int = 1, what: str = "the model") -> tuple[int, int, int]:
    """``in_shape`` as ``(channels, height, width)`` ints, or a ``ShapeMismatchError`` (a ``ValueError``) that says
    what ``what`` needs: a given number of ``channels``, a ``square`` image, sides of at least ``min_size``."""
    shape = tuple(int(s) for s in in_shape)
    needs = (f"[{channels if channels is not None else 'channels'}, "
             f"{'size, size' if square else 'height, width'}]")
    ok = (len(shape) == 3 and (channels is None or shape[0] == channels) and (not square or shape[1] == shape[2])
          and min(shape[1:]) >= min_size)
    if not ok:
        bound = f" with sides of at least {min_size}" if min_size > 1 else ""
        raise ShapeMismatchError(f"{what} needs in_shape {needs}{bound}; got {list(shape)}. Use data of that shape "
                                 f"(the CLI links in_shape from the data module).")
    return shape


def output_shape(core: nn.Module, in_shape: Sequence[int]) -> tuple[int, int, int]:
    """[C, H, W] of ``core``'s output for one input of ``in_shape``, or a clear error if the image is too small."""
    was_training = core.training
    core.eval()
    try:
        with torch.no_grad():
            out = core(torch.zeros(1, *in_shape))
    except RuntimeError as err:
        raise ValueError(f"images of shape {list(in_shape)} are too small for this core ({err}); "
                         "use larger images, smaller filters or 'same' padding") from err
    finally:
        core.train(was_training)
    if out.shape[2] < 1 or out.shape[3] < 1:
        raise ValueError(f"images of shape {list(in_shape)} leave no output pixels in this core")
    return tuple(out.shape[1:])
