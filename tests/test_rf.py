"""bioviz.rf: gradient receptive fields, orientedness (bar bank), isotropy; rf_panels; ReceptiveFieldLogger."""

import pytest
import torch
from matplotlib.figure import Figure
from test_callbacks import TinyResponseModel, fit
from torch import nn

from bioviz import rf, stimuli
from bioviz.callbacks import ReceptiveFieldLogger
from bioviz.plot import rf_panels
from bioviz.tuning import orientation_difference


def linear_model(in_channels=1, out_channels=4, k=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, k, padding=k // 2))


@pytest.mark.parametrize("starts", [0, 3])
def test_the_gradient_rf_of_a_linear_model_is_its_kernel(starts):
    model = linear_model()
    result = rf.gradient_rf(model, "0", (16, 16), starts=starts, normalize=False)
    assert result.rf.shape == (4, 1, 16, 16) and result.position == (8, 8)
    kernel = model[0].weight.detach()
    assert torch.allclose(rf.center_crop(result.rf, 5), kernel, atol=1e-6)
    outside = result.rf.clone()
    outside[..., 6:11, 6:11] = 0
    assert outside.abs().max() == 0  # nothing outside the 5 x 5 window
    if starts:
        assert result.complexity.abs().max() < 1e-5  # a linear unit has the same gradient everywhere
    else:
        assert result.complexity is None
    normalised = rf.gradient_rf(model, "0", (16, 16), starts=starts).rf
    assert torch.allclose(normalised.flatten(1).pow(2).mean(1), torch.ones(4))
    assert torch.allclose(normalised, result.rf / result.rf.flatten(1).pow(2).mean(1).sqrt().view(4, 1, 1, 1))


def test_colour_kernels_channels_and_positions():
    model = linear_model(in_channels=3, out_channels=6, k=3)
    result = rf.gradient_rf(model, "0", (3, 10, 12), channels=[5, 1], position=(2, 3), normalize=False)
    assert result.channels == [5, 1] and result.rf.shape == (2, 3, 10, 12)
    assert torch.allclose(result.rf[:, :, 1:4, 2:5], model[0].weight.detach()[[5, 1]])
    assert torch.allclose(rf.center_crop(result.rf, 3, position=(2, 3)), model[0].weight.detach()[[5, 1]])


def test_a_relu_network_has_the_rf_extent_of_its_stacked_kernels_and_a_complexity():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 3, 5, padding=2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 20 * 20, 2))
    with torch.no_grad():
        model[0].bias.fill_(0.1)  # units active at the zero image
    model.train()
    result = rf.gradient_rf(model, "2", (20, 20), starts=8, noise=1.0)
    assert rf.support_size(result.rf) == rf.rf_size([5, 5]) == 9
    assert result.complexity.shape == (3,) and (result.complexity > 0).all()  # ReLU gates change with the start
    assert model.training  # the mode is restored
    assert all(p.grad is None for p in model.parameters())  # and training gradients are not touched


def test_gradient_rf_errors_name_the_problem():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))
    with pytest.raises(KeyError, match="no layer named .conv."):
        rf.gradient_rf(model, "conv", (8, 8))
    with pytest.raises(ValueError, match="out of range"):
        rf.gradient_rf(model, "0", (8, 8), channels=[2])
    with pytest.raises(ValueError, match="conv layer"):
        rf.gradient_rf(model, "2", (8, 8))
    with pytest.raises(ValueError, match="outside"):
        rf.gradient_rf(model, "0", (8, 8), position=(8, 0))
    with pytest.raises(ValueError, match="does not fit"):
        rf.center_crop(torch.zeros(2, 8, 8), 9)


def test_orientedness_separates_gabors_from_center_surround_and_random_rfs():
    size = 17
    bank = rf.bar_bank(size, orientations=20, phases=12, widths=[2, 4, 6])
    orientations = torch.tensor([0.0, 27.0, 63.0, 99.0, 144.0])
    gabors = stimuli.gabor((size, size), orientation=orientations, frequency=0.12, sigma=3.0)
    dogs = torch.stack([stimuli.center_surround((size, size), s, 2.5 * s) for s in (1.0, 1.5, 2.0)])
    noise = rf.random_rfs(100, size)
    oriented = rf.orientedness(gabors, bank=bank, widths=[2, 4, 6])
    assert (oriented.index > 5).all()
    assert (orientation_difference(oriented.preferred, orientations) <= 4.5).all()  # 9-degree steps
    assert (rf.orientedness(dogs, bank=bank).index < 1.05).all()  # isotropic: no preferred orientation
    baseline = rf.orientedness(noise, bank=bank).index
    assert 1.0 < float(baseline.median()) < float(oriented.index.min())
    assert oriented.tuning.shape == (5, 20) and oriented.width.shape == (5,)
    with pytest.raises(ValueError, match="even"):
        rf.orientedness(gabors, orientations=5)
    with pytest.raises(ValueError, match="square"):
        rf.orientedness(torch.zeros(2, 5, 7))


