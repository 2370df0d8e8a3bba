import math

import pytest
import torch
import torch.nn.functional as F

from zoo.layers import (
    READOUTS,
    GaussianReadout,
    SpatialL1FeatureL2Readout,
    SpatialXFeatureReadout,
    SpatialXFeatureTransferReadout,
    StackedConv2dCore,
    build_readout,
    group_sparsity,
    inverse_softplus,
    laplace_smoothness,
    output_shape,
)


def test_laplace_smoothness_hand_computed():
    # One 1-input 3x3 filter with a single 1 in the centre: the zero-padded Laplacian response is the kernel itself.
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 1, 1] = 1.0
    expected = 4 * 0.25**2 + 4 * 0.5**2 + 3.0**2  # ||L||^2 / ||w||^2 with ||w|| = 1
    assert laplace_smoothness(w).item() == pytest.approx(expected)
    # A constant filter only pays at its borders; scaling the filter changes nothing.
    c = torch.ones(2, 1, 5, 5)
    assert laplace_smoothness(3 * c).item() == pytest.approx(laplace_smoothness(c).item())


def test_group_sparsity_hand_computed():
    w = torch.zeros(2, 3, 2, 2)
    w[0, 0] = 1.0  # output 0 reads one input: 2 / 2 = 1
    w[1] = 1.0  # output 1 reads three inputs equally: 3 * 2 / sqrt(12) = sqrt(3)
    assert group_sparsity(w).item() == pytest.approx(1 + math.sqrt(3))


def test_readout_matches_explicit_formula_and_penalty():
    torch.manual_seed(0)
    readout = SpatialXFeatureReadout([3, 4, 5], n_neurons=6)
    with torch.no_grad():
        readout.mask.normal_()
        readout.features.normal_()
        readout.bias.normal_()
    x = torch.randn(2, 3, 4, 5)
    expected = F.softplus(torch.einsum("bchw,nhw,nc->bn", x, readout.mask.abs(), readout.features) + readout.bias)
    torch.testing.assert_close(readout(x), expected)
    penalty = (readout.mask.abs().sum((1, 2)) * readout.features.abs().sum(1)).sum()
    torch.testing.assert_close(readout.penalty(), penalty)


def test_readout_positive_features_and_bias_init():
    readout = SpatialXFeatureReadout([2, 3, 3], 2, positive_feature_weights=True)
    assert (readout.feature_weights() >= 0).all() and torch.all(readout.bias == 0)
    readout.initialize_bias(torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(F.softplus(2 * readout.bias.detach()), torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="3 values for 2 neurons"):
        readout.initialize_bias(torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(F.softplus(inverse_softplus(torch.tensor([1e-3, 1.0, 50.0]))),
                               torch.tensor([1e-3, 1.0, 50.0]))


def test_core_shapes_penalty_and_last_layer_has_no_scale():
    core = StackedConv2dCore(1, [5, 3], [4, 6], activation_fn=["soft", "none"], rel_smooth_weight=[1, 0.5],
                             rel_sparse_weight=[0, 1], conv_smooth_weight=0.1, conv_sparse_weight=0.2)
    assert output_shape(core, [1, 10, 12]) == (6, 10, 12)
    expected = (0.1 * laplace_smoothness(core.convs[0].weight) + 0.05 * laplace_smoothness(core.convs[1].weight)
                + 0.2 * group_sparsity(core.convs[1].weight))
    torch.testing.assert_close(core.penalty(), expected)
    last_norm = core.layers[-1][1]
    assert not last_norm.weight.requires_grad and last_norm.bias.requires_grad


def test_core_rejects_bad_settings_and_small_images():
    with pytest.raises(ValueError, match="filter_size has 2 entries for 3 layers"):
        StackedConv2dCore(1, [5, 3], [4, 4, 4])
    with pytest.raises(ValueError, match="unknown activation_fn 'tanhh'"):
        StackedConv2dCore(1, [5], [4], activation_fn=["tanhh"], rel_smooth_weight=[1], rel_sparse_weight=[0])
    core = StackedConv2dCore(1, [7], [2], padding="valid", activation_fn="none", rel_smooth_weight=1,
                             rel_sparse_weight=0)
    with pytest.raises(ValueError, match=r"images of shape \[1, 5, 5\] are too small"):
        output_shape(core, [1, 5, 5])


def test_build_readout_gives_each_readout_the_options_its_table_row_names():
    options = dict(readout_sparsity=2.0, mask_sparsity=5.0, feature_l2=6.0, k_transfer=3)
    joint = build_readout("joint_l1", (4, 5, 5), 6, **options)
    assert type(joint) is SpatialXFeatureReadout and joint.sparsity == 2.0
    separate = build_readout("l1_mask_l2_features", (4, 5, 5), 6, **options)
    assert type(separate) is SpatialL1FeatureL2Readout and (separate.mask_sparsity, separate.feature_l2) == (5.0, 6.0)
    transfer = build_readout("transfer", (4, 5, 5), 6, **options)
    assert type(transfer) is SpatialXFeatureTransferReadout and (transfer.sparsity, transfer.k_transfer) == (2.0, 3)
    gaussian = build_readout("gaussian", (4, 5, 5), 6, **options)
    assert type(gaussian) is GaussianReadout and gaussian.feature_l1 == 2.0
    assert set(READOUTS) == {"joint_l1", "l1_mask_l2_features", "transfer", "gaussian"}
    with pytest.raises(ValueError, match="unknown readout 'pointwise'; choose one of"):
        build_readout("pointwise", (4, 5, 5), 6)
    with pytest.raises(TypeError, match="unknown readout options \\['sparsity'\\]"):
        build_readout("joint_l1", (4, 5, 5), 6, sparsity=1.0)



def test_gaussian_readout_learns_where_each_neuron_looks():
    torch.manual_seed(0)
    readout = GaussianReadout((2, 9, 9), 2, init_sigma=0.3)
    # Neuron 0 responds to channel 0 at row 6, column 2; neuron 1 to channel 1 at row 1, column 7.
    where = torch.tensor([[2 / 4 - 1, 6 / 4 - 1], [7 / 4 - 1, 1 / 4 - 1]])  # (x, y) in [-1, 1], align_corners
    optimizer = torch.optim.Adam(readout.parameters(), lr=0.05)
    for _ in range(300):
        x = F.avg_pool2d(torch.randn(64, 2, 11, 11), 3, 1)  # smooth maps, so the gradient leads to the spot
        target = F.softplus(torch.stack([2 * x[:, 0, 6, 2], 2 * x[:, 1, 1, 7]], 1))
        loss = (readout(x) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (readout.mu.detach() - where).abs().max() < 0.15  # within about half a pixel
    readout.eval()
    x = torch.randn(3, 2, 9, 9)
    torch.testing.assert_close(readout(x), readout(x))  # evaluation reads the means: no sampling
    readout.initialize_bias(torch.tensor([0.5, 2.0]))
    readout.features.data.zero_()
    torch.testing.assert_close(readout(x), torch.tensor([[0.5, 2.0]] * 3))
    assert readout.penalty() == 0
