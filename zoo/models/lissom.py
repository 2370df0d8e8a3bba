"""LISSOM orientation maps (Miikkulainen, Bednar, Choe & Sirosh 2005, "Computational Maps in the Visual Cortex";
the original notebook is pylissom's, docs/sources.md).

Retina -> LGN ON/OFF (difference of Gaussians, piecewise-linear sigmoid) -> V1 (afferent from both channels,
settling with lateral excitation and inhibition), trained by Hebbian learning with divisive normalisation from V1's
settled activity. Defaults follow the notebook: every size derives from the retina (= LGN) size R and the cortex size N:

    afferent radius r_A = R / 4 + 0.5, sigma r_A / 1.3
    LGN DoG: sigma_centre = 0.5 r_A / 6.5, sigma_surround = 4 sigma_centre, radius 4.7 sigma_surround, strength 2.33
    lateral excitatory radius r_E = N / 10, sigma 0.78 r_E; inhibitory r_I = N / 4 - 1, sigma 2.08 r_I
    gamma_A 1.0, gamma_E = gamma_I = 0.9, thresholds 0.083 / 0.633, 9 settling steps

Learning rates are per unit, spread over its connections (Topographica's convention, density-independent): afferent
0.959 (ON and OFF together), excitatory 2.55528, inhibitory 1.80873. With ``schedule=True`` they change during
training as in the book's (and Topographica's ``schedule_events``) LISSOM schedule: at iterations 200, 500, 1000,
2000, 3000, 4000, 5000, 6500, 8000 and 20000 (times ``schedule_scale``; 0.5 = the standard 10000-iteration run) the
lateral excitatory radius shrinks (to 0.6, 0.42, ..., 0.017 of its start, but see excitatory_radius_min below), its rate
per connection becomes 0.12168 then 0.06084, the afferent rate falls to 0.685, 0.548, 0.411, 0.2055, the sigmoid's
thresholds rise (to 0.223 / 0.863 in the end) and settling takes 10 to 13 steps.

The lateral excitatory radius never shrinks below ``excitatory_radius_min`` (default 1.5 units: the unit and its 8
neighbours). Topographica, whose ``lissom_oo_or.ty`` reproduces the book's maps, does the same: its projections keep
a weights matrix of at least 3 x 3 (``min_matrix_radius=1``), masked by a disc of that diameter, so the schedule's
last radii (below one unit from update 2000 of a 10000-update run at 48 x 48) leave the 3 x 3 neighbourhood.
Shrunk to the unit alone, excitation becomes self-excitation (gamma_E = 0.9 against a sigmoid 0.62 wide): every
unit latches on or off by itself, the settled activity turns to salt-and-pepper, and the map collects pixel-scale
noise.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from zoo.layers.lissom import DivisiveHebbian, DogLGN, LissomNetwork, LissomV1
from zoo.tasks.selforganizing import SelfOrganizingTask

__all__ = ["Lissom", "lissom_schedule"]

# The LISSOM schedule (iterations of a 20000-iteration run).
MILESTONES = (200, 500, 1000, 2000, 3000, 4000, 5000, 6500, 8000, 20000)
EXCITATORY_RADIUS = (0.06250, 0.04375, 0.03500, 0.02800, 0.02240, 0.01344, 0.00806, 0.00484, 0.00290, 0.00174)
EXCITATORY_RADIUS_START = 0.10417  # the fractions above are relative to this start (sheet units)
EXCITATORY_ALPHA = (0.12168,) + (0.06084,) * 9  # per connection
AFFERENT_LR = {500: 0.6850, 2000: 0.5480, 4000: 0.4110, 20000: 0.2055}
LOWER_RISE = (0.01, 0.02, 0.05, 0.08, 0.10, 0.10, 0.11, 0.12, 0.13, 0.14)
UPPER_RISE = (0.01, 0.02, 0.03, 0.05, 0.08, 0.11, 0.14, 0.17, 0.20, 0.23)
SETTLING = {2000: 10, 5000: 11, 6500: 12, 8000: 13}


def lissom_schedule(step: int, scale: float = 0.5) -> dict:
    """The schedule's state after ``step`` iterations: ``stage`` (milestones passed), ``excitatory_radius``
    (fraction of the start), ``excitatory_alpha`` (per connection, or None before the first milestone),
    ``afferent_lr`` (or None: the start value), ``lower_rise``, ``upper_rise``, ``settling_steps`` (or None)."""
    if scale <= 0:
        raise ValueError(f"schedule_scale must be > 0, got {scale}")
    stage = bisect.bisect_right([m * scale for m in MILESTONES], step)
    passed = MILESTONES[:stage]

    def last(table):
        values = [v for m, v in table.items() if m in passed]
        return values[-1] if values else None

    return {
        "stage": stage,
        "excitatory_radius": EXCITATORY_RADIUS[stage - 1] / EXCITATORY_RADIUS_START if stage else 1.0,
        "excitatory_alpha": EXCITATORY_ALPHA[stage - 1] if stage else None,
        "afferent_lr": last(AFFERENT_LR),
        "lower_rise": LOWER_RISE[stage - 1] if stage else 0.0,
        "upper_rise": UPPER_RISE[stage - 1] if stage else 0.0,
        "settling_steps": last(SETTLING),
    }


class Lissom(SelfOrganizingTask):
    """LISSOM: a self-organising orientation map trained on oriented Gaussians (``LissomDataModule``).

    ``in_shape`` = [1, R, R] comes from the data (linked by the CLI); the LGN has the retina's size and density.
    V1 covers the LGN less ``border`` units on each side (Topographica's border, so that edge units get whole
    afferent fields and stimuli reach them from all sides; 0 = the notebook, where all sheets cover the same area and
    R in the formulas below is then R - 2 border). ``None`` for a radius or sigma means the notebook's formula (module
    docstring). The schedule shrinks lateral excitation to no less than ``excitatory_radius_min`` units.
    ``forward`` returns V1's settled activity ``[B, 1, N, N]``. No backprop: training is manual optimisation with
    ``DivisiveHebbian``.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 36, 36),
        cortex_size: int = 36,
        afferent_radius: float | None = None,
        afferent_sigma: float | None = None,
        excitatory_radius: float | None = None,
        excitatory_sigma: float | None = None,
        inhibitory_radius: float | None = None,
        inhibitory_sigma: float | None = None,
        lgn_sigma_center: float | None = None,
        lgn_sigma_surround: float | None = None,
        lgn_radius: float | None = None,
        lgn_strength: float = 2.33,
        gamma_a: float = 1.0,
        gamma_e: float = 0.9,
        gamma_i: float = 0.9,
        lower: float = 0.083,
        upper: float = 0.633,
        settling_steps: int = 9,
        lr_afferent: float = 0.959,
        lr_excitatory: float = 2.55528,
        lr_inhibitory: float = 1.80873,
        schedule: bool = True,
        schedule_scale: float = 0.5,
        border: int = 0,
        excitatory_radius_min: float = 1.5,
    ):
        super().__init__(in_shape, channels=1, square=True)
        self.save_hyperparameters()
        if excitatory_radius_min < 0:
            raise ValueError(f"excitatory_radius_min must be >= 0 (units), got {excitatory_radius_min}; 1.5 keeps "
                             f"the 3 x 3 neighbourhood as Topographica does")
        retina, n = self.in_shape[1], int(cortex_size)
        if not 0 <= 2 * border < retina:
            raise ValueError(f"border ({border}) must leave part of the {retina}-pixel retina for V1 to cover")
        covered = retina - 2 * border  # the LGN units under V1
        r_a = afferent_radius if afferent_radius is not None else covered / 4 + 0.5
        r_e = excitatory_radius if excitatory_radius is not None else n / 10
        r_i = inhibitory_radius if inhibitory_radius is not None else n / 4 - 1
        centre = lgn_sigma_center if lgn_sigma_center is not None else 0.5 * r_a / 6.5
        surround = lgn_sigma_surround if lgn_sigma_surround is not None else 4 * centre
        self.network = LissomNetwork(
            DogLGN(centre, surround, lgn_radius if lgn_radius is not None else 4.7 * surround, lgn_strength),
            LissomV1(retina, n, r_a, afferent_sigma or r_a / 1.3, r_e, excitatory_sigma or 0.78 * r_e, r_i,
                     inhibitory_sigma or 2.08 * r_i, gamma_a, gamma_e, gamma_i, lower, upper, settling_steps,
                     lgn_border=border),
        )
        self.excitatory_radius_start = r_e
        self.sheet_shape = (n, n)
        self.learning_rates = {"afferent": lr_afferent, "excitatory": lr_excitatory, "inhibitory": lr_inhibitory}

    def before_step(self, step: int, optimizer: DivisiveHebbian) -> None:
        if not self.hparams.schedule:
            return
        hp, v1 = self.hparams, self.network.v1
        state = lissom_schedule(step, hp.schedule_scale)
        v1.excitatory.shrink(max(self.excitatory_radius_start * state["excitatory_radius"], hp.excitatory_radius_min))
        v1.thresholds.copy_(torch.tensor([hp.lower + state["lower_rise"], hp.upper + state["upper_rise"]]))
        v1.settling_steps.fill_(state["settling_steps"] or hp.settling_steps)
        groups = {g["name"]: g for g in optimizer.param_groups}
        groups["afferent"]["lr"] = state["afferent_lr"] or hp.lr_afferent
        if state["excitatory_alpha"] is not None:
            groups["excitatory"]["lr"] = state["excitatory_alpha"] * optimizer.connections("excitatory")
