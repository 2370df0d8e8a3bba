import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bioviz.stimuli import dead_leaves, filters, gabor, grating, gratings, natural_images, pink_noise


def test_gabor_orientation_convention_and_batching():
    horizontal = gabor((21, 21), orientation=0, frequency=0.1, sigma=4)
    vertical = gabor((21, 21), orientation=90, frequency=0.1, sigma=4)
    assert horizontal.shape == (21, 21)
    # 0 degrees: stripes vary along x (columns); 90 degrees is the same pattern transposed.
    torch.testing.assert_close(vertical, horizontal.t(), atol=1e-6, rtol=0)
    assert horizontal[10, 10] == pytest.approx(1.0)
    batch = gabor((21, 21), orientation=[0, 90], frequency=0.1, sigma=4, phase=[0.0, 90.0])
    assert batch.shape == (2, 21, 21)
    torch.testing.assert_close(batch[1], gabor((21, 21), orientation=90, frequency=0.1, sigma=4, phase=90))


def test_gabor_centre_offset_moves_the_envelope():
    g = gabor((31, 31), orientation=0, frequency=0.0, sigma=2, center=(5, -3))
    peak = divmod(int(g.argmax()), 31)
    assert peak == (15 + 5, 15 - 3)


def test_pink_noise_has_a_one_over_f_amplitude_spectrum():
    images = pink_noise(64, (64, 64), seed=0)
    assert images.shape == (64, 1, 64, 64)
    torch.testing.assert_close(images.mean((1, 2, 3)), torch.zeros(64), atol=1e-5, rtol=0)
    power = (torch.fft.fft2(images[:, 0].double()).abs() ** 2).mean(0).numpy()
    f = np.sqrt(np.add.outer(np.fft.fftfreq(64) ** 2, np.fft.fftfreq(64) ** 2))
    band = (f > 0.02) & (f < 0.4)
    slope = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-2.0, abs=0.15)  # power ~ 1/f^2, amplitude ~ 1/f


