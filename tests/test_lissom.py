"""LISSOM: local projections, LGN polarity, settling, the divisive Hebbian rule, the schedule, the map measurement,
the model under Lightning (checkpoint and resume), and the data."""

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from bioviz.stimuli import gaussian_blob, sine_gratings
from zoo.data import LissomDataModule, map_gratings
from zoo.data.lissom import BlobImages, EpochSampler
from zoo.errors import ShapeMismatchError
from zoo.layers import DivisiveHebbian, DogLGN, LissomV1, LocalProjection, disc_offsets, piecewise_sigmoid
from zoo.layers.lissom import LateralWeights, sheet_centres
from zoo.models import Lissom
from zoo.models.lissom import lissom_schedule
from zoo.tasks.selforganizing import measure_map, preference_uniformity

TINY = dict(in_shape=[1, 12, 12], cortex_size=8)


def naive_patches(projection: LocalProjection, x: torch.Tensor, border: int = 0) -> torch.Tensor:
    """What each unit sees, one offset at a time."""
    dy, dx = disc_offsets(float(projection.radius))
    centres = border + sheet_centres(projection.in_size - 2 * border, projection.out_size)
    r = projection.reach
    padded = F.pad(x, (r,) * 4)
    out = torch.zeros(x.shape[0], x.shape[1], len(dy), projection.out_size, projection.out_size)
    for k in range(len(dy)):
        out[:, :, k] = padded[:, :, centres + dy[k] + r][:, :, :, centres + dx[k] + r]
    return out.reshape(x.shape[0], -1, projection.out_size**2)


def small_v1(**kwargs) -> LissomV1:
    args = dict(lgn_size=12, size=10, afferent_radius=3.5, afferent_sigma=2.7, excitatory_radius=1.0,
                excitatory_sigma=0.8, inhibitory_radius=2.5, inhibitory_sigma=5.2)
    return LissomV1(**{**args, **kwargs})


def test_disc_offsets_and_piecewise_sigmoid():
    dy, dx = disc_offsets(1.5)
    assert len(dy) == 9 and bool(((dy**2 + dx**2) <= 2.25).all())
    assert len(disc_offsets(0.3)[0]) == 1  # the unit itself
    assert len(disc_offsets(11)[0]) == 377
    x = torch.tensor([-1.0, 0.1, 0.35, 0.6, 2.0])
    assert torch.allclose(piecewise_sigmoid(x, 0.1, 0.6), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="upper threshold"):
        piecewise_sigmoid(x, 0.5, 0.5)


@pytest.mark.parametrize("in_size, out_size, border", [(10, 10, 0), (9, 12, 0), (16, 8, 3)])
def test_local_projection_stores_only_the_disc_and_gathers_what_each_unit_sees(in_size, out_size, border):
    proj = LocalProjection(2, in_size, out_size, radius=2.5, sigma=2.0, border=border,
                           generator=torch.Generator().manual_seed(0))
    k = len(disc_offsets(2.5)[0])
    assert proj.weight.shape == (2 * k, out_size**2)  # not [units, 2 * in_size^2] with a mask
    x = torch.rand(3, 2, in_size, in_size)
    assert torch.equal(proj.patches(x), naive_patches(proj, x, border))
    assert torch.allclose(proj(x), (naive_patches(proj, x, border) * proj.weight).sum(1))
    # Each unit's weights sum to 1 over both channels; none come from outside the input sheet.
    assert torch.allclose(proj.weight.sum(0), torch.ones(out_size**2))
    outside = naive_patches(proj, torch.ones(1, 2, in_size, in_size), border)[0] == 0
    assert (proj.weight[outside] == 0).all()
    with pytest.raises(ValueError, match=r"expects input \[B, 2, "):
        proj(torch.rand(1, 1, in_size, in_size))


