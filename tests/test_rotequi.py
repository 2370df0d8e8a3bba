import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from zoo.callbacks import PlateauSchedule, PreciseBatchNorm
from zoo.layers import (
    HermiteConv2d,
    RotationEquivariantCore,
    SpatialL1FeatureL2Readout,
    SpatialXFeatureTransferReadout,
    build_readout,
    hermite_basis,
    rotation_matrices,
)
from zoo.models import CNNV1, RotEquiV1


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def gram_error(basis):
    flat = basis.flatten(1)
    return (flat @ flat.t() - torch.eye(len(flat), dtype=flat.dtype)).abs().max().item()


@pytest.mark.parametrize("size", [5, 13])
def test_hermite_basis_size_kinds_and_orthonormality(size):
    basis, mu, kinds = hermite_basis(size, upsampling=2)
    assert basis.shape == (size * (size + 1) // 2, 2 * size, 2 * size)  # 15 for 5, 91 for 13
    assert kinds.count("r") == kinds.count("i") and all(kinds[i + 1] == "i" for i, k in enumerate(kinds) if k == "r")
    assert (mu[[i for i, k in enumerate(kinds) if k == "z"]] == 0).all()
    torch.testing.assert_close(basis.flatten(1).norm(dim=1), torch.ones(len(basis), dtype=basis.dtype))
    # Stated tolerance on the sampling grid (upsampling 2): under 0.02; finer sampling only removes aliasing.
    assert gram_error(basis) < 0.02
    assert gram_error(hermite_basis(size, upsampling=4)[0]) < 0.02
    # They are the true Hermite functions of the envelope: orthonormal to 1e-6 on a wide, fine grid.
    assert gram_error(hermite_basis(size, upsampling=6, extent=4 * math.sqrt(size))[0]) < 1e-6


def test_hermite_basis_rejects_bad_sizes():
    with pytest.raises(ValueError, match="filter_size and upsampling must be >= 1"):
        hermite_basis(0)


def test_coefficient_rotation_is_exact_for_quarter_turns_and_a_group(float64):
    basis, mu, kinds = hermite_basis(7, upsampling=1)
    rot = rotation_matrices(mu, kinds, 8)
    coeffs = torch.randn(len(kinds))
    filt = torch.einsum("a,ahw->hw", coeffs, basis)
    quarter = torch.einsum("a,ahw->hw", rot[2] @ coeffs, basis)  # 2 of 8 rotations = 90 degrees
    torch.testing.assert_close(quarter, torch.rot90(filt, 1), rtol=0, atol=1e-12)  # counter-clockwise as shown
    torch.testing.assert_close(rot[1] @ rot[1], rot[2], rtol=0, atol=1e-12)
    torch.testing.assert_close(rot[3] @ rot[5], rot[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(rot[1] @ rot[1].t(), torch.eye(len(kinds)), rtol=0, atol=1e-12)


def randomise_norms(core):
    """Batch-norm statistics and affine parameters away from their init, so eval mode is not the identity."""
    with torch.no_grad():
        for module in core.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 2)
                module.bias.uniform_(-1, 1)


def equivariance_error(core, x):
    out, turned = core(x), core(torch.rot90(x, 1, (-2, -1)))
    r = core.num_rotations
    expected = torch.rot90(out, 1, (-2, -1)).unflatten(1, (r, -1)).roll(r // 4, 1).flatten(1, 2)
    return (turned - expected).abs().max().item()


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("upsampling", [1, 2])
def test_core_is_exactly_rotation_equivariant(n_layers, upsampling, float64):
    torch.manual_seed(n_layers * 10 + upsampling)
    core = RotationEquivariantCore(1, 8, upsampling, shared_biases=True, filter_size=[9, 5, 5][:n_layers],
                                   num_filters=[3, 4, 2][:n_layers], activation_fn=["soft", "soft", "none"][:n_layers],
                                   rel_smooth_weight=[1] * n_layers, rel_sparse_weight=[1] * n_layers)
    randomise_norms(core)
    core.eval()
    x = torch.randn(2, 1, 15, 17)
    assert core(x).shape == (2, 8 * [3, 4, 2][n_layers - 1], 15, 17)
    assert equivariance_error(core, x) < 1e-5


def test_equivariance_needs_shared_biases_and_the_input_roll(float64):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 13, 13)
    core = RotationEquivariantCore(1, 8, 1, shared_biases=False, filter_size=[7, 3], num_filters=[3, 3],
                                   activation_fn=["soft", "none"], rel_smooth_weight=[1, 1], rel_sparse_weight=[0, 1])
    randomise_norms(core)
    core.eval()
    assert equivariance_error(core, x) > 1e-2  # per-rotation batch-norm parameters break it (the paper's setting)
    shared = RotationEquivariantCore(1, 8, 1, shared_biases=True, filter_size=[7, 3], num_filters=[3, 3],
                                     activation_fn=["soft", "none"], rel_smooth_weight=[1, 1],
                                     rel_sparse_weight=[0, 1])
    shared.eval()
    assert equivariance_error(shared, x) < 1e-5
    shared.layers[1][0].input_order = None  # without rolling the input rotation groups, layer 2 is not equivariant
    assert equivariance_error(shared, x) > 1e-2


def test_train_mode_shared_batch_norm_is_equivariant_too(float64):
    torch.manual_seed(1)
    core = RotationEquivariantCore(1, 8, 2, shared_biases=True, filter_size=[7, 3], num_filters=[2, 3],
                                   activation_fn=["soft", "none"], rel_smooth_weight=[1, 1], rel_sparse_weight=[0, 1])
    assert equivariance_error(core, torch.randn(4, 1, 11, 11)) < 1e-5


def test_core_penalty_matches_hand_computed_values():
    # 1x1 filters: the basis is one symmetric function, 1 on the 1x1 grid; 4 rotations.
    core = RotationEquivariantCore(1, 4, 1, filter_size=[1, 1], num_filters=[1, 1], activation_fn=["soft", "none"],
                                   rel_smooth_weight=[1, 0.5], rel_sparse_weight=[0, 1], conv_smooth_weight=0.1,
                                   conv_sparse_weight=0.2)
    with torch.no_grad():
        core.layers[0][0].coeffs.fill_(0.7)
        core.layers[1][0].coeffs.copy_(torch.tensor([1.0, 2.0, -2.0, 4.0]).reshape(1, 4, 1))
    # Layer 2's four rotated filters read the input rotation groups rolled by the output rotation.
    rows = core.layers[1][0].weight[:, :, 0, 0]
    torch.testing.assert_close(rows, torch.stack([torch.tensor([1.0, 2.0, -2.0, 4.0]).roll(r) for r in range(4)]))
    # Smoothness: the 'same' Laplacian of a 1x1 filter is -3 w, so each of the 4 rotated filters pays 9.
    # Group sparsity (layer 2 only): (1 + 2 + 2 + 4) / sqrt(1 + 4 + 4 + 16) = 9 / 5 per filter.
    expected = 0.1 * (1.0 * 4 * 9 + 0.5 * 4 * 9) + 0.2 * (4 * 9 / 5)
    assert core.penalty().item() == pytest.approx(expected)


def test_hermite_conv_weight_is_the_conv_it_applies():
    layer = HermiteConv2d(2, 3, 5, num_rotations=4, upsampling=2)
    x = torch.randn(1, 2, 9, 9)
    assert layer.weight.shape == (12, 2, 5, 5)
    torch.testing.assert_close(layer(x), torch.nn.functional.conv2d(x, layer.weight, padding="same"))
    with pytest.raises(ValueError, match="in_channels divisible by num_rotations"):
        HermiteConv2d(6, 3, 5, num_rotations=4, rotation_major_input=True)
    with pytest.raises(ValueError, match="filter sizes must be odd"):
        RotationEquivariantCore(1, 8, 1, filter_size=[4], num_filters=[2], activation_fn=["none"],
                                rel_smooth_weight=[1], rel_sparse_weight=[0])


def test_l1_mask_l2_feature_readout_penalty():
    readout = SpatialL1FeatureL2Readout([2, 2, 2], 2, mask_sparsity=0.5, feature_l2=0.25)
    with torch.no_grad():
        readout.mask.copy_(torch.tensor([[[1.0, -2.0], [0.0, 1.0]], [[0.5, 0.5], [0.0, 0.0]]]))
        readout.features.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
    assert readout.penalty().item() == pytest.approx(0.5 * 5.0 + 0.25 * 6.0)
    assert build_readout("joint_l1", [2, 2, 2], 2, readout_sparsity=0.3).sparsity == 0.3
    with pytest.raises(ValueError, match="unknown readout 'sparse'; choose one of"):
        build_readout("sparse", [2, 2, 2], 2)


def test_transfer_readout_blocks_core_gradients_of_transfer_neurons():
    torch.manual_seed(0)
    core = nn.Conv2d(1, 3, 3, padding=1)
    readout = SpatialXFeatureTransferReadout([3, 5, 5], 6, k_transfer=2)
    assert readout.trains_core.tolist() == [True, False, True, False, True, False]
    x = torch.randn(4, 1, 5, 5)
    out = readout(core(x))
    # The prediction is the plain readout's.
    plain = torch.nn.functional.softplus(readout.drive(core(x)) + readout.bias)
    torch.testing.assert_close(out, plain)
    out[:, ~readout.trains_core].sum().backward()
    assert core.weight.grad is None or core.weight.grad.abs().max() == 0
    assert readout.mask.grad[~readout.trains_core].abs().sum() > 0  # their own readout still learns
    core.zero_grad()
    readout(core(x))[:, readout.trains_core].sum().backward()
    assert core.weight.grad.abs().max() > 0
    with pytest.raises(ValueError, match="k_transfer must be >= 2"):
        SpatialXFeatureTransferReadout([3, 5, 5], 6, k_transfer=1)


def test_rotequi_model_core_layout_and_parameters():
    model = RotEquiV1(n_neurons=5, in_shape=[1, 20, 24])
    features = model.core(torch.zeros(2, 1, 20, 24))
    assert features.shape == (2, 8 * 16, 20, 24)
    assert model(torch.zeros(2, 1, 20, 24)).shape == (2, 5)
    assert [c.coeffs.shape[0] for c in model.core.convs] == [91, 15, 15]
    assert model.readout.features.shape == (5, 128) and model.penalty() > 0
    # The paper's 16 x 8 core: 91 x 16 + 2 x 15 x 128 x 16 Hermite coefficients, plus batch norm.
    assert sum(c.coeffs.numel() for c in model.core.convs) == 91 * 16 + 2 * 15 * 128 * 16
    positive = RotEquiV1(n_neurons=5, in_shape=[1, 20, 24], positive_feature_weights=True,
                         readout="l1_mask_l2_features", mask_sparsity=0.1, feature_l2=0.2, filter_size=[5, 3, 3])
    assert isinstance(positive.readout, SpatialL1FeatureL2Readout) and (positive.readout.feature_weights() >= 0).all()


def test_cnn_v1_takes_the_same_readouts():
    model = CNNV1(n_neurons=4, in_shape=[1, 12, 12], filter_size=[5, 3, 3], num_filters=[4, 4, 4],
                  readout="transfer", k_transfer=2)
    assert isinstance(model.readout, SpatialXFeatureTransferReadout)


class ScriptedValidation(pl.LightningModule):
    """One parameter trained by SGD; the validation loss follows a script, one value per validation."""

    def __init__(self, script):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.script, self.calls, self.steps_at_validation, self.w_at_validation = list(script), 0, [], []

    def training_step(self, batch, batch_idx):
        return -self.w  # the weight grows by lr every step

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        self.steps_at_validation.append(self.trainer.global_step)
        self.w_at_validation.append(self.w.item())
        self.log("val/loss", float(self.script[self.calls]))
        self.calls += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def test_plateau_schedule_restores_best_divides_lr_and_stops(tmp_path):
    data = torch.utils.data.DataLoader(torch.zeros(7, 1), batch_size=1)  # 7 steps per epoch
    # Best at the 2nd validation; 2 worse ones -> restore + lr / 10; then an improvement at the 5th; 2 worse -> stop.
    model = ScriptedValidation([5, 3, 4, 4, 2, 6, 6, 9, 9])
    schedule = PlateauSchedule(val_steps=3, patience=2, lr_decay_steps=2)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=100, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[schedule])
    trainer.fit(model, data, data)
    assert model.steps_at_validation == [3, 6, 9, 12, 15, 18, 21]  # every 3 steps, across epoch boundaries
    # w grew by 1 per step to 6 at the best validation; after the first plateau (step 12) it is reset to 6 and grows
    # by 0.1 per step; the second plateau restores the weights of validation 5 (step 15: 6 + 3 * 0.1) and stops.
    assert model.w_at_validation[3] == pytest.approx(12.0)
    assert model.w_at_validation[4] == pytest.approx(6.3)
    assert model.w.item() == pytest.approx(6.3)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)
    assert schedule.decays == 2 and schedule.best_score == 2
    restored = PlateauSchedule(val_steps=3, patience=2, lr_decay_steps=2)
    restored.load_state_dict(schedule.state_dict())
    assert restored.best_score == 2 and restored.decays == 2 and restored.best_state["w"].item() == pytest.approx(6.3)


