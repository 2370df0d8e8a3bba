"""The Neuromatch W1D5 models of mouse V1 (Stringer et al. 2021 data): a convolutional encoding model fitted to the
responses, and the orientation-discrimination CNN (the normative model) trained on tilted gratings.

Both start from the tutorial's filter bank, ``bioviz.stimuli.filters()``: a center-surround filter, its negative and
four Gabors (0/45/90/135 degrees), conv bias 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bioviz.stimuli import filters
from zoo.tasks import ClassificationTask, ResponseTask

__all__ = ["StringerConvFC", "TiltCNN"]


def filter_conv(out_channels: int, kernel_size: int, init_filters: bool) -> nn.Conv2d:
    """Conv 1 -> ``out_channels``, 'same' padding, initialised from ``filters()`` with bias 0 (as the tutorial)."""
    conv = nn.Conv2d(1, out_channels, kernel_size, padding=kernel_size // 2)
    if init_filters:
        with torch.no_grad():
            conv.weight.copy_(filters(out_channels, kernel_size))
            conv.bias.zero_()
    return conv


OPTIMIZERS = ("sgd", "adam")


def _check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)} (or give the CLI --optimizer)")


def _optimizer(module: nn.Module, name: str, lr: float, momentum: float):
    _check_optimizer(name)
    if name == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    return torch.optim.Adam(module.parameters(), lr=lr)


class StringerConvFC(ResponseTask):
    """The tutorial's ConvFC encoding model: conv (``filters()`` init, no nonlinearity) -> flatten -> linear.

    Loss, as the tutorial's ``regularized_MSE_loss``: ``nn.MSELoss()`` (mean over stimuli *and* neurons; not
    ``ResponseTask``'s "mse", which sums over neurons) + ``l2_penalty`` * sum of squared output weights +
    ``l1_penalty`` * sum of absolute output weights (the output layer's weight only, not its bias or the conv).
    ``train/data_loss``, ``val/loss`` and ``test/loss`` are that MSE without the penalties. Optimiser: SGD with
    momentum, lr 2; with the full-batch data loader one epoch is one of the tutorial's iterations (it runs 200). The
    output weights start as N(0, 0.01^2), as there. ``n_neurons`` and ``in_shape`` come from the data (linked by the
    CLI); fitted with a DataModule, the output bias starts at each neuron's mean training response
    (``ResponseTask.setup``; the tutorial leaves PyTorch's default, U(-0.03, 0.03) for 1152 inputs; the responses
    are z-scored, so both are near 0).

    Scale: the data term averages over neurons but the penalties sum over them, so what the tutorial's numbers do to
    each neuron's fit depends on the population size (the real file has about 20,000 neurons): the gradient on one
    neuron's weights is its own squared-error gradient / n_neurons plus the full penalty gradient. With
    ``reference_neurons`` = N, each neuron of this population gets the step size and penalty balance it would get in a
    population of N neurons: the penalties are multiplied by N / n_neurons and the SGD learning rate by n_neurons / N
    (for SGD exactly equivalent to dividing the data term by N instead of n_neurons; Adam, being invariant to the
    gradient scale, gets only the penalty factor). ``None`` (default) is the tutorial's loss as written.
    """

    def __init__(
        self,
        n_neurons: int,
        in_shape: Sequence[int] = (1, 12, 16),
        out_channels: int = 6,
        kernel_size: int = 7,
        init_filters: bool = True,
        l2_penalty: float = 5e-4,
        l1_penalty: float = 1e-6,
        optimizer: str = "sgd",
        lr: float = 2.0,
        momentum: float = 0.9,
        reference_neurons: int | None = None,
    ):
        # "mean_mse": the tutorial's nn.MSELoss averages over neurons too ("mse" sums over them).
        super().__init__(in_shape, n_neurons, loss="mean_mse", channels=1)
        self.save_hyperparameters()
        _check_optimizer(optimizer)
        self.conv = filter_conv(out_channels, kernel_size, init_filters)
        self.out_layer = nn.Linear(out_channels * self.in_shape[1] * self.in_shape[2], n_neurons)
        nn.init.normal_(self.out_layer.weight, std=0.01)
        if reference_neurons is not None and reference_neurons < 1:
            raise ValueError(f"reference_neurons must be >= 1 or None, got {reference_neurons}")
        self.scale = 1.0 if reference_neurons is None else reference_neurons / n_neurons

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.conv(images).flatten(1))

    def initialize_bias(self, mean_responses: torch.Tensor) -> None:
        self.out_layer.bias.copy_(mean_responses)

    def penalty(self) -> torch.Tensor:
        w = self.out_layer.weight
        return self.scale * (self.hparams.l2_penalty * w.square().sum() + self.hparams.l1_penalty * w.abs().sum())

    def configure_optimizers(self):
        lr = self.hparams.lr / self.scale if self.hparams.optimizer == "sgd" else self.hparams.lr
        return _optimizer(self, self.hparams.optimizer, lr, self.hparams.momentum)


class TiltCNN(ClassificationTask):
    """The tutorial's orientation-discrimination CNN: conv (``filters()`` init) -> ReLU -> max-pool ``pool`` ->
    fc (``hidden`` units) -> ReLU -> one logit, the evidence that the grating is tilted right.

    The tutorial puts a sigmoid on that logit and trains with ``nn.BCELoss``. Here ``forward`` returns the two-class
    logits ``[0, logit]``: softmax of those is ``[1 - sigmoid(logit), sigmoid(logit)]``, so the cross-entropy of
    ``ClassificationTask`` equals the tutorial's binary cross-entropy exactly, and ``val/acc``/``test/acc`` and the
    best-checkpoint logic come with it. ``logit()`` gives the single output. Optimiser: the tutorial's SGD, lr 5e-4,
    momentum 0.99 (with batches of 100 for 25 epochs). ``in_shape`` comes from the data.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 48, 64),
        out_channels: int = 6,
        kernel_size: int = 7,
        init_filters: bool = True,
        pool: int = 8,
        hidden: int = 10,
        optimizer: str = "sgd",
        lr: float = 5e-4,
        momentum: float = 0.99,
    ):
        super().__init__(in_shape, num_classes=2, channels=1, min_size=pool)
        self.save_hyperparameters()
        _check_optimizer(optimizer)
        self.conv = filter_conv(out_channels, kernel_size, init_filters)
        self.pool = nn.MaxPool2d(pool)
        self.fc = nn.Linear(out_channels * (self.in_shape[1] // pool) * (self.in_shape[2] // pool), hidden)
        self.out = nn.Linear(hidden, 1)

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each layer's response to ``images``, flattened to [B, units]: ``conv`` (after the ReLU), ``pool``, ``fc``
        (after the ReLU) and ``logit``; what the tutorial compares with the V1 population (e.g. by RDMs)."""
        conv = F.relu(self.conv(images))
        pool = self.pool(conv)
        fc = F.relu(self.fc(pool.flatten(1)))
        logit = self.out(fc)
        return {"conv": conv.flatten(1), "pool": pool.flatten(1), "fc": fc, "logit": logit}

    def logit(self, images: torch.Tensor) -> torch.Tensor:
        """[B]: log-odds that each grating is tilted right."""
        return self.representations(images)["logit"].squeeze(-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.logit(images)
        return torch.stack([torch.zeros_like(z), z], dim=-1)

    def configure_optimizers(self):
        return _optimizer(self, self.hparams.optimizer, self.hparams.lr, self.hparams.momentum)
