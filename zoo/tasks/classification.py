"""Image classification: cross-entropy on logits, top-1 accuracy per stage."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from zoo.tasks.base import Task


class ClassificationTask(Task):
    """Base for classifiers. Subclasses build ``self`` as a network returning logits [B, num_classes].

    Batches are ``(images, labels)``. Logs ``{stage}/loss`` (cross-entropy; in training plus ``penalty()``) and
    ``{stage}/acc``; the checkpoint keeps the best ``val/acc``. ``in_shape``, ``lr`` and the shape checks are
    ``Task``'s.
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(self, in_shape: Sequence[int], num_classes: int, lr: float | None = None, **shape_checks):
        super().__init__(in_shape, lr, **shape_checks)
        for stage in ("train", "val", "test"):
            metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
            setattr(self, f"{stage}_acc", metric)  # registered as a submodule so it moves with the model

    def _step(self, batch, stage: str):
        images, labels = batch[0], batch[1]
        self.check_images(images)
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        metric = getattr(self, f"{stage}_acc")
        metric(logits, labels)
        self.log(f"{stage}/acc", metric, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, batch_idx):
        return self.training_loss(self._step(batch, "train"), batch_size=len(batch[1]))

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._step(batch, "val"), prog_bar=True, sync_dist=True, batch_size=len(batch[1]))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self._step(batch, "test"), sync_dist=True, batch_size=len(batch[1]))

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).softmax(-1)
