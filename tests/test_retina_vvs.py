"""RetinaVVS (Lindsey et al. 2019) and GaussianNoise."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import ShapeMismatchError
from zoo.layers import GaussianNoise
from zoo.models import RetinaVVS

GRID = [(n_bn, d_vvs) for n_bn in (1, 2, 4, 8, 16, 32) for d_vvs in range(5)]
TINY = dict(retina_width=4, vvs_width=4, kernel_size=3, dense_width=8)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def paper_count(n_bn, d_vvs, in_channels=1, size=32, k=9, width=32, dense=1024, classes=10):
    """Parameters of the paper architecture (weights + biases), layer by layer."""
    conv = lambda cin, cout: k * k * cin * cout + cout  # noqa: E731
    total = conv(in_channels, width) + conv(width, n_bn)  # retina
    total += sum(conv(n_bn if i == 0 else width, width) for i in range(d_vvs))  # VVS
    flat = (width if d_vvs else n_bn) * size * size
    return total + flat * dense + dense + dense * classes + classes  # dense head


@pytest.mark.parametrize("n_bn,d_vvs", GRID)
def test_every_grid_cell_has_the_paper_shapes_and_parameter_count(n_bn, d_vvs):
    with torch.device("meta"):  # shapes and counts without allocating 30 x 34 M weights
        model = RetinaVVS(in_shape=[1, 32, 32], num_classes=10, n_bn=n_bn, d_vvs=d_vvs)
        images = torch.zeros(3, 1, 32, 32)
        bottleneck = model.retina(images)
        vvs = model.vvs(bottleneck)
        logits = model(images)
    assert n_params(model) == paper_count(n_bn, d_vvs)
    assert bottleneck.shape == (3, n_bn, 32, 32)
    assert vvs.shape == ((3, 32, 32, 32) if d_vvs else (3, n_bn, 32, 32))
    assert logits.shape == (3, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 + d_vvs
    assert all(c.kernel_size == (9, 9) and c.padding == (4, 4) and c.stride == (1, 1) for c in convs)
    assert model.head[1].in_features == (32 if d_vvs else n_bn) * 32 * 32


def test_published_counts():
    with torch.device("meta"):
        assert n_params(RetinaVVS(in_shape=[1, 32, 32], n_bn=16, d_vvs=4)) == 33_900_250  # "33.9 M"
        assert n_params(RetinaVVS(in_shape=[1, 32, 32], n_bn=1, d_vvs=0)) == 1_065_067
        # The colour variant only widens the first conv: 81 * 2 * 32 more weights.
        assert n_params(RetinaVVS(in_shape=[3, 32, 32], n_bn=16, d_vvs=4)) == 33_900_250 + 81 * 2 * 32


def test_initialisation_is_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    model = RetinaVVS(in_shape=[1, 32, 32], n_bn=4, d_vvs=1, dense_width=16)
    conv = model.vvs[0]
    bound = (6 / (81 * 4 + 81 * 32)) ** 0.5  # fan_in + fan_out of a 9x9 conv 4 -> 32
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    biases = [m.bias.detach() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(float(b.abs().max()) == 0 for b in biases)


def test_colour_images_into_a_grayscale_model_name_the_fix():
    model = RetinaVVS(in_shape=[1, 32, 32], n_bn=1, d_vvs=0, **TINY)
    labels = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ShapeMismatchError, match=r"grayscale.*3-channel.*--data.init_args.grayscale true"):
        model.training_step((torch.zeros(2, 3, 32, 32), labels), 0)
    colour = RetinaVVS(in_shape=[3, 32, 32], n_bn=1, d_vvs=0, **TINY)
    with pytest.raises(ShapeMismatchError, match=r"colour.*--data.init_args.grayscale false"):
        colour.validation_step((torch.zeros(2, 1, 32, 32), labels), 0)
    with pytest.raises(ShapeMismatchError, match=r"\[B, 1, 32, 32\]"):  # wrong size: the generic message
        model.training_step((torch.zeros(2, 1, 28, 28), labels), 0)


def test_logits_cross_entropy_and_rmsprop_defaults():
    model = RetinaVVS(in_shape=[1, 16, 16], n_bn=2, d_vvs=1, **TINY)
    images, labels = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    logits = model(images)
    assert not torch.allclose(logits.sum(-1), torch.ones(4))  # logits, not the seed's softmax
    loss = model.training_step((images, labels), 0)
    assert torch.allclose(loss, F.cross_entropy(logits, labels))
    optimiser = model.configure_optimizers()
    assert isinstance(optimiser, torch.optim.RMSprop)
    assert optimiser.defaults["lr"] == 1e-4 and optimiser.defaults["alpha"] == 0.9


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    model = RetinaVVS(in_shape=[1, 16, 16], n_bn=2, d_vvs=1, lr=1e-3, **TINY)
    images, labels = torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,))
    optimiser = model.configure_optimizers()
    losses = []
    for _ in range(20):
        loss = model.training_step((images, labels), 0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_l1_terms_add_to_the_training_loss_only():
    torch.manual_seed(0)
    model = RetinaVVS(in_shape=[1, 8, 8], n_bn=2, d_vvs=1, l1_weights=1e-3, l1_bottleneck=1e-2, **TINY)
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    loss = model.training_step((images, labels), 0)
    with torch.no_grad():
        bottleneck = model.retina(images)
        data_loss = F.cross_entropy(model(images), labels)
    weights = sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    expected = data_loss + 1e-3 * weights + 1e-2 * bottleneck.abs().sum((1, 2, 3)).mean()
    assert torch.allclose(loss, expected)
    plain = RetinaVVS(in_shape=[1, 8, 8], n_bn=2, d_vvs=1, **TINY)
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(plain.training_step((images, labels), 0), data_loss)
    with pytest.raises(ValueError, match="L1"):
        RetinaVVS(in_shape=[1, 8, 8], l1_weights=-1.0)


def test_noise_is_applied_in_training_only():
    layer = GaussianNoise(0.5)
    x = torch.zeros(1000)
    assert 0.45 < float(layer(x).std()) < 0.55
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(GaussianNoise(0.0)(x), x)
    with pytest.raises(ValueError, match="standard deviation"):
        GaussianNoise(-1.0)
    model = RetinaVVS(in_shape=[1, 8, 8], n_bn=2, d_vvs=1, input_noise=0.3, bottleneck_noise=0.3, **TINY)
    images = torch.rand(2, 1, 8, 8)
    assert not torch.equal(model(images), model(images))
    model.eval()
    assert torch.equal(model(images), model(images))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="odd"):
        RetinaVVS(in_shape=[1, 8, 8], kernel_size=4)
    with pytest.raises(ValueError, match="d_vvs"):
        RetinaVVS(in_shape=[1, 8, 8], d_vvs=-1)
    with pytest.raises(ValueError, match="n_bn"):
        RetinaVVS(in_shape=[1, 8, 8], n_bn=0)


def test_rf_layers_name_the_bottleneck_and_the_first_vvs_conv():
    model = RetinaVVS(in_shape=[1, 8, 8], n_bn=2, d_vvs=2, **TINY)
    modules = dict(model.named_modules())
    assert modules[model.rf_layers["bottleneck"]].out_channels == 2
    assert modules[model.rf_layers["vvs1"]] is model.vvs[0]
    assert set(RetinaVVS(in_shape=[1, 8, 8], n_bn=2, d_vvs=0, **TINY).rf_layers) == {"bottleneck"}


def fit_tiny_cell(tmp_path, monkeypatch, n_bn: int, d_vvs: int) -> Path:
    """A small grid cell trained for one epoch by `bioviz fit` from the paper's config; returns its run folder."""
    from zoo.cli import main

    from conftest import REPO, write_image_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bioviz"])
    root = write_image_folder(tmp_path / "images", per_class=(4, 2), size=(16, 16))
    name = f"nbn{n_bn}_d{d_vvs}"
    main(["fit", "-c", str(REPO / "configs/retina_vvs/cifar10.yaml"), "--data=zoo.data.ImageFolderDataModule",
          f"--data.root={root}", "--data.val_size=4", "--data.batch_size=4", f"--model.init_args.n_bn={n_bn}",
          f"--model.init_args.d_vvs={d_vvs}", "--model.init_args.retina_width=4", "--model.init_args.vvs_width=4",
          "--model.init_args.kernel_size=3", "--model.init_args.dense_width=8",
          f"--trainer.logger.init_args.name={name}", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])
    return tmp_path / "runs" / name / "version_0"


