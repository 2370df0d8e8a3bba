import numpy as np
import pytest
import torch

from bioviz.stimuli import dead_leaves, gabor, natural_images, pink_noise


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
    a = dead_leaves(3, (24, 32), n_discs=50, seed=1)
    b = dead_leaves(3, (24, 32), n_discs=50, seed=1)
    torch.testing.assert_close(a, b)
    assert a.shape == (3, 1, 24, 32)
    assert len(torch.unique(a[0])) <= 51
    torch.testing.assert_close(a.std((1, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


def test_natural_images_by_name():
    assert natural_images("dead_leaves", 2, (8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown natural image kind 'clouds'"):
        natural_images("clouds", 2, (8, 8))
