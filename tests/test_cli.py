import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from zoo import registry
from zoo.cli import default_checkpoints, main
from zoo.data import (
    SyntheticV1DataModule,
    load_response_file,
    write_simulated_cadena,
    write_simulated_sensorium,
    write_simulated_stringer,
)
from zoo.models import CNNV1

from conftest import REPO, TINY_MODEL_ARGS, TINY_SIM, TINY_SIM_ARGS, run_bioviz, use_tiny_cifar, write_image_folder


def stacked(path: Path) -> bool:
    """A config that names no model is a delta, stacked on another (``-c base.yaml -c delta.yaml``)."""
    return "class_path" not in (yaml.safe_load(path.read_text()).get("model") or {})


# The rotation-equivariant V1 models are stacks (configs/rotequi_v1/base.yaml): the shared base, a data file, then one
# model of the paper; every other file there is a model, run on each data file. Zoo recipes stack ROTEQUI_ON_TOP on a
# whole stack.
ROTEQUI = REPO / "configs" / "rotequi_v1"
ROTEQUI_BASE = ROTEQUI / "base.yaml"
ROTEQUI_DATA = (ROTEQUI / "recordings.yaml", ROTEQUI / "simulated.yaml", ROTEQUI / "sensorium.yaml",
                ROTEQUI / "cadena.yaml")
ROTEQUI_ON_TOP = (ROTEQUI / "science_population.yaml",)
ROTEQUI_MODELS = sorted(set(ROTEQUI.glob("*.yaml")) - {ROTEQUI_BASE, *ROTEQUI_DATA, *ROTEQUI_ON_TOP})
ROTEQUI_STACKS = [(ROTEQUI_BASE, data, model) for model in ROTEQUI_MODELS for data in ROTEQUI_DATA]

CONFIGS = sorted(c for c in (REPO / "configs").rglob("*.yaml") if c.parent != ROTEQUI and not stacked(c))
DELTAS = sorted([*(c for c in (REPO / "configs").rglob("*.yaml") if c.parent != ROTEQUI and stacked(c)),
                 *ROTEQUI_ON_TOP])
# Every stack of configs a zoo recipe uses: each runs on tiny data as the single configs do.
STACKS = sorted({registry.model_info(n).recipe.configs for n in registry.list_models()
                 if len(registry.model_info(n).recipe.configs) > 1})
# The 32 rotation-equivariant V1 stacks differ mostly in numbers: a few kinds run in the fast suite, the others with
# -m slow.
ROTEQUI_FAST = {("recordings.yaml", "fig2_n08.yaml"), ("recordings.yaml", "table1_cnn_32.yaml"),
                ("simulated.yaml", "transfer.yaml"), ("sensorium.yaml", "table1_cnn_32.yaml"),
                ("cadena.yaml", "fig2_n08.yaml")}
FAST_STACKS = sorted([*((c,) for c in CONFIGS),
                      *(s for s in ROTEQUI_STACKS if (s[1].name, s[2].name) in ROTEQUI_FAST)])
SLOW_STACKS = [s for s in ROTEQUI_STACKS if s not in FAST_STACKS]
FAST = ["--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
        "--trainer.enable_progress_bar=false"]


def stack_id(stack) -> str:
    """``quickstart.yaml``; ``rotequi_v1/base.yaml+simulated+fig2_n16`` for a stack."""
    first, *rest = [Path(p) for p in stack]
    return "+".join([str((REPO / first).relative_to(REPO / "configs")), *(p.stem for p in rest)])


def merged(stack) -> dict:
    """A stack of config files merged as far as these tests read it (class paths, callbacks): a later file's keys
    override an earlier one's, dicts merge, a list is replaced whole."""
    def merge(into: dict, update: dict) -> dict:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                value = merge(dict(into[key]), value)
            into[key] = value
        return into

    result = {}
    for path in stack:
        result = merge(result, yaml.safe_load(Path(path).read_text()) or {})
    return result