def test_a_grid_cell_from_config_overrides_logs_its_receptive_fields(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = fit_tiny_cell(tmp_path, monkeypatch, n_bn=2, d_vvs=0)
    hparams = (run / "hparams.yaml").read_text()
    assert "n_bn: 2" in hparams and "d_vvs: 0" in hparams
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert "rf/bottleneck" in events.Tags()["images"] and "rf/vvs1" not in events.Tags()["images"]
    image = events.Images("rf/bottleneck")[-1]
    assert (image.height, image.width) == (5, 2 * 5 + 1)  # 2 channels side by side, RFs 5 x 5 (two 3 x 3 convs)


def test_the_rf_example_tables_each_layer_trained_and_untrained_against_white_noise(tmp_path, monkeypatch):
    from conftest import REPO

    run = fit_tiny_cell(tmp_path, monkeypatch, n_bn=2, d_vvs=1)
    out = tmp_path / "figures"
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "retina_vvs_rfs.py"),
                           str(run / "checkpoints" / "last.ckpt"), "--out", str(out), "--starts", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "rfs_nbn2_d1.png").stat().st_size > 0
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| nbn2_d1 |")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        ("bottleneck", "trained"), ("vvs1", "trained"), ("bottleneck", "untrained"), ("vvs1", "untrained")]
    assert all(len(r) == 12 and r[3].strip() in ("2", "4") for r in rows)  # 2 bottleneck, 4 VVS channels
    assert "centre-surround index median" in proc.stdout  # the white-noise baseline of each RF size