def test_initial_weights_are_a_noisy_gaussian_of_distance():
    proj = LocalProjection(1, 12, 12, radius=4, sigma=1.5, noise=False)
    unit = 6 * 12 + 6  # far from the edges
    dy, dx = disc_offsets(4)
    expected = torch.exp(-(dy**2 + dx**2) / (2 * 1.5**2))
    assert torch.allclose(proj.weight[:, unit], expected / expected.sum(), atol=1e-6)
    noisy = LocalProjection(1, 12, 12, radius=4, sigma=1.5, generator=torch.Generator().manual_seed(1))
    ratio = noisy.weight[:, unit] / proj.weight[:, unit]
    assert ratio.std() > 0.1  # times uniform noise


def test_on_and_off_channels_have_the_expected_signs_for_a_bright_spot():
    lgn = DogLGN(sigma_center=0.8, sigma_surround=3.2, radius=8, strength=2.33)
    spot = gaussian_blob((25, 25), sigma=(1.0, 1.0))  # bright spot at the centre, dark elsewhere
    linear = lgn.linear(spot)[0]
    on, off = linear[0], linear[1]
    assert on[12, 12] > 0.1 and off[12, 12] < -0.1  # ON excited, OFF inhibited at the spot
    assert off[12, 16] > 0 and on[12, 16] < 0  # the surround: the reverse
    out = lgn(spot)[0]
    assert out[0, 12, 12] > 0.1 and out[1, 12, 12] == 0
    assert out[1, 12, 16] > 0
    uniform = lgn.linear(torch.ones(1, 1, 25, 25))[0, :, 12, 12]
    assert uniform.abs().max() < 1e-5  # balanced: no response to uniform light (far from the edges)
    with pytest.raises(ValueError, match="sigma_center < sigma_surround"):
        DogLGN(2.0, 1.0, 5)


def test_v1_keeps_on_and_off_apart():
    v1 = small_v1()
    assert v1.afferent.in_channels == 2
    lgn = torch.zeros(1, 2, 12, 12)
    lgn[:, 0] = torch.rand(12, 12)
    swapped = lgn.flip(1)
    # Different weights on the two channels: swapping ON and OFF changes the drive (a summed sheet could not).
    assert not torch.allclose(v1.afferent(lgn), v1.afferent(swapped))


def test_settling_applies_lateral_excitation_and_inhibition():
    v1 = small_v1(settling_steps=0)
    lgn = torch.zeros(1, 2, 12, 12)
    lgn[0, 0, 4:8, 4:8] = 1.0
    drive = v1.gamma_a * v1.afferent(lgn)
    assert torch.allclose(v1.settle(lgn), v1.activation(drive))
    v1.settling_steps.fill_(3)
    eta = v1.activation(drive)
    for _ in range(3):
        sheet = eta.view(1, 1, 10, 10)
        eta = v1.activation(drive + v1.gamma_e * v1.excitatory(sheet) - v1.gamma_i * v1.inhibitory(sheet))
    assert torch.allclose(v1.settle(lgn), eta, atol=1e-6)
    with pytest.raises(ValueError, match="excitatory radius"):
        small_v1(excitatory_radius=3.0)


def test_hebbian_update_uses_the_settled_activity_and_keeps_weights_normalised():
    torch.manual_seed(0)
    model = Lissom(**TINY, schedule=False)
    net, v1 = model.network, model.network.v1
    optimizer = model.configure_optimizers()
    image = gaussian_blob((12, 12), orientation=30.0, sigma=(1.0, 3.0), amplitude=1.0)
    lgn = net.lgn(image)
    settled, patches = v1.settle(lgn), v1.afferent.patches(lgn)
    unsettled = v1.activation(v1.gamma_a * v1.afferent(lgn))
    assert not torch.allclose(settled, unsettled)  # lateral interactions changed the activity
    alphas = optimizer.alphas()
    before = v1.afferent.weight.detach().clone()

    def update(post):
        w = before + alphas["afferent"] * patches[0] * post[0]  # every unit, also those with post = 0
        return w / w.sum(0, keepdim=True)

    eta, terms = net.hebbian_terms(image, alphas)
    assert torch.equal(eta, settled)
    optimizer.step(terms=terms)
    after = v1.afferent.weight.detach()
    assert torch.allclose(after, update(settled), atol=1e-7)
    assert not torch.allclose(after, update(unsettled), atol=1e-6)
    # Normalisation holds after every update, for every projection.
    for step in range(5):
        blob = gaussian_blob((12, 12), orientation=36.0 * step, sigma=(1.0, 3.0), center=(step - 2, 0))
        optimizer.step(terms=net.hebbian_terms(blob, optimizer.alphas())[1])
        for name, projection in net.projections().items():
            assert torch.allclose(projection.weight.sum(0), torch.ones(64), atol=1e-5), (name, step)
            assert (projection.weight >= 0).all()
    with pytest.raises(ValueError, match="no projection named"):
        optimizer.step(terms={"feedback": terms["afferent"]})