def data_args(stack, npz: Path, monkeypatch) -> list[str]:
    """Shrink a config's data to the tiny population, in the way its DataModule takes data."""
    data_class = merged(stack)["data"]["class_path"].rsplit(".", 1)[-1]
    if data_class == "SyntheticV1DataModule":
        return TINY_SIM_ARGS
    if data_class == "NeuralResponseDataModule":
        return [f"--data.init_args.path={npz}"]
    if data_class == "Cadena2019DataModule":  # a tiny file in the published layout
        path = write_simulated_cadena(npz.parent / "cadena.pkl", n_neurons=6, n_photographs=10)
        return [f"--data.init_args.path={path}", "--data.init_args.batch_size=16"]
    if data_class == "SensoriumDataModule":  # a tiny scan in the published layout, images at the models' size
        path = write_simulated_sensorium(npz.parent / "scan.zip", n_neurons=6, image_shape=[16, 16], n_train=24,
                                         n_val=8, n_test=4, n_repeats=3)
        return [f"--data.init_args.path={path}", "--data.init_args.scale=1.0", "--data.init_args.batch_size=8"]
    if data_class == "StringerDataModule":  # a tiny file in the layout of the real one, next to the other
        path = write_simulated_stringer(npz.parent / "stringer.npz", n_neurons=6, n_bins=12, trials_per_bin=4)
        return [f"--data.init_args.path={path}"]
    if data_class == "SimulatedStringerDataModule":
        return ["--data.init_args.n_neurons=6", "--data.init_args.n_bins=12", "--data.init_args.trials_per_bin=4"]
    if data_class == "TiltGratingsDataModule":
        return ["--data.init_args.n_train=20", "--data.init_args.n_val=10", "--data.init_args.n_test=10",
                "--data.init_args.batch_size=10", "--data.init_args.res=0.05"]
    if data_class == "CIFAR10DataModule":  # a tiny archive in the official format, extracted as a download leaves it
        with tarfile.open(fileobj=io.BytesIO(use_tiny_cifar(monkeypatch))) as tar:
            tar.extractall(npz.parent / "cifar10", filter="data")
        return [f"--data.init_args.root={npz.parent / 'cifar10'}", "--data.init_args.download=false",
                "--data.init_args.val_size=4", "--data.init_args.batch_size=8"]
    if data_class == "LissomDataModule":  # a small retina and V1, and a grating set that fits one batch
        return ["--data.init_args.image_size=24", "--data.init_args.steps_per_epoch=2",
                "--data.init_args.map_orientations=4", "--data.init_args.map_phases=2",
                "--data.init_args.map_frequencies=[0.1]", "--data.init_args.eval_batch_size=8",
                "--data.init_args.margin=0"]
    if data_class == "ImageFolderDataModule":
        root = write_image_folder(npz.parent / "images", per_class=(4, 2), size=(32, 32))
        return [f"--data.init_args.root={root}", "--data.init_args.val_size=4", "--data.init_args.batch_size=8"]
    raise AssertionError(f"{stack_id(stack)}: add tiny-data arguments for {data_class} to this test")


def schedule_args(stack) -> list[str]:
    """Validate every step under a config's PlateauSchedule, so a two-step run has a best checkpoint."""
    callbacks = merged(stack)["trainer"].get("callbacks") or []
    if any(c["class_path"].endswith("PlateauSchedule") for c in callbacks):
        return ["--trainer.callbacks.val_steps=1"]
    return []


