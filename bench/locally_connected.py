"""Cost of untied weights: the original notebook's dense SpatialFeatureLayer vs LocallyConnected2d vs nn.Conv2d.

Three implementations of every layer of the original notebook's SpatialDenseNet and of the whole net, side by side:

    (a) dense   -- the seed's formulation, copied below: a 6-D weight [C, H, W, O, out_h, out_w] (zero outside the
                   receptive fields at init, no mask) and `torch.tensordot`;
    (b) local   -- `zoo.layers.LocallyConnected2d` (patch gather + one batched matmul, receptive-field weights only);
    (c) conv    -- `nn.Conv2d` of the same shape (shared weights): the floor.

Time: one forward + backward (batch 64, float32, CPU), median of --repeats after one warm-up. Per layer the input
requires grad (as inside the net); the whole net is the seed's SpatialDenseNet with cross-entropy on 10 classes.

Memory, two measures:
  * "state": bytes of parameters + their gradients + the tensors autograd saves for backward (counted with
    `torch.autograd.graph.saved_tensors_hooks`, storages deduplicated, parameters not counted twice). It is exact and
    deterministic but leaves out temporaries freed inside an op.
  * "peak RSS" (whole net only, --rss): each implementation runs in a fresh subprocess; the process's peak resident
    memory (VmHWM, reset after the imports) minus its RSS at that point, so it includes the
    parameters, gradients, activations, the input batch and every temporary of the allocator.

Before timing, (a) and (b) are checked to compute the same function (dense weights built from the local ones).

    python bench/locally_connected.py [--batch 64] [--repeats 3] [--rss]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.layers import LocallyConnected2d  # noqa: E402

# (in_c, in_h, in_w, out_c, kernel) of the seed's six SpatialFeatureLayers (valid padding, stride 1).
SEED_LAYERS = [(3, 32, 32, 10, 3), (10, 30, 30, 20, 3), (20, 14, 14, 32, 3), (32, 12, 12, 64, 3),
               (64, 5, 5, 128, 2), (128, 4, 4, 256, 2)]


class SeedSpatialFeatureLayer(nn.Module):
    """The seed's SpatialFeatureLayer: dense 6-D weight, tensordot forward, no mask (its bugs kept).

    The seed's init loops over every (out_h, out_w, out_c) and calls kaiming_uniform on the [C, kh, kw] slice of the
    receptive field (fan-in kh*kw, so bound sqrt(6 / (kh*kw))); here the same distribution is drawn in one go per
    position, which is faster and changes nothing the benchmark measures.
    """

    def __init__(self, in_dimensions, out_channels, kernel_size):
        super().__init__()
        self.in_channels, self.in_height, self.in_width = in_dimensions
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.output_height = self.in_height - kernel_size[0] + 1
        self.output_width = self.in_width - kernel_size[1] + 1
        self.weight = nn.Parameter(torch.zeros(self.in_channels, self.in_height, self.in_width, out_channels,
                                               self.output_height, self.output_width))
        self.bias = nn.Parameter(torch.empty(out_channels, self.output_height, self.output_width))
        nn.init.kaiming_uniform_(self.bias, a=math.sqrt(5))
        kh, kw = kernel_size
        bound = math.sqrt(6 / (kh * kw))
        with torch.no_grad():
            for oh in range(self.output_height):
                for ow in range(self.output_width):
                    self.weight[:, oh:oh + kh, ow:ow + kw, :, oh, ow].uniform_(-bound, bound)

    def forward(self, x):
        x = torch.tensordot(x, self.weight, dims=([1, 2, 3], [0, 1, 2]))
        return x + self.bias


def make_layer(kind: str, in_c: int, h: int, w: int, out_c: int, k: int) -> nn.Module:
    if kind == "dense":
        return SeedSpatialFeatureLayer((in_c, h, w), out_c, (k, k))
    if kind == "local":
        return LocallyConnected2d(in_c, out_c, (h, w), k)
    return nn.Conv2d(in_c, out_c, k)


def seed_net(kind: str) -> nn.Sequential:
    """The seed's SpatialDenseNet with its spatial layers made by `kind`."""
    sp = [make_layer(kind, *cfg) for cfg in SEED_LAYERS]
    return nn.Sequential(
        sp[0], nn.BatchNorm2d(10), nn.ReLU(inplace=True), sp[1], nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        sp[2], nn.BatchNorm2d(32), nn.ReLU(inplace=True), sp[3], nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        nn.Dropout2d(p=0.05),
        sp[4], nn.BatchNorm2d(128), nn.ReLU(inplace=True), sp[5], nn.ReLU(inplace=True),
        nn.Flatten(), nn.Dropout(p=0.1), nn.Linear(2304, 512), nn.ReLU(inplace=True), nn.Dropout(p=0.1),
        nn.Linear(512, 10),
    )


