"""Fast loaders over in-memory tensors, deterministic per epoch and exact under DDP.

A batch is taken by one fancy-indexing call per tensor (``__getitems__``) instead of indexing and collating samples
one by one. Training shuffles with a ``DistributedSampler`` seeded by the global seed and reseeded each epoch by
Lightning's ``set_epoch``, so a resumed run sees the same batches as an uninterrupted one. Evaluation shards the data
across ranks without the padding ``DistributedSampler`` adds, so every sample is counted exactly once.
"""

from __future__ import annotations

import math
import os

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["TensorBatchDataset", "EvalShardSampler", "TensorSplitsDataModule", "tensor_loader"]


class TensorBatchDataset(Dataset):
    """Tensors indexed together along their first dimension."""

    def __init__(self, *tensors: torch.Tensor):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError(f"tensors must share their first dimension, got {[tuple(t.shape) for t in tensors]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t.index_select(0, index) for t in self.tensors)  # ~10x faster than t[index] for uint8 images


def _batch_is_ready(batch):
    """collate_fn: ``__getitems__`` already returns the batch."""
    return batch


class EvalShardSampler(DistributedSampler):
    """Rank r of w gets samples r, r + w, r + 2w, ...: no sample twice, none padded in."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return math.ceil(max(len(self.dataset) - self.rank, 0) / self.num_replicas)


def tensor_loader(dataset: TensorBatchDataset, batch_size: int, train: bool, trainer=None) -> DataLoader:
    """A DataLoader over ``dataset``; ``trainer`` (the DataModule's, if attached) gives the DDP rank and size."""
    world = trainer.world_size if trainer is not None else 1
    rank = trainer.global_rank if trainer is not None else 0
    if train:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    else:
        sampler = EvalShardSampler(dataset, num_replicas=world, rank=rank)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=_batch_is_ready)


class TensorSplitsDataModule(pl.LightningDataModule):
    """A DataModule whose splits are in-memory ``TensorBatchDataset``s: subclasses implement ``dataset(split)``
    ("train", "val" or "test"); training batches of ``batch_size`` are shuffled, evaluation batches of
    ``eval_batch_size`` are not (``tensor_loader``). Prediction runs over the test split."""

    def __init__(self, batch_size: int, eval_batch_size: int):
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size

    def dataset(self, split: str) -> TensorBatchDataset:
        raise NotImplementedError

    def __str__(self) -> str:
        # Lightning's describes every loader, which loads (or simulates) the data; the CLI prints a DataModule when
        # it skips a link (e.g. num_classes for response data), which must not cost that.
        return f"{type(self).__name__}(batch_size={self.batch_size}, eval_batch_size={self.eval_batch_size})"

    def train_dataloader(self):
        return tensor_loader(self.dataset("train"), self.batch_size, train=True, trainer=self.trainer)

    def val_dataloader(self):
        return tensor_loader(self.dataset("val"), self.eval_batch_size, train=False, trainer=self.trainer)

    def test_dataloader(self):
        return tensor_loader(self.dataset("test"), self.eval_batch_size, train=False, trainer=self.trainer)

    def predict_dataloader(self):
        return self.test_dataloader()