def test_dead_leaves_are_piecewise_constant_and_seeded():
    a = dead_leaves(4, (24, 32), n_discs=50, seed=1)
    assert a.shape == (4, 1, 24, 32)
    torch.testing.assert_close(a, dead_leaves(4, (24, 32), n_discs=50, seed=1), rtol=0, atol=0)
    assert (a != dead_leaves(4, (24, 32), n_discs=50, seed=2)).float().mean() > 0.5  # another seed, other images
    torch.testing.assert_close(a.mean((1, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.std((1, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    for image in a[:, 0]:
        # One grey per visible disc plus the background: a handful of values, not noise and not a constant.
        assert 2 <= len(torch.unique(image)) <= 51
        # Constant inside each disc: most neighbouring pixels share their grey.
        assert (image[:, 1:] == image[:, :-1]).float().mean() > 0.6
        assert (image[1:] == image[:-1]).float().mean() > 0.6


def test_dead_leaves_discs_are_round_with_power_law_radii():
    """One disc per image on a background: the disc is the value that covers fewer pixels, and its area gives its
    radius. The radii follow the density r^-3 on ``radius_range``: many more small discs than large ones."""
    r_min, r_max = 2.0, 8.0
    images = dead_leaves(1000, (64, 64), n_discs=1, radius_range=(r_min, r_max), seed=0)[:, 0]
    flat = images.flatten(1)
    assert all(len(torch.unique(row)) == 2 for row in flat)  # a disc and the background, each one grey
    is_min = flat == flat.amin(1, keepdim=True)
    disc = torch.where((is_min.sum(1) < flat.shape[1] / 2)[:, None], is_min, ~is_min).view_as(images)
    area = disc.flatten(1).sum(1).double()
    # Round: a disc inside the image fills about pi / 4 of its bounding box (a square would fill all of it).
    rows, cols = disc.any(2), disc.any(1)
    height = rows.shape[1] - rows.int().flip(1).argmax(1) - rows.int().argmax(1)
    width = cols.shape[1] - cols.int().flip(1).argmax(1) - cols.int().argmax(1)
    inside = ~(rows[:, 0] | rows[:, -1] | cols[:, 0] | cols[:, -1])
    fill = area[inside] / (height * width)[inside]
    assert fill.mean() == pytest.approx(math.pi / 4, abs=0.05)
    assert ((height - width)[inside].abs() <= 1).float().mean() > 0.9
    # The radii's distribution: CDF (r_min^-2 - r^-2) / (r_min^-2 - r_max^-2); uniform radii or density r^-2 are
    # off by more than 0.15 somewhere on this grid.
    radius = (area / math.pi).sqrt()
    grid = torch.tensor([2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0], dtype=torch.float64)
    expected = (r_min**-2 - grid**-2) / (r_min**-2 - r_max**-2)
    measured = (radius[None] <= grid[:, None]).double().mean(1)
    assert (measured - expected).abs().max() < 0.08
    assert radius[inside].min() >= r_min - 0.5 and radius.max() <= r_max + 0.5  # the border clips some discs


def test_natural_images_by_name():
    assert natural_images("dead_leaves", 2, (8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown natural image kind 'clouds'"):
        natural_images("clouds", 2, (8, 8))


def seed_grating(angle, sf=1 / 28, res=0.1, patch=False):
    """The Neuromatch W1D5 tutorial's grating, transcribed in numpy as the reference."""
    angle = np.deg2rad(angle)
    wpix, hpix = 640, 480
    xx, yy = np.meshgrid(sf * np.arange(0, wpix * res) / res, sf * np.arange(0, hpix * res) / res)
    if patch:
        g = np.cos(xx * np.cos(angle + .1) + yy * np.sin(angle + .1))
        g[g < 0] = 0
        g[g > 0] = 1
        xcent, ycent = g.shape[1] * .75, g.shape[0] / 2
        xxc, yyc = np.meshgrid(np.arange(0, g.shape[1]), np.arange(0, g.shape[0]))
        icirc = ((xxc - xcent) ** 2 + (yyc - ycent) ** 2) ** 0.5 < wpix / 3 / 2 * res
        g[~icirc] = 0.5
    else:
        g = np.cos(xx * np.cos(angle) + yy * np.sin(angle))
        g[g < 0] = 0
        g[g > 0] = 1
    return g - 0.5


def seed_filters(out_channels=6, K=7):
    grid = np.linspace(-K / 2, K / 2, K).astype(np.float32)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    sigma = 1.1
    r = (xx**2 + yy**2) ** 0.5
    cs = np.exp(-r / (2 * sigma**2)) - 0.5 * np.exp(-r / (2 * (sigma * 2) ** 2))
    thetas = np.linspace(0, 180, out_channels - 2 + 1)[:-1] * np.pi / 180
    gabors = np.zeros((len(thetas), K, K), np.float32)
    gaussian = np.exp(-(xx**2 + yy**2) ** 0.5 / (2 * (sigma * 0.4) ** 2))
    for i, theta in enumerate(thetas):
        gabors[i] = gaussian * np.cos(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / 10 + np.pi / 2)
    f = np.concatenate((cs[None], -cs[None], gabors), axis=0)
    f /= np.abs(f).max(axis=(1, 2))[:, None, None]
    f -= f.mean(axis=(1, 2))[:, None, None]
    return f[:, None]


@pytest.mark.parametrize("angle, res, patch", [(0, 0.1, False), (33.0, 0.1, False), (120, 0.025, False),
                                               (45, 0.1, True), (90, 0.05, True)])
def test_grating_matches_the_tutorial(angle, res, patch):
    expected = seed_grating(angle, res=res, patch=patch)
    got = grating(angle, res=res, patch=patch)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_gratings_batch_and_filters_match_the_tutorial():
    batch = gratings([0, 30, 60], res=0.025)
    assert batch.shape == (3, 1, 12, 16)
    torch.testing.assert_close(batch[1, 0], grating(30, res=0.025))
    for out_channels, k in [(6, 7), (10, 9)]:  # float32 cosines of the angles differ by ~1e-6
        np.testing.assert_allclose(filters(out_channels, k).numpy(), seed_filters(out_channels, k), atol=1e-5)


# --- parametric stimuli for in-silico experiments ---------------------------------------------------------------------
from bioviz.stimuli import (  # noqa: E402
    bar,
    center_surround,
    gaussian_blob,
    random_gaussian_blobs,
    sine_grating,
    sine_gratings,
)


def test_sine_grating_values_conventions_and_patch():
    g = sine_grating((16, 20), orientation=0, frequency=0.25, phase=0, contrast=0.5)
    assert g.shape == (1, 1, 16, 20)
    x = torch.arange(20) - 9.5
    torch.testing.assert_close(g[0, 0, 3], 0.5 * torch.cos(2 * math.pi * 0.25 * x), atol=1e-6, rtol=0)
    # 90 degrees is the 0-degree grating transposed, as for gabor.
    torch.testing.assert_close(sine_grating((16, 16), 90, 0.1)[0, 0], sine_grating((16, 16), 0, 0.1)[0, 0].t(),
                               atol=1e-6, rtol=0)
    patch = sine_grating((21, 21), [0, 45, 90], 0.1, size=10, center=(2, -3))
    assert patch.shape == (3, 1, 21, 21)
    yy, xx = torch.meshgrid(torch.arange(21.0) - 10 - 2, torch.arange(21.0) - 10 + 3, indexing="ij")
    outside = xx**2 + yy**2 > 25
    assert (patch[:, 0][:, outside] == 0).all() and (patch[:, 0][:, ~outside] != 0).any()


def test_sine_gratings_orientation_major_order():
    images, ori, pha = sine_gratings((12, 12), orientations=4, phases=[0, 90, 180], frequency=0.2)
    assert images.shape == (12, 1, 12, 12)
    torch.testing.assert_close(ori, torch.tensor([0.0, 45.0, 90.0, 135.0]))
    torch.testing.assert_close(images[2 * 3 + 1], sine_grating((12, 12), 90, 0.2, 90)[0])
    with pytest.raises(ValueError, match="positive count"):
        sine_gratings((12, 12), orientations=0)


def test_center_surround_is_balanced_and_on_off_symmetric():
    on = center_surround((21, 21), 1.0, 3.0)
    assert on.shape == (21, 21)
    assert abs(float(on.sum())) < 1e-6 and on[10, 10] > 0 and on[10, 4] < 0
    torch.testing.assert_close(center_surround((21, 21), 1.0, 3.0, on=False), -on)
    assert center_surround((21, 21), [1.0, 1.5], 3.0).shape == (2, 21, 21)
    with pytest.raises(ValueError, match="sigma_surround"):
        center_surround((21, 21), 3.0, 1.0)


def test_gaussian_blob_is_elongated_along_its_orientation():
    blob = gaussian_blob((31, 31), orientation=0, sigma=(1.0, 4.0), center=(0, 3))[0, 0]
    assert divmod(int(blob.argmax()), 31) == (15, 18)
    assert blob[15 + 4, 18] == pytest.approx(math.exp(-0.5), abs=1e-5)  # 1 SD along the long (vertical) axis
    assert blob[15, 18 + 1] == pytest.approx(math.exp(-0.5), abs=1e-5)  # 1 SD across it
    turned, upright = gaussian_blob((31, 31), [90, 0], (1.0, 4.0))[:, 0]
    torch.testing.assert_close(turned, upright.t())
    images = random_gaussian_blobs(5, (24, 24), n_blobs=2, seed=3)
    assert images.shape == (5, 1, 24, 24) and float(images.max()) <= 1.0
    torch.testing.assert_close(images, random_gaussian_blobs(5, (24, 24), n_blobs=2, seed=3))


def test_random_gaussian_blobs_keep_their_minimum_separation():
    from bioviz.stimuli import _separated_offsets

    g = torch.Generator().manual_seed(0)
    centres = _separated_offsets(200, 2, 40, 40, 0.0, 20.0, g).view(200, 2, 2)
    distance = (centres[:, 0] - centres[:, 1]).norm(dim=1)
    assert distance.min() >= 20.0 and centres.abs().max() <= 19.5
    unconstrained = torch.rand(200, 2, 2, generator=g) * 39
    assert (unconstrained[:, 0] - unconstrained[:, 1]).norm(dim=1).min() < 20.0  # the constraint is not free
    # Images: two small blobs per image, their peaks at least the separation apart.
    images = random_gaussian_blobs(20, (40, 40), n_blobs=2, sigma=(0.6, 0.6), min_separation=20.0, seed=1)
    for image in images[:, 0]:
        peaks = (image == F.max_pool2d(image[None, None], 5, 1, 2)[0, 0]) & (image > 0.5)
        rows, cols = peaks.nonzero().double().T
        assert len(rows) == 2 and math.hypot(rows[0] - rows[1], cols[0] - cols[1]) >= 19.0


def test_bar_covers_its_area_at_any_angle():
    vertical = bar((21, 21), 0, length=9, width=3)[0, 0]
    assert vertical.sum() == pytest.approx(27.0)
    assert (vertical[6:15, 9:12] == 1).all() and vertical[5].sum() == 0
    tilted = bar((41, 41), [30.0, 75.0], length=12, width=2)
    assert tilted.shape == (2, 1, 41, 41)
    assert tilted.sum((1, 2, 3)).tolist() == pytest.approx([24.0, 24.0], rel=0.08)