def model_args(stack) -> list[str]:
    """Tiny sizes: paper-sized models would make each test checkpoint hundreds of MB, or each step slow."""
    model_class = merged(stack)["model"]["class_path"].rsplit(".", 1)[-1]
    if model_class == "Lissom":
        return ["--model.init_args.cortex_size=10"]
    if model_class == "Gcal":  # V1 10 x 10, LGN 18 x 18, retina 24 x 24
        return ["--model.init_args.area=1.0", "--model.init_args.cortex_density=10", "--model.init_args.lgn_density=8"]
    if model_class == "RetinaVVS":
        return ["--model.init_args.retina_width=4", "--model.init_args.vvs_width=4", "--model.init_args.kernel_size=3",
                "--model.init_args.dense_width=8"]
    return []


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bioviz"])
    return tmp_path


def test_there_are_configs():
    assert REPO / "configs" / "quickstart.yaml" in CONFIGS


def fit_and_test_on_tiny_data(stack, in_tmp, tiny_npz, monkeypatch):
    configs = [a for path in stack for a in ("-c", str(path))]
    args = [*configs, *data_args(stack, tiny_npz, monkeypatch), *model_args(stack), *schedule_args(stack), *FAST]
    main(["fit", *args])
    checkpoints = list(in_tmp.glob("runs/*/version_0/checkpoints/*.ckpt"))
    assert {p.name for p in checkpoints} >= {"best.ckpt", "last.ckpt"}
    main(["test", *args, "--ckpt_path=best"])  # resolved to the run above, as in a new process