def test_plateau_schedule_rejects_bad_settings():
    with pytest.raises(ValueError, match="factor divides the learning rate"):
        PlateauSchedule(factor=1.0)
    with pytest.raises(ValueError, match="must be >= 1"):
        PlateauSchedule(patience=0)


class DriftingNorm(pl.LightningModule):
    """Linear -> BatchNorm1d -> sum, trained by large SGD steps, so the running statistics lag the weights."""

    def __init__(self):
        super().__init__()
        self.linear, self.norm = nn.Linear(3, 4), nn.BatchNorm1d(4)
        self.stats_at_validation, self.training_at_validation = [], []

    def forward(self, x):
        return self.norm(self.linear(x)).sum(1)

    def training_step(self, batch, batch_idx):
        return -(self.linear.weight.sum() + self.linear.bias.sum())  # the weights drift by lr every step

    def validation_step(self, batch, batch_idx):
        if not self.trainer.sanity_checking:
            self.training_at_validation.append(self.training)
            self.stats_at_validation.append((self.norm.running_mean.clone(), self.norm.running_var.clone(),
                                             self.linear(batch[0]).detach()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def fit_drifting_norm(tmp_path, callbacks, train):
    model = DriftingNorm()
    trainer = pl.Trainer(default_root_dir=tmp_path, max_steps=6, val_check_interval=3, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks)
    trainer.fit(model, train, torch.utils.data.DataLoader(train.dataset, batch_size=len(train.dataset)))
    return model


def test_precise_batch_norm_recomputes_running_statistics_before_validation(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, generator=g) + 2, torch.zeros(12))
    train = torch.utils.data.DataLoader(data, batch_size=4)  # 3 batches of 4
    model = fit_drifting_norm(tmp_path, [PreciseBatchNorm()], train)
    assert len(model.stats_at_validation) == 2 and model.training_at_validation == [False, False]
    for mean, var, activations in model.stats_at_validation:
        batches = activations.reshape(3, 4, 4)  # the current weights' pre-norm activations, batch by batch
        assert torch.allclose(mean, batches.mean(1).mean(0), atol=1e-5)
        assert torch.allclose(var, batches.var(1).mean(0), atol=1e-5)  # equal-weight mean of batch variances
    assert model.norm.momentum == 0.1  # restored
    # Without the callback the running mean lags the drifting weights by far more (the test's premise).
    lagging = fit_drifting_norm(tmp_path, [], train)
    mean, _, activations = lagging.stats_at_validation[-1]
    assert (mean - activations.mean(0)).abs().min() > 1.0
    # max_batches: only the first batch.
    first = fit_drifting_norm(tmp_path, [PreciseBatchNorm(max_batches=1)], train)
    mean, _, activations = first.stats_at_validation[-1]
    assert torch.allclose(mean, activations[:4].mean(0), atol=1e-5)


def test_precise_batch_norm_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="max_batches must be >= 1"):
        PreciseBatchNorm(max_batches=0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3), torch.zeros(12))
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=1, persistent_workers=True)
    with pytest.raises(ValueError, match="persistent_workers=False"):
        fit_drifting_norm(tmp_path, [PreciseBatchNorm()], loader)


