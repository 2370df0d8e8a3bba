import math

import pytest
import torch
from torch import nn

from bioviz.stimuli import center_surround, gabor
from bioviz.tuning import (
    _zero_crossings,  # the crossing solver itself, on a hand-made plaquette
    find_pinwheels,
    local_column_spacing,
    orientation_difference,
    orientation_map,
    orientation_tuning,
    pinwheel_density,
    random_orientation_map,
    spectral_column_spacing,
    stability_index,
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
    # The zeros of cos(2 pi (c + 0.5) / 16) lie at c = 3.5 + 8k, halfway between pixel centres: exactly there.
    expected = torch.tensor([(3.5 + 8 * r, 3.5 + 8 * c) for r in range(8) for c in range(8)], dtype=torch.float64)
    assert torch.allclose(found.positions, expected, atol=1e-9)
    # Kaschube's L2-normalised Morlet wavelets read a plane wave's wavelength about 1 % long; the spectrum is exact.
    assert found.column_spacing == pytest.approx(16.0, rel=0.015) and found.column_spacing > 16.0
    assert spectral_column_spacing(preference, selectivity, periodic=True) == pytest.approx(16.0, rel=1e-6)
    assert found.density == pytest.approx(64 * found.column_spacing**2 / 64**2, rel=1e-12)


def test_pinwheels_planted_at_known_points():
    rows, cols = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    planted = [(10.5, 10.5, 1), (10.5, 30.5, -1), (30.5, 10.5, -1), (30.5, 30.5, 1), (20.5, 20.5, 1)]
    angle = sum(s * torch.atan2(rows - r, cols - c) for r, c, s in planted)
    positions, charges = find_pinwheels(torch.rad2deg(angle) / 2 % 180)
    order = sorted(range(5), key=lambda k: (planted[k][0], planted[k][1]))
    assert charges.tolist() == [planted[k][2] for k in order]
    assert torch.allclose(positions, torch.tensor([planted[k][:2] for k in order], dtype=torch.float64),
                          atol=0.05)  # the neighbours bend the bilinear zero contours a little


def test_two_pinwheels_of_opposite_charge_in_one_plaquette_are_both_found():
    """Re z = xy - 0.1 and Im z = x + y - 0.9 on one plaquette cross twice, at x = 0.13 and 0.77 (roots of
    x^2 - 0.9 x + 0.1); a winding number around the plaquette would read 0."""
    z = torch.tensor([[-0.1 - 0.9j, -0.1 + 0.1j], [-0.1 + 0.1j, 0.9 + 1.1j]], dtype=torch.complex128)
    positions, charges = _zero_crossings(z, periodic=False)
    x = (0.9 + torch.tensor([1.0, -1.0], dtype=torch.float64) * math.sqrt(0.81 - 0.4)) / 2  # by row
    assert torch.allclose(positions, torch.stack([0.1 / x, x], 1), atol=1e-12)  # (row y = 0.1 / x, column x)
    assert sorted(charges.tolist()) == [-1, 1]


def test_silent_units_leave_the_map_undefined_around_them_not_a_pinwheel():
    """A unit that never responds has selectivity 0 (z = 0): its plaquettes hold neither pinwheels nor area."""
    truth = random_orientation_map((48, 48), 12, seed=0)
    selectivity = truth.selectivity.clone()
    silent = [(r, c) for r in range(5, 45, 8) for c in range(5, 45, 8)]  # 25 isolated units
    for r, c in silent:
        selectivity[r, c] = 0.0
    wavelengths = torch.linspace(8, 24, 12)
    whole = pinwheel_density(truth.preference, truth.selectivity, periodic=True, wavelengths=wavelengths)
    holed = pinwheel_density(truth.preference, selectivity, periodic=True, wavelengths=wavelengths)
    assert holed.area == whole.area - 4 * len(silent)
    assert holed.count <= whole.count  # each silent unit used to read as a pinwheel: 25 more, not fewer
    units = torch.tensor(silent, dtype=torch.float64)
    offsets = (holed.positions[:, None, :] - units[None]).abs().amax(2)  # [pinwheels, silent units]
    assert bool((offsets >= 1).all())  # none in the four plaquettes around a silent unit


def test_margin_counts_the_interior_only():
    preference, selectivity = square_lattice()
    wavelengths = torch.linspace(10, 24, 8)
    whole = pinwheel_density(preference, selectivity, wavelengths=wavelengths)  # not periodic: inside the centres
    inner = pinwheel_density(preference, selectivity, margin=8, wavelengths=wavelengths)
    assert whole.count == 64 and whole.area == 63 * 63
    # Zeros at 3.5 + 8k: those in [8, 55] are 11.5 ... 51.5, six per axis.
    assert inner.count == 36 and inner.area == 47 * 47
    assert inner.density == pytest.approx(36 * inner.column_spacing**2 / 47**2)
    with pytest.raises(ValueError, match="margin"):
        pinwheel_density(preference, selectivity, margin=40)
    with pytest.raises(ValueError, match="periodic"):
        pinwheel_density(preference, selectivity, periodic=True, margin=2)


def test_gaussian_random_maps_have_the_pinwheels_theory_predicts():
    """Gaussian random maps with a ring spectrum (Wolf & Geisel 1998; Schnabel et al. 2007) have <K^2> / 4 pi
    pinwheels per unit area (Berry & Dennis 2000), pi per squared column spacing for a thin ring."""
    counts, spacings, densities = [], [], []
    for seed in range(3):
        truth = random_orientation_map((128, 128), 12, bandwidth=0.08, seed=seed)
        found = pinwheel_density(truth.preference, truth.selectivity, periodic=True)
        assert int(found.charges.sum()) == 0  # on a torus the charges cancel
        counts.append(found.count / 128**2 / truth.pinwheels_per_area)
        spacings.append(found.column_spacing / truth.column_spacing)
        densities.append(found.density)
    assert sum(counts) / 3 == pytest.approx(1.0, abs=0.04)
    # The wavelet spacing reads ~2 % long on thin rings (as the lattice shows), so the density ~4 % high.
    assert sum(spacings) / 3 == pytest.approx(1.02, abs=0.02)
    assert truth.expected_density == pytest.approx(math.pi, rel=0.01)
    assert sum(densities) / 3 == pytest.approx(math.pi, rel=0.1)


def test_density_of_a_window_cut_from_a_random_map():
    """A model sheet has edges: windows of a random map, with no periodicity, give the torus's density."""
    truth = random_orientation_map((192, 192), 12, bandwidth=0.08, seed=5)
    densities = [pinwheel_density(truth.preference[r:r + 64, c:c + 64], truth.selectivity[r:r + 64, c:c + 64]).density
                 for r in (0, 128) for c in (0, 128)]
    assert sum(densities) / len(densities) == pytest.approx(math.pi, rel=0.15)
    assert pinwheel_density(truth.preference[:64, :64], truth.selectivity[:64, :64]).count > 0


def test_local_column_spacing_marks_pixels_outside_the_searched_wavelengths():
    preference, selectivity = square_lattice()
    spacing = local_column_spacing(preference, selectivity, periodic=True, wavelengths=torch.linspace(20, 40, 9))
    assert bool(spacing.isnan().all())  # the true 16 px lies below the range: the peak sits at its lower end
    spacing = local_column_spacing(preference, selectivity, periodic=True, wavelengths=torch.linspace(8, 32, 25))
    assert torch.allclose(spacing, torch.full_like(spacing, float(spacing.mean())), rtol=1e-6)  # a lattice is uniform
    with pytest.raises(ValueError, match="increasing"):
        local_column_spacing(preference, selectivity, wavelengths=[16, 8, 4, 2, 1])
    with pytest.raises(ValueError, match="wavelengths that bracket"):
        pinwheel_density(preference, selectivity, periodic=True, wavelengths=torch.linspace(20, 40, 9))
    with pytest.raises(ValueError, match="uniform"):
        pinwheel_density(torch.full((16, 16), 30.0))
    with pytest.raises(ValueError, match="2-D map"):
        pinwheel_density(torch.zeros(10))


def test_stability_index_of_identical_rotated_and_unrelated_maps():
    truth = random_orientation_map((64, 64), 12, seed=0)
    other = random_orientation_map((64, 64), 12, seed=1)
    assert stability_index(truth.preference, truth.preference) == 1.0
    assert stability_index(truth.preference, (truth.preference + 90) % 180) == pytest.approx(-1.0)
    assert stability_index(truth.preference, (truth.preference + 45) % 180) == pytest.approx(0.0, abs=1e-12)
    assert abs(stability_index(truth.preference, other.preference)) < 0.15


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
