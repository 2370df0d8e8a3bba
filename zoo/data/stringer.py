"""The Stringer et al. (2021) mouse V1 grating data of the Neuromatch W1D5 tutorial, and a simulated population in
the same layout.

The file ``W3D4_stringer_oribinned6_split.npz`` (OSF p3aeb) holds

============  ============  ==========================================================================
key           shape         meaning
============  ============  ==========================================================================
resp_train    [S, n]        responses averaged over one half of the trials in each orientation bin
resp_test     [S, n]        the same bins, averaged over the other (held-out) half of the trials
stimuli       [S] or [S, 1] mean grating orientation of the trials in each bin, degrees
============  ============  ==========================================================================

with S = 60 bins of 6 degrees and n ~ 20,000 neurons, responses z-scored over trials. Other keys are ignored, except
``true_tuning`` ([S, n], the noise-free tuning curves of a simulated population), used as the test set's known rates.

Splits: there are only the S stimuli and two halves of the trials. As in the tutorial, the model trains on
``resp_train`` and is tested on ``resp_test`` for the same S gratings (held-out trials, not held-out stimuli). There
is no third set of trials for validation, so validation uses ``resp_train`` by default (``validate_on="train"``:
``val/*`` then shows the fit to the training data, and the "best" checkpoint is chosen without looking at the test
half); ``validate_on="test"`` reproduces the tutorial's test-loss curve during training, at the price of choosing
checkpoints on the test data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from bioviz.stimuli import gratings
from zoo.data.loading import tensor_loader
from zoo.data.npz import check_values, read_npz, write_npz
from zoo.data.responses import ResponseDataModule
from zoo.errors import DataFileError, DataNotFoundError
from zoo.files import download

__all__ = [
    "STRINGER_FILE",
    "STRINGER_MD5",
    "STRINGER_URL",
    "SimulatedStringerDataModule",
    "StringerDataModule",
    "load_stringer_file",
    "simulate_stringer",
    "validate_stringer_arrays",
    "write_simulated_stringer",
]

STRINGER_FILE = "W3D4_stringer_oribinned6_split.npz"
STRINGER_URL = "https://osf.io/p3aeb/download"
STRINGER_MD5 = "b3f7245c6221234a676b71a1f43c3bb5"
REQUIRED_KEYS = ("resp_train", "resp_test", "stimuli")


def validate_stringer_arrays(arrays: dict[str, np.ndarray], source: str = "the data") -> None:
    """Check keys, dtypes, shapes and finiteness of the Stringer layout; one error lists every problem."""
    problems, numeric = check_values(arrays, REQUIRED_KEYS, ("true_tuning",))
    shapes = {key: tuple(arrays[key].shape) for key in numeric}
    matrices = [key for key in ("resp_train", "resp_test", "true_tuning") if key in shapes]
    for key in matrices:
        if len(shapes[key]) != 2:
            problems.append(f"{key} has shape {list(shapes[key])}; expected [stimuli, neurons]")
    good = {key: shapes[key] for key in matrices if len(shapes[key]) == 2}
    if len(set(good.values())) > 1:
        problems.append(f"response shapes differ: {', '.join(f'{k} {list(v)}' for k, v in good.items())}; "
                        "each needs one row per orientation bin and one column per neuron")
    if "stimuli" in shapes:
        shape = shapes["stimuli"]
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            problems.append(f"stimuli has shape {list(shape)}; expected [stimuli] or [stimuli, 1] (degrees)")
        elif "resp_train" in good and shape[0] != good["resp_train"][0]:
            problems.append(f"stimuli has {shape[0]} orientations but resp_train has {good['resp_train'][0]} rows")
        elif shape[0] < 1:
            problems.append("stimuli is empty")
    if problems:
        raise DataFileError(f"{source} is not a valid Stringer orientation file:\n  - " + "\n  - ".join(problems)
                            + "\nThe layout is described in the docstring of zoo.data.stringer.")


def load_stringer_file(path: str | Path) -> dict[str, np.ndarray]:
    """Read and validate a file in the Stringer layout; ``stimuli`` comes back flat, [S]."""
    arrays = read_npz(path, f"Stringer orientation file at {path}. Give the path of a file in that layout, "
                      f"or write a simulated one with: bioviz simulate-stringer {path}")
    validate_stringer_arrays(arrays, source=str(path))
    arrays["stimuli"] = arrays["stimuli"].reshape(-1)
    return arrays


def simulate_stringer(
    seed: int = 0,
    n_neurons: int = 1000,
    n_bins: int = 60,
    trials_per_bin: int = 64,
    noise_sd: float = 2.0,
    min_amplitude: float = 0.2,
    max_amplitude: float = 1.5,
) -> dict[str, np.ndarray]:
    """An orientation-tuned population in the Stringer layout, deterministic in ``seed``.

    Each trial shows a grating at an angle drawn uniformly in its 360/``n_bins``-degree bin of [0, 360). Neuron i
    has a von Mises tuning curve over orientation (period 180 degrees, as the grating images repeat every 180),
    ``a_i exp(k_i (cos 2(theta - p_i) - 1))`` with preferred orientation p_i uniform in [0, 180), width k_i uniform in
    [1, 4] and amplitude a_i uniform in [``min_amplitude``, ``max_amplitude``], plus independent Gaussian trial noise
    of SD ``noise_sd``. As in the real data, single trials are z-scored per neuron, then even and odd trials of each
    bin are averaged into ``resp_train`` and ``resp_test``; ``stimuli`` is each bin's mean angle.

    Ground truth: ``true_tuning`` [S, n] (the noise-free curve at each bin's mean angle, in the same z-scored units),
    ``true_preferred`` (degrees), ``true_kappa``, ``true_amplitude``.
    """
    if n_neurons < 1 or n_bins < 2 or trials_per_bin < 2:
        raise ValueError("n_neurons must be >= 1, n_bins >= 2 and trials_per_bin >= 2 (two halves of the trials)")
    g = torch.Generator().manual_seed(int(seed))

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)

    width = 360.0 / n_bins
    angles = (torch.arange(n_bins, dtype=torch.float64)[:, None] + uniform(0, 1, n_bins, trials_per_bin)) * width
    preferred, kappa = uniform(0, 180, n_neurons), uniform(1, 4, n_neurons)
    amplitude = uniform(min_amplitude, max_amplitude, n_neurons)

    def tuning(theta):  # theta [...]: degrees -> [..., n]
        delta = torch.deg2rad(2 * (theta[..., None] - preferred))
        return amplitude * torch.exp(kappa * (torch.cos(delta) - 1))

    trials = tuning(angles) + noise_sd * torch.randn(n_bins, trials_per_bin, n_neurons, generator=g,
                                                     dtype=torch.float64)
    mean, sd = trials.mean((0, 1)), trials.std((0, 1))
    z = (trials - mean) / sd
    stimuli = angles.mean(1)

    def as32(t):
        return t.numpy().astype(np.float32)

    return {
        "resp_train": as32(z[:, 0::2].mean(1)),
        "resp_test": as32(z[:, 1::2].mean(1)),
        "stimuli": as32(stimuli[:, None]),
        "true_tuning": as32((tuning(stimuli) - mean) / sd),
        "true_preferred": as32(preferred),
        "true_kappa": as32(kappa),
        "true_amplitude": as32(amplitude),
    }


def write_simulated_stringer(path: str | Path, **simulation) -> Path:
    """Write ``simulate_stringer(**simulation)`` to ``path``; the file appears only when complete."""
    return write_npz(path, simulate_stringer(**simulation))


class StringerDataModule(ResponseDataModule):
    """Gratings in, binned V1 responses out: the data of the Neuromatch W1D5 encoding model.

    The file is ``root/W3D4_stringer_oribinned6_split.npz``; with ``download=True`` and no file there it is fetched
    from ``url`` (OSF) and kept only if its md5 is ``md5``. ``path`` reads any file in the same layout instead (no
    download). Each orientation bin's image is ``bioviz.stimuli.grating(stimuli[k], res=res)`` (12 x 16 at the default
    0.025, the tutorial's), with the tutorial's values (+-0.5), not z-scored; responses are used as stored (already
    z-scored). Splits: see the module docstring (train on ``resp_train``, test on ``resp_test``, validate on
    ``validate_on``). ``batch_size=None`` trains full-batch, as the tutorial does.

    A file already in ``root`` is used as it is (its layout is validated, its md5 is checked only after a download).
    The data are loaded on first use, which under the CLI is when the model is built, in every process: under DDP
    download once beforehand (one process), then start the multi-process run. The bins span 0-360 degrees but a
    grating and its 180-degree rotation are the same image, so no image-computable model can fit direction
    preference, only orientation preference (as in the tutorial).
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        path: str | None = None,
        res: float = 0.025,
        validate_on: str = "train",
        batch_size: int | None = None,
        eval_batch_size: int = 1024,
        url: str = STRINGER_URL,
        md5: str = STRINGER_MD5,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size)
        if validate_on not in ("train", "test"):
            raise ValueError(f"validate_on must be 'train' or 'test', got {validate_on!r}")
        self.root, self.download, self.res, self.validate_on = Path(root), download, res, validate_on
        self.path = Path(path) if path is not None else None
        self.url, self.md5 = url, md5

    def file(self) -> Path:
        """The file to read, downloading it first if asked to and it is not there yet."""
        if self.path is not None:
            return self.path
        target = self.root / STRINGER_FILE
        if not target.is_file():
            if not self.download:
                raise DataNotFoundError(
                    f"no {STRINGER_FILE} in {self.root}. Download it with --data.init_args.download true (from "
                    f"{self.url}, md5-checked), or give a file of the same layout with --data.init_args.path"
                )
            print(f"downloading {self.url} -> {target}", file=sys.stderr)
            download(self.url, target, "md5", self.md5)
        return target

    def load_arrays(self) -> dict[str, np.ndarray]:
        return load_stringer_file(self.file())

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            arrays = self.load_arrays()
            images = gratings(arrays["stimuli"].tolist(), res=self.res)

            def tensor(key):
                return torch.from_numpy(np.ascontiguousarray(arrays[key], dtype=np.float32))

            train, test = tensor("resp_train"), tensor("resp_test")
            t = {"images_train": images, "responses_train": train, "images_val": images,
                 "responses_val": train if self.validate_on == "train" else test,
                 "images_test": images, "responses_test": test,
                 "stimuli": torch.from_numpy(np.asarray(arrays["stimuli"], dtype=np.float32))}
            if "true_tuning" in arrays:
                t["rates_test"] = tensor("true_tuning")
            self._tensors = t
        return self._tensors

    @property
    def stimuli(self) -> torch.Tensor:
        """Orientation of each bin, degrees (the rows of the responses)."""
        return self.tensors["stimuli"]

    def train_dataloader(self):
        dataset = self.dataset("train")
        return tensor_loader(dataset, self.batch_size or len(dataset), train=True, trainer=self.trainer)


