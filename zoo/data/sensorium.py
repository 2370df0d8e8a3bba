"""Sensorium 2022 static scans (mouse V1, grayscale ImageNet images): the published layout, read as the benchmark
reads it, and a simulated scan written in that layout.

A scan is one zip (``static<animal>-<recording>-<scan>-GrayImageNet-<hash>.zip``) whose single top folder holds

    data/images/<i>.npy        [1, 144, 256]  the image of trial i
    data/responses/<i>.npy     [n]            each neuron's response (deconvolved calcium activity)
    data/behavior/<i>.npy      [3]            pupil dilation, its derivative, running speed
    data/pupil_center/<i>.npy  [2]            horizontal and vertical eye position
    meta/trials/tiers.npy      [N]            'train', 'validation', 'test' (and 'final_test')
    meta/trials/frame_image_id.npy  [N]       the image shown; repeats of an image share it
    meta/neurons/unit_ids.npy  [n]            one id per neuron, in the order of the responses
    meta/statistics/<key>/all/{mean,std,...}.npy   the statistics the benchmark normalises with

(the dataset's README, "Dataset Structure"; the benchmark's loader: ``sensorium.datasets.static_loader`` with
neuralpredictors' ``FileTreeDataset`` and ``NeuroNormalizer``; docs/data.md). The benchmark's normalisation: images
``(x - mean) / std``; responses divided by each neuron's std, or by 1 % of the mean std where a neuron's is smaller;
behaviour divided by its std; eye position z-scored; then the images are rescaled (``scale`` 0.25: 36 x 64 pixels, as
the benchmark's models see them). Here the rescaling is bilinear without antialiasing (``torch.nn.functional
.interpolate``); the benchmark's ``skimage.transform.rescale`` interpolates with its own first-order spline.

Splits: ``train`` and ``validation`` as single trials; the ``test`` tier grouped by image into ``[images, R, n]``
(NaN where an image has fewer than R repeats), which is what the test metrics read: correlation to the average,
single-trial correlation and FEVE (``zoo.metrics``). In the two competition scans the test tiers' responses were
withheld (zeros); a test on them is refused.

The whole scan is read into memory once (its trials are thousands of small files, which would be slow to open in
every epoch; at ``scale`` 0.25 the images of a scan take about 60 MB as float32).
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.responses import ResponseDataModule
from zoo.data.synthetic import simulate_v1
from zoo.errors import DataFileError, DataNotFoundError
from zoo.files import atomic_file

__all__ = ["SensoriumDataModule", "read_sensorium_scan", "write_simulated_sensorium"]

TIERS = {"train": "train", "validation": "val", "test": "test"}
SIMULATED_RATES = "meta/trials/simulated_rates.npy"  # [N, n]; written by write_simulated_sensorium only
EXTRAS = {"behavior": 3, "pupil_center": 2}


class _Scan:
    """The files of a scan, from its zip or its extracted folder, by path inside the scan's top folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataNotFoundError(f"no Sensorium scan at {self.path}: give the scan's .zip or its extracted folder")
        self.zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self.root = self.path
            self.names = {str(p.relative_to(self.root)).replace("\\", "/") for p in self.root.rglob("*.npy")}
            return
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataFileError(f"{self.path} is not a readable zip archive ({err}); download it again") from err
        tops = {name.split("/", 1)[0] for name in self.zip.namelist() if "/" in name}
        if len(tops) != 1:
            raise DataFileError(f"{self.path} should hold one folder (the scan), found {sorted(tops)[:5]}")
        self.top = tops.pop()
        self.names = {name.split("/", 1)[1] for name in self.zip.namelist() if name.endswith(".npy")}

    def load(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise DataFileError(f"{self.path} has no {name}: not a complete Sensorium scan")
        try:
            if self.zip is not None:
                return np.load(io.BytesIO(self.zip.read(f"{self.top}/{name}")), allow_pickle=False)
            return np.load(self.root / name, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise DataFileError(f"{self.path}: {name} cannot be read ({err})") from err

    def trials(self, key: str) -> int:
        return sum(1 for name in self.names if name.startswith(f"data/{key}/"))


def read_sensorium_scan(path: str | Path, behavior: bool = False, pupil_center: bool = False
                        ) -> dict[str, np.ndarray]:
    """The raw arrays of a scan: ``images`` [N, 1, H, W], ``responses`` [N, n], ``tiers`` [N] (str),
    ``image_ids`` [N], ``unit_ids`` [n], the statistics (``<key>_mean``, ``<key>_std``) and, if asked for,
    ``behavior`` [N, 3] and ``pupil_center`` [N, 2]. Checks that every trial has every file and that the neuron
    counts agree, and says which file is wrong."""
    scan = _Scan(path)
    tiers = scan.load("meta/trials/tiers.npy").astype(str)
    n_trials = len(tiers)
    image_ids = scan.load("meta/trials/frame_image_id.npy")
    unit_ids = scan.load("meta/neurons/unit_ids.npy")
    if len(image_ids) != n_trials:
        raise DataFileError(f"{path}: meta/trials/frame_image_id.npy has {len(image_ids)} entries for {n_trials} "
                            f"trials (meta/trials/tiers.npy)")
    unknown = sorted(set(tiers) - set(TIERS) - {"final_test"})
    if unknown:
        raise DataFileError(f"{path}: meta/trials/tiers.npy has unknown tiers {unknown}; expected {sorted(TIERS)}")
    wanted = {"behavior": behavior, "pupil_center": pupil_center}
    keys = ["images", "responses"] + [key for key in EXTRAS if wanted[key]]
    out: dict[str, np.ndarray] = {"tiers": tiers, "image_ids": image_ids, "unit_ids": unit_ids}
    if SIMULATED_RATES in scan.names:  # only in simulated scans: the noise-free rates, the true-rate ceiling
        out["rates"] = scan.load(SIMULATED_RATES).astype(np.float32)
    for key in keys:
        found = scan.trials(key)
        if found != n_trials:
            raise DataFileError(f"{path}: data/{key} has {found} trial files but meta/trials/tiers.npy has "
                                f"{n_trials} trials; a trial without its {key} cannot be used")
        arrays = [scan.load(f"data/{key}/{i}.npy") for i in range(n_trials)]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise DataFileError(f"{path}: data/{key} holds arrays of several shapes {sorted(shapes)[:4]}")
        out[key] = np.stack(arrays).astype(np.float32)
        out[f"{key}_mean"] = scan.load(f"meta/statistics/{key}/all/mean.npy").astype(np.float64)
        out[f"{key}_std"] = scan.load(f"meta/statistics/{key}/all/std.npy").astype(np.float64)
    if out["images"].ndim != 4 or out["images"].shape[1] != 1:
        raise DataFileError(f"{path}: data/images holds arrays of shape {list(out['images'].shape[1:])}; expected "
                            f"[1, height, width] (grey images)")
    n_neurons = out["responses"].shape[1]
    for name, size in (("meta/neurons/unit_ids.npy", len(unit_ids)),
                       ("meta/statistics/responses/all/std.npy", out["responses_std"].size)):
        if size != n_neurons:
            raise DataFileError(f"{path}: {name} has {size} neurons but data/responses has {n_neurons} per trial")
    for key, width in EXTRAS.items():
        if key in out and out[key].shape[1:] != (width,):
            raise DataFileError(f"{path}: data/{key} holds arrays of shape {list(out[key].shape[1:])}; expected "
                                f"[{width}]")
    return out


def _normalised(raw: dict[str, np.ndarray], scale: float) -> dict[str, torch.Tensor]:
    """The benchmark's normalisation (module docstring), then the images rescaled and the extras as channels."""
    images = torch.from_numpy((raw["images"] - raw["images_mean"]) / raw["images_std"]).float()
    if scale != 1:
        images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
    std = raw["responses_std"]
    threshold = 0.01 * std.mean()
    precision = np.where(std > threshold, 1 / np.where(std > threshold, std, 1), 1 / threshold)
    responses = torch.from_numpy(raw["responses"] * precision).float()
    rates = torch.from_numpy(raw["rates"] * precision).float() if "rates" in raw else None
    planes = [images]
    for key in EXTRAS:
        if key in raw:
            mean = raw[f"{key}_mean"] if key == "pupil_center" else 0.0  # behaviour is only divided by its std
            values = torch.from_numpy((raw[key] - mean) / raw[f"{key}_std"]).float()
            planes.append(values[:, :, None, None].expand(-1, -1, *images.shape[2:]))
    return {"images": torch.cat(planes, 1), "responses": responses} | ({"rates": rates} if rates is not None else {})


class SensoriumDataModule(ResponseDataModule):
    """A Sensorium 2022 static scan (module docstring): ``path`` to its zip or extracted folder.

    ``scale`` rescales the images after normalisation (0.25, the benchmark's: 144 x 256 -> 36 x 64);
    ``behavior`` and ``pupil_center`` add the trial's behaviour (3 values) and eye position (2) as constant image
    channels, as the benchmark's ``AddBehaviorAsChannels`` / ``AddPupilCenterAsChannels`` do. ``n_neurons``,
    ``in_shape`` and the mean training responses come from the scan."""

    def __init__(self, path: str = "data/sensorium.zip", scale: float = 0.25, behavior: bool = False,
                 pupil_center: bool = False, batch_size: int = 128, eval_batch_size: int = 1024):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size)
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.path, self.scale, self.behavior, self.pupil_center = path, scale, behavior, pupil_center

    # Read from the scan's metadata and one image, so that linking them into the model does not read every trial.
    @property
    def n_neurons(self) -> int:
        return len(_Scan(self.path).load("meta/neurons/unit_ids.npy"))

    @property
    def in_shape(self) -> list[int]:
        image = _Scan(self.path).load("data/images/0.npy")
        channels = 1 + 3 * self.behavior + 2 * self.pupil_center
        return [channels, *(int(math.floor(side * self.scale)) for side in image.shape[-2:])]

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            raw = read_sensorium_scan(self.path, self.behavior, self.pupil_center)
            data = _normalised(raw, self.scale)
            tiers = raw["tiers"]
            out = {}
            for tier, split in TIERS.items():
                index = torch.from_numpy(np.flatnonzero(tiers == tier))
                if len(index) == 0:
                    raise DataFileError(f"{self.path}: no trial of the {tier!r} tier")
                if split != "test":
                    out[f"images_{split}"] = data["images"][index]
                    out[f"responses_{split}"] = data["responses"][index]
            test = _by_image(data, np.flatnonzero(tiers == "test"), raw["image_ids"])
            out["images_test"], out["responses_test"] = test[:2]
            if "rates" in data:
                out["rates_test"] = test[2]
            self._withheld = bool((raw["responses"][tiers == "test"] == 0).all())
            self._tensors = out
        return self._tensors

    def dataset(self, split: str):
        if split == "test" and self.tensors and self._withheld:  # reading the scan tells whether they were
            raise DataFileError(f"{self.path}: the responses of the test tier are all zero: withheld, as in the "
                                "competition scans; test on a scan whose test responses are public")
        return super().dataset(split)


def _by_image(data: dict[str, torch.Tensor], trials: np.ndarray, image_ids: np.ndarray
              ) -> tuple[torch.Tensor, ...]:
    """The trials grouped by image: images ``[M, C, H, W]`` and responses ``[M, R, n]``, NaN-padded to the largest
    number of repeats R (and the rates ``[M, n]`` of a simulated scan)."""
    ids, inverse = np.unique(image_ids[trials], return_inverse=True)
    repeats = np.bincount(inverse)
    responses = torch.full((len(ids), int(repeats.max()), data["responses"].shape[1]), float("nan"))
    slot = np.zeros(len(ids), dtype=int)
    first = np.zeros(len(ids), dtype=int)
    for trial, image in zip(trials, inverse, strict=True):
        if slot[image] == 0:
            first[image] = trial
        responses[image, slot[image]] = data["responses"][trial]
        slot[image] += 1
    first = torch.from_numpy(first)
    return (data["images"][first], responses) + ((data["rates"][first],) if "rates" in data else ())


def write_simulated_sensorium(path: str | Path, seed: int = 0, n_neurons: int = 100,
                              image_shape: Sequence[int] = (36, 64), n_train: int = 2000, n_val: int = 200,
                              n_test: int = 50, n_repeats: int = 10, images: str = "pink",
                              rate_scale: float = 0.5) -> Path:
    """Write a simulated scan in the Sensorium 2022 layout (module docstring) as a zip: the population of
    ``simulate_v1`` (same arguments), its training and validation images shown once each and its test images
    ``n_repeats`` times, in a random trial order as in the real scans. Behaviour and eye position are random and
    carry no signal. One file is not in the published layout: ``meta/trials/simulated_rates.npy``, the noise-free
    rates of the test trials (NaN elsewhere), from which the test reports the true-rate ceiling. ``path`` is the zip,
    or a folder in which the zip is named like a real scan."""
    arrays = simulate_v1(seed=seed, n_neurons=n_neurons, image_shape=image_shape, n_train=n_train, n_val=n_val,
                         n_test=n_test, n_repeats=n_repeats, images=images, rate_scale=rate_scale)
    rng = np.random.default_rng(seed)
    test_images = np.repeat(arrays["images_test"], n_repeats, axis=0)
    test_responses = arrays["responses_test"].transpose(1, 0, 2).reshape(-1, n_neurons)
    trial_images = np.concatenate([arrays["images_train"], arrays["images_val"], test_images])[:, None]
    trial_responses = np.concatenate([arrays["responses_train"], arrays["responses_val"], test_responses])
    nan = np.full((n_train + n_val, n_neurons), np.nan, dtype=np.float32)  # known for the test images only
    trial_rates = np.concatenate([nan, np.repeat(arrays["rates_test"], n_repeats, axis=0)])
    tiers = np.array(["train"] * n_train + ["validation"] * n_val + ["test"] * (n_test * n_repeats))
    image_ids = np.concatenate([np.arange(n_train + n_val), np.repeat(np.arange(n_test) + n_train + n_val, n_repeats)])
    order = rng.permutation(len(tiers))  # the real scans' trial files are in random order too
    columns = {
        "images": trial_images[order].astype(np.float32),
        "responses": trial_responses[order].astype(np.float32),
        "behavior": np.abs(rng.normal(1.0, 0.3, size=(len(order), 3))).astype(np.float32),
        "pupil_center": rng.normal(0.0, 1.0, size=(len(order), 2)).astype(np.float32),
    }
    tiers, image_ids = tiers[order], image_ids[order]
    path = Path(path)
    if path.suffix != ".zip":  # a folder, made if need be
        path = path / f"static{90000 + seed}-1-1-GrayImageNet-{seed:032x}.zip"
    top = path.name.removesuffix(".zip")
    files = {"meta/trials/tiers.npy": tiers, "meta/trials/frame_image_id.npy": image_ids,
             "meta/trials/trial_idx.npy": np.argsort(order), "meta/neurons/unit_ids.npy": np.arange(1, n_neurons + 1),
             SIMULATED_RATES: trial_rates[order]}
    train = tiers == "train"
    for key, values in columns.items():
        files.update({f"data/{key}/{i}.npy": values[i] for i in range(len(values))})
        stats = values[train].astype(np.float64)
        axis = None if key == "images" else 0
        for name, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max), ("median", np.median)):
            files[f"meta/statistics/{key}/all/{name}.npy"] = np.asarray(fn(stats, axis=axis), dtype=np.float32)
    with atomic_file(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, value in files.items():
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            archive.writestr(f"{top}/{name}", buffer.getvalue())
    return path
