"""Training and measuring data of self-organising orientation maps (LISSOM).

Training images are made on the fly: each has ``n_blobs`` elongated Gaussians at random positions and orientations
(``bioviz.stimuli.random_gaussian_blobs``). Image ``i`` of epoch ``e`` is drawn from its own seed, derived from
``(seed, e * epoch_images + i)``, so a resumed run sees exactly the images an uninterrupted one would, and DDP
processes see different images (process ``r`` of ``w`` takes images ``r, r + w, ...``).

Validation (and test) data are full-field sine gratings at ``map_orientations`` x ``map_phases`` x
``map_frequencies``, as batches ``(images, orientation, phase, frequency)``, from which the model measures its
orientation map. Every process gets all of them (the map needs every unit's whole tuning curve).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bioviz.stimuli import random_gaussian_blobs, sine_gratings
from zoo.data.loading import EvalShardSampler, TensorBatchDataset, tensor_loader

__all__ = ["LissomDataModule", "BlobImages", "EpochSampler", "map_gratings"]


class BlobImages(Dataset):
    """Image ``i``: ``n_blobs`` oriented Gaussians drawn from seed ``(seed, i)``; indices are unbounded (the
    length is one epoch's worth, the sampler adds the epoch offset)."""

    def __init__(self, epoch_images: int, size: int, n_blobs: int, sigma: Sequence[float], margin: float, seed: int,
                 min_separation: float = 0.0, scale: float = 1.0):
        self.epoch_images, self.size, self.n_blobs = epoch_images, size, n_blobs
        self.sigma, self.margin, self.seed, self.min_separation = tuple(sigma), margin, seed, min_separation
        self.scale = scale

    def __len__(self) -> int:
        return self.epoch_images

    def image(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        return random_gaussian_blobs(1, (self.size, self.size), self.n_blobs, self.sigma, self.margin, seed=g,
                                     min_separation=self.min_separation, scale=self.scale)[0]

    def __getitems__(self, indices):
        return (torch.stack([self.image(i) for i in indices]),)

    def __getitem__(self, index):
        return (self.image(index),)


class EpochSampler(DistributedSampler):
    """Process ``rank`` of ``num_replicas`` takes indices ``epoch * len + rank + k * num_replicas``: new images each
    epoch (Lightning calls ``set_epoch``), none shared between processes."""

    def __iter__(self):
        base = self.epoch * len(self.dataset)
        return iter(range(base + self.rank, base + len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def map_gratings(size: int, orientations: int = 16, phases: int = 8, frequencies: Sequence[float] = (0.1,),
                 contrast: float = 1.0) -> tuple[torch.Tensor, ...]:
    """Sine gratings for orientation maps: (images [n, 1, size, size], orientation, phase, frequency), each [n]."""
    parts = []
    for f in frequencies:
        images, ori, pha = sine_gratings((size, size), orientations, phases, float(f), contrast=contrast)
        parts.append((images, ori.repeat_interleave(len(pha)), pha.repeat(len(ori)),
                      torch.full((len(images),), float(f))))
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


def _single(batch):
    return batch


class LissomDataModule(pl.LightningDataModule):
    """LISSOM's training stimuli (two elongated Gaussians per ``image_size`` x ``image_size`` image, sigma
    ``blob_sigma`` = (across, along) pixels) and the gratings its orientation map is measured with.

    ``steps_per_epoch`` training batches of ``batch_size`` per process make an epoch (validation runs after each).
    ``blob_min_separation`` (pixels) keeps an image's blob centres apart (Topographica's ``SeparatedComposite``:
    2.2 afferent radii for the book's maps). ``blob_scale`` is the blobs' peak brightness (the input contrast).
    Exposes ``in_shape`` for the CLI to link into the model.
    """

    def __init__(self, image_size: int = 36, n_blobs: int = 2, blob_sigma: Sequence[float] = (0.75, 2.5),
                 margin: float = 0.0, steps_per_epoch: int = 1000, batch_size: int = 1, seed: int = 0,
                 map_orientations: int = 16, map_phases: int = 8, map_frequencies: Sequence[float] = (0.1,),
                 map_contrast: float = 1.0, eval_batch_size: int = 16, blob_min_separation: float = 0.0,
                 blob_scale: float = 1.0):
        super().__init__()
        if image_size < 4 or n_blobs < 1 or steps_per_epoch < 1 or batch_size < 1:
            raise ValueError(f"need image_size >= 4, n_blobs, steps_per_epoch and batch_size >= 1; got {image_size}, "
                             f"{n_blobs}, {steps_per_epoch}, {batch_size}")
        if len(blob_sigma) != 2 or min(blob_sigma) <= 0:
            raise ValueError(f"blob_sigma must be two positive widths (across, along), got {list(blob_sigma)}")
        if not 0 <= blob_min_separation < image_size:
            raise ValueError(f"blob_min_separation must be in [0, image_size = {image_size}) pixels, got "
                             f"{blob_min_separation}")
        if blob_scale <= 0:
            raise ValueError(f"blob_scale (the blobs' peak brightness) must be > 0, got {blob_scale}")
        self.blob_min_separation, self.blob_scale = blob_min_separation, blob_scale
        self.image_size, self.n_blobs, self.blob_sigma, self.margin = image_size, n_blobs, blob_sigma, margin
        self.steps_per_epoch, self.batch_size, self.seed = steps_per_epoch, batch_size, seed
        self.map_args = (map_orientations, map_phases, list(map_frequencies), map_contrast)
        self.eval_batch_size = eval_batch_size

    @property
    def in_shape(self) -> list[int]:
        return [1, self.image_size, self.image_size]

    def train_dataloader(self):
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        dataset = BlobImages(self.steps_per_epoch * self.batch_size * world, self.image_size, self.n_blobs,
                             self.blob_sigma, self.margin, self.seed, self.blob_min_separation, self.blob_scale)
        sampler = EpochSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=_single)

    def _gratings(self):
        data = TensorBatchDataset(*map_gratings(self.image_size, *self.map_args))
        # Not sharded: every process measures the whole map (a sampler Lightning does not replace).
        return DataLoader(data, batch_size=self.eval_batch_size, sampler=EvalShardSampler(data), collate_fn=_single)

    def val_dataloader(self):
        return self._gratings()

    def test_dataloader(self):
        return self._gratings()

    def predict_dataloader(self):
        data = TensorBatchDataset(map_gratings(self.image_size, *self.map_args)[0])
        return tensor_loader(data, self.eval_batch_size, train=False, trainer=self.trainer)
