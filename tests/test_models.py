import re

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.data import SyntheticV1DataModule
from zoo.errors import ShapeMismatchError
from zoo.models import CNNV1, Lissom, RetinaVVS, RotEquiV1, SpatialDenseNet, StringerConvFC, TiltCNN
from zoo.tasks import ClassificationTask, ResponseTask

from conftest import TINY_SIM

TINY_CNN = dict(filter_size=[5, 3, 3], num_filters=[4, 4, 4])


def trainer(tmp_path, **kwargs):
    return pl.Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_cnn_v1_shapes_and_parameter_layout():
    model = CNNV1(n_neurons=7, in_shape=[1, 36, 64])
    assert model(torch.zeros(3, 1, 36, 64)).shape == (3, 7)
    assert model.readout.mask.shape == (7, 36, 64) and model.readout.features.shape == (7, 32)
    assert [c.weight.shape[-1] for c in model.core.convs] == [13, 5, 5]
    assert model.penalty() > 0


def test_cnn_v1_rejects_images_of_another_size():
    model = CNNV1(n_neurons=3, in_shape=[1, 16, 16], **TINY_CNN)
    with pytest.raises(ShapeMismatchError, match=r"images of shape \[B, 1, 16, 16\] but got \[2, 1, 20, 20\]"):
        model.training_step((torch.zeros(2, 1, 20, 20), torch.zeros(2, 3)), 0)
    with pytest.raises(ShapeMismatchError, match="predicts 3 neurons but the data has 5"):
        model.training_step((torch.zeros(2, 1, 16, 16), torch.zeros(2, 5)), 0)
    with pytest.raises(ValueError, match="too small"):
        CNNV1(n_neurons=3, in_shape=[1, 4, 4], padding=["valid"] * 3)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown loss 'l1'; choose one of"):
        CNNV1(n_neurons=3, in_shape=[1, 16, 16], loss="l1", **TINY_CNN)


def test_training_improves_fit_and_test_reports_the_oracle(tmp_path):
    pl.seed_everything(0)
    dm = SyntheticV1DataModule(seed=2, **{**TINY_SIM, "n_train": 512, "n_neurons": 8}, batch_size=64)
    model = CNNV1(n_neurons=dm.n_neurons, in_shape=dm.in_shape, lr=0.01, **TINY_CNN)
    t = trainer(tmp_path, max_epochs=8)
    before = t.validate(model, datamodule=dm, verbose=False)[0]
    t.fit(model, datamodule=dm)
    after = t.validate(model, datamodule=dm, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"] and after["val/corr"] > before["val/corr"] + 0.1
    results = t.test(model, datamodule=dm, verbose=False)[0]
    assert results["test/fraction_oracle"] == pytest.approx(results["test/corr"] / results["test/oracle"], rel=1e-5)
    assert 0 < results["test/oracle_true"] <= 1
    assert model.test_summary.startswith(f"test correlation {results['test/corr']:.3f}")
    assert 0 < results["test/corr_single_trial"] < results["test/corr"]  # single trials are noisier than averages
    assert -1 < results["test/feve"] <= 1 and f"FEVE {results['test/feve']:.3f}" in model.test_summary


def test_checkpoint_rebuilds_model_from_hyperparameters(tmp_path):
    model = CNNV1(n_neurons=4, in_shape=[1, 16, 16], **TINY_CNN)
    t = trainer(tmp_path, max_steps=0)
    t.strategy.connect(model)
    t.save_checkpoint(tmp_path / "m.ckpt")
    loaded = CNNV1.load_from_checkpoint(tmp_path / "m.ckpt")
    x = torch.randn(2, 1, 16, 16)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), model(x))


class TinyClassifier(ClassificationTask):
    def __init__(self, in_shape=(1, 4, 4), num_classes: int = 3, lr: float = 0.05):
        super().__init__(in_shape, num_classes, lr)
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.net(x)