def test_learning_rates_are_per_unit_spread_over_the_connections():
    model = Lissom(**TINY)
    optimizer = model.configure_optimizers()
    alphas = optimizer.alphas()
    afferent = model.network.v1.afferent
    assert alphas["afferent"] == pytest.approx(0.959 / afferent.weight.shape[0])
    assert alphas["inhibitory"] == pytest.approx(1.80873 / model.network.v1.inhibitory.weight.shape[0])


def test_shrinking_cuts_connections_for_good():
    proj = LocalProjection(1, 10, 10, radius=3, sigma=2, noise=False)
    proj.shrink(1.0)
    far = proj.distance > 1.0
    assert (proj.weight[far] == 0).all() and torch.allclose(proj.weight.sum(0), torch.ones(100))
    optimizer = DivisiveHebbian({"p": proj}, {"p": 1.0})
    x = torch.rand(1, 1, 10, 10)
    optimizer.step(terms={"p": DivisiveHebbian.term(proj.patches(x), torch.ones(1, 100), 0.5)})
    assert (proj.weight[far] == 0).all()  # the Hebbian term does not regrow them
    assert optimizer.connections("p") == 5
    proj.shrink(2.0)  # never grows back
    assert float(proj.radius) == 1.0


def test_schedule_follows_the_book():
    start = lissom_schedule(0, 0.5)
    assert start["stage"] == 0 and start["excitatory_radius"] == 1.0 and start["afferent_lr"] is None
    assert lissom_schedule(99, 0.5)["stage"] == 0 and lissom_schedule(100, 0.5)["stage"] == 1
    end = lissom_schedule(10_000, 0.5)
    assert end["stage"] == 10 and end["settling_steps"] == 13 and end["afferent_lr"] == pytest.approx(0.2055)
    assert end["lower_rise"] == pytest.approx(0.14) and end["upper_rise"] == pytest.approx(0.23)
    assert lissom_schedule(1000, 0.5)["excitatory_radius"] == pytest.approx(0.028 / 0.10417)

    model = Lissom(in_shape=[1, 12, 12], cortex_size=20, excitatory_radius_min=0.0)  # the book's radii, no floor
    optimizer = model.configure_optimizers()
    model.before_step(1200, optimizer)  # past 4 milestones (100, 250, 500, 1000) at scale 0.5
    v1 = model.network.v1
    assert float(v1.excitatory.radius) == pytest.approx(2.0 * 0.028 / 0.10417)
    assert v1.thresholds.tolist() == pytest.approx([0.083 + 0.08, 0.633 + 0.05])
    assert int(v1.settling_steps) == 10
    assert optimizer.alphas()["excitatory"] == pytest.approx(0.06084)
    with pytest.raises(ValueError, match="schedule_scale"):
        lissom_schedule(5, 0)


def test_schedule_keeps_the_3x3_excitatory_neighbourhood():
    # The book's last radii are below one unit; like Topographica (min_matrix_radius=1) the floor keeps the unit and
    # its 8 neighbours, not the unit alone (which makes each unit latch on or off by itself).
    model = Lissom(in_shape=[1, 12, 12], cortex_size=20)
    optimizer = model.configure_optimizers()
    model.before_step(10_000, optimizer)
    excitatory = model.network.v1.excitatory
    assert float(excitatory.radius) == 1.5 and optimizer.connections("excitatory") == 9
    assert optimizer.alphas()["excitatory"] == pytest.approx(0.06084)
    unit_only = Lissom(in_shape=[1, 12, 12], cortex_size=20, excitatory_radius_min=0.0)
    optimizer = unit_only.configure_optimizers()
    unit_only.before_step(10_000, optimizer)
    assert optimizer.connections("excitatory") == 1
    with pytest.raises(ValueError, match="excitatory_radius_min"):
        Lissom(in_shape=[1, 12, 12], excitatory_radius_min=-1.0)