def test_isotropy_is_one_for_center_surround_and_low_for_gabors():
    dog = stimuli.center_surround((17, 17), 1.5, 3.5)
    gabor = stimuli.gabor((17, 17), orientation=[0.0, 45.0], frequency=0.15, sigma=3.0)
    assert float(rf.isotropy(dog)) > 0.95
    assert (rf.isotropy(gabor) < 0.3).all()
    assert rf.isotropy(gabor[:, None]).shape == (2,)  # [N, 1, H, W] is accepted too



def test_center_surround_recovers_the_surround_of_differences_of_gaussians_and_rejects_blobs_gabors_and_noise():
    strengths = torch.tensor([1.0, 0.5, 0.1])
    on = stimuli.center_surround((17, 17), 1.5, 3.5, surround_strength=strengths)
    dogs = torch.cat([on, -on])  # ON and OFF centres
    fit = rf.center_surround(dogs)
    assert (fit.index > 0.95).all() and (fit.explained > 0.99).all()
    assert torch.allclose(fit.surround_strength, strengths.repeat(2), rtol=0.05)  # Gaussians sum to 1: volumes
    blob = rf.center_surround(stimuli.gaussian((17, 17), 2.0))
    assert float(blob.index) == 0.0 and float(blob.surround_strength) == 0.0 and float(blob.explained) > 0.999
    gabor = rf.center_surround(stimuli.gabor((17, 17), orientation=[0.0, 45.0], frequency=0.15, sigma=3.0))
    assert (gabor.index < 0.2).all() and (gabor.explained < 0.5).all()
    noise = rf.center_surround(rf.random_rfs(200, 17))
    assert float(noise.index.quantile(0.95)) < 0.05 and float(noise.explained.median()) < 0.05
    noisy = rf.center_surround(on[0] + 0.002 * rf.random_rfs(1, 17)[0])  # RMS of the DoG is ~0.004
    assert float(noisy.index) > 10 * float(noise.index.median())
    assert abs(float(noisy.surround_strength) - 1.0) < 0.1
    with pytest.raises(ValueError, match="RFs must be"):
        rf.center_surround(torch.zeros(2, 2, 2, 5, 5))

def test_bar_bank_bars_are_zero_mean_unit_norm_and_oriented():
    bank = rf.bar_bank(9, orientations=4, widths=[2.0], phases=3)
    assert bank.shape == (4, 1, 3, 9, 9)
    flat = bank.flatten(3)
    assert torch.allclose(flat.mean(-1), torch.zeros(4, 1, 3), atol=1e-6)
    assert torch.allclose(flat.norm(dim=-1), torch.ones(4, 1, 3), atol=1e-5)
    vertical = bank[0, 0, 1]  # 0 degrees, centred: a vertical bar, constant down each column
    assert torch.allclose(vertical, vertical[:1].expand(9, 9))


def test_rf_panels_one_block_per_layer():
    gabors = stimuli.gabor((9, 9), orientation=[0.0, 45.0, 90.0], frequency=0.2)
    fig = rf_panels({"bottleneck": gabors[:2], "vvs1": gabors[:, None]}, ncols=2,
                    labels={"vvs1": ["a", "b", "c"]})
    assert isinstance(fig, Figure)
    images = [ax for ax in fig.get_axes() if ax.images]
    assert len(images) == 5
    assert [ax.get_title() for ax in images[2:]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="at least one"):
        rf_panels({})


def test_receptive_field_logger_writes_rf_grids_and_indices(tmp_path):
    model = TinyResponseModel()
    model.rf_layers = {"conv": "core.0"}
    events = fit(model, [ReceptiveFieldLogger(starts=1)], tmp_path)
    assert [e.step for e in events.Images("rf/conv")] == [2, 4]  # every epoch
    image = events.Images("rf/conv")[-1]
    assert (image.height, image.width) == (2 * 6 - 1, 2 * 6 - 1)  # 4 channels, RFs cropped to their 5 x 5 extent
    assert {"rf/conv/orientedness_median", "rf/conv/isotropy_median"} <= set(events.Tags()["scalars"])


def test_receptive_field_logger_needs_layers_it_can_find(tmp_path):
    with pytest.raises(ValueError, match="rf_layers"):
        fit(TinyResponseModel(), [ReceptiveFieldLogger()], tmp_path)
    with pytest.raises(KeyError, match="core.0"):
        fit(TinyResponseModel(), [ReceptiveFieldLogger(layers=["core.O"])], tmp_path)
