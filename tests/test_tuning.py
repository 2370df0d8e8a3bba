import math

import pytest
import torch
from torch import nn

from bioviz.stimuli import center_surround, gabor
from bioviz.tuning import (
    orientation_difference,
    orientation_map,
    orientation_tuning,
    pinwheel_density,
    tuning_statistics,
)


def conv_with(filters: torch.Tensor) -> nn.Conv2d:
    """A 1-input-channel convolution whose filters are ``filters`` [C, K, K]: the simplest "model"."""
    conv = nn.Conv2d(1, filters.shape[0], filters.shape[-1], bias=False)
    with torch.no_grad():
        conv.weight.copy_(filters.unsqueeze(1))
    return conv


@pytest.mark.parametrize("orientation", [0.0, 22.5, 37.0, 101.3, 166.0])
def test_gabor_filter_orientation_is_recovered(orientation):
    conv = conv_with(gabor((15, 15), orientation, 0.1, 30.0, 3.0).unsqueeze(0))
    tuning = orientation_tuning(conv, (31, 31), unit="center", orientations=16, phases=8)
    assert tuning.unit_shape == (1,)
    assert float(orientation_difference(tuning.preferred, orientation)[0]) < 3.0
    assert float(tuning.osi[0]) > 0.8 and float(tuning.circular_variance[0]) < 0.6


def test_center_surround_filter_is_untuned():
    conv = conv_with(torch.stack([center_surround((15, 15), 1.5, 4.0), gabor((15, 15), 45, 0.1, 0, 3.0)]))
    tuning = orientation_tuning(conv, (31, 31), unit="center", frequency=[0.05, 0.1, 0.2])
    assert tuning.unit_shape == (2,)
    assert float(tuning.osi[0]) < 0.05 and float(tuning.circular_variance[0]) > 0.95
    assert float(tuning.osi[1]) > 0.8  # the Gabor beside it is tuned
    assert tuning.responses.shape == (2, 16) and tuning.frequency[1] == pytest.approx(0.1)


def test_tuning_statistics_of_known_curves():
    theta = torch.arange(8) * 22.5
    von_mises = torch.exp(2 * torch.cos(torch.deg2rad(2 * (theta - 45))))
    stats = tuning_statistics(torch.stack([von_mises, torch.ones(8), torch.zeros(8)]), theta)
    assert stats["preferred"][0] == pytest.approx(45.0, abs=1e-4)
    r_orth, r_pref = math.exp(-2), math.exp(2)
    assert stats["osi"][0] == pytest.approx((r_pref - r_orth) / (r_pref + r_orth), abs=1e-5)
    assert stats["circular_variance"].tolist()[1:] == [pytest.approx(1.0), 1.0]
    with pytest.raises(ValueError, match="evenly spaced"):
        tuning_statistics(torch.ones(3), torch.tensor([0.0, 10.0, 20.0]))


class GaborPopulation(nn.Module):
    """A response model: each neuron rectifies one Gabor filter at its own position and orientation."""

    def __init__(self, orientations, centers, shape=(24, 24)):
        super().__init__()
        filters = gabor(shape, orientations, 0.12, 0.0, 2.5, centers)
        self.weight = nn.Parameter(filters.flatten(1))

    def forward(self, images):
        return torch.relu(images.flatten(1) @ self.weight.t())


def test_in_silico_tuning_of_every_neuron_of_a_response_model():
    g = torch.Generator().manual_seed(0)
    true = torch.rand(12, generator=g) * 180
    model = GaborPopulation(true, (torch.rand(12, 2, generator=g) - 0.5) * 10)
    model.train()
    tuning = orientation_tuning(model, (24, 24), frequency=[0.08, 0.12, 0.16])
    assert tuning.unit_shape == (12,) and model.training  # training mode restored
    assert float(orientation_difference(tuning.preferred, true).max()) < 3.0


def test_orientation_map_of_a_sheet_recovers_the_planted_map():
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    planted = (rows * 20 + cols * 9) % 180
    centers = torch.stack([rows.flatten() - 2.5, cols.flatten() - 2.5], 1) * 3
    model = GaborPopulation(planted.flatten(), centers)
    result = orientation_map(model, shape=(24, 24), frequency=0.12, sheet_shape=(6, 6))
    assert result.preference.shape == (6, 6) and result.selectivity.shape == (6, 6)
    assert float(orientation_difference(result.preference, planted).max()) < 3.0
    assert float(result.selectivity.min()) > 0.3
    with pytest.raises(ValueError, match="sheet_shape"):
        orientation_map(torch.rand(2, 3, 4, 8), orientations=torch.arange(8) * 22.5)


def test_bad_inputs_name_the_fix():
    conv = conv_with(gabor((5, 5), 0, 0.1, 0, 2.0).unsqueeze(0))
    with pytest.raises(KeyError, match="no layer named 'conv1'"):
        orientation_tuning(conv, (16, 16), layer="conv1")
    with pytest.raises(ValueError, match=r"shape=\(H, W\)"):
        orientation_tuning(nn.Linear(64, 3), (16, 16))
    with pytest.raises(ValueError, match="unit='all'"):
        orientation_tuning(nn.Sequential(nn.Flatten(), nn.Linear(256, 3)), (16, 16), unit="center")