def test_model_checks_its_input():
    with pytest.raises(ShapeMismatchError, match=r"Lissom needs in_shape \[1, size, size\]; got \[3, 12, 12\]"):
        Lissom(in_shape=[3, 12, 12])
    with pytest.raises(ShapeMismatchError, match=r"Lissom needs in_shape \[1, size, size\]; got \[1, 12, 14\]"):
        Lissom(in_shape=[1, 12, 14])
    with pytest.raises(ValueError, match="border"):
        Lissom(in_shape=[1, 12, 12], border=6)
    model = Lissom(**TINY)
    assert model(torch.rand(2, 1, 12, 12)).shape == (2, 1, 8, 8)
    with pytest.raises(ShapeMismatchError, match=r"\[B, 1, 12, 12\]"):
        model.check_images(torch.rand(2, 1, 16, 16))


def test_map_measurement_recovers_known_preferences():
    # A sheet of ideal units: unit u prefers pref[u]; responses to gratings are cos^2 tuning times a phase term.
    gen = torch.Generator().manual_seed(0)
    pref = torch.rand(6 * 6, generator=gen, dtype=torch.float64) * 180
    images, orientation, phase, frequency = map_gratings(8, orientations=8, phases=4, frequencies=(0.1, 0.2))
    delta = torch.deg2rad(orientation[:, None].double() - pref[None])
    responses = (torch.cos(delta) ** 2 * (1 + 0.1 * torch.cos(torch.deg2rad(phase[:, None].double())))).float()
    responses = responses * (1 + (frequency[:, None] == 0.1))  # 0.1 is the best frequency
    result = measure_map(responses, orientation, phase, frequency, (6, 6))
    error = torch.remainder(result.preference.flatten().double() - pref + 90, 180) - 90
    assert error.abs().max() < 0.5
    assert result.selectivity_mean > 0.3
    with pytest.raises(ValueError, match="whole set of gratings"):
        measure_map(responses[:20], orientation[:20], phase[:20], frequency[:20], (6, 6))


def test_preference_uniformity():
    assert preference_uniformity(torch.arange(0, 180, 1.0)) == pytest.approx(1.0)
    assert preference_uniformity(torch.full((100,), 45.0)) == pytest.approx(0.0)


def test_data_is_seeded_per_image_and_split_between_processes():
    data = BlobImages(4, 16, 2, (1.0, 3.0), 0.0, seed=3)
    assert torch.equal(data.image(7), BlobImages(4, 16, 2, (1.0, 3.0), 0.0, seed=3).image(7))
    assert not torch.equal(data.image(7), data.image(8))
    ranks = [EpochSampler(data, num_replicas=2, rank=r, shuffle=False) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert list(ranks[0]) == [8, 10] and list(ranks[1]) == [9, 11]
    dm = LissomDataModule(image_size=16, steps_per_epoch=3, batch_size=2, map_orientations=4, map_phases=2,
                          map_frequencies=[0.1, 0.2])
    assert dm.in_shape == [1, 16, 16]
    (images,) = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 1, 16, 16) and images.max() <= 1.0
    gratings = torch.cat([b[0] for b in dm.val_dataloader()])
    assert gratings.shape == (4 * 2 * 2, 1, 16, 16)
    expected, _, _ = sine_gratings((16, 16), 4, 2, 0.1)
    assert torch.allclose(gratings[:8], expected)
    with pytest.raises(ValueError, match="blob_sigma"):
        LissomDataModule(blob_sigma=[1.0])
    separated = LissomDataModule(image_size=16, steps_per_epoch=3, blob_min_separation=8.0)
    (image,) = next(iter(separated.train_dataloader()))
    assert torch.equal(image[0], BlobImages(3, 16, 2, (0.75, 2.5), 0.0, seed=0, min_separation=8.0).image(0))
    assert not torch.equal(image[0], BlobImages(3, 16, 2, (0.75, 2.5), 0.0, seed=0).image(0))
    with pytest.raises(ValueError, match="blob_min_separation"):
        LissomDataModule(image_size=16, blob_min_separation=-1.0)


