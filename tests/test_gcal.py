"""GCAL: the sheet geometry, the LGN's contrast-gain control, the homeostatic thresholds, training under Lightning
(exact resume, the map history) and the data's contrast."""

import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from bioviz.stimuli import gaussian_blob
from zoo.data import LissomDataModule
from zoo.data.lissom import BlobImages
from zoo.errors import ShapeMismatchError
from zoo.layers import DogLGN
from zoo.layers.lissom import GainControlLGN, HomeostaticV1
from zoo.models import Gcal, Lissom
from zoo.models.gcal import gcal_geometry

from conftest import REPO

# V1 10 x 10, LGN 18 x 18, retina 24 x 24.
TINY = dict(in_shape=[1, 24, 24], area=1.0, cortex_density=10, lgn_density=8)


def test_geometry_gives_v1_whole_fields_in_sheet_coordinates():
    # The paper's area (1.5 x 1.5 sheet units) at V1 density 48: LGN 36 units under V1 plus 13 (afferent radius
    # 6.5 + gain-control radius 6) on each side, retina 9 (the DoG's radius) beyond that.
    assert gcal_geometry(area=1.5) == {"cortex": 72, "lgn": 62, "retina": 80, "lgn_border": 13, "retina_border": 9}
    assert gcal_geometry(area=1.0) == {"cortex": 48, "lgn": 50, "retina": 68, "lgn_border": 13, "retina_border": 9}
    model = Gcal(**TINY)
    assert model.sheet_shape == (10, 10) and model.map_margin == 0
    assert Gcal().map_margin == 12  # the paper counts pinwheels on the central 1 x 1 sheet units
    with pytest.raises(ValueError, match="image_size to 24"):
        Gcal(**{**TINY, "in_shape": [1, 20, 20]})


def test_gain_control_makes_the_lgn_response_nearly_contrast_invariant():
    blob = gaussian_blob((40, 40), 30.0, (1.5, 5.0)).reshape(1, 1, 40, 40)
    controlled = GainControlLGN(1.0, 4.0, 9, strength=14.0, gain_sigma=3.0, gain_radius=6.0)
    plain = GainControlLGN(1.0, 4.0, 9, strength=14.0, gain_sigma=3.0, gain_radius=6.0, gain_strength=0.0)
    peaks = torch.tensor([[float(lgn(c * blob).amax()) for c in (0.25, 1.0)] for lgn in (controlled, plain)])
    assert peaks[1, 1] / peaks[1, 0] == pytest.approx(4.0, rel=1e-4)  # no gain control: linear in contrast
    assert peaks[0, 1] / peaks[0, 0] < 1.3  # gain control: a fourfold contrast changes the response by < 30 %


def test_gain_control_divides_by_the_pooled_first_step():
    lgn = GainControlLGN(1.0, 4.0, 9, strength=14.0, gain_sigma=2.0, gain_radius=3.0, gain_strength=0.6,
                         gain_constant=0.11, crop=2)
    retina = torch.rand(2, 1, 20, 20)
    linear = DogLGN.linear(lgn, retina)[..., 2:-2, 2:-2]
    rectified = linear.clamp_min(0)
    pool = torch.zeros(7, 7)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            if dy * dy + dx * dx <= 9:
                pool[dy + 3, dx + 3] = torch.exp(torch.tensor(-(dy * dy + dx * dx) / 8.0))
    pool = (pool / pool.sum()).expand(2, 1, 7, 7)
    expected = rectified / (0.11 + 0.6 * F.conv2d(rectified / 0.11, pool, padding=3, groups=2))
    out = lgn(retina)
    assert out.shape == (2, 2, 16, 16)
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="crop"):
        GainControlLGN(1.0, 4.0, 9, crop=10)(retina)


def test_homeostasis_moves_each_threshold_toward_the_target_activity():
    v1 = HomeostaticV1(12, 6, 2.5, 2.5, 1.0, 0.8, 2.5, 2.0, 1.5, 1.7, 1.4, settling_steps=3, threshold_init=0.2,
                       target_activity=0.1, homeostatic_rate=0.5, smoothing=0.9)
    assert "thresholds" not in v1.state_dict()  # LISSOM's sigmoid thresholds are gone
    activity = torch.zeros(36)
    activity[:18] = 1.0  # half the units far above the target, half silent
    v1.adapt(activity)
    average = 0.9 * 0.1 + 0.1 * activity
    assert torch.allclose(v1.average_activity, average)
    assert torch.allclose(v1.unit_thresholds, 0.2 + 0.5 * (average - 0.1))
    assert bool((v1.unit_thresholds[:18] > 0.2).all()) and bool((v1.unit_thresholds[18:] < 0.2).all())
    drive = torch.full((1, 36), 0.3)
    assert torch.allclose(v1.activation(drive), (0.3 - v1.unit_thresholds).clamp_min(0)[None])  # no saturation
    with pytest.raises(ValueError, match="smoothing"):
        HomeostaticV1(12, 6, 2.5, 2.5, 1.0, 0.8, 2.5, 2.0, 1.5, 1.7, 1.4, 3, smoothing=1.0)