def test_filter_logger_shows_the_rotated_hermite_filters():
    from types import SimpleNamespace

    from bioviz.callbacks import FilterLogger

    model = RotEquiV1(n_neurons=3, in_shape=[1, 12, 12], filter_size=[5, 3, 3], num_filters=[2, 2, 2])
    calls = []
    callback = FilterLogger(layer="core.layers.0.0")  # the first HermiteConv2d: its built filters [16, 1, 5, 5]
    callback.setup(None, model, "fit")
    callback.log_pictures(SimpleNamespace(add_image=lambda *a, **k: calls.append(a[1])), model, 0)
    assert calls[0].shape == (4 * 6 - 1, 4 * 6 - 1, 3)  # 16 filters of 5 x 5 in a 4 x 4 grid


def test_simulated_population_of_rotated_feature_types():
    from zoo.data import simulate_v1

    arrays = simulate_v1(seed=3, n_neurons=40, image_shape=(16, 16), n_train=200, n_val=20, n_test=10,
                         neuron_types=3)
    assert set(arrays["true_type"].tolist()) == {0, 1, 2}
    assert set(arrays["true_orientation"].tolist()) <= {45.0 * k for k in range(8)}
    assert arrays["responses_train"].shape == (200, 40) and arrays["rates_test"].shape == (10, 40)
    # Two neurons of one type at one rotation differ only by position: their first filters are shifted copies.
    same = [(i, j) for i in range(40) for j in range(i) if arrays["true_type"][i] == arrays["true_type"][j]
            and arrays["true_orientation"][i] == arrays["true_orientation"][j]]
    i, j = same[0]
    fi, fj = torch.tensor(arrays["true_filters"][i]), torch.tensor(arrays["true_filters"][j])
    assert fi.abs().max() == pytest.approx(fj.abs().max().item(), rel=0.2)
    with pytest.raises(ValueError, match="neuron_types must be >= 0"):
        simulate_v1(neuron_types=-1)


def test_transfer_model_reports_both_neuron_groups(tmp_path):
    from zoo.data import SyntheticV1DataModule

    from conftest import TINY_SIM

    dm = SyntheticV1DataModule(**TINY_SIM)
    model = CNNV1(n_neurons=dm.n_neurons, in_shape=dm.in_shape, filter_size=[5, 3, 3], num_filters=[4, 4, 4],
                  readout="transfer", k_transfer=3)
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(model, datamodule=dm, verbose=False)[0]
    corr = model.test_corr.compute()
    assert results["test/corr_core_neurons"] == pytest.approx(corr[[0, 3]].mean().item(), abs=1e-6)
    assert results["test/corr_transfer_neurons"] == pytest.approx(corr[[1, 2, 4, 5]].mean().item(), abs=1e-6)