def dense_from_local(local: LocallyConnected2d) -> SeedSpatialFeatureLayer:
    """A dense seed layer holding exactly the local layer's weights (zeros elsewhere), to check (a) == (b)."""
    (h, w), (kh, kw), (oh, ow) = local.input_size, local.kernel_size, local.output_size
    dense = SeedSpatialFeatureLayer((local.in_channels, h, w), local.out_channels, (kh, kw)).double()
    with torch.no_grad():
        dense.weight.zero_()
        dense.bias.copy_(local.bias)
        for i in range(oh):
            for j in range(ow):
                filt = local.weight[i * ow + j].reshape(local.in_channels, kh, kw, local.out_channels)
                dense.weight[:, i:i + kh, j:j + kw, :, i, j] = filt
    return dense


def check_same_function() -> float:
    worst = 0.0
    for in_c, h, w, out_c, k in SEED_LAYERS:
        local = LocallyConnected2d(in_c, out_c, (h, w), k).double()
        x = torch.randn(2, in_c, h, w, dtype=torch.float64)
        worst = max(worst, (dense_from_local(local)(x) - local(x)).abs().max().item())
    return worst


def state_bytes(module: nn.Module, run) -> int:
    """Bytes of parameters + gradients + tensors saved for backward during `run()` (storages counted once)."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            saved[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    n_param = sum(p.numel() * p.element_size() for p in module.parameters())
    return 2 * n_param + sum(saved.values())


def time_step(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def layer_step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad)
    return step


def net_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(net(x), y)


def net_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def step():
        net.zero_grad(set_to_none=True)
        net_loss(net, x, y).backward()
    return step


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_child(kind: str, batch: int) -> None:
    """Run in a fresh process: print the peak-RSS increase (bytes) of building the net and one training step."""
    # Reset the high-water mark (VmHWM) so that importing torch and zoo does not count (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")
    base = vm_kib("VmRSS")
    torch.manual_seed(0)
    net = seed_net(kind).train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    net_step(net, x, y)()
    print(json.dumps({"kind": kind, "rss_bytes": (vm_kib("VmHWM") - base) * 1024}))


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s"


def fmt_mb(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss", action="store_true", help="also measure whole-net peak RSS in subprocesses")
    parser.add_argument("--rss-child", choices=["dense", "local", "conv"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.batch)
        return

    kinds = ["dense", "local", "conv"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, float32, "
          f"median of {args.repeats} steps")
    print(f"(a) vs (b) same function, max abs diff (float64): {check_same_function():.2e}\n")

    rows = []
    torch.manual_seed(0)
    for n, (in_c, h, w, out_c, k) in enumerate(SEED_LAYERS, 1):
        x = torch.randn(args.batch, in_c, h, w, requires_grad=True)
        res = {}
        for kind in kinds:
            layer = make_layer(kind, in_c, h, w, out_c, k)
            grad = torch.randn_like(layer(x))
            step = layer_step(layer, x, grad)
            res[kind] = (time_step(step, args.repeats), state_bytes(layer, partial(layer, x)),
                         sum(p.numel() for p in layer.parameters()))
        rows.append((f"{n}: {in_c}x{h}x{w} -> {out_c}, k{k}", res))

    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    res = {}
    for kind in kinds:
        torch.manual_seed(0)
        net = seed_net(kind).train()
        res[kind] = (time_step(net_step(net, x, y), args.repeats),
                     state_bytes(net, partial(net_loss, net, x, y)),
                     sum(p.numel() for p in net.parameters()))
    rows.append(("whole SpatialDenseNet", res))

    print("| layer | params (a) / (b) / (c) | step (a) dense | step (b) local | step (c) conv | (a)/(b) | (b)/(c) "
          "| state (a) | state (b) | state (c) | (a)/(b) | (b)/(c) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        (ta, ma, pa), (tb, mb, pb), (tc, mc, pc) = r["dense"], r["local"], r["conv"]
        print(f"| {name} | {pa:,} / {pb:,} / {pc:,} | {fmt_ms(ta)} | {fmt_ms(tb)} | {fmt_ms(tc)} | {ta / tb:.1f}x "
              f"| {tb / tc:.2f}x | {fmt_mb(ma)} | {fmt_mb(mb)} | {fmt_mb(mc)} | {ma / mb:.1f}x | {mb / mc:.2f}x |")

    if args.rss:
        rss = {}
        for kind in kinds:
            cmd = [sys.executable, __file__, "--rss-child", kind, "--batch", str(args.batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rss[kind] = json.loads(out.strip().splitlines()[-1])["rss_bytes"]
        print("\nWhole net, peak RSS increase over `import torch` (build + one training step, fresh process each):")
        print(f"| (a) dense | (b) local | (c) conv | (a)/(b) | (b)/(c) |\n|---|---|---|---|---|\n"
              f"| {fmt_mb(rss['dense'])} | {fmt_mb(rss['local'])} | {fmt_mb(rss['conv'])} "
              f"| {rss['dense'] / rss['local']:.1f}x | {rss['local'] / rss['conv']:.2f}x |")


if __name__ == "__main__":
    main()
