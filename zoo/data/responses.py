"""Neural-response files in the layout of the Ecker et al. 2019 data, and their DataModule.

An ``.npz`` with

=================  ==========================  =========================================
key                shape                       meaning
=================  ==========================  =========================================
images_train       [N, H, W] or [N, C, H, W]   training images
responses_train    [N, n]                      one response per image and neuron
images_val         [N_val, ...]                validation images
responses_val      [N_val, n]
images_test        [N_test, ...]               test images
responses_test     [R, N_test, n]              R repeated presentations of each test image
rates_test         [N_test, n] (optional)      noise-free rates, for simulated populations
=================  ==========================  =========================================

Other keys (ground truth of a simulation, metadata) are allowed and ignored. Normalisation follows the paper: images
z-scored with the scalar mean and SD of the training images, responses clipped at 0 and divided by each neuron's SD
on the training set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.data.loading import TensorBatchDataset, TensorSplitsDataModule, tensor_loader
from zoo.data.npz import check_values, read_npz
from zoo.errors import DataFileError

__all__ = [
    "NeuralResponseDataModule",
    "ResponseDataModule",
    "load_response_file",
    "normalise_responses",
    "validate_response_arrays",
]

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = tuple(f"{kind}_{split}" for split in SPLITS for kind in ("images", "responses"))


def load_response_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read and validate a neural-response ``.npz``; raises before returning anything if the file is invalid."""
    arrays = read_npz(path, f"neural-response file at {path}. Give the path of an .npz in the Ecker layout "
                      f"(docs/data.md: 'Your own data'), or write a simulated one with: bioviz simulate-v1 {path}")
    validate_response_arrays(arrays, source=str(path))
    return arrays


def validate_response_arrays(arrays: dict[str, np.ndarray], source: str = "the data") -> None:
    """Check keys, dtypes, shapes and finiteness; one error lists every problem found."""
    problems, checked = check_values(arrays, REQUIRED_KEYS, ("rates_test",))
    shapes = {key: arrays[key].shape for key in checked}
    expected_ndim = {"responses_train": (2,), "responses_val": (2,), "responses_test": (3,), "rates_test": (2,)}
    expected_ndim.update({f"images_{split}": (3, 4) for split in SPLITS})
    wrong_ndim = {key for key in checked if len(shapes[key]) not in expected_ndim[key]}
    for key in sorted(wrong_ndim):
        layout = ("[N, H, W] or [N, C, H, W]" if key.startswith("images_")
                  else {2: "[N, n]", 3: "[repeats, N_test, n]"}[expected_ndim[key][0]])
        problems.append(f"{key} has shape {list(shapes[key])}; expected {layout}")
    ok = {key: shapes[key] for key in checked if key not in wrong_ndim}

    def image_shape(split):
        shape = ok.get(f"images_{split}")
        return None if shape is None else ((1, *shape[1:]) if len(shape) == 3 else tuple(shape[1:]))

    image_shapes = {split: image_shape(split) for split in SPLITS if image_shape(split) is not None}
    if len(set(image_shapes.values())) > 1:
        problems.append(f"image shapes differ between splits: {image_shapes}")
    counts = {split: ok[f"images_{split}"][0] for split in SPLITS if f"images_{split}" in ok}
    for split, axis in (("train", 0), ("val", 0), ("test", 1)):
        key = f"responses_{split}"
        if key in ok and split in counts and ok[key][axis] != counts[split]:
            problems.append(f"{key} has {ok[key][axis]} images (shape {list(ok[key])}) but images_{split} has "
                            f"{counts[split]}")
    neurons = {key: ok[key][-1] for key in ("responses_train", "responses_val", "responses_test", "rates_test")
               if key in ok}
    if len(set(neurons.values())) > 1:
        problems.append(f"neuron counts differ: {neurons}")
    if "rates_test" in ok and "test" in counts and ok["rates_test"][0] != counts["test"]:
        problems.append(f"rates_test has {ok['rates_test'][0]} images but images_test has {counts['test']}")
    if "responses_test" in ok and ok["responses_test"][0] < 1:
        problems.append("responses_test has no repeats")
    if problems:
        raise DataFileError(f"{source} is not a valid neural-response file:\n  - " + "\n  - ".join(problems)
                            + "\nThe layout is described in docs/data.md, 'Your own data'.")


def normalise_responses(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Paper normalisation of validated arrays; returns float32 tensors, test responses as [N_test, R, n]."""
    def images(split):
        x = arrays[f"images_{split}"].astype(np.float64)
        return x[:, None] if x.ndim == 3 else x

    train_images = images("train")
    mean, sd = train_images.mean(), train_images.std()
    sd = sd if sd > 0 else 1.0
    response_sd = np.clip(arrays["responses_train"].astype(np.float64), 0, None).std(0)
    response_sd[response_sd <= 0] = 1.0  # a silent neuron stays 0 instead of NaN

    def responses(key):
        return np.clip(arrays[key].astype(np.float64), 0, None) / response_sd

    out = {f"images_{split}": (images(split) - mean) / sd for split in SPLITS}
    out.update({f"responses_{split}": responses(f"responses_{split}") for split in ("train", "val")})
    out["responses_test"] = responses("responses_test").transpose(1, 0, 2)
    if "rates_test" in arrays:
        out["rates_test"] = responses("rates_test")
    return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in out.items()}


class ResponseDataModule(TensorSplitsDataModule):
    """Base of the neural-response DataModules: subclasses say where the arrays come from (``load_arrays``).

    Exposes ``n_neurons``, ``in_shape`` ([C, H, W]) and ``mean_responses`` (normalised train means), which the CLI
    links to the model. The arrays are loaded, validated and normalised once, on first use.
    """

    def __init__(self, batch_size: int = 256, eval_batch_size: int = 1024):
        super().__init__(batch_size, eval_batch_size)
        self._tensors: dict[str, torch.Tensor] | None = None

    def load_arrays(self) -> dict[str, np.ndarray]:
        """The raw arrays in the file layout (see the module docstring)."""
        raise NotImplementedError


    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            self._tensors = normalise_responses(self.load_arrays())
        return self._tensors

    @property
    def n_neurons(self) -> int:
        return int(self.tensors["responses_train"].shape[1])

    @property
    def in_shape(self) -> list[int]:
        return list(self.tensors["images_train"].shape[1:])

    @property
    def mean_responses(self) -> list[float]:
        return self.tensors["responses_train"].nanmean(0).tolist()  # NaN: trials not recorded

    def dataset(self, split: str) -> TensorBatchDataset:
        t = self.tensors
        if split == "test":
            extra = (t["rates_test"],) if "rates_test" in t else ()
            return TensorBatchDataset(t["images_test"], t["responses_test"], *extra)
        return TensorBatchDataset(t[f"images_{split}"], t[f"responses_{split}"])

    def predict_dataloader(self):
        return tensor_loader(TensorBatchDataset(self.tensors["images_test"]), self.eval_batch_size, train=False,
                             trainer=self.trainer)


class NeuralResponseDataModule(ResponseDataModule):
    """Images and neural responses from an ``.npz`` in the Ecker layout (see the module docstring)."""

    def __init__(self, path: str, batch_size: int = 256, eval_batch_size: int = 1024):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size)
        self.path = Path(path)
        if not self.path.is_file():
            load_response_file(self.path)  # raises the error that names the fix

    def load_arrays(self) -> dict[str, np.ndarray]:
        return load_response_file(self.path)
