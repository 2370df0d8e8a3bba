"""Record what named layers of any torch module see and produce during a forward pass, and find layers by name.

    with record(model, ["core.layers.0", "readout"]) as rec:
        model(images)
    rec.outputs["core.layers.0"]   # [B, C, H, W]
    rec.inputs["readout"]          # the first positional input of the readout

Names are those of ``model.named_modules()``; ``""`` is the model itself. Hooks are removed when the block ends,
also on an exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Recording", "record", "get_module", "get_tensor", "first_conv", "layer_output"]


def _unknown(kind: str, name: str, known: list[str]) -> KeyError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(repr(k) for k in known[:30]) + (" ..." if len(known) > 30 else "")
    return KeyError(f"no {kind} named {name!r} in the model.{hint} Known {kind}s (model.named_modules() / "
                    f"named_parameters()): {shown}")


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted path ``name`` (``""`` = the model), with an error listing the closest names."""
    modules = dict(model.named_modules())
    if name not in modules:
        raise _unknown("layer", name, [n for n in modules if n])
    return modules[name]


def get_tensor(model: nn.Module, path: str) -> torch.Tensor:
    """A parameter, buffer or tensor attribute at dotted ``path`` (e.g. ``"readout.mask"``), or a module's
    ``weight`` when ``path`` names a module (e.g. ``"core.layers.0.0"``)."""
    owner_name, _, attr = path.rpartition(".")
    modules = dict(model.named_modules())
    if path in modules and isinstance(getattr(modules[path], "weight", None), torch.Tensor):
        return modules[path].weight
    owner = modules.get(owner_name)
    value = getattr(owner, attr, None) if owner is not None else None
    if not isinstance(value, torch.Tensor):
        known = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
        known += [n for n, m in modules.items() if n and isinstance(getattr(m, "weight", None), torch.Tensor)]
        raise _unknown("tensor", path, known)
    return value


def first_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` of the first convolution in registration order (for most vision models, the first layer
    the image meets): an ``nn.Conv2d``, or any module whose ``weight`` is a 4-D filter bank ``[out, in, kH, kW]``
    (convolutions built from other parameters, such as rotation-equivariant Hermite layers)."""
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Conv2d) or (isinstance(weight, torch.Tensor) and weight.dim() == 4):
            return name, module
    raise LookupError(f"{type(model).__name__} has no convolution (nn.Conv2d or a 4-D weight); name the layer to "
                      f"use explicitly (one of model.named_modules())")


@dataclass
class Recording:
    """Tensors seen by hooked layers. ``outputs[name]`` / ``inputs[name]`` hold the last call's output and first
    positional input; with ``keep_all=True``, ``all_outputs[name]`` / ``all_inputs[name]`` list every call (layers
    that run several times per forward, e.g. recurrent settling steps)."""

    outputs: dict[str, object] = field(default_factory=dict)
    inputs: dict[str, object] = field(default_factory=dict)
    all_outputs: dict[str, list] = field(default_factory=dict)
    all_inputs: dict[str, list] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.outputs[name]


def _detach(value, to_cpu: bool):
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.cpu() if to_cpu else value
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v, to_cpu) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v, to_cpu) for k, v in value.items()}
    return value


@contextmanager
def record(
    model: nn.Module,
    layers: str | Iterable[str],
    inputs: bool = True,
    keep_all: bool = False,
    detach: bool = True,
    to_cpu: bool = False,
) -> Iterator[Recording]:
    """Hook the named ``layers`` of ``model`` for the duration of the ``with`` block.

    ``detach=False`` keeps the autograd graph (e.g. to take gradients of a hidden layer); ``to_cpu`` moves recorded
    tensors off the accelerator. Unknown names raise ``KeyError`` with the closest known names before anything runs.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    modules = {name: get_module(model, name) for name in names}
    rec = Recording()

    def hook_for(name):
        def hook(module, args, output):
            if detach:
                output = _detach(output, to_cpu)
            rec.outputs[name] = output
            rec.calls[name] = rec.calls.get(name, 0) + 1
            first = (_detach(args[0], to_cpu) if detach else args[0]) if args else None
            if inputs:
                rec.inputs[name] = first
            if keep_all:
                rec.all_outputs.setdefault(name, []).append(output)
                if inputs:
                    rec.all_inputs.setdefault(name, []).append(first)
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        yield rec
    finally:
        for handle in handles:
            handle.remove()


class _Stop(Exception):
    """Raised by ``layer_output``'s hook once the layer has run: the rest of the forward pass is not needed."""


def layer_output(
    model: nn.Module,
    layer: str | None,
    images: torch.Tensor,
    stop: bool = False,
    no_grad: bool = True,
) -> torch.Tensor:
    """The output of ``layer`` (``None``: the model's output) for ``images``.

    ``stop=True`` ends the forward pass as soon as ``layer`` has run (by raising from its hook), so the later layers
    do not run: for callers that need only this layer. A layer that runs several times per forward (e.g. recurrent
    settling steps) then gives its first call's output; without ``stop`` the pass runs in full and the last call's
    output is returned. ``no_grad=False`` runs under the caller's gradient mode and keeps the autograd graph from
    ``images`` to the output (e.g. to take gradients with respect to the input). Raises if the layer did not run or
    does not return a tensor.
    """
    with torch.no_grad() if no_grad else nullcontext():
        if layer is None:
            return model(images)
        module, seen = get_module(model, layer), {}

        def hook(_module, _args, output):
            seen["out"] = output
            if stop:
                raise _Stop

        handle = module.register_forward_hook(hook)
        try:
            model(images)
        except _Stop:
            pass
        finally:
            handle.remove()
    if "out" not in seen:
        raise RuntimeError(f"layer {layer!r} did not run in the forward pass of {type(model).__name__}; "
                           f"choose a layer the forward pass uses")
    out = seen["out"]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"layer {layer!r} returns {type(out).__name__}, not a tensor; choose one of its submodules")
    return out
