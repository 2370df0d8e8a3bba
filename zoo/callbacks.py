"""Training-schedule callbacks of the paper models."""

from __future__ import annotations

import copy
import itertools
import math
import os
import random

import lightning.pytorch as pl
import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

__all__ = ["ChannelsLast", "PlateauSchedule", "PreciseBatchNorm", "StepSeed"]


def _cpu_copy(state):
    """A deep copy of a (nested) state dict with every tensor cloned to the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _cpu_copy(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(value) for value in state)
    return copy.deepcopy(state)


class PlateauSchedule(pl.Callback):
    """The schedule of Ecker et al. 2019: validate every ``val_steps`` training steps; when ``monitor`` (the
    validation Poisson loss by default) has not improved for ``patience`` validations, restore the best weights (and
    the optimiser state of that moment), divide the learning rate by ``factor`` and start counting again; stop after
    the ``lr_decay_steps``-th such plateau, with the best weights in the model.

    The callback sets the trainer to validate every ``val_steps`` steps (``val_check_interval = val_steps``,
    ``check_val_every_n_epoch = None``), across epoch boundaries. Its state (best score and weights, counters) is
    saved in checkpoints, so a resumed run continues the schedule where it was.
    """

    def __init__(self, val_steps: int = 50, patience: int = 5, lr_decay_steps: int = 2, factor: float = 10.0,
                 monitor: str = "val/loss", mode: str = "min"):
        if val_steps < 1 or patience < 1 or lr_decay_steps < 1:
            raise ValueError(f"val_steps, patience and lr_decay_steps must be >= 1, got {val_steps}, {patience}, "
                             f"{lr_decay_steps}")
        if factor <= 1:
            raise ValueError(f"factor divides the learning rate and must be > 1, got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.val_steps, self.patience, self.lr_decay_steps = val_steps, patience, lr_decay_steps
        self.factor, self.monitor, self.mode = factor, monitor, mode
        self.best_score = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.decays = 0
        self.best_state: dict | None = None
        self.best_optimizer_states: list | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            trainer.val_check_interval = self.val_steps
            trainer.check_val_every_n_epoch = None

    def _improved(self, score: float) -> bool:
        return score < self.best_score if self.mode == "min" else score > self.best_score

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self.monitor not in trainer.callback_metrics:
            raise KeyError(f"PlateauSchedule monitors {self.monitor!r}, which the model does not log; logged: "
                           f"{sorted(trainer.callback_metrics)}")
        score = float(trainer.callback_metrics[self.monitor])
        if self._improved(score):
            self.best_score, self.wait = score, 0
            self.best_state = _cpu_copy(pl_module.state_dict())
            self.best_optimizer_states = [_cpu_copy(opt.state_dict()) for opt in trainer.optimizers]
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.wait = 0
        self.decays += 1
        lrs = [[group["lr"] / self.factor for group in opt.param_groups] for opt in trainer.optimizers]
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)
            for opt, state in zip(trainer.optimizers, self.best_optimizer_states, strict=True):
                opt.load_state_dict(state)
        for opt, group_lrs in zip(trainer.optimizers, lrs, strict=True):
            for group, lr in zip(opt.param_groups, group_lrs, strict=True):
                group["lr"] = lr
        if self.decays >= self.lr_decay_steps:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "wait": self.wait, "decays": self.decays,
                "best_state": self.best_state, "best_optimizer_states": self.best_optimizer_states}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_score, self.wait, self.decays = state_dict["best_score"], state_dict["wait"], state_dict["decays"]
        self.best_state = state_dict["best_state"]
        self.best_optimizer_states = state_dict["best_optimizer_states"]


class PreciseBatchNorm(pl.Callback):
    """Before every validation of a fit, recompute each batch-norm layer's running mean and variance from the
    current weights: an equal-weight average over up to ``max_batches`` training batches (all by default), in
    training mode without gradients, by ``torch.optim.swa_utils.update_bn`` ("precise BN", Wu & Johnson 2021).
    Under DDP each rank uses its own shard and the statistics are averaged across ranks.

    Why: the running statistics are an exponential average over the last ~1/momentum steps, taken with older
    weights. When the weights move fast (the paper models' Adam at lr 2e-3) they lag, and a checkpoint's eval-mode
    predictions are mis-scaled (RotEquiV1 on the simulated population: BENCHMARKS.md, "RotEquiV1 science check", and
    its history in docs/notes/rotequi_science_check.md), so the loss-monitored schedule and the best checkpoint
    follow the lag, not the model. The checkpoints written after a validation keep the recomputed statistics, so
    ``test`` uses them too. Training itself is unchanged (it uses batch statistics).

    The first element of a training batch is the model input (``model(batch[0])``, moved to the model's device), as
    for every task here.
    """

    def __init__(self, max_batches: int | None = None):
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None (all training batches), got {max_batches}")
        self.max_batches = max_batches

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        norms = [m for m in pl_module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if not norms:
            return
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            raise TypeError(f"PreciseBatchNorm needs one training DataLoader, got {type(loader).__name__}; "
                            "remove the callback or return a single DataLoader from train_dataloader()")
        if loader.persistent_workers:  # a second iteration would reset the epoch's running iterator
            raise ValueError("PreciseBatchNorm cannot read a training DataLoader with persistent_workers=True "
                             "mid-epoch; set persistent_workers=False or remove the callback")
        update_bn(itertools.islice(loader, self.max_batches), pl_module, device=pl_module.device)
        if trainer.world_size > 1:
            for m in norms:
                m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))


class StepSeed(pl.Callback):
    """Before every training step, seed torch (CPU and CUDA), numpy and Python's ``random`` from (the run's seed, the
    step, the process rank). The randomness of a step (dropout masks, noise layers) then depends on nothing but its
    number, so a run resumed from any checkpoint, even one written mid-epoch, draws what an uninterrupted run draws,
    and each DDP process draws its own. The run's seed is ``seed_everything``'s (``PL_GLOBAL_SEED``), else 0.
    ``bioviz fit`` adds this callback; data order and augmentation are seeded by the data modules the same way.
    """

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        base = int(os.environ.get("PL_GLOBAL_SEED") or 0)
        state = np.random.SeedSequence([base, trainer.global_step, trainer.global_rank]).generate_state(2)
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))
        np.random.seed(int(state[0]))
        random.seed(int(state[1]))


class ChannelsLast(pl.Callback):
    """Store the model's 4-D parameters and buffers (convolution kernels, fixed filter banks) in
    ``torch.channels_last`` memory format, so convolutions run in NHWC layout, which oneDNN (CPU) and cuDNN (GPU)
    compute faster than NCHW for some models. The values are the same, and so are the checkpoint's keys: a checkpoint
    loads into a model in either layout (a resumed run is converted again). Whether it pays depends on the model and
    the processor (``bench/precision.py``); ``bioviz fit --channels_last true`` adds this callback."""

    def setup(self, trainer, pl_module, stage):
        pl_module.to(memory_format=torch.channels_last)