class SimulatedStringerDataModule(StringerDataModule):
    """The population of ``simulate_stringer`` (arguments as there), made in memory: no file, no network.

    The test set carries the noise-free tuning curves, so ``test/oracle_true`` says how well a perfect model could
    correlate with the held-out half of the trials.
    """

    def __init__(
        self,
        seed: int = 0,
        n_neurons: int = 1000,
        n_bins: int = 60,
        trials_per_bin: int = 64,
        noise_sd: float = 2.0,
        min_amplitude: float = 0.2,
        max_amplitude: float = 1.5,
        res: float = 0.025,
        validate_on: str = "train",
        batch_size: int | None = None,
        eval_batch_size: int = 1024,
    ):
        super().__init__(res=res, validate_on=validate_on, batch_size=batch_size, eval_batch_size=eval_batch_size)
        self.simulation = dict(seed=seed, n_neurons=n_neurons, n_bins=n_bins, trials_per_bin=trials_per_bin,
                               noise_sd=noise_sd, min_amplitude=min_amplitude, max_amplitude=max_amplitude)

    def load_arrays(self) -> dict[str, np.ndarray]:
        arrays = simulate_stringer(**self.simulation)
        validate_stringer_arrays(arrays, source="the simulated population")
        arrays["stimuli"] = arrays["stimuli"].reshape(-1)
        return arrays