def fit(tmp_path, max_epochs, ckpt_path=None, **trainer_args):
    pl.seed_everything(0)
    model = Lissom(**TINY, schedule_scale=0.005)
    data = LissomDataModule(image_size=12, steps_per_epoch=5, map_orientations=4, map_phases=2)
    trainer = pl.Trainer(max_epochs=max_epochs, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, **trainer_args)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model, trainer


def test_training_learns_and_resumes_exactly(tmp_path):
    model, trainer = fit(tmp_path / "a", max_epochs=4)
    assert trainer.global_step == 20  # one Hebbian update per image
    untrained = Lissom(**TINY, schedule_scale=0.005)
    assert not torch.allclose(model.network.v1.afferent.weight, untrained.network.v1.afferent.weight)
    assert "val/selectivity" in trainer.callback_metrics
    assert int(model.network.v1.settling_steps) == 10  # schedule ran: update 19 is past 2000 x 0.005

    first, _ = fit(tmp_path / "b", max_epochs=2)
    ckpt = next((tmp_path / "b").rglob("*.ckpt"))
    resumed, resumed_trainer = fit(tmp_path / "c", max_epochs=4, ckpt_path=ckpt)
    assert resumed_trainer.global_step == 20
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_loaded_checkpoint_keeps_the_schedule_state(tmp_path):
    model, trainer = fit(tmp_path, max_epochs=2)
    ckpt = next(tmp_path.rglob("*.ckpt"))
    loaded = Lissom.load_from_checkpoint(ckpt)
    v1 = loaded.network.v1
    assert torch.equal(v1.thresholds, model.network.v1.thresholds)
    assert float(v1.excitatory.radius) == float(model.network.v1.excitatory.radius)
    x = torch.rand(1, 1, 12, 12)
    assert torch.equal(loaded(x), model(x))
    assert math.isfinite(float(trainer.callback_metrics["val/selectivity"]))


def test_sparse_settling_equals_gathering_every_disc():
    v1 = small_v1()
    lateral = v1.lateral_weights()
    # Two different combined weights, so that swapping the excitatory and inhibitory parts would show.
    expected = v1.gamma_e * naive_combined(v1, "excitatory") - v1.gamma_i * naive_combined(v1)
    assert torch.allclose(lateral, expected, atol=1e-7)
    eta = torch.zeros(1, 100)
    eta[0, [0, 9, 45, 46, 99]] = torch.tensor([0.3, 1.0, 0.5, 0.2, 0.7])  # corners, edges and the middle
    gathered = (v1.inhibitory.patches(eta.view(1, 1, 10, 10)) * lateral).sum(1)
    assert torch.allclose(v1.lateral_input(eta), gathered, atol=1e-7)
    # Settling keeps the outgoing rows it made; later steps with other active units still agree.
    weights = LateralWeights(v1)
    for units in ([0, 9, 45], [45, 46, 99, 12], [3]):
        eta = torch.zeros(1, 100)
        eta[0, units] = torch.rand(len(units))
        gathered = (v1.inhibitory.patches(eta.view(1, 1, 10, 10)) * lateral).sum(1)
        assert torch.allclose(v1.lateral_input(eta, weights), gathered, atol=1e-7)
    v1.sparse_below = 0.0  # the same through the dense path
    assert torch.allclose(v1.lateral_input(eta, weights), gathered, atol=1e-7)


def naive_combined(v1: LissomV1, name: str = "inhibitory") -> torch.Tensor:
    """A projection's weights on the inhibitory disc, ``[K_I, units]``, by looking up each offset."""
    iy, ix = disc_offsets(float(v1.inhibitory.radius))
    projection = getattr(v1, name)
    offsets = list(zip(*(d.tolist() for d in disc_offsets(float(projection.radius))), strict=True))
    out = torch.zeros(len(iy), v1.size**2)
    for k, offset in enumerate(zip(iy.tolist(), ix.tolist(), strict=True)):
        if offset in offsets:
            out[k] = projection.weight[offsets.index(offset)]
    return out