def test_classification_task_uses_cross_entropy_on_logits_and_tracks_accuracy(tmp_path):
    pl.seed_everything(0)
    labels = torch.randint(3, (96,))
    images = torch.randn(96, 1, 4, 4) * 0.3 + labels.float().reshape(-1, 1, 1, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=32)
    model = TinyClassifier()
    loss = model.training_step((images, labels), 0)
    torch.testing.assert_close(loss, F.cross_entropy(model(images), labels))
    t = trainer(tmp_path, max_epochs=20)
    t.fit(model, loader, loader)
    assert t.callback_metrics["val/acc"] > 0.9
    with pytest.raises(ShapeMismatchError):
        model.validation_step((torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)), 0)


def test_response_task_is_abstract_about_the_network():
    assert issubclass(CNNV1, ResponseTask)
    assert ResponseTask.monitor == "val/loss" and ClassificationTask.monitor == "val/acc"


@pytest.mark.parametrize("build, bad", [
    (lambda s: CNNV1(n_neurons=2, in_shape=s, filter_size=[3, 3, 3], num_filters=[2, 2, 2]), [16, 16]),
    (lambda s: RotEquiV1(n_neurons=2, in_shape=s, filter_size=[5, 3, 3], num_filters=[2, 2, 2]), [1, 16]),
    (lambda s: RetinaVVS(in_shape=s, n_bn=1, d_vvs=0, retina_width=2, kernel_size=3, dense_width=4), [1, 8, 8, 8]),
    (lambda s: SpatialDenseNet(in_shape=s, num_classes=10), [3, 32]),
    (lambda s: StringerConvFC(n_neurons=3, in_shape=s), [3, 12, 16]),
    (lambda s: TiltCNN(in_shape=s), [1, 4, 4]),
    (lambda s: Lissom(in_shape=s), [1, 36, 30]),
], ids=["CNNV1", "RotEquiV1", "RetinaVVS", "SpatialDenseNet", "StringerConvFC", "TiltCNN", "Lissom"])
def test_every_model_refuses_an_input_shape_it_cannot_take_with_the_same_message(build, bad):
    with pytest.raises(ShapeMismatchError, match=r"needs in_shape \[.*\].*; got " + re.escape(str(bad))):
        build(bad)


def test_a_new_model_starts_its_bias_at_the_training_means_and_a_loaded_one_keeps_its_own(tmp_path):
    dm = SyntheticV1DataModule(seed=2, **TINY_SIM)
    model = CNNV1(n_neurons=dm.n_neurons, in_shape=dm.in_shape, **TINY_CNN)
    assert torch.all(model.readout.bias == 0)
    trainer(tmp_path, max_steps=0).fit(model, datamodule=dm)  # setup only
    mean = torch.tensor(dm.mean_responses)
    torch.testing.assert_close(F.softplus(2 * model.readout.bias.detach()), mean)  # the reference code's init
    trained = CNNV1(n_neurons=dm.n_neurons, in_shape=dm.in_shape, **TINY_CNN)
    trained.load_state_dict({**model.state_dict(), "readout.bias": torch.full((dm.n_neurons,), 0.25)})
    trainer(tmp_path, max_steps=0).fit(trained, datamodule=dm)  # fine-tuning a loaded model
    assert torch.all(trained.readout.bias == 0.25)
    wrong = CNNV1(n_neurons=dm.n_neurons + 1, in_shape=dm.in_shape, **TINY_CNN)
    with pytest.raises(ShapeMismatchError, match="predicts 7 neurons but the data's mean responses are for 6"):
        trainer(tmp_path, max_steps=0).fit(wrong, datamodule=dm)


@pytest.mark.parametrize("loss", ["poisson", "mse", "mean_mse"])
def test_losses_skip_responses_that_were_not_recorded_and_keep_gradients_finite(loss):
    from zoo.tasks.response import LOSSES

    pred = (torch.rand(4, 5) + 0.5).requires_grad_()
    target = torch.rand(4, 5)
    holes = target.clone()
    holes[1, 2] = holes[3, 0] = float("nan")
    value = LOSSES[loss](pred, holes)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(pred.grad).all()
    assert pred.grad[1, 2] == 0 and pred.grad[3, 0] == 0
    for row in range(4):
        seen = ~holes[row].isnan()
        torch.testing.assert_close(value[row], LOSSES[loss](pred[row:row + 1, seen], target[row:row + 1, seen])[0])
