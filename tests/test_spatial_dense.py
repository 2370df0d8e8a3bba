"""SpatialDenseNet and RegularConvNet (the "Convolution without weight transport" notebook) as LightningModules."""

import pytest
import torch

from zoo.errors import ShapeMismatchError
from zoo.layers import LocallyConnected2d
from zoo.models import RegularConvNet, SpatialDenseNet


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_spatial_dense_net_has_the_seed_layers_and_7_26_million_parameters():
    model = SpatialDenseNet(in_shape=[3, 32, 32], num_classes=10)
    assert n_params(model) == 7_256_446  # the seed's dense layout holds 225,543,622 (tests/test_local.py)
    local = [m for m in model.modules() if isinstance(m, LocallyConnected2d)]
    assert [(m.in_channels, m.out_channels, m.input_size, m.kernel_size) for m in local] == [
        (3, 10, (32, 32), (3, 3)), (10, 20, (30, 30), (3, 3)), (20, 32, (14, 14), (3, 3)),
        (32, 64, (12, 12), (3, 3)), (64, 128, (5, 5), (2, 2)), (128, 256, (4, 4), (2, 2))]
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())  # no weight is shared anywhere
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_regular_conv_net_is_the_seed_baseline():
    model = RegularConvNet(in_shape=[3, 32, 32], num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.padding) for c in convs] == [
        (3, 32, (1, 1)), (32, 64, (1, 1)), (64, 128, (1, 1)), (128, 128, (1, 1)), (128, 256, (1, 1)),
        (256, 256, (1, 1))]
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [(4096, 1024), (1024, 512), (512, 10)]
    assert n_params(model) == 5_852_170
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_other_image_sizes_and_grayscale_build_their_own_layers():
    model = SpatialDenseNet(in_shape=[1, 36, 40], num_classes=4)
    assert model(torch.randn(3, 1, 36, 40)).shape == (3, 4)
    with pytest.raises(ValueError, match="too small"):
        SpatialDenseNet(in_shape=[3, 8, 8], num_classes=10)


@pytest.mark.parametrize("model_class", [SpatialDenseNet, RegularConvNet])
def test_wrong_input_size_names_the_expected_shape(model_class):
    model = model_class(in_shape=[3, 32, 32], num_classes=10)
    labels = torch.zeros(2, dtype=torch.long)
    for wrong in (torch.zeros(2, 3, 28, 28), torch.zeros(2, 1, 32, 32)):
        with pytest.raises(ShapeMismatchError, match=r"images of shape \[B, 3, 32, 32\]"):
            model.training_step((wrong, labels), 0)


def test_a_training_step_lowers_the_loss_and_keeps_locality():
    torch.manual_seed(0)
    model = SpatialDenseNet(in_shape=[3, 32, 32], num_classes=10, dropout=0.0, dropout2d=0.0)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    optimiser = model.configure_optimizers()
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert {name: p.shape for name, p in model.named_parameters()} == shapes  # nothing outside receptive fields