def test_outgoing_weights_are_the_lateral_weights_by_presynaptic_unit():
    v1 = small_v1()
    lateral = v1.lateral_weights()
    units = torch.tensor([0, 7, 45, 99])
    rows = v1.outgoing_weights(units)
    iy, ix = disc_offsets(float(v1.inhibitory.radius))
    for row, v in zip(rows, units.tolist(), strict=True):
        for k, (dy, dx) in enumerate(zip(iy.tolist(), ix.tolist(), strict=True)):
            ty, tx = v // 10 - dy, v % 10 - dx  # v sends to unit v - offset_k, which reads v at offset k
            if 0 <= ty < 10 and 0 <= tx < 10:
                assert row[k] == lateral[k, ty * 10 + tx], (v, k)


def test_patches_of_a_few_units_equal_those_of_all():
    for proj in (LocalProjection(2, 16, 8, radius=2.5, sigma=2.0, border=3), LocalProjection(1, 10, 10, 2.5, 2.0)):
        x = torch.rand(2, proj.in_channels, proj.in_size, proj.in_size)
        units = torch.tensor([0, 5, proj.n_units - 1, 17])
        assert torch.equal(proj.patches(x, units), proj.patches(x)[:, :, units])
        assert proj.patches(x, units[:0]).shape == (2, proj.weight.shape[0], 0)


def test_units_that_did_not_respond_keep_their_weights():
    proj = LocalProjection(1, 10, 10, radius=2, sigma=2)
    before = proj.weight.detach().clone()
    optimizer = DivisiveHebbian({"p": proj}, {"p": 1.0})
    post = torch.zeros(1, 100)
    post[0, 33] = 1.0
    optimizer.step(terms={"p": DivisiveHebbian.term(proj.patches(torch.rand(1, 1, 10, 10)), post, 0.5)})
    changed = (proj.weight != before).any(0)
    assert changed.nonzero().flatten().tolist() == [33]


@pytest.mark.parametrize("batch", [1, 2])
def test_hebbian_terms_are_presynaptic_input_times_settled_activity(batch):
    torch.manual_seed(0)
    model = Lissom(**TINY, schedule=False)
    net, v1 = model.network, model.network.v1
    alphas = {"afferent": 0.1, "excitatory": 0.2, "inhibitory": 0.3}
    images = torch.stack([gaussian_blob((12, 12), orientation=40.0 * i, sigma=(1.0, 3.0)) for i in range(batch)])
    eta, terms = net.hebbian_terms(images.view(batch, 1, 12, 12), alphas)
    assert terms["afferent"].units.tolist() == (eta != 0).any(0).nonzero().flatten().tolist()
    lateral = v1.inhibitory.patches(eta.view(batch, 1, 8, 8))
    pre = {"afferent": v1.afferent.patches(net.lgn(images.view(batch, 1, 12, 12))), "inhibitory": lateral,
           "excitatory": lateral[:, v1.excitatory_rows]}
    for name, term in terms.items():
        expected = alphas[name] * (pre[name] * eta[:, None]).mean(0)  # every unit, zero where eta is
        assert torch.allclose(term.dense(64), expected, atol=1e-7), name


def test_lgn_blur_has_no_subnormal_weights():
    """Subnormal floats make CPU arithmetic many times slower; the centre Gaussian's far tail would hold some."""
    lgn = DogLGN(0.73, 2.92, radius=13.7)
    x = torch.rand(1, 1, 56, 56)
    blur = lgn._blur_matrices(56, x)
    assert not ((blur != 0) & (blur.abs() < torch.finfo(torch.float32).tiny)).any()
    profiles = lgn.profiles[:, 0]  # what the tails held: only values below float32's normal range were dropped
    kept = profiles.masked_fill(profiles < torch.finfo(torch.float32).tiny, 0.0)
    assert (profiles - kept).abs().max() < torch.finfo(torch.float32).tiny
    assert int((blur[0] > 0).sum(1).min()) > 1

