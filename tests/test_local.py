import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import LocallyConnected2d

# The original notebook's SpatialDenseNet: (in_c, in_h, in_w, out_c, kernel) of its six SpatialFeatureLayers, all
# valid padding, stride 1; then Linear(2304, 512) and Linear(512, 10), and BatchNorm2d after layers 1, 3 and 5.
SEED_LAYERS = [(3, 32, 32, 10, 3), (10, 30, 30, 20, 3), (20, 14, 14, 32, 3), (32, 12, 12, 64, 3),
               (64, 5, 5, 128, 2), (128, 4, 4, 256, 2)]
SEED_LINEAR = [(2304, 512), (512, 10)]
SEED_BATCHNORM = [10, 32, 128]


@pytest.mark.parametrize(
    "in_c, out_c, size, kernel, stride, padding",
    [
        (3, 5, (9, 9), 3, 1, 0),
        (3, 5, (9, 11), 3, 2, 1),
        (2, 4, (10, 7), (3, 2), (1, 2), (2, 0)),
        (4, 3, (8, 8), 5, 3, 2),
        (1, 2, (6, 6), 1, 1, 0),
        (2, 3, (8, 7), 7, 1, 0),
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_from_conv_equals_conv2d(in_c, out_c, size, kernel, stride, padding, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, bias=bias).double()
    layer = LocallyConnected2d.from_conv(conv, size)
    x = torch.randn(3, in_c, *size, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding)
    got = layer(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-10
    # The copies are independent: changing one position's filter changes that output position only.
    with torch.no_grad():
        layer.weight[0].add_(1.0)
    diff = (layer(x) - expected).abs().amax(dim=(0, 1)).flatten()
    assert diff[0] > 1e-3 and diff[1:].max() < 1e-10


def test_from_conv_rejects_unsupported_convs():
    for conv in [nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(2, 2, 3, dilation=2), nn.Conv2d(2, 2, 3, padding="same"),
                 nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")]:
        with pytest.raises(ValueError, match="from_conv supports"):
            LocallyConnected2d.from_conv(conv, 8)
    with pytest.raises(TypeError):
        LocallyConnected2d.from_conv(nn.Linear(3, 3), 8)


def test_weights_exist_only_inside_receptive_fields():
    layer = LocallyConnected2d(3, 4, (7, 6), 3, stride=2, padding=1).double()
    out_h, out_w = layer.output_size
    assert (out_h, out_w) == (4, 3)
    # The parameter holds exactly one (C*kh*kw, O) filter per output position: nothing outside a receptive field.
    assert layer.weight.shape == (out_h * out_w, 3 * 3 * 3, 4)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    for i, j in [(0, 0), (2, 1), (3, 2)]:
        layer.zero_grad()
        x.grad = None
        layer(x)[:, :, i, j].sum().backward()
        pos = i * out_w + j
        touched = layer.weight.grad.abs().sum(dim=(1, 2)) > 0
        assert touched.nonzero().flatten().tolist() == [pos]
        # ...and the input gradient is confined to that position's (padded) receptive field.
        rows = range(max(0, 2 * i - 1), min(7, 2 * i - 1 + 3))
        cols = range(max(0, 2 * j - 1), min(6, 2 * j - 1 + 3))
        mask = torch.zeros(7, 6, dtype=torch.bool)
        mask[rows.start:rows.stop, cols.start:cols.stop] = True
        g = x.grad.abs().sum(dim=(0, 1))
        assert (g[~mask] == 0).all() and (g[mask] > 0).all()


def test_locality_survives_training():
    # A few optimiser steps cannot create weights outside the receptive fields: shapes and count are unchanged.
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, 6, 3)
    n_before = sum(p.numel() for p in layer.parameters())
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(4, 2, 6, 6)).pow(2).mean().backward()
        opt.step()
    assert layer.weight.shape == (16, 18, 3)
    assert sum(p.numel() for p in layer.parameters()) == n_before


def test_seed_spatial_dense_net_parameter_counts():
    local_layers, dense, conv_weights = [], 0, 0
    for in_c, h, w, out_c, k in SEED_LAYERS:
        layer = LocallyConnected2d(in_c, out_c, (h, w), k)
        local_layers.append(layer)
        oh, ow = layer.output_size
        dense += in_c * h * w * out_c * oh * ow + out_c * oh * ow  # the seed's 6-D weight + per-position bias
        conv_weights += out_c * in_c * k * k
    # The layer stack ends at 256 x 3 x 3 = 2304 features, the seed's first Linear's input.
    assert local_layers[-1].out_channels * math.prod(local_layers[-1].output_size) == SEED_LINEAR[0][0]
    local_stack = sum(p.numel() for layer in local_layers for p in layer.parameters())
    assert local_stack == 6_070_816  # 6,030,776 local weights + 40,040 per-position biases
    # The notebook's published counts are of the whole SpatialDenseNet: the six spatial layers (weights +
    # per-position biases), the two Linear layers (1,185,290) and the three BatchNorm2d layers' affine parameters (340).
    rest = sum(i * o + o for i, o in SEED_LINEAR) + sum(2 * c for c in SEED_BATCHNORM)
    assert rest == 1_185_630
    assert local_stack + rest == 7_256_446  # "7.26 M"
    assert dense + rest == 225_543_622  # "225.5 M": the seed's dense 6-D layout
    assert round((dense + rest) / (local_stack + rest)) == 31  # 37x for the spatial layers alone
    assert round(dense / local_stack) == 37
    assert conv_weights == 190_102  # "0.19 M conv weights" for a weight-shared version


def test_wrong_input_size_raises_naming_expected_shape():
    layer = LocallyConnected2d(3, 4, (8, 10), 3)
    for bad in [torch.zeros(2, 3, 8, 9), torch.zeros(2, 2, 8, 10), torch.zeros(3, 8, 10)]:
        with pytest.raises(ValueError, match=r"expected input \[B, 3, 8, 10\]"):
            layer(bad)
    assert layer(torch.zeros(2, 3, 8, 10)).shape == (2, 4, 6, 8)
    with pytest.raises(ValueError, match="does not fit"):
        LocallyConnected2d(3, 4, 2, 3)


def test_bias_shapes_and_values():
    per_pos = LocallyConnected2d(3, 4, 6, 3)
    shared = LocallyConnected2d(3, 4, 6, 3, shared_bias=True)
    none = LocallyConnected2d(3, 4, 6, 3, bias=False)
    assert per_pos.bias.shape == (4, 4, 4)
    assert shared.bias.shape == (4,)
    assert none.bias is None
    x = torch.zeros(2, 3, 6, 6)
    assert torch.equal(per_pos(x), per_pos.bias.expand(2, 4, 4, 4))
    assert torch.equal(shared(x), shared.bias[:, None, None].expand(2, 4, 4, 4))
    assert torch.equal(none(x), torch.zeros(2, 4, 4, 4))
    assert "shared_bias=True" in repr(shared) and "output_size=(4, 4)" in repr(shared)


def test_init_bound_is_conv2d_default_fan_in_over_receptive_field():
    torch.manual_seed(0)
    layer = LocallyConnected2d(64, 32, 12, 3)
    bound = 1 / math.sqrt(64 * 9)  # nn.Conv2d's default bound; the seed's was sqrt(6 / 9), ~20x larger here
    w = layer.weight
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert layer.bias.abs().max().item() <= bound
    # Same bound as nn.Conv2d of that shape.
    conv = nn.Conv2d(64, 32, 3)
    assert conv.weight.abs().max().item() <= bound
    assert conv.weight.abs().max().item() > 0.99 * bound


@pytest.mark.parametrize("stride, padding, shared_bias", [(1, 0, False), (2, 1, True), ((1, 2), (0, 2), False)])
def test_gradcheck(stride, padding, shared_bias):
    # The forward goes through a custom autograd identity (contiguous output gradient): check the gradients numerically.
    torch.manual_seed(0)
    layer = LocallyConnected2d(2, 3, (5, 6), (3, 2), stride=stride, padding=padding, shared_bias=shared_bias).double()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,)),
                                    (x, layer.weight, layer.bias))
