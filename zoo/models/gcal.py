"""GCAL orientation maps (Stevens, Law, Antolik & Bednar 2013, "Mechanisms for stable, robust, and adaptive
development of orientation maps in the primary visual cortex", J Neurosci 33:15747; the model as Topographica
defines it, docs/sources.md).

GCAL is LISSOM with three changes, each built here on LISSOM's own pieces (``zoo.layers.lissom``):

- **Gain control** in the LGN (``GainControlLGN``): each ON/OFF unit's rectified DoG response is divided by the
  pooled activity of its neighbours, so the input V1 learns from hardly changes with contrast.
- **Adaptation** in V1 (``HomeostaticV1``): every unit has its own threshold, which homeostasis moves after each
  input until the unit's smoothed activity sits at ``target_activity``; there is no hand-made schedule of
  thresholds, radii or learning rates.
- **Laterally connected** V1 with fixed radii: lateral excitation does not shrink (its learning rate is 0).

Geometry follows Topographica's sheet coordinates: V1 is ``area`` x ``area`` sheet units at ``cortex_density`` units
per sheet unit; the LGN (``lgn_density``) extends beyond V1 by the afferent radius plus the gain-control radius, and
the retina (same density as the LGN) beyond the LGN by the DoG's radius, each rounded up to whole LGN units: the
smallest sheets that give V1 the input Topographica's larger ones give it (every LGN unit V1 reads has its whole
gain-control pool and DoG field). Connection discs hold the offsets within the nominal radius (as for LISSOM);
Topographica rounds its discs to odd grids, which gives the inhibitory disc 421 units where ours has 377. Radii and
sigmas are given in sheet units as in Topographica (imagen's Gaussian ``size`` is twice its sigma); the model
converts them into units of the sheet they live on. Learning rates are per unit, spread over its connections
(Topographica's convention); the afferent rate covers ON and OFF together (twice Topographica's per-projection rate,
since the two channels are one jointly normalised projection here).
Topographica's V1 settles ``tsettle = 16`` times per input: the first activation sees the afferent drive alone, the
other 15 add the lateral input, hence ``settling_steps = 15``.

``forward`` returns V1's settled activity ``[B, 1, N, N]``. No backprop: training is manual optimisation with
``DivisiveHebbian``, then one homeostatic update of the thresholds from the settled activity (the batch mean, the
same on every DDP process).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from zoo.layers.lissom import GainControlLGN, HomeostaticV1, LissomNetwork
from zoo.tasks.selforganizing import SelfOrganizingTask

__all__ = ["Gcal", "gcal_geometry"]


def gcal_geometry(area: float = 1.0, cortex_density: float = 48.0, lgn_density: float = 24.0,
                  afferent_radius: float = 0.27083, gain_radius: float = 0.25, lgn_radius: float = 0.375) -> dict:
    """Sheet sizes in units: ``cortex`` (V1 side), ``lgn`` (LGN side), ``retina`` (retina side = the image size),
    ``lgn_border`` (LGN units on each side beyond V1's area) and ``retina_border`` (retina units beyond the LGN)."""
    cortex = round(area * cortex_density)
    covered = round(area * lgn_density)  # LGN units under V1
    lgn_border = math.ceil((afferent_radius + gain_radius) * lgn_density - 1e-9)
    retina_border = math.ceil(lgn_radius * lgn_density - 1e-9)
    lgn = covered + 2 * lgn_border
    return {"cortex": cortex, "lgn": lgn, "retina": lgn + 2 * retina_border, "lgn_border": lgn_border,
            "retina_border": retina_border}


class Gcal(SelfOrganizingTask):
    """GCAL: a self-organising orientation map with contrast-gain control and homeostatic thresholds, trained on
    oriented Gaussians (``LissomDataModule``); defaults are Topographica's GCAL (module docstring).

    ``in_shape`` = [1, R, R] comes from the data (linked by the CLI) and must be the retina that ``gcal_geometry``
    derives from the densities and radii (80 x 80 for the defaults).
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 80, 80),
        area: float = 1.5,
        cortex_density: float = 48.0,
        lgn_density: float = 24.0,
        lgn_sigma_center: float = 0.036925,
        lgn_sigma_surround: float = 0.1477,
        lgn_radius: float = 0.375,
        lgn_strength: float = 13.98,
        gain_sigma: float = 0.125,
        gain_radius: float = 0.25,
        gain_strength: float = 0.6,
        gain_constant: float = 0.11,
        afferent_radius: float = 0.27083,
        afferent_sigma: float = 0.27083,
        excitatory_radius: float = 0.104,
        excitatory_sigma: float = 0.025,
        inhibitory_radius: float = 0.22917,
        inhibitory_sigma: float = 0.075,
        afferent_strength: float = 1.5,
        excitatory_strength: float = 1.7,
        inhibitory_strength: float = 1.4,
        settling_steps: int = 15,
        lr_afferent: float = 0.2,
        lr_excitatory: float = 0.0,
        lr_inhibitory: float = 0.3,
        threshold_init: float = 0.2,
        target_activity: float = 0.024,
        homeostatic_rate: float = 0.01,
        smoothing: float = 0.991,
    ):
        super().__init__(in_shape, channels=1, square=True)
        self.save_hyperparameters()
        size = gcal_geometry(area, cortex_density, lgn_density, afferent_radius, gain_radius, lgn_radius)
        if self.in_shape[1] != size["retina"]:
            raise ValueError(f"GCAL's retina is {size['retina']} x {size['retina']} units for area {area}, LGN "
                             f"density {lgn_density} and these radii, but the data gives {list(self.in_shape)}; set "
                             f"the data's image_size to {size['retina']}")
        d_lgn, d_v1 = lgn_density, cortex_density
        lgn = GainControlLGN(lgn_sigma_center * d_lgn, lgn_sigma_surround * d_lgn, lgn_radius * d_lgn,
                             lgn_strength, gain_sigma * d_lgn, gain_radius * d_lgn, gain_strength, gain_constant,
                             crop=size["retina_border"])
        v1 = HomeostaticV1(size["lgn"], size["cortex"], afferent_radius * d_lgn, afferent_sigma * d_lgn,
                           excitatory_radius * d_v1, excitatory_sigma * d_v1, inhibitory_radius * d_v1,
                           inhibitory_sigma * d_v1, afferent_strength, excitatory_strength, inhibitory_strength,
                           settling_steps, threshold_init, target_activity, homeostatic_rate, smoothing,
                           lgn_border=size["lgn_border"])
        self.network = LissomNetwork(lgn, v1)
        self.sheet_shape = (size["cortex"], size["cortex"])
        # Pinwheels are counted on the central 1 x 1 sheet units, as in the paper (edge units lack part of their
        # lateral connections).
        self.map_margin = max(0, round((area - 1.0) / 2 * cortex_density))
        self.learning_rates = {"afferent": lr_afferent, "excitatory": lr_excitatory, "inhibitory": lr_inhibitory}

    def adapt(self, activity: torch.Tensor) -> None:
        v1 = self.network.v1
        v1.adapt(activity)
        # Homeostasis at work: the thresholds climb while units fire above the target, then settle.
        self.log("train/threshold", v1.unit_thresholds.mean())
        self.log("train/smoothed_activity", v1.average_activity.mean())
