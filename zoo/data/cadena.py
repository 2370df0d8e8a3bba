"""The macaque V1 data of Cadena et al. (2019, PLoS Comput Biol 15: e1006897), "Deep convolutional models improve
predictions of macaque V1 responses to natural images": its published pickle, read and split as the paper's code
reads it, and a simulated file in that layout.

The file (``Cadena_PlosCB19_data/data_binned_responses/cadena_ploscb_data.pkl``, from the dataset's GIN page,
doi.gin.g-node.org Cadena_PlosCB19_data) is a pickled dict:

    images         [N, 140, 140]   grey images, 0-255 (N = 7250: 1450 photographs, each with 4 textures synthesised
                                   from VGG layers conv1-conv4: ``image_types``, in blocks of 5 by ``image_numbers``)
    responses      [4, N, n]       spike counts of n = 166 neurons on up to 4 repeats; NaN where a trial was not
                                   recorded: the repeats a neuron did not get (``repetitions`` 2 or 4), and the images
                                   shown while it was not recorded
    repetitions    [n]             2 or 4
    image_ids, image_types, image_numbers   [N] (or [N, 1])

(the authors' code, github.com/sacadena/Cadena2019PlosCB, ``cnn_sys_ident/data.py``; docs/data.md). As the paper's code
does: the images are cropped to the central 80 x 80 pixels and every second pixel kept (40 x 40), then z-scored with
the mean and SD of all images; the last 20 % of the images in file order are the test set (a photograph and its
textures stay together); the first 80 % are split 80 / 20 into training and validation images by a permutation seeded
with 1000 (numpy's legacy ``RandomState``). Training and validation samples are single trials (image, repeat); the
test set keeps the repeats ``[images, 4, n]``. One difference: the paper's code copies the two repeats of a
2-repeat neuron into the empty slots; here empty slots stay NaN and every recorded trial counts once.

The test reports the paper's measure as ``test/feve_all`` (fraction of explainable variance explained, averaged
over all neurons, as the paper's code does) beside the Sensorium-style ``test/feve``.

The file is a pickle, which can run code when read: it is read with an unpickler that builds only numpy arrays and
plain Python values, and refuses anything else.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from zoo.data.responses import ResponseDataModule
from zoo.data.synthetic import simulate_v1
from zoo.errors import DataFileError, DataNotFoundError
from zoo.files import atomic_file

__all__ = ["Cadena2019DataModule", "read_cadena_file", "write_simulated_cadena"]

KEYS = ("images", "responses", "repetitions", "image_ids", "image_types", "image_numbers")
IMAGE_TYPES = ("original", "conv1", "conv2", "conv3", "conv4")
SIMULATED_RATES = "simulated_rates"  # [N, n]; written by write_simulated_cadena only


class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays and plain values; any other class in the file stops the reading."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array")
        return super().find_class(module, name)


def read_cadena_file(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of the published pickle (module docstring), checked: keys, shapes, and that every neuron has
    responses. ``image_types`` and the id arrays come back flat."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"no Cadena et al. (2019) data file at {path}: give the path of "
                                "cadena_ploscb_data.pkl (data_binned_responses/ in the dataset)")
    try:
        with open(path, "rb") as handle:
            data = _ArraysOnly(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise DataFileError(f"{path} is not the Cadena et al. (2019) pickle of numpy arrays ({err})") from err
    if not isinstance(data, dict):
        raise DataFileError(f"{path} holds a {type(data).__name__}, not the dataset's dict of arrays")
    missing = [key for key in KEYS if key not in data]
    if missing:
        raise DataFileError(f"{path} has no {', '.join(missing)} (a Cadena et al. (2019) file has {', '.join(KEYS)})")
    images = np.asarray(data["images"], dtype=np.float32)
    responses = np.asarray(data["responses"], dtype=np.float64)
    if images.ndim != 3:
        raise DataFileError(f"{path}: images has shape {list(images.shape)}; expected [images, height, width]")
    if responses.ndim != 3 or responses.shape[1] != len(images):
        raise DataFileError(f"{path}: responses has shape {list(responses.shape)}; expected [repeats, "
                            f"{len(images)} images, neurons]")
    out = {"images": images, "responses": responses,
           "repetitions": np.asarray(data["repetitions"]).reshape(-1).astype(int)}
    for key in ("image_ids", "image_numbers"):
        out[key] = np.asarray(data[key]).reshape(-1)
    out["image_types"] = np.array([str(np.asarray(t).reshape(-1)[0]) for t in np.asarray(data["image_types"],
                                                                                         dtype=object).reshape(-1)])
    n_neurons = responses.shape[2]
    for key in ("image_ids", "image_numbers", "image_types"):
        if len(out[key]) != len(images):
            raise DataFileError(f"{path}: {key} has {len(out[key])} entries for {len(images)} images")
    if len(out["repetitions"]) != n_neurons:
        raise DataFileError(f"{path}: repetitions has {len(out['repetitions'])} entries for {n_neurons} neurons")
    silent = np.flatnonzero(np.isnan(responses).all((0, 1)))
    if len(silent):
        raise DataFileError(f"{path}: neurons {silent[:10].tolist()} have no recorded response at all")
    if SIMULATED_RATES in data:
        out["rates"] = np.asarray(data[SIMULATED_RATES], dtype=np.float32)
    return out


class Cadena2019DataModule(ResponseDataModule):
    """The Cadena et al. (2019) data (module docstring): ``path`` to ``cadena_ploscb_data.pkl``. ``crop`` pixels
    off each side and every ``subsample``-th pixel (the paper: 30 and 2, 140 -> 40 x 40); ``train_frac`` of the
    images for training and validation, the rest for test, ``seed`` for the split (the paper's: 0.8, 1000)."""

    def __init__(self, path: str = "data/cadena_ploscb_data.pkl", crop: int = 30, subsample: int = 2,
                 train_frac: float = 0.8, seed: int = 1000, batch_size: int = 256, eval_batch_size: int = 1024):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size)
        if not 0 < train_frac < 1:
            raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
        self.path, self.crop, self.subsample, self.train_frac, self.seed = path, crop, subsample, train_frac, seed

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            raw = read_cadena_file(self.path)
            c, s = self.crop, self.subsample
            images = raw["images"][:, c:raw["images"].shape[1] - c:s, c:raw["images"].shape[2] - c:s]
            if min(images.shape[1:]) < 1:
                raise DataFileError(f"{self.path}: cropping {c} pixels off {list(raw['images'].shape[1:])} images "
                                    "leaves nothing; choose a smaller --data.init_args.crop")
            images = torch.from_numpy((images - images.mean()) / images.std())[:, None].float()
            responses = torch.from_numpy(raw["responses"]).float().permute(1, 0, 2)  # [images, repeats, n]
            n_fit = int(len(images) * self.train_frac)
            order = np.random.RandomState(self.seed).permutation(n_fit)
            n_train = int(round(self.train_frac * n_fit))
            splits = {"train": order[:n_train], "val": order[n_train:]}
            out = {}
            for split, index in splits.items():
                index = torch.from_numpy(np.sort(index))
                repeats = responses.shape[1]
                out[f"images_{split}"] = images[index].repeat_interleave(repeats, 0)  # one sample per trial
                out[f"responses_{split}"] = responses[index].reshape(-1, responses.shape[2])
            out["images_test"], out["responses_test"] = images[n_fit:], responses[n_fit:]
            if "rates" in raw:
                out["rates_test"] = torch.from_numpy(raw["rates"][n_fit:]).float()
            self._tensors = out
        return self._tensors


