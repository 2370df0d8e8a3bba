"""Anatomical-bottleneck classifier of Lindsey, Ocko, Ganguli & Deny (ICLR 2019): a retina with a narrow output
(the optic nerve, ``n_bn`` channels) feeding a ventral visual stream (VVS) of ``d_vvs`` convolutions, trained on
grayscale CIFAR-10.

    input -> [noise] -> retina: conv 9x9 (32) -> ReLU -> conv 9x9 (n_bn) -> ReLU -> [noise]   (the bottleneck)
          -> VVS: d_vvs x (conv 9x9 (32) -> ReLU) -> flatten -> Dense 1024 -> ReLU -> Dense 10 (logits)

All convolutions are 'same', stride 1, with bias, Glorot-uniform weights and zero biases (Keras' defaults, as in
the reference code); no pooling, batch norm or dropout. With ``d_vvs = 0`` the dense layer reads the bottleneck
(``n_bn x H x W``). The original notebook's bugs are not repeated: the loss is cross-entropy on logits (the
notebook took ``nll_loss`` of a softmax), the input is grayscale (``in_shape`` [1, 32, 32] from the data), the
optimiser is RMSprop lr 1e-4, rho 0.9 (the notebook used Adam), and ``d_vvs = 0`` has no VVS convolution (the
notebook always kept one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.errors import ShapeMismatchError
from zoo.layers import GaussianNoise, check_in_shape
from zoo.tasks import ClassificationTask

__all__ = ["RetinaVVS", "retina_vvs_network"]


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.xavier_uniform_(conv.weight)  # Keras' glorot_uniform, zero bias
    nn.init.zeros_(conv.bias)
    return conv


def _dense(in_features: int, out_features: int) -> nn.Linear:
    linear = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def retina_vvs_network(in_shape: Sequence[int], num_classes: int, n_bn: int, d_vvs: int, retina_width: int,
                       vvs_width: int, kernel_size: int, dense_width: int) -> dict[str, nn.Sequential]:
    """The three stages as ``{"retina", "vvs", "head"}`` Sequentials (``vvs`` is empty when ``d_vvs`` is 0)."""
    c, h, w = check_in_shape(in_shape, what="RetinaVVS")
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
    for name, value in (("n_bn", n_bn), ("retina_width", retina_width), ("vvs_width", vvs_width),
                        ("dense_width", dense_width)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if d_vvs < 0:
        raise ValueError(f"d_vvs is a number of VVS layers, >= 0; got {d_vvs}")
    retina = nn.Sequential(_conv(c, retina_width, kernel_size), nn.ReLU(),
                           _conv(retina_width, n_bn, kernel_size), nn.ReLU())
    vvs: list[nn.Module] = []
    channels = n_bn
    for _ in range(d_vvs):
        vvs += [_conv(channels, vvs_width, kernel_size), nn.ReLU()]
        channels = vvs_width
    head = nn.Sequential(nn.Flatten(), _dense(channels * h * w, dense_width), nn.ReLU(),
                         _dense(dense_width, num_classes))
    return {"retina": retina, "vvs": nn.Sequential(*vvs), "head": head}


class RetinaVVS(ClassificationTask):
    """Lindsey et al. (2019) retina + VVS classifier; returns logits, trained with cross-entropy.

    ``n_bn``: channels at the retina output (the bottleneck; paper grid 1, 2, 4, 8, 16, 32). ``d_vvs``: number of VVS
    convolutions (0 to 4). ``retina_width`` / ``vvs_width``: channels of the retina's first layer and of each VVS
    layer (32); ``kernel_size`` 9; ``dense_width`` 1024. ``in_shape`` and ``num_classes`` come from the data.

    Optional terms of the reference code, all off by default: ``input_noise`` / ``bottleneck_noise`` (SD of Gaussian
    noise added in training to the image / the retina output), ``l1_weights`` (times the sum of |w| over every
    weight matrix, not the biases) and ``l1_bottleneck`` (times the sum of |bottleneck activity| per image, averaged
    over the batch). The penalties are added to the training loss (``penalty()``) and logged as ``train/penalty``.

    RMSprop with ``lr`` 1e-4 and ``rho`` 0.9 (Keras' RMSprop, which the reference code used). ``rf_layers`` names
    the conv outputs whose receptive fields bioviz's ``ReceptiveFieldLogger`` shows: the bottleneck and, when there
    is one, the first VVS layer (pre-ReLU, so a unit has a gradient even where it is silent).
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 32, 32),
        num_classes: int = 10,
        n_bn: int = 32,
        d_vvs: int = 2,
        retina_width: int = 32,
        vvs_width: int = 32,
        kernel_size: int = 9,
        dense_width: int = 1024,
        input_noise: float = 0.0,
        bottleneck_noise: float = 0.0,
        l1_weights: float = 0.0,
        l1_bottleneck: float = 0.0,
        lr: float = 1e-4,
        rho: float = 0.9,
    ):
        super().__init__(in_shape, num_classes)
        if l1_weights < 0 or l1_bottleneck < 0:
            raise ValueError(f"L1 coefficients must be >= 0, got l1_weights={l1_weights}, "
                             f"l1_bottleneck={l1_bottleneck}")
        self.save_hyperparameters()
        self.input_noise = GaussianNoise(input_noise)
        stages = retina_vvs_network(self.in_shape, num_classes, n_bn, d_vvs, retina_width, vvs_width, kernel_size,
                                    dense_width)
        self.retina = stages["retina"]
        self.bottleneck_noise = GaussianNoise(bottleneck_noise)
        self.vvs = stages["vvs"]
        self.head = stages["head"]
        self.rf_layers = {"bottleneck": "retina.2"} | ({"vvs1": "vvs.0"} if d_vvs > 0 else {})
        self._bottleneck: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bottleneck = self.retina(self.input_noise(images))
        self._bottleneck = bottleneck if self.training and self.hparams.l1_bottleneck > 0 else None
        return self.head(self.vvs(self.bottleneck_noise(bottleneck)))

    def check_images(self, images: torch.Tensor) -> None:
        expected = self.in_shape[0]
        if images.ndim == 4 and images.shape[1] != expected and {expected, images.shape[1]} == {1, 3}:
            if expected == 1:
                fix = ("Convert the images to grayscale (--data.init_args.grayscale true, the paper's mean of R, G "
                       "and B), or train a colour model (the CLI links in_shape from data with grayscale false)")
            else:
                fix = ("Give it colour images (--data.init_args.grayscale false), or train a grayscale model "
                       "(the CLI links in_shape from data with grayscale true)")
            raise ShapeMismatchError(
                f"RetinaVVS was built for {'grayscale' if expected == 1 else 'colour'} images ({expected} channel"
                f"{'s' if expected > 1 else ''}) but got {images.shape[1]}-channel images {list(images.shape)}. {fix}."
            )
        super().check_images(images)

    def penalty(self) -> torch.Tensor | None:
        """The optional L1 terms for the last training forward pass (None when both are off)."""
        if self.hparams.l1_weights == 0 and self.hparams.l1_bottleneck == 0:
            return None
        total = torch.zeros((), device=self.device)
        if self.hparams.l1_weights > 0:
            weights = [m.weight for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            total = total + self.hparams.l1_weights * sum(w.abs().sum() for w in weights)
        if self.hparams.l1_bottleneck > 0 and self._bottleneck is not None:
            total = total + self.hparams.l1_bottleneck * self._bottleneck.abs().flatten(1).sum(1).mean()
        self._bottleneck = None
        return total

    def configure_optimizers(self):
        return torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr, alpha=self.hparams.rho)
