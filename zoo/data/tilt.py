"""Generated gratings labelled by tilt: the orientation-discrimination task of the Neuromatch W1D5 tutorial.

Angles are drawn uniformly in (-90, 90) degrees from vertical; label 1 ("right") if the angle is positive, else 0
("left"). Images are ``bioviz.stimuli.grating(angle, res=res)`` (48 x 64 at the tutorial's res = 0.1).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from bioviz.stimuli import gratings
from zoo.data.loading import TensorBatchDataset, tensor_loader

__all__ = ["TiltGratingsDataModule", "tilt_gratings"]


def tilt_gratings(n: int, seed: int = 0, res: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` gratings at random angles in (-90, 90): (images [n, 1, H, W], labels [n] (1 = right), angles [n])."""
    g = torch.Generator().manual_seed(int(seed))
    angles = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 180
    return gratings(angles.tolist(), res=res), (angles > 0).long(), angles.float()


class TiltGratingsDataModule(pl.LightningDataModule):
    """Train, validation and test sets of tilted gratings, each drawn from its own seed (``seed``, +1, +2).

    Defaults are the tutorial's (1000 training gratings, batches of 100, res 0.1). Batches are ``(images, labels)``.
    Exposes ``in_shape`` for the CLI to link into the model.
    """

    def __init__(self, n_train: int = 1000, n_val: int = 200, n_test: int = 200, seed: int = 0, res: float = 0.1,
                 batch_size: int = 100, eval_batch_size: int = 1000):
        super().__init__()
        if min(n_train, n_val, n_test) < 1:
            raise ValueError("n_train, n_val and n_test must be >= 1")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.seed, self.res = seed, res
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self._sets: dict[str, tuple[torch.Tensor, ...]] = {}

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, labels, angles) of ``name`` in train/val/test, made once."""
        if name not in self._sets:
            offset = ("train", "val", "test").index(name)
            self._sets[name] = tilt_gratings(self.sizes[name], seed=self.seed + offset, res=self.res)
        return self._sets[name]

    @property
    def in_shape(self) -> list[int]:
        return list(gratings([0.0], res=self.res).shape[1:])

    def _loader(self, name: str, train: bool):
        images, labels, _ = self.split(name)
        size = self.batch_size if train else self.eval_batch_size
        return tensor_loader(TensorBatchDataset(images, labels), size, train=train, trainer=self.trainer)

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)

    def predict_dataloader(self):
        return tensor_loader(TensorBatchDataset(self.split("test")[0]), self.eval_batch_size, train=False,
                             trainer=self.trainer)
