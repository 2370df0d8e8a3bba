"""Image classification: cross-entropy on logits, top-1 accuracy per stage."""

from __future__ import annotations

import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from zoo.tasks.base import Task


class ClassificationTask(Task):
    """Base for classifiers. Subclasses build ``self`` as a network returning logits [B, num_classes].

    Batches are ``(images, labels)``. Logs ``{stage}/loss`` and ``{stage}/acc``; the checkpoint keeps the best
    ``val/acc``.
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(self, num_classes: int):
        super().__init__()
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
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", sync_dist=stage != "train",
                 batch_size=len(labels))
        self.log(f"{stage}/acc", metric, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).softmax(-1)
