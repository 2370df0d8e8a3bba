"""The pinwheel-density estimator (``bioviz.tuning.pinwheel_density``, Kaschube et al. 2010) against theory, on
Gaussian random orientation maps with a ring spectrum of known moments (``random_orientation_map``).

For such maps the pinwheels per unit area are ``<K^2> / 4 pi`` (Berry & Dennis 2000) and the density per squared
column spacing ``1 / <k>`` is ``pi <k^2> / <k>^2`` (pi for a thin ring; Wolf & Geisel 1998). For each ring width the
script measures, side by side on the same maps: the count against theory, the wavelet column spacing against
``1 / <k>``, the density, and the spectral-peak quick check's spacing. Periodic maps (the whole torus) and, to see
the edges a model sheet has, non-periodic windows cut from them, counted on their interior as the GCAL sheet is
(defaults: 72 x 72 windows, 12 pixels in from the edges), and on the whole window.

    OMP_NUM_THREADS=1 python bench/pinwheel_estimator.py [--size 256] [--spacing 12] [--maps 8] [--window 72]
        [--margin 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bioviz.tuning import pinwheel_density, random_orientation_map, spectral_column_spacing


def mean_sd(values) -> str:
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="side of the periodic maps (pixels)")
    parser.add_argument("--spacing", type=float, default=12.0, help="ring centre, as a column spacing (pixels)")
    parser.add_argument("--maps", type=int, default=8, help="maps per ring width")
    parser.add_argument("--window", type=int, default=72, help="side of the non-periodic windows (pixels)")
    parser.add_argument("--margin", type=int, default=12, help="pixels left out at the windows' edges")
    parser.add_argument("--bandwidths", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    args = parser.parse_args()
    print(f"Gaussian random maps {args.size} x {args.size}, ring at 1/{args.spacing:g} cycles/px, {args.maps} maps "
          f"per width; windows {args.window} x {args.window} (4 per map, no periodicity), counted {args.margin} px in "
          f"and whole; mean +- SD over maps")
    print(f"{'ring width':>10} {'theory':>7} | {'count / theory':>15} {'spacing / (1/<k>)':>18} {'density':>15} "
          f"{'spectral / (1/<k>)':>19} | {'interior density':>16} {'its spacing':>15} | {'whole window':>15}")
    start = time.perf_counter()
    for bandwidth in args.bandwidths:
        count, spacing, density, spectral, w_density, w_spacing, whole = [], [], [], [], [], [], []
        for seed in range(args.maps):
            truth = random_orientation_map((args.size, args.size), args.spacing, bandwidth, seed)
            found = pinwheel_density(truth.preference, truth.selectivity, periodic=True)
            count.append(found.count / args.size**2 / truth.pinwheels_per_area)
            spacing.append(found.column_spacing / truth.column_spacing)
            density.append(found.density)
            spectral.append(spectral_column_spacing(truth.preference, truth.selectivity, periodic=True)
                            / truth.column_spacing)
            step = args.size // 2
            for r in (0, step):
                for c in (0, step):
                    window = (slice(r, r + args.window), slice(c, c + args.window))
                    part = pinwheel_density(truth.preference[window], truth.selectivity[window], margin=args.margin)
                    w_density.append(part.density)
                    w_spacing.append(part.column_spacing / truth.column_spacing)
                    whole.append(pinwheel_density(truth.preference[window], truth.selectivity[window]).density)
        print(f"{bandwidth:>10.2f} {truth.expected_density:>7.3f} | {mean_sd(count):>15} {mean_sd(spacing):>18} "
              f"{mean_sd(density):>15} {mean_sd(spectral):>19} | {mean_sd(w_density):>16} {mean_sd(w_spacing):>15} | "
              f"{mean_sd(whole):>15}")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