@pytest.mark.parametrize("stack", FAST_STACKS, ids=stack_id)
def test_every_config_fits_and_tests_on_tiny_data(stack, in_tmp, tiny_npz, monkeypatch):
    fit_and_test_on_tiny_data(stack, in_tmp, tiny_npz, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("stack", SLOW_STACKS, ids=stack_id)
def test_every_other_config_fits_and_tests_on_tiny_data(stack, in_tmp, tiny_npz, monkeypatch):
    fit_and_test_on_tiny_data(stack, in_tmp, tiny_npz, monkeypatch)


def test_every_config_file_runs_alone_or_in_a_tested_stack():
    """Each file under configs/ runs in a test above: alone, in a rotation-equivariant stack (every model on every
    data file), or as a delta that a zoo recipe stacks (those stacks run with -m slow)."""
    tested = {*CONFIGS, *(path for stack in ROTEQUI_STACKS for path in stack),
              *(REPO / path for stack in STACKS for path in stack)}
    untested = sorted(str(c.relative_to(REPO)) for c in set((REPO / "configs").rglob("*.yaml")) - tested)
    assert not untested, f"config files that no test runs: {untested}; test them here, alone or in a stack"
    used = {REPO / path for stack in STACKS for path in stack[1:]}
    assert set(DELTAS) <= used, "a delta config that no recipe stacks: test it in a stack here"


def test_each_rotequi_model_names_its_runs_and_leaves_the_data_to_the_data_file():
    """``--ckpt_path best`` finds a run by its logger name: every model of configs/rotequi_v1/ has its own. A file
    there that sets data is not a model (add it to ROTEQUI_DATA or ROTEQUI_ON_TOP)."""
    assert ROTEQUI_MODELS and all("data" not in yaml.safe_load(m.read_text()) for m in ROTEQUI_MODELS)
    names = [merged((ROTEQUI_BASE, model))["trainer"]["logger"]["init_args"].get("name") for model in ROTEQUI_MODELS]
    assert None not in names and len(set(names)) == len(ROTEQUI_MODELS), names


@pytest.mark.slow
@pytest.mark.parametrize("stack", STACKS, ids=lambda s: " + ".join(Path(p).stem for p in s))
def test_every_stack_of_a_zoo_recipe_fits_and_tests_on_tiny_data(stack, in_tmp, tiny_npz, monkeypatch):
    fit_and_test_on_tiny_data([REPO / path for path in stack], in_tmp, tiny_npz, monkeypatch)


def test_print_config_shows_linked_model_and_data(in_tmp, capsys):
    """The printed config names the model and the data; the model built from it takes the data's n_neurons and
    in_shape (linked when the data is built, so the printed config does not hold them)."""
    from zoo.cli import BiovizCLI

    args = ["-c", str(REPO / "configs" / "quickstart.yaml"), *TINY_SIM_ARGS]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "zoo.models.CNNV1"
    assert printed["data"]["class_path"] == "zoo.data.SyntheticV1DataModule"
    assert printed["data"]["init_args"]["n_neurons"] == TINY_SIM["n_neurons"]
    cli = BiovizCLI(args=args, run=False)
    model, data = cli.model.hparams, cli.datamodule
    assert model.n_neurons == data.n_neurons == TINY_SIM["n_neurons"]
    assert list(model.in_shape) == list(data.in_shape) == [1, *TINY_SIM["image_shape"]]


@pytest.mark.parametrize("args, message", [
    (["--model=NoSuchModel", "--data=SyntheticV1DataModule"], "no model named 'NoSuchModel'. Known models: CNNV1, "),
    (["--model=CNNv1", "--data=SyntheticV1DataModule"], "no model named 'CNNv1'. Did you mean CNNV1"),
    (["--model=CNNV1", "--data=SyntheticV1"], "no data module named 'SyntheticV1'. Did you mean SyntheticV1Data"),
])
def test_an_unknown_class_is_one_line_with_the_closest_names(in_tmp, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith(f"bioviz: error: {message}")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for command in ("fit", "validate", "test", "predict", "zoo", "simulate-v1", "simulate-stringer",
                    "simulate-sensorium", "simulate-cadena"):
        assert f"\n  {command} " in out, command


def test_missing_data_path_names_the_fix(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model=CNNV1", "--data=NeuralResponseDataModule", "--data.path=missing.npz"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no neural-response file at missing.npz" in err and "bioviz simulate-v1 missing.npz" in err


def test_best_checkpoint_without_a_run_names_the_fix(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["test", "--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, "--ckpt_path=best"])
    assert "no best.ckpt in runs/lightning_logs/*/checkpoints" in capsys.readouterr().err


def test_checkpoint_on_images_of_another_size_is_refused(in_tmp, capsys):
    base = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS, *FAST]
    main(["fit", *base])
    with pytest.raises(SystemExit) as exit_info:
        main(["test", *base, "--data.init_args.image_shape=[20,20]", "--ckpt_path=best"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "in_shape: checkpoint [1, 16, 16] vs data [1, 20, 20]" in err


def test_simulate_route_writes_the_file_layout(in_tmp):
    main(["simulate-v1", "sim.npz", "--n_neurons=4", "--image_shape=[12,12]", "--n_train=10", "--n_val=5",
          "--n_test=3", "--n_repeats=2"])
    arrays = load_response_file(in_tmp / "sim.npz")
    assert arrays["images_train"].shape == (10, 12, 12) and arrays["responses_test"].shape == (2, 3, 4)


def test_console_script_is_installed():
    script = shutil.which("bioviz", path=str(Path(sys.executable).parent)) or shutil.which("bioviz")
    assert script, "the bioviz console script is not installed; pip install -e ."
    out = subprocess.run([script, "fit", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--ckpt_path" in out and "--model" in out


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    args = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS,
            "--data.init_args.batch_size=16", "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir(), broken.mkdir()
    run_bioviz(["fit", *args], cwd=whole)
    # 6 steps per epoch: die in the middle of the second epoch, after the first epoch's checkpoint.
    killer = '--trainer.callbacks+={"class_path": "killer.KillAtStep", "init_args": {"step": 9}}'
    died = run_bioviz(["fit", *args, killer], cwd=broken, check=False)
    assert died.returncode == -9, died.stderr[-2000:]
    saved = torch.load(broken / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    assert saved["global_step"] == 6
    resumed = run_bioviz(["fit", *args, "--ckpt_path=last"], cwd=broken)
    assert "using last checkpoint runs/lightning_logs/version_0/checkpoints/last.ckpt" in resumed.stderr

    final_whole = torch.load(whole / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    assert not (broken / "runs/lightning_logs/version_1").exists()  # resumed in its own run folder
    final_resumed = torch.load(broken / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=False)
    assert final_whole["global_step"] == final_resumed["global_step"] == 18

    def monitored(ckpt):
        state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
        return state["current_score"], state["best_model_score"]

    assert monitored(final_whole) == monitored(final_resumed)
    for key, value in final_whole["state_dict"].items():
        torch.testing.assert_close(final_resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_predict_writes_predictions_in_data_order(in_tmp):
    base = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS, *FAST]
    main(["fit", *base])
    main(["predict", *base, "--ckpt_path=best"])
    predictions = torch.load(in_tmp / "runs/lightning_logs/version_0/predictions.pt")  # in the fitted run's folder
    model = CNNV1.load_from_checkpoint(next(in_tmp.glob("runs/lightning_logs/version_0/checkpoints/best.ckpt")))
    images = SyntheticV1DataModule(**TINY_SIM).tensors["images_test"]
    with torch.no_grad():
        torch.testing.assert_close(predictions, model.eval()(images))


def test_best_checkpoint_is_found_without_a_logger_too(in_tmp, capsys):
    base = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS, *FAST,
            "--trainer.logger=false"]
    main(["fit", *base])
    main(["test", *base, "--ckpt_path=best"])
    assert "using best checkpoint checkpoints/best.ckpt" in capsys.readouterr().err


def test_data_properties_link_only_into_models_that_take_them(in_tmp):
    # SyntheticV1DataModule offers n_neurons and in_shape; TiltCNN takes in_shape only, CNNV1 takes both. (The mean
    # responses are no link: a response model sets its readout bias from the data at setup.)
    from zoo.cli import BiovizCLI
    from zoo.models import TiltCNN

    cli = BiovizCLI(args=["--model=TiltCNN", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS], run=False)
    assert isinstance(cli.model, TiltCNN) and cli.model.hparams.in_shape == [1, 16, 16]
    cli = BiovizCLI(args=["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS], run=False)
    assert cli.model.hparams.n_neurons == 6 and cli.model.hparams.in_shape == [1, 16, 16]



def test_linking_the_simulated_populations_shapes_does_not_simulate_it(in_tmp):
    from zoo.cli import BiovizCLI

    cli = BiovizCLI(args=["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS], run=False)
    assert cli.model.hparams.n_neurons == 6 and cli.datamodule._tensors is None  # simulated at setup, not at parse


def test_a_checkpoint_that_saved_a_retired_argument_still_tests(in_tmp, capsys):
    """Older versions of the response models took ``mean_responses`` and saved it with their hyperparameters."""
    args = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS, *FAST]
    main(["fit", *args])
    [last] = in_tmp.glob("runs/*/version_0/checkpoints/last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    ckpt["hyper_parameters"]["mean_responses"] = [0.5] * 6
    torch.save(ckpt, in_tmp / "old.ckpt")
    main(["test", *args, f"--ckpt_path={in_tmp / 'old.ckpt'}"])
    assert "test correlation" in capsys.readouterr().out
    model, _ = registry.load_model_and_data(in_tmp / "old.ckpt")
    assert "mean_responses" not in model.hparams

def test_simulate_stringer_route_writes_the_stringer_layout(in_tmp, capsys):
    from zoo.data import load_stringer_file

    main(["simulate-stringer", "sim.npz", "--n_neurons=5", "--n_bins=12", "--trials_per_bin=4"])
    assert "wrote sim.npz" in capsys.readouterr().out
    arrays = load_stringer_file(in_tmp / "sim.npz")
    assert arrays["resp_train"].shape == (12, 5) and arrays["stimuli"].shape == (12,)


class WorseEveryEpoch(pl.LightningModule):
    """Validation loss rises each epoch, so the best checkpoint stays at epoch 0."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(tmp_path):
    loader = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = pl.Trainer(max_epochs=3, default_root_dir=tmp_path, callbacks=default_checkpoints("val/loss"),
                         logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(WorseEveryEpoch(), loader, loader)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "best.ckpt", weights_only=False)["global_step"] == 2
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 6


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(in_tmp, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    (in_tmp / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS,
              "--ckpt_path=evil.ckpt", "--trainer.enable_progress_bar=false"])
    out = capsys.readouterr()
    assert exit_info.value.code == 2 and "this ran" not in out.out
    assert out.err.count("\n") == 1 and "could not be loaded without running the code it names" in out.err


def test_tensorboard_shows_pictures_and_test_metrics_in_the_training_run(in_tmp):
    """A plain fit logs the model's pictures; test after it logs into the same run folder, whose config.yaml stays the
    training config; no placeholder hp_metric."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, *TINY_MODEL_ARGS,
            "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
    main(["fit", *base])
    main(["test", *base, "--ckpt_path=best"])
    run = in_tmp / "runs/lightning_logs/version_0"
    assert sorted(p.name for p in (in_tmp / "runs/lightning_logs").iterdir()) == ["version_0"]
    events = EventAccumulator(str(run))
    events.Reload()
    assert {"filters", "readout/mask"} <= set(events.Tags()["images"])
    assert {"val/corr", "test/corr"} <= set(events.Tags()["scalars"])
    last_validation = events.Scalars("val/corr")[-1].step
    assert [e.step for e in events.Scalars("test/corr")] == [last_validation]  # at the tested checkpoint's step
    assert "hp_metric" not in events.Tags()["scalars"]
    assert "best.ckpt" not in (run / "config.yaml").read_text()  # the training config, kept
    assert "best.ckpt" in (run / "config_test.yaml").read_text()
    main(["fit", *base, "--pictures=false", "--trainer.logger.init_args.name=plain"])
    plain = EventAccumulator(str(in_tmp / "runs/plain/version_0"))
    plain.Reload()
    assert plain.Tags()["images"] == []


def one_config_per_model_class() -> list[tuple[Path, ...]]:
    """The first config (or stack) of each model class (the paper models and the grating models)."""
    seen: dict[str, tuple[Path, ...]] = {}
    for stack in FAST_STACKS:
        seen.setdefault(merged(stack)["model"]["class_path"].rsplit(".", 1)[-1], stack)
    return sorted(seen.values())


@pytest.mark.parametrize("stack", one_config_per_model_class(), ids=stack_id)
def test_every_model_class_trains_in_bf16_mixed_precision(stack, in_tmp, tiny_npz, monkeypatch):
    """``--trainer.precision bf16-mixed`` (autocast to bfloat16, on CPU too) trains, validates and tests every model
    kind; the weights and the checkpoint stay float32. Backprop models really compute in bfloat16; the Hebbian ones
    (LISSOM, GCAL) switch the autocast off and compute in float32."""
    args = [*(a for path in stack for a in ("-c", str(path))), *data_args(stack, tiny_npz, monkeypatch),
            *model_args(stack), *schedule_args(stack), *FAST, "--trainer.precision=bf16-mixed"]
    dtypes = set()
    original = torch.nn.Module.__call__

    def record(module, *a, **k):
        out = original(module, *a, **k)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Module, "__call__", record)
    main(["fit", *args])
    hebbian = merged(stack)["model"]["class_path"].rsplit(".", 1)[-1] in ("Lissom", "Gcal")
    assert (torch.bfloat16 in dtypes) != hebbian, dtypes
    [last] = in_tmp.glob("runs/*/version_0/checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] >= 1
    floats = [t for t in state["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype in (torch.float32, torch.float64) for t in floats)
    assert all(torch.isfinite(t).all() for t in floats)
    main(["test", *args, "--ckpt_path=last"])
