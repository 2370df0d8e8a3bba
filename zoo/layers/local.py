"""Strictly local, untied-weight convolution: every output position has its own filter (no weight sharing)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LocallyConnected2d"]


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous.

    The gradient reaching the bmm output is a permuted view of ``[B, O, L]``; CPU ``bmm`` falls back to one small
    matmul (plus copies) per output position on such strides. One transpose copy here is ~2x faster per step.
    """

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class LocallyConnected2d(nn.Module):
    """A convolution whose filters are not shared: output position (i, j) has its own ``[in_channels, kh, kw]`` filter.

    Only the receptive fields are stored: ``weight`` has shape ``(out_h * out_w, in_channels * kh * kw,
    out_channels)``, so a weight outside a position's receptive field does not exist and locality holds through any
    amount of training (unlike a dense ``[C, H, W, O, out_h, out_w]`` tensor, whose off-field entries receive
    gradients). The second axis is ordered (channel, kernel row, kernel column), as in ``F.unfold`` and as in
    ``nn.Conv2d.weight.reshape(out_channels, -1)``.

    Forward: gather the patches (a strided view, copied once into position-major order) and do one batched matmul
    over output positions, ``(L, B, C*kh*kw) x (L, C*kh*kw, O)``; zero padding as in ``nn.Conv2d``.

    Init: ``nn.Conv2d``'s default, ``U(-b, b)`` with ``b = 1 / sqrt(in_channels * kh * kw)`` (kaiming-uniform with
    ``a = sqrt(5)``) for the weights and the bias, the fan-in being the whole receptive field.

    Bias: one per output channel *and* position, shape ``(out_channels, out_h, out_w)`` (as in the seed), or with
    ``shared_bias=True`` one per output channel, shape ``(out_channels,)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int | tuple[int, int],
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        shared_bias: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.input_size = _pair(input_size, "input_size")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(
                f"need kernel_size >= 1, stride >= 1, padding >= 0; got {self.kernel_size}, {self.stride}, "
                f"{self.padding}"
            )
        self.output_size = tuple(
            (n + 2 * p - k) // s + 1
            for n, p, k, s in zip(self.input_size, self.padding, self.kernel_size, self.stride, strict=True)
        )
        if min(self.output_size) < 1:
            raise ValueError(
                f"kernel_size {self.kernel_size} does not fit input_size {self.input_size} with padding {self.padding}"
            )
        self.shared_bias = shared_bias
        factory = {"device": device, "dtype": dtype}
        n_positions = self.output_size[0] * self.output_size[1]
        self.fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(torch.empty(n_positions, self.fan_in, out_channels, **factory))
        if bias:
            shape = (out_channels,) if shared_bias else (out_channels, *self.output_size)
            self.bias = nn.Parameter(torch.empty(shape, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_size: int | tuple[int, int]) -> LocallyConnected2d:
        """A locally connected layer on ``input_size`` whose every position holds a copy of ``conv``'s filter and bias.

        Its output equals ``conv(x)``; the copies are independent parameters from then on. The bias is per position
        (copies of the conv's bias), so training can untie it too.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv needs an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
            raise ValueError(f"from_conv supports groups=1 and dilation=1 only, got groups={conv.groups}, "
                             f"dilation={tuple(conv.dilation)}")
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(f"from_conv supports integer zero padding only, got padding={conv.padding!r}, "
                             f"padding_mode={conv.padding_mode!r}")
        layer = cls(
            conv.in_channels, conv.out_channels, input_size, tuple(conv.kernel_size), stride=tuple(conv.stride),
            padding=tuple(conv.padding), bias=conv.bias is not None, device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            filt = conv.weight.reshape(conv.out_channels, -1).t()  # (C*kh*kw, O), same order as F.unfold
            layer.weight.copy_(filt.expand_as(layer.weight))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias[:, None, None].expand_as(layer.bias))
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.input_size):
            raise ValueError(
                f"LocallyConnected2d expected input [B, {self.in_channels}, {self.input_size[0]}, "
                f"{self.input_size[1]}], got {list(x.shape)}"
            )
        batch = x.shape[0]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        # Patches as a strided view [B, C, out_h, out_w, kh, kw], copied once into the position-major layout
        # [L, B, C*kh*kw] (same (C, kh, kw) order as F.unfold); ~20% faster on CPU than F.unfold + a transpose copy.
        patches = x.unfold(2, kh, sh).unfold(3, kw, sw)
        cols = patches.permute(2, 3, 0, 1, 4, 5).reshape(-1, batch, self.fan_in)
        # Contiguous operands (and output gradient) keep bmm on its batched BLAS path; see _ContiguousGrad.
        out = _ContiguousGrad.apply(torch.bmm(cols, self.weight))  # [L, B, O]
        out = out.permute(1, 2, 0).reshape(batch, self.out_channels, *self.output_size)
        if self.bias is not None:
            out = out + (self.bias[:, None, None] if self.shared_bias else self.bias)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, output_size={self.output_size}, "
            f"bias={self.bias is not None}, shared_bias={self.shared_bias}"
        )