def write_simulated_cadena(path: str | Path, seed: int = 0, n_neurons: int = 40, n_photographs: int = 100,
                           rate_scale: float = 0.5, two_repeat_fraction: float = 0.3,
                           unrecorded_fraction: float = 0.3) -> Path:
    """Write a simulated file in the Cadena et al. (2019) layout (module docstring): the population of
    ``simulate_v1`` on ``5 x n_photographs`` images of 40 x 40 pixels, shown 4 times each, each image upsampled
    twice and placed in the centre of a 140 x 140 image (so the paper's crop and subsampling give it back), scaled to
    0-255. A ``two_repeat_fraction`` of the neurons has only 2 repeats (NaN in slots 3 and 4), and an
    ``unrecorded_fraction`` of them was "not recorded" on the first fifth of the images (NaN), as in the real data.
    The images' ``image_types`` labels cycle through the real ones but all images are 1/f noise. One key is not in
    the published file: ``simulated_rates`` [N, n], the noise-free rates, from which the test reports the true-rate
    ceiling."""
    n_images = 5 * n_photographs
    arrays = simulate_v1(seed=seed, n_neurons=n_neurons, image_shape=(40, 40), n_train=n_images, n_val=1,
                         n_test=n_images, n_repeats=4, rate_scale=rate_scale)
    rng = np.random.default_rng(seed)
    small = arrays["images_test"]
    lo, hi = small.min(), small.max()
    canvas = np.full((n_images, 140, 140), 255 * (0 - lo) / (hi - lo), dtype=np.float32)
    canvas[:, 30:110, 30:110] = np.repeat(np.repeat(255 * (small - lo) / (hi - lo), 2, 1), 2, 2)
    responses = arrays["responses_test"].astype(np.float64)  # [4, N, n]
    repetitions = np.where(rng.random(n_neurons) < two_repeat_fraction, 2, 4)
    responses[2:, :, repetitions == 2] = np.nan
    unrecorded = rng.random(n_neurons) < unrecorded_fraction
    responses[:, : n_images // 5][:, :, unrecorded] = np.nan
    kinds = np.empty((n_images, 1), dtype=object)
    for i in range(n_images):
        kinds[i, 0] = np.array([IMAGE_TYPES[i % 5]])
    data = {"images": canvas, "responses": responses, "repetitions": repetitions,
            "image_ids": np.arange(1, n_images + 1)[:, None], "image_types": kinds,
            "image_numbers": np.repeat(np.arange(1, n_photographs + 1), 5)[:, None],
            "subject_id": np.where(unrecorded, 2, 1), SIMULATED_RATES: arrays["rates_test"]}
    path = Path(path)
    with atomic_file(path) as handle:
        pickle.dump(data, handle, protocol=4)
    return path
