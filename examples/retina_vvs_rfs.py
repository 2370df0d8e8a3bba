"""Receptive fields of trained RetinaVVS models (Lindsey et al. 2019): pictures and orientedness/isotropy numbers.

For each model (a zoo name or a checkpoint), and for an untrained network of the same shape (fresh Glorot init, seed
0), the gradient RFs of every bottleneck channel and every first-VVS-layer channel (``model.rf_layers``), cropped to
the units' RF extent (17 and 25 px for 9x9 kernels), are measured with ``bioviz.rf`` as the mean over random starts
(the untrained network has zero biases, so its gradient at the all-zero image is exactly 0). Prints a Markdown table
of the median bar-bank orientedness index, the fraction of RFs above the 95th percentile of white-noise RFs, the
median isotropy, the median centre-surround index (``bioviz.rf.center_surround``) with the fraction above white
noise's 95th percentile, the median surround strength and share of the RF a difference of Gaussians explains, and
the mean complexity; writes one figure per model (``rfs_<run>.png``, the orientedness index above each tile).

    python examples/retina_vvs_rfs.py runs/retina_vvs_nbn1_d2/version_0/checkpoints/last.ckpt \\
        runs/retina_vvs_nbn32_d0/version_0/checkpoints/last.ckpt --out docs/retina_vvs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bioviz.plot import rf_panels  # noqa: E402
from bioviz.rf import bar_bank, center_crop, center_surround, gradient_rf, isotropy, orientedness, random_rfs, rf_size  # noqa: E402
from zoo.models import RetinaVVS  # noqa: E402
from zoo.registry import load_model_and_data  # noqa: E402


def layer_rfs(model: RetinaVVS, starts: int) -> dict[str, torch.Tensor]:
    """``{layer name: RFs [channels, size, size]}`` cropped to each layer's RF extent."""
    k, shape = model.hparams.kernel_size, model.hparams.in_shape
    extents = {"bottleneck": rf_size([k, k]), "vvs1": rf_size([k, k, k])}
    out = {}
    for name, path in model.rf_layers.items():
        result = gradient_rf(model, path, shape, starts=starts, noise=0.1)
        out[name] = (center_crop(result.rf.mean(1), extents[name], result.position), result.complexity)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="zoo names (bioviz zoo list) or .ckpt files written by bioviz fit")
    parser.add_argument("--out", type=Path, default=Path("docs/retina_vvs"))
    parser.add_argument("--starts", type=int, default=10)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(True)

    banks, baseline = {}, {}
    rows = []
    for source in args.models:
        trained, _ = load_model_and_data(source)
        hparams = {k: v for k, v in trained.hparams.items()}
        torch.manual_seed(0)
        untrained = RetinaVVS(**hparams)
        run = f"nbn{hparams['n_bn']}_d{hparams['d_vvs']}"
        for state, model in (("trained", trained), ("untrained", untrained)):
            measured = layer_rfs(model, args.starts)
            labels = {}
            for layer, (rfs, complexity) in measured.items():
                size = rfs.shape[-1]
                if size not in banks:
                    banks[size] = bar_bank(size)
                    noise = random_rfs(500, size)
                    oriented, ring = orientedness(noise, bank=banks[size]).index, center_surround(noise).index
                    baseline[size] = (float(oriented.median()), float(oriented.quantile(0.95)),
                                      float(ring.median()), float(ring.quantile(0.95)))
                index = orientedness(rfs, bank=banks[size]).index
                ring = center_surround(rfs)
                labels[layer] = [f"{v:.1f}" for v in index]
                rows.append((run, layer, state, len(rfs), float(index.median()),
                             float((index > baseline[size][1]).float().mean()), float(isotropy(rfs).median()),
                             float(ring.index.median()), float((ring.index > baseline[size][3]).float().mean()),
                             float(ring.surround_strength.median()), float(ring.explained.median()),
                             float(complexity.mean())))
            if state == "trained":
                fig = rf_panels({f"{layer} (n_bn {hparams['n_bn']}, d_vvs {hparams['d_vvs']})": rfs
                                 for layer, (rfs, _) in measured.items()},
                                labels={f"{layer} (n_bn {hparams['n_bn']}, d_vvs {hparams['d_vvs']})": labels[layer]
                                        for layer in measured})
                fig.savefig(args.out / f"rfs_{run}.png", dpi=80)
                print(f"wrote {args.out / f'rfs_{run}.png'}")

    print("\n| model | layer | weights | RFs | median orientedness | oriented (above noise 95th pct) | "
          "median isotropy | median centre-surround index | centre-surround (above noise 95th pct) | "
          "median surround strength | median share a DoG fit explains | mean complexity |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run, layer, state, n, index, above, iso, ring, ring_above, strength, explained, complexity in rows:
        print(f"| {run} | {layer} | {state} | {n} | {index:.2f} | {above:.2f} | {iso:.2f} | {ring:.3f} | "
              f"{ring_above:.2f} | {strength:.2f} | {explained:.2f} | {complexity:.2f} |")
    for size, (median, p95, ring_median, ring_p95) in sorted(baseline.items()):
        print(f"white-noise RFs {size} x {size}: orientedness median {median:.2f}, 95th percentile {p95:.2f}; "
              f"centre-surround index median {ring_median:.3f}, 95th percentile {ring_p95:.3f}")


if __name__ == "__main__":
    main()