def test_blob_scale_sets_the_input_contrast():
    bright = BlobImages(2, 16, 2, (1.0, 3.0), 0.0, seed=0, scale=1.0).image(1)
    dim = BlobImages(2, 16, 2, (1.0, 3.0), 0.0, seed=0, scale=0.25).image(1)
    assert torch.allclose(dim, 0.25 * bright) and float(bright.max()) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="blob_scale"):
        LissomDataModule(blob_scale=0.0)


def fit(tmp_path, max_epochs, ckpt_path=None):
    pl.seed_everything(0)
    model = Gcal(**TINY)
    data = LissomDataModule(image_size=24, n_blobs=2, blob_sigma=[0.5, 2.5], steps_per_epoch=5, map_orientations=4,
                            map_phases=2)
    trainer = pl.Trainer(max_epochs=max_epochs, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer


def test_training_adapts_thresholds_learns_and_resumes_exactly(tmp_path):
    model, trainer = fit(tmp_path / "a", max_epochs=4)
    assert trainer.global_step == 20
    untrained = Gcal(**TINY)
    v1, fresh = model.network.v1, untrained.network.v1
    assert not torch.allclose(v1.afferent.weight, fresh.afferent.weight)
    assert not torch.allclose(v1.inhibitory.weight, fresh.inhibitory.weight)
    assert torch.equal(v1.excitatory.weight, fresh.excitatory.weight)  # lateral excitation is fixed (rate 0)
    assert not torch.allclose(v1.unit_thresholds, fresh.unit_thresholds)
    assert [entry["step"] for entry in model.map_history] == [5, 10, 15, 20]  # one map per validation
    assert float(trainer.callback_metrics["train/threshold"]) == pytest.approx(float(v1.unit_thresholds.mean()))
    assert "train/smoothed_activity" in trainer.callback_metrics

    ckpt_dir = tmp_path / "b"
    fit(ckpt_dir, max_epochs=2)
    ckpt = next(ckpt_dir.rglob("*.ckpt"))
    resumed, resumed_trainer = fit(tmp_path / "c", max_epochs=4, ckpt_path=ckpt)
    assert resumed_trainer.global_step == 20
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert len(resumed.map_history) == 4
    for a, b in zip(model.map_history, resumed.map_history, strict=True):
        assert a["step"] == b["step"] and torch.equal(a["preference"], b["preference"])


def test_map_development_reads_stability_and_density_from_checkpoints(tmp_path):
    """examples/map_development.py on a GCAL and a LISSOM run: one row per run, at the run's last step, and the
    figure."""
    model, _ = fit(tmp_path / "gcal", max_epochs=3)
    gcal = next((tmp_path / "gcal").rglob("*.ckpt"))
    pl.seed_everything(0)
    lissom_model = Lissom(in_shape=[1, 24, 24], cortex_size=10, schedule_scale=0.005)
    data = LissomDataModule(image_size=24, steps_per_epoch=5, map_orientations=4, map_phases=2)
    pl.Trainer(max_epochs=2, default_root_dir=tmp_path / "lissom", logger=False, enable_progress_bar=False,
               enable_model_summary=False).fit(lissom_model, data)
    lissom = next((tmp_path / "lissom").rglob("*.ckpt"))
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "map_development.py"), "--gcal", str(gcal),
                           "--lissom", str(lissom), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GCAL: 1 runs" in proc.stdout and "LISSOM: 1 runs" in proc.stdout
    assert (tmp_path / "out" / "map_development.png").is_file()
    gcal_row = next(line for line in proc.stdout.splitlines() if line.startswith(str(gcal)[-44:]))
    assert gcal_row.split()[1] == "15" and len(model.map_history) == 3  # 3 validations of 5 updates


def test_a_checkpoint_of_another_retina_is_refused_by_name(tmp_path):
    """The map history rides in the checkpoint without hiding Task's check of the data's shape."""
    fit(tmp_path, max_epochs=1)
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)
    assert len(ckpt["map_history"]) == 1
    other = Gcal(in_shape=[1, 26, 26], area=1.0, cortex_density=10, lgn_density=8, lgn_radius=0.5)
    with pytest.raises(ShapeMismatchError, match="in_shape: checkpoint"):
        other.on_load_checkpoint(ckpt)
