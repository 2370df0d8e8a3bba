"""Cost of rotation equivariance: one training step of RotEquiV1 at paper size against the same step with plain
``nn.Conv2d`` layers of identical channel counts and kernel sizes (CNNV1 128-128-128: the floor).

Paper size: 3 layers, filter sizes 13, 5, 5, 16 features x 8 rotations (128 channels), 36 x 64 images, batch 64,
1,000 neurons, the same readout, penalties, Poisson loss and Adam step. The two models are timed in alternation; the
table gives the median step, the ratio to the floor (target <= 1.15) and how long building the rotated filters takes.

    OMP_NUM_THREADS=1 python bench/rotequi.py --threads 1
    python bench/rotequi.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zoo.models import CNNV1, RotEquiV1


def step_fn(model, images, responses):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss_fn(model(images), responses).mean() + model.penalty()
        loss.backward()
        optimizer.step()

    return step


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--neurons", type=int, default=1000)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    shape = [1, 36, 64]
    images = torch.randn(args.batch, *shape, device=device)
    responses = torch.rand(args.batch, args.neurons, device=device)
    models = {
        "RotEquiV1 16x8": RotEquiV1(args.neurons, shape).to(device),
        "Conv2d 128-128-128 (floor)": CNNV1(args.neurons, shape, num_filters=[128, 128, 128]).to(device),
    }
    steps = {name: step_fn(model, images, responses) for name, model in models.items()}
    times = {name: [] for name in models}
    for _ in range(2):  # warm-up
        for step in steps.values():
            step()
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    rot = models["RotEquiV1 16x8"]

    def build_filters():
        with torch.no_grad():
            for conv in rot.core.convs:
                conv.weight  # noqa: B018 - building the rotated filters is what is timed

    build = statistics.median(timed(build_filters, device) for _ in range(args.repeats))
    floor = statistics.median(times["Conv2d 128-128-128 (floor)"])
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"one training step, batch {args.batch}, {shape[1]}x{shape[2]} images, {args.neurons} neurons, "
          f"device {device}, threads {threads}, median of {args.repeats}")
    print(f"{'model':28s} {'step ms':>9s} {'ratio':>6s} {'core params':>12s}")
    for name, model in models.items():
        median = statistics.median(times[name])
        params = sum(p.numel() for p in model.core.parameters() if p.requires_grad)
        print(f"{name:28s} {1000 * median:9.1f} {median / floor:6.3f} {params:12d}")
    print(f"building RotEquiV1's rotated filters (3 layers, no grad): {1000 * build:.2f} ms "
          f"({100 * build / floor:.1f}% of the floor step)")


if __name__ == "__main__":
    main()