def square_lattice(n=64, spacing=16, offset=0.5):
    """exp(2i pref) ~ cos(2 pi x / L) + i cos(2 pi y / L): 4 pinwheels per L x L cell, at x, y = L/4 + k L/2."""
    y, x = torch.meshgrid(torch.arange(n) + offset, torch.arange(n) + offset, indexing="ij")
    z = torch.cos(2 * math.pi * x / spacing) + 1j * torch.cos(2 * math.pi * y / spacing)
    return torch.rad2deg(torch.angle(z)) / 2 % 180, z.abs()


def test_pinwheel_density_of_a_lattice_with_known_pinwheels():
    preference, selectivity = square_lattice()
    found = pinwheel_density(preference, selectivity, periodic=True)
    assert found.count == 64 and int(found.charges.sum()) == 0
    assert found.column_spacing == pytest.approx(16.0, rel=1e-6)
    assert found.density == pytest.approx(4.0, rel=1e-6)
    expected = {(r, c) for r in range(3, 64, 8) for c in range(3, 64, 8)}  # zeros at 3.5 + 8k -> plaquette 3 + 8k
    assert {(int(r), int(c)) for r, c in found.positions} == expected


def test_pinwheels_planted_at_known_points():
    rows, cols = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    planted = [(10.5, 10.5, 1), (10.5, 30.5, -1), (30.5, 10.5, -1), (30.5, 30.5, 1), (20.5, 20.5, 1)]
    angle = sum(s * torch.atan2(rows - r, cols - c) for r, c, s in planted)
    found = pinwheel_density(torch.rad2deg(angle) / 2 % 180)
    assert found.count == 5
    got = sorted(zip(found.positions[:, 0].tolist(), found.positions[:, 1].tolist(), found.charges.tolist(),
                     strict=True))
    assert got == sorted(planted)
    # The interior 11 pixels in from the edges holds only the central pinwheel, on 18 x 18 plaquettes.
    inner = pinwheel_density(torch.rad2deg(angle) / 2 % 180, margin=11)
    assert inner.count == 1 and inner.positions.tolist() == [[20.5, 20.5]] and inner.area == 18 * 18
    assert inner.density == pytest.approx(inner.column_spacing**2 / 324)
    with pytest.raises(ValueError, match="margin"):
        pinwheel_density(torch.rad2deg(angle) / 2 % 180, margin=20)
    with pytest.raises(ValueError, match="periodic"):
        pinwheel_density(torch.rad2deg(angle) / 2 % 180, periodic=True, margin=2)


def test_random_band_pass_map_has_pi_pinwheels_per_column_area():
    """Gaussian random orientation maps (Wolf & Geisel 1998) have a pinwheel density of pi, as measured in cortex."""
    n, spacing = 128, 16
    g = torch.Generator().manual_seed(0)
    noise = torch.complex(torch.randn(n, n, generator=g, dtype=torch.float64),
                          torch.randn(n, n, generator=g, dtype=torch.float64))
    k = torch.hypot(torch.fft.fftfreq(n, dtype=torch.float64)[:, None], torch.fft.fftfreq(n, dtype=torch.float64))
    z = torch.fft.ifft2(torch.fft.fft2(noise) * ((k * spacing - 1).abs() < 0.1))
    found = pinwheel_density(torch.rad2deg(torch.angle(z)) / 2 % 180, z.abs(), periodic=True)
    assert found.column_spacing == pytest.approx(spacing, rel=0.02)
    assert found.density == pytest.approx(math.pi, rel=0.1)
    assert abs(int(found.charges.sum())) == 0  # on a torus the charges cancel
    # Without selectivity (a unit-magnitude map, sharp at pinwheels) the spacing comes from the spectral peak alike.
    unit = pinwheel_density(torch.rad2deg(torch.angle(z)) / 2 % 180, periodic=True)
    assert unit.column_spacing == pytest.approx(spacing, rel=0.03) and unit.count == found.count
    with pytest.raises(ValueError, match="2-D map"):
        pinwheel_density(torch.zeros(10))


def test_in_silico_tuning_recovers_the_simulated_populations_orientations():
    """The simulated V1 population's own filters as a response model: every neuron's tuning matches the truth."""
    from zoo.data import simulate_v1

    truth = simulate_v1(seed=3, n_neurons=24, image_shape=(32, 32), n_train=20, n_val=2, n_test=2, n_repeats=2)
    filters = torch.as_tensor(truth["true_filters"])
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 24, bias=False), nn.ReLU())
    with torch.no_grad():
        model[1].weight.copy_(filters.flatten(1))
    freqs = sorted({round(float(f), 3) for f in truth["true_frequency"]})
    tuning = orientation_tuning(model, (32, 32), frequency=freqs)
    assert float(orientation_difference(tuning.preferred, truth["true_orientation"]).max()) < 3.0
