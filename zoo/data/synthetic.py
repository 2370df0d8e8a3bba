"""A simulated V1 population with known ground truth: the embedded default data, made with no network.

Images are natural-like (1/f noise or dead leaves from ``bioviz.stimuli``). Each neuron is an LN model built from a
Gabor filter at one of 8 orientations, a random position, size, spatial frequency and phase: a simple cell is the
filter's linear response, a complex cell the energy of a quadrature pair. The drive is standardised on the training
images, passed through ``rate_scale * softplus(gain * drive + offset)`` and Poisson noise is drawn. The test set has
repeated presentations, and the noise-free test rates are kept (``rates_test``), so the oracle is known exactly.

With ``neuron_types = K > 0`` the population is instead made of rotated copies of K feature types: each type is a
two-layer unit (rectified responses of two Gabor subunits at different orientations and positions, weighted and
summed: corner-, curvature- and end-stopping-like shapes), and each neuron is one type turned by a multiple of 45
degrees (subunit orientations and offsets turn together) at a random position. This is the world a
rotation-equivariant model assumes (Ecker et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bioviz.stimuli import gabor, natural_images
from zoo.data.npz import write_npz
from zoo.data.responses import ResponseDataModule, validate_response_arrays

__all__ = ["simulate_v1", "write_synthetic_v1", "SyntheticV1DataModule", "N_ORIENTATIONS"]

N_ORIENTATIONS = 8


def simulate_v1(
    seed: int = 0,
    n_neurons: int = 100,
    image_shape: Sequence[int] = (36, 64),
    n_train: int = 4000,
    n_val: int = 500,
    n_test: int = 200,
    n_repeats: int = 10,
    images: str = "pink",
    complex_fraction: float = 0.5,
    rate_scale: float = 0.5,
    neuron_types: int = 0,
) -> dict[str, np.ndarray]:
    """Simulate the population; returns arrays in the neural-response file layout plus ``true_*`` ground truth.

    Deterministic in ``seed``. Ground truth: ``true_orientation`` (degrees), ``true_complex`` (bool),
    ``true_position`` ([dy, dx] from the image centre, pixels), ``true_sigma``, ``true_frequency`` (cycles/pixel),
    ``true_phase`` (degrees), ``true_filters`` ([n, H, W], unit norm; a complex cell's is its 0-phase filter).
    With ``neuron_types > 0`` (rotated copies of feature types, module docstring): ``true_type``,
    ``true_orientation`` (the rotation, a multiple of 45 degrees), ``true_position`` and ``true_filters`` (the first
    subunit's filter); ``complex_fraction`` is not used.
    """
    if min(n_neurons, n_train, n_val, n_test) < 1 or n_repeats < 2:
        raise ValueError("n_neurons, n_train, n_val and n_test must be >= 1 and n_repeats >= 2")
    h, w = (int(s) for s in image_shape)
    if min(h, w) < 8:
        raise ValueError(f"image_shape must be at least 8x8, got {list(image_shape)}")
    if neuron_types < 0:
        raise ValueError(f"neuron_types must be >= 0 (0: Gabor simple/complex cells), got {neuron_types}")
    g = torch.Generator().manual_seed(int(seed))
    if neuron_types:
        return _simulate_types(g, n_neurons, (h, w), n_train, n_val, n_test, n_repeats, images, rate_scale,
                               neuron_types)

    def uniform(low, high):
        return _uniform(g, low, high, n_neurons)

    orientation = torch.randint(N_ORIENTATIONS, (n_neurons,), generator=g).double() * (180.0 / N_ORIENTATIONS)
    is_complex = torch.rand(n_neurons, generator=g) < complex_fraction
    sigma = uniform(0.8, 1.2) * min(h, w) / 10
    frequency = 1.0 / (sigma * uniform(2.5, 3.5))  # about one cycle per envelope width
    phase = uniform(0.0, 360.0)
    # Centres keep the envelope (2 SD) inside the image.
    position = torch.stack([uniform(-1, 1) * (h / 2 - 2 * sigma).clamp_min(0),
                            uniform(-1, 1) * (w / 2 - 2 * sigma).clamp_min(0)], dim=1)
    gain, offset = uniform(1.0, 2.0), uniform(-1.0, 0.5)

    def filters(phase_deg):
        f = gabor((h, w), orientation, frequency, phase_deg, sigma, position, dtype=torch.float64)
        return f / f.flatten(1).norm(dim=1).reshape(-1, 1, 1)

    even, odd = filters(phase), filters(phase + 90.0)
    n_total = n_train + n_val + n_test
    stimuli = natural_images(images, n_total, (h, w), seed=g, dtype=torch.float64)
    flat = stimuli.flatten(1)
    linear, quadrature = flat @ even.flatten(1).t(), flat @ odd.flatten(1).t()
    drive = torch.where(is_complex, torch.sqrt(linear**2 + quadrature**2), linear)
    mean, sd = drive[:n_train].mean(0), drive[:n_train].std(0)
    rates = rate_scale * F.softplus(gain * (drive - mean) / sd + offset)

    arrays = _sample(g, stimuli, rates, n_train, n_val, n_repeats, test_first=True)
    arrays.update(true_orientation=_as32(orientation), true_complex=is_complex.numpy(), true_position=_as32(position),
                  true_sigma=_as32(sigma), true_frequency=_as32(frequency), true_phase=_as32(phase),
                  true_filters=_as32(even))
    return arrays


def _simulate_types(g, n_neurons, shape, n_train, n_val, n_test, n_repeats, images, rate_scale, n_types):
    """Neurons that are rotated copies of ``n_types`` two-subunit feature types (see ``simulate_v1``)."""
    h, w = shape

    def uniform(low, high, n):
        return _uniform(g, low, high, n)

    # Feature types: size, frequency; subunit 2 turned by delta, offset by ~1.2 sigma, weighted +-[0.5, 1].
    sigma_t = uniform(0.8, 1.2, n_types) * min(h, w) / 12
    freq_t = 1.0 / (sigma_t * uniform(2.5, 3.5, n_types))
    delta_t = uniform(40.0, 140.0, n_types)
    offset_angle_t, offset_len_t = uniform(0.0, 2 * math.pi, n_types), uniform(1.0, 1.5, n_types) * sigma_t
    phase_t = uniform(0.0, 360.0, (n_types, 2))
    weight_t = uniform(0.5, 1.0, n_types) * torch.where(torch.rand(n_types, generator=g) < 0.5, -1.0, 1.0)

    kind = torch.randint(n_types, (n_neurons,), generator=g)
    rotation = torch.randint(N_ORIENTATIONS, (n_neurons,), generator=g).double() * (360.0 / N_ORIENTATIONS)
    base = uniform(0.0, 180.0, n_types)[kind]  # each type's own orientation at rotation 0
    sigma = sigma_t[kind]
    margin = 2 * sigma + offset_len_t[kind]
    position = torch.stack([uniform(-1, 1, n_neurons) * (h / 2 - margin).clamp_min(0),
                            uniform(-1, 1, n_neurons) * (w / 2 - margin).clamp_min(0)], dim=1)
    # Gabor orientation theta has its across-stripe axis along (cos theta, sin theta) in (x, y) pixel coordinates;
    # turning a type by alpha turns subunit orientations and offsets by alpha in the same sense.
    alpha = torch.deg2rad(rotation)
    off = offset_angle_t[kind] + alpha
    offset = torch.stack([offset_len_t[kind] * torch.sin(off), offset_len_t[kind] * torch.cos(off)], dim=1)
    orientation = base + rotation
    first = gabor((h, w), orientation, freq_t[kind], phase_t[kind, 0], sigma, position, dtype=torch.float64)
    second = gabor((h, w), orientation + delta_t[kind], freq_t[kind], phase_t[kind, 1], sigma, position + offset,
                   dtype=torch.float64)
    first = first / first.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    second = second / second.flatten(1).norm(dim=1).reshape(-1, 1, 1)

    n_total = n_train + n_val + n_test
    stimuli = natural_images(images, n_total, (h, w), seed=g, dtype=torch.float64)
    flat = stimuli.flatten(1)
    drive = F.relu(flat @ first.flatten(1).t()) + weight_t[kind] * F.relu(flat @ second.flatten(1).t())
    mean, sd = drive[:n_train].mean(0), drive[:n_train].std(0)
    gain, offset_rate = uniform(1.0, 2.0, n_neurons), uniform(-1.0, 0.5, n_neurons)
    rates = rate_scale * F.softplus(gain * (drive - mean) / sd + offset_rate)
    arrays = _sample(g, stimuli, rates, n_train, n_val, n_repeats)
    arrays.update(true_type=kind.numpy(), true_orientation=_as32(torch.remainder(rotation, 360.0)),
                  true_position=_as32(position), true_sigma=_as32(sigma), true_filters=_as32(first))
    return arrays


def _uniform(g: torch.Generator, low, high, n) -> torch.Tensor:
    """``n`` (a count or a shape) float64 draws uniform in [low, high)."""
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _as32(t: torch.Tensor) -> np.ndarray:
    return t.numpy().astype(np.float32)


def _sample(g, stimuli, rates, n_train, n_val, n_repeats, test_first: bool = False) -> dict[str, np.ndarray]:
    """Poisson responses to the split stimuli, in the neural-response file layout. ``test_first`` draws the
    repeated test responses before the training and validation ones (the Gabor population's order; another order
    would change the data each seed gives)."""
    train, val, test = rates[:n_train], rates[n_train:n_train + n_val], rates[n_train + n_val:]
    repeated = test.expand(n_repeats, -1, -1).contiguous()
    if test_first:
        responses_test = torch.poisson(repeated, generator=g)
    responses_train, responses_val = torch.poisson(train, generator=g), torch.poisson(val, generator=g)
    if not test_first:
        responses_test = torch.poisson(repeated, generator=g)
    return {
        "images_train": _as32(stimuli[:n_train, 0]),
        "responses_train": _as32(responses_train),
        "images_val": _as32(stimuli[n_train:n_train + n_val, 0]),
        "responses_val": _as32(responses_val),
        "images_test": _as32(stimuli[n_train + n_val:, 0]),
        "responses_test": _as32(responses_test),
        "rates_test": _as32(test),
    }


def write_synthetic_v1(path: str | Path, **simulation) -> Path:
    """Simulate a V1 population (keyword arguments of ``simulate_v1``) and write it to ``path`` as a
    neural-response ``.npz``. The file appears only when complete (written to a temporary file, then renamed)."""
    return write_npz(path, simulate_v1(**simulation))


class SyntheticV1DataModule(ResponseDataModule):
    """The simulated V1 population of ``simulate_v1``, generated in memory from ``seed`` (no files, no network)."""

    def __init__(
        self,
        seed: int = 0,
        n_neurons: int = 100,
        image_shape: Sequence[int] = (36, 64),
        n_train: int = 4000,
        n_val: int = 500,
        n_test: int = 200,
        n_repeats: int = 10,
        images: str = "pink",
        complex_fraction: float = 0.5,
        rate_scale: float = 0.5,
        neuron_types: int = 0,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size)
        self.simulation = dict(seed=seed, n_neurons=n_neurons, image_shape=list(image_shape), n_train=n_train,
                               n_val=n_val, n_test=n_test, n_repeats=n_repeats, images=images,
                               complex_fraction=complex_fraction, rate_scale=rate_scale, neuron_types=neuron_types)

        self.ground_truth: dict[str, np.ndarray] = {}

    # Known from the arguments, so linking them into the model does not run the simulation.
    @property
    def n_neurons(self) -> int:
        return int(self.simulation["n_neurons"])

    @property
    def in_shape(self) -> list[int]:
        return [1, *self.simulation["image_shape"]]

    def load_arrays(self) -> dict[str, np.ndarray]:
        arrays = simulate_v1(**self.simulation)
        validate_response_arrays(arrays, source="the simulated population")
        self.ground_truth = {key: value for key, value in arrays.items() if key.startswith("true_")}
        return arrays
