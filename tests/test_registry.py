"""The zoo registry, offline: weights are served from a local HTTP server on 127.0.0.1 (also as a Hugging Face Hub
endpoint), never from the network."""

import json
import struct
import sys
import threading

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from zoo import registry, weights
from zoo.cli import main
from zoo.errors import RegistryError, ShapeMismatchError
from zoo.models import CNNV1

TINY = dict(n_neurons=3, in_shape=[1, 12, 12], filter_size=[5, 3, 3], num_filters=[2, 2, 2])
TINY_DATA = dict(seed=1, n_neurons=3, image_shape=[12, 12], n_train=64, n_val=16, n_test=16, n_repeats=4)


def raw_entry(path, urls=(), **changes) -> dict:
    """A registry entry (as YAML holds it) for the weights file at ``path``."""
    entry = {"model": "zoo.models.CNNV1", "init_args": dict(TINY), "trained_on": "nothing: random weights",
             "data": {"class_path": "zoo.data.SyntheticV1DataModule", "init_args": dict(TINY_DATA)},
             "recipe": {"configs": ["configs/quickstart.yaml"]}, "metrics": {"test/corr": 0.5},
             "headline": "test/corr", "input": {"channels": 1, "size": [12, 12], "normalize": "standardize"},
             "weights": {"file": path.name, "sha256": weights.sha256_of(path), "size": path.stat().st_size,
                         "urls": list(urls)}}
    entry.update(changes)
    return entry


@pytest.fixture
def published(tmp_path, monkeypatch, server):
    """A tiny model published on the local server, and a registry whose entry ``tiny-cnn`` points at it."""
    torch.manual_seed(0)
    model = CNNV1(**TINY).eval()
    path = weights.write(tmp_path / "served", "tiny", "zoo.models.CNNV1", TINY, model.state_dict())
    server.routes[f"/{path.name}"] = (path.read_bytes(), None)

    def use(entries):
        file = tmp_path / "registry.yaml"
        file.write_text(yaml.safe_dump({"models": entries}))
        monkeypatch.setattr(registry, "REGISTRY_FILE", file)
        registry._read_registry.cache_clear()

    entry = raw_entry(path, [f"{server.url}/{path.name}"])
    use({"tiny-cnn": entry})
    monkeypatch.setenv("BIOVIZ_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BIOVIZ_OFFLINE", raising=False)
    monkeypatch.delenv("BIOVIZ_ZOO_URL", raising=False)
    monkeypatch.setattr(weights, "packaged_dir", lambda: tmp_path / "not-packaged")
    yield dict(model=model, path=path, server=server, entry=entry, use=use)
    registry._read_registry.cache_clear()


def cache_files():
    folder = weights.cache_dir()
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def test_download_verify_load_and_cache_hit(published):
    model = registry.load_model("tiny-cnn")
    assert not model.training
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(model(x), published["model"](x))
    assert published["server"].requests == [f"/{published['path'].name}"]
    sha = published["entry"]["weights"]["sha256"]
    assert cache_files() == [f"{sha}.safetensors"]
    assert registry.model_info("tiny-cnn").location() == "cached"
    registry.load_model("tiny-cnn")
    assert len(published["server"].requests) == 1  # served from the cache, re-verified


def test_packaged_weights_load_offline_and_are_not_copied(published, monkeypatch):
    monkeypatch.setattr(weights, "packaged_dir", lambda: published["path"].parent)
    monkeypatch.setenv("BIOVIZ_OFFLINE", "1")
    assert registry.model_info("tiny-cnn").location() == "packaged"
    model = registry.load_model("tiny-cnn")
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(model(x), published["model"](x))
    assert published["server"].requests == [] and cache_files() == []


def test_a_damaged_packaged_copy_is_not_used(published, monkeypatch, tmp_path):
    package = tmp_path / "package"
    package.mkdir()
    (package / published["path"].name).write_bytes(published["path"].read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(weights, "packaged_dir", lambda: package)
    assert registry.download_weights("tiny-cnn").parent == weights.cache_dir()  # downloaded instead
    monkeypatch.setenv("BIOVIZ_OFFLINE", "1")
    (weights.cache_dir() / cache_files()[0]).unlink()
    with pytest.raises(registry.WeightsError, match="packaged copy .* fails the sha256 check .reinstall bioviz"):
        registry.download_weights("tiny-cnn")


def test_tampered_cache_is_detected_and_replaced(published):
    path = registry.download_weights("tiny-cnn")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    again = registry.download_weights("tiny-cnn")
    assert len(published["server"].requests) == 2
    assert weights.sha256_of(again) == published["entry"]["weights"]["sha256"]


@pytest.mark.parametrize("damage, message", [
    ("truncate", r"broke off after \d+ of \d+ bytes"),
    ("corrupt", "failed the sha256 check"),
    ("broken", r"broke off after \d+ of \d+ bytes"),
])
def test_bad_downloads_leave_the_cache_as_it_was(published, damage, message):
    route = f"/{published['path'].name}"
    data = published["path"].read_bytes()
    published["server"].routes[route] = {
        "truncate": (data[:-100], None),
        "corrupt": (data[:50] + bytes([data[50] ^ 0xFF]) + data[51:], None),
        "broken": (data[: len(data) // 2], len(data)),  # promises the whole file, sends half
    }[damage]
    with pytest.raises(registry.WeightsError, match=message) as err:
        registry.download_weights("tiny-cnn")
    assert published["server"].url in str(err.value)  # names the URL that failed
    assert cache_files() == []  # nothing half-written


def test_a_download_larger_than_the_file_is_stopped(published):
    route = f"/{published['path'].name}"
    size = published["entry"]["weights"]["size"]
    published["server"].routes[route] = (published["path"].read_bytes() + b"\0" * (8 << 20), None)
    with pytest.raises(registry.WeightsError, match=f"larger than the expected {size} bytes .* nothing was kept"):
        registry.download_weights("tiny-cnn")
    assert cache_files() == []


def test_a_trickling_download_is_given_up_at_the_deadline(published, monkeypatch):
    route = f"/{published['path'].name}"
    published["server"].trickle[route] = 0.05  # 20 bytes/s: hours for the file, each read well inside the timeout
    monkeypatch.setenv("BIOVIZ_DOWNLOAD_DEADLINE", "0.5")
    with pytest.raises(registry.WeightsError, match=r"took longer than 0.5 s .* Set BIOVIZ_DOWNLOAD_DEADLINE"):
        registry.download_weights("tiny-cnn")
    assert cache_files() == []


@pytest.mark.parametrize("location, message", [
    ("ftp://127.0.0.1/x.safetensors", "redirected to ftp://127.0.0.1/x.safetensors: refused, only https and http"),
    ("file:///etc/passwd", "Redirection to url 'file:///etc/passwd' is not allowed"),  # urllib's own check
])
def test_redirects_are_checked_on_every_hop(published, location, message):
    server = published["server"]
    server.redirects["/hop1"] = f"{server.url}/hop2"  # an allowed hop first, then the refused one
    server.redirects["/hop2"] = location
    entry = published["entry"]
    entry["weights"]["urls"] = [f"{server.url}/hop1"]
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match=message):
        registry.download_weights("tiny-cnn")
    assert server.requests == ["/hop1", "/hop2"] and cache_files() == []


def test_an_unwritable_cache_is_named(published, monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("BIOVIZ_HOME", str(tmp_path / "a-file"))
    with pytest.raises(registry.WeightsError, match="is not writable .* set BIOVIZ_HOME to a folder you can write"):
        registry.download_weights("tiny-cnn")


def test_wrong_sha256_in_the_registry(published):
    entry = published["entry"]
    entry["weights"]["sha256"] = "0" * 64
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match="failed the sha256 check .* expected 0000"):
        registry.load_model("tiny-cnn")
    assert cache_files() == []


def test_an_upper_case_sha256_is_the_same_hash(published):
    entry = published["entry"]
    entry["weights"]["sha256"] = entry["weights"]["sha256"].upper()
    published["use"]({"tiny-cnn": entry})
    assert registry.download_weights("tiny-cnn").exists()


def test_offline_mode_tries_no_url_and_says_how_to_download(published, monkeypatch):
    monkeypatch.setenv("BIOVIZ_OFFLINE", "1")
    with pytest.raises(registry.WeightsError,
                       match=r"BIOVIZ_OFFLINE is set, so 1 URL\(s\) were not tried \(unset it to download\)"):
        registry.download_weights("tiny-cnn")
    assert published["server"].requests == []


def test_mirror_is_tried_before_the_entry_urls(published, monkeypatch):
    server, name = published["server"], published["path"].name
    server.routes[f"/entry/{name}"] = server.routes[f"/{name}"]
    entry = published["entry"]
    entry["weights"]["urls"] = [f"{server.url}/entry/{name}"]
    published["use"]({"tiny-cnn": entry})
    monkeypatch.setenv("BIOVIZ_ZOO_URL", f"{server.url}/")
    assert registry.download_weights("tiny-cnn").exists()
    assert server.requests == [f"/{name}"]  # the mirror's; the entry's URL was not needed


def test_an_unreachable_entry_names_fixes_that_work(published, capsys):
    entry = published["entry"]
    entry["weights"]["urls"] = []
    published["use"]({"tiny-cnn": entry})
    assert registry.model_info("tiny-cnn").location() == "unavailable"
    with pytest.raises(registry.WeightsError) as err:
        registry.load_model("tiny-cnn")
    message = str(err.value)
    assert "not packaged with this install and has no download URL" in message
    for fix in ("bioviz zoo add FILE", "BIOVIZ_ZOO_URL", "bioviz zoo reproduce tiny-cnn"):
        assert fix in message
    assert "network" not in message
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "pull", "tiny-cnn"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and "bioviz zoo add FILE" in error
    main(["zoo", "list"])
    assert "unavailable" in capsys.readouterr().out


def test_unknown_names_suggest_the_closest(published, capsys):
    with pytest.raises(registry.UnknownModelError, match="Did you mean 'tiny-cnn'"):
        registry.load_model("tiny_cnn")
    assert registry.list_models("tiny*") == ["tiny-cnn"] and registry.list_models("x*") == []
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "info", "tiny"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and "Did you mean 'tiny-cnn'" in error


@pytest.mark.parametrize("field, value, message", [
    ("file", "../../escaped.safetensors", "plain file name"),
    ("file", "/tmp/x.safetensors", "plain file name"),
    ("file", "x.pt", r"must be a \.safetensors file"),
    ("sha256", "abc", "64 hexadecimal digits"),
    ("sha256", "g" * 64, "64 hexadecimal digits"),
    ("size", 0, "size in bytes"),
    ("urls", ["ftp://127.0.0.1/x.safetensors"], "only https, http, file, hf URLs"),
    ("urls", ["hf://owner-only"], "not a Hugging Face Hub location"),
])
def test_registry_refuses_malformed_weights(published, field, value, message):
    entry = published["entry"]
    entry["weights"][field] = value
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(RegistryError, match=message):
        registry.model_info("tiny-cnn")


@pytest.mark.parametrize("change, message", [
    ({"model": "this.Zen"}, "model must be a class of zoo.models"),
    ({"model": "zoo.models.registry"}, "zoo.models has no class 'registry'"),
    ({"data": {"class_path": "os.system"}}, "data must be a class of zoo.data"),
    ({"data": {"class_path": "zoo.data.write_synthetic_v1"}}, "zoo.data has no class 'write_synthetic_v1'"),
    ({"input": {"channels": 3, "size": [12, 12]}}, r"input \[3, 12, 12\] differs from the model's in_shape"),
    ({"headline": "test/acc"}, "headline 'test/acc' is not one of its metrics"),
    ({"surprise": 1}, r"unknown field\(s\) \[.surprise.\]"),
    ({"metrics": {"test/corr": "high"}}, "metrics must map metric names to numbers"),
])
def test_registry_refuses_malformed_entries_without_importing_them(published, change, message, capsys):
    entry = {**published["entry"], **change}
    published["use"]({"tiny-cnn": entry})
    sys.modules.pop("this", None)
    with pytest.raises(RegistryError, match=message):
        registry.model_info("tiny-cnn").model_class  # noqa: B018 - resolving the class is what is tested
    assert "this" not in sys.modules and capsys.readouterr().out == ""  # `import this` would print the Zen


def test_an_entry_name_must_be_a_plain_name(published):
    published["use"]({"../escape": published["entry"]})
    with pytest.raises(RegistryError, match="a zoo entry name must be a plain file name"):
        registry.list_models()


def test_concurrent_pulls_fetch_once_and_agree(published):
    published["server"].delay = 0.3
    results, errors = [], []

    def pull():
        try:
            results.append(registry.download_weights("tiny-cnn"))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert len(published["server"].requests) == 1
    assert weights.sha256_of(results[0]) == published["entry"]["weights"]["sha256"]
    assert cache_files() == [results[0].name]


def test_a_weights_file_is_safetensors_with_the_model_in_its_metadata(published, tmp_path):
    data = published["path"].read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_size])
    assert list(header["__metadata__"]) == ["bioviz"]  # one field: a reproducible header
    meta = json.loads(header["__metadata__"]["bioviz"])
    assert meta == {"format": weights.FORMAT, "model": "zoo.models.CNNV1", "init_args": TINY, "dtype": "float32"}
    content = weights.read(published["path"], published["entry"]["weights"]["sha256"])
    assert set(content.state_dict) == set(published["model"].state_dict())
    with pytest.raises(registry.WeightsError, match="refusing to load"):
        weights.read(published["path"], "f" * 64)
    again = weights.write(tmp_path / "again", "tiny", "zoo.models.CNNV1", TINY, published["model"].state_dict())
    assert again.read_bytes() == data  # the same tensors and arguments give the same bytes
    not_weights = tmp_path / "x.safetensors"
    not_weights.write_bytes(b"\x08\0\0\0\0\0\0\0{}garbage")
    with pytest.raises(registry.WeightsError, match="is not a bioviz weights file"):
        weights.read(not_weights)


def test_the_file_must_hold_the_registrys_init_args(published):
    entry = published["entry"]
    entry["init_args"] = {**TINY, "filter_size": [7, 3, 3]}
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match="refusing to load a mismatched file"):
        registry.load_model("tiny-cnn")


def test_half_precision_weights_load_into_a_float32_model(published, tmp_path):
    path = weights.write(tmp_path / "half", "tiny", "zoo.models.CNNV1", TINY, published["model"].state_dict(),
                         dtype="float16")
    assert weights.read(path).state_dict["readout.bias"].dtype == torch.float16
    entry = raw_entry(path, [f"file://{path}"])
    entry["weights"]["dtype"] = "float16"
    published["use"]({"tiny-half": entry})
    model = registry.load_model("tiny-half")
    for name, value in model.state_dict().items():
        original = published["model"].state_dict()[name]
        assert value.dtype == original.dtype
        torch.testing.assert_close(value, original, rtol=1e-3, atol=1e-4)


def test_the_stored_dtype_must_be_the_registrys(published):
    entry = published["entry"]
    entry["weights"]["dtype"] = "float16"
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match="stores float32 tensors, but the registry says float16"):
        registry.load_model("tiny-cnn")


def test_pretrained_false_needs_no_weights(published):
    published["server"].routes.clear()
    model = registry.load_model("tiny-cnn", pretrained=False)
    assert isinstance(model, CNNV1) and not model.training


def test_a_zoo_model_names_the_input_it_expects(published):
    model = registry.load_model("tiny-cnn")
    with pytest.raises(ShapeMismatchError, match=r"tiny-cnn takes a batch of images \[B, 1, 12, 12\] \(1 x 12 x 12 "
                       r"\(grey\).*standardised.*transforms\(\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ShapeMismatchError, match=r"got \[1, 12, 12\]"):
        model(torch.randn(1, 12, 12))


def test_transforms_turn_a_users_image_into_the_models_input():
    grey = registry.InputSpec(1, (12, 12), normalize="standardize")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    x = grey.transforms()(photo)
    assert x.shape == (1, 12, 12) and abs(float(x.mean())) < 1e-5 and float(x.std()) == pytest.approx(1, abs=1e-4)
    colour = registry.InputSpec(3, (8, 8), normalize="mean_std", mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.1))
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    expected = (image.float() / 255 - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor(
        [0.2, 0.2, 0.1])[:, None, None]
    torch.testing.assert_close(colour.transforms()(image).as_subclass(torch.Tensor), expected)
    assert colour.transforms()(torch.rand(1, 8, 8)).shape == (3, 8, 8)  # grey to colour
    gratings = registry.InputSpec(1, (4, 4), value_range=(-0.5, 0.5))
    y = gratings.transforms()(torch.tensor([[[0, 255] * 2] * 4], dtype=torch.uint8))
    assert float(y.min()) == -0.5 and float(y.max()) == 0.5
    # another aspect ratio is scaled to cover the model's size and cropped, never padded
    white = Image.new("RGB", (40, 40), "white")
    stringer = registry.InputSpec(1, (12, 16), value_range=(-0.5, 0.5))
    torch.testing.assert_close(stringer.transforms()(white).as_subclass(torch.Tensor), torch.full((1, 12, 16), 0.5))
    # palette and grey-with-alpha images are read as the colours they show
    for image in (white.convert("P"), white.convert("LA"), white.convert("RGBA")):
        assert float(registry.InputSpec(1, (4, 4)).transforms()(image).min()) == pytest.approx(1.0), image.mode
    # colour to grey as the data modules do: the mean of R, G and B
    rgb = torch.stack([torch.full((4, 4), v, dtype=torch.uint8) for v in (30, 60, 90)])
    torch.testing.assert_close(registry.InputSpec(1, (4, 4)).transforms()(rgb).as_subclass(torch.Tensor),
                               torch.full((1, 4, 4), 60 / 255))


def test_add_imports_a_copy_after_checking_it(published, tmp_path, capsys, monkeypatch):
    main(["zoo", "add", str(published["path"])])  # found by its sha256
    assert "verified as the weights of tiny-cnn" in capsys.readouterr().out
    monkeypatch.setenv("BIOVIZ_OFFLINE", "1")
    registry.load_model("tiny-cnn")
    assert published["server"].requests == []
    for path in weights.cache_dir().glob("*.safetensors"):
        path.unlink()
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(published["path"].read_bytes()[:-1] + b"\0")
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "add", str(wrong), "--name", "tiny-cnn"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1
    assert "but 'tiny-cnn' needs" in error and "nothing was added" in error
    assert cache_files() == []
    with pytest.raises(registry.WeightsError, match="the weights file of no zoo entry; nothing was added"):
        registry.add_weights(wrong)
    with pytest.raises(registry.UserError, match="no file at"):
        registry.add_weights(tmp_path / "missing.safetensors")


def hub_route(server, path, body: bytes, revision="0123abcd") -> str:
    """Serve ``body`` as the Hub serves a file (HEAD with X-Repo-Commit and ETag, then GET); returns its hf:// URL."""
    route = f"/owner/repo/resolve/{revision}/weights/{path.name}"
    server.routes[route] = (body, None)
    server.headers[route] = {"X-Repo-Commit": "0" * 40, "ETag": '"' + weights.sha256_bytes(body) + '"'}
    return f"hf://owner/repo@{revision}/weights/{path.name}"


def test_hugging_face_hub_locations_go_through_huggingface_hub(published, monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    server, path = published["server"], published["path"]
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    entry = published["entry"]
    entry["weights"]["urls"] = [hub_route(server, path, path.read_bytes())]
    published["use"]({"tiny-cnn": entry})
    model = registry.load_model("tiny-cnn")
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(model(x), published["model"](x))
    assert f"/owner/repo/resolve/0123abcd/weights/{path.name}" in server.requests
    assert cache_files() == [f"{entry['weights']['sha256']}.safetensors"]  # one copy, in our cache


def test_a_hub_file_that_fails_our_sha256_is_not_kept(published, monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    server, path = published["server"], published["path"]
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    data = path.read_bytes()
    entry = published["entry"]
    entry["weights"]["urls"] = [hub_route(server, path, data[:50] + bytes([data[50] ^ 0xFF]) + data[51:])]
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match="hf://owner/repo@0123abcd/.* failed the sha256 check"):
        registry.download_weights("tiny-cnn")
    assert cache_files() == []


def test_hub_locations_without_huggingface_hub_say_what_to_install(published, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    entry = published["entry"]
    entry["weights"]["urls"] = ["hf://owner/repo@main/x.safetensors"]
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match=r"need huggingface_hub: pip install 'bioviz\[hub\]'"):
        registry.download_weights("tiny-cnn")


def test_export_turns_a_checkpoint_into_a_loadable_entry(published, tmp_path, monkeypatch):
    import lightning.pytorch as pl

    model = CNNV1(**TINY)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(model)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(ckpt)
    ckpt_state = torch.load(ckpt, weights_only=True)
    ckpt_state["hyper_parameters"]["_class_path"] = "zoo.models.CNNV1"  # as LightningCLI records it
    ckpt_state["hyper_parameters"]["mean_responses"] = [0.5, 1.0, 2.0]  # as older versions saved it
    torch.save(ckpt_state, ckpt)
    monkeypatch.chdir(tmp_path)
    main(["zoo", "export", str(ckpt), "--name", "exported", "--metric", "test/corr=0.42", "--out", "published"])
    [file] = list((tmp_path / "published").glob("exported-*.safetensors"))
    content = weights.read(file)
    assert "mean_responses" not in content.init_args  # a retired argument of CNNV1: dropped
    path, entry = registry.export_checkpoint(ckpt, "exported", tmp_path / "again", {"test/corr": 0.42})
    assert entry["exported"]["weights"]["sha256"] == weights.sha256_of(path) == weights.sha256_of(file)
    assert entry["exported"]["metrics"] == {"test/corr": 0.42}
    assert entry["exported"]["recipe"]["note"] == "best.ckpt at epoch 0, step 0"  # names the file it came from
    assert entry["exported"]["data"] is None  # no run config beside the checkpoint: the entry says so
    published["use"]({"exported": {**entry["exported"], "trained_on": "nothing", "data": published["entry"]["data"],
                                   "input": {"channels": 1, "size": [12, 12]}}})
    monkeypatch.setattr(weights, "packaged_dir", lambda: tmp_path / "published")
    loaded = registry.load_model("exported")
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(registry.WeightsError, match="no checkpoint at"):
        registry.export_checkpoint(tmp_path / "missing.ckpt", "x")


def test_zoo_command_line(published, capsys):
    main(["zoo", "list"])
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split() == ["name", "model", "trained", "on", "headline", "metric", "size", "weights"]
    assert row.split()[:2] == ["tiny-cnn", "CNNV1"] and row.endswith("remote") and "test/corr 0.5" in row
    main(["zoo", "info", "tiny-cnn"])
    info = yaml.safe_load(capsys.readouterr().out)
    assert info["model"] == "zoo.models.CNNV1" and info["weights"]["location"] == "remote"
    assert info["commands"] == ["bioviz fit -c configs/quickstart.yaml",
                                "bioviz test -c configs/quickstart.yaml --ckpt_path best"]
    main(["zoo", "verify"])
    assert "tiny-cnn: no local copy" in capsys.readouterr().out
    main(["zoo", "pull", "tiny-cnn"])
    main(["zoo", "verify", "tiny-cnn"])
    assert "tiny-cnn: ok" in capsys.readouterr().out
    cached = registry.download_weights("tiny-cnn")
    cached.write_bytes(cached.read_bytes()[:-1])
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "verify", "tiny-cnn"])
    assert exit_info.value.code == 1 and "SHA-256 MISMATCH" in capsys.readouterr().out


def test_zoo_test_re_measures_the_recorded_metrics(published, capsys):
    measured = registry.evaluate("tiny-cnn", accelerator="cpu")
    entry = published["entry"]
    entry["metrics"] = {k: round(measured[k], 4) for k in ("test/corr", "test/oracle")}
    published["use"]({"tiny-cnn": entry})
    main(["zoo", "test", "tiny-cnn"])
    out = capsys.readouterr().out
    assert "re-measured" in out and out.count("+0.0000") + out.count("-0.0000") == 2
    entry["metrics"]["test/corr"] += 0.01
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "test", "tiny-cnn"])
    assert exit_info.value.code == 1 and "differ by more than 0.0005: tiny-cnn test/corr" in capsys.readouterr().out


def test_scripts_load_a_zoo_name_or_a_checkpoint(published, tmp_path, capsys):
    model, data = registry.load_model_and_data("tiny-cnn")
    assert isinstance(model, CNNV1) and not model.training and data == published["entry"]["data"]
    with pytest.raises(registry.WeightsError, match="no checkpoint at runs/x/best.ckpt"):
        registry.load_model_and_data("runs/x/best.ckpt")
    with pytest.raises(registry.UnknownModelError, match="Did you mean 'tiny-cnn'"):
        registry.load_model_and_data("tiny-cn")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": {"_class_path": "this.Zen"}, "state_dict": {}}, ckpt)
    sys.modules.pop("this", None)
    with pytest.raises(RegistryError, match="zoo.models has no class 'Zen'"):
        registry.load_model_and_data(ckpt)
    assert "this" not in sys.modules and capsys.readouterr().out == ""


def fitted_checkpoint(folder, class_path="zoo.models.CNNV1"):
    """A checkpoint as `bioviz fit` writes it (LightningCLI records the model's class path), of a tiny CNNV1."""
    import lightning.pytorch as pl

    torch.manual_seed(0)
    model = CNNV1(**TINY)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(model)
    path = folder / "run" / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    state["hyper_parameters"]["_class_path"] = class_path
    torch.save(state, path)
    return model.eval(), path


def test_a_checkpoint_loads_as_its_model_without_unpickling_code(tmp_path):
    model, path = fitted_checkpoint(tmp_path, "zoo.models.cnn_v1.CNNV1")
    (path.parent.parent / "config.yaml").write_text(yaml.safe_dump({"data": {"class_path": "X", "init_args": {}}}))
    loaded, data = registry.load_model_and_data(path)
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(loaded(x), model(x))
    assert data == {"class_path": "X", "init_args": {}}


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "is not a checkpoint of `bioviz fit` that loads without running code"),
    ("pickled code", "is not a checkpoint of `bioviz fit` that loads without running code"),
    ("no state dict", "does not name its model class or has no state dict"),
])
def test_export_of_something_else_is_one_clear_line(tmp_path, capsys, content, message):
    import pickle

    path = tmp_path / "x.ckpt"
    if content == "pickled code":
        path.write_bytes(pickle.dumps(print))  # a global: refused by weights_only
    elif content == "no state dict":
        torch.save({"hyper_parameters": {"_class_path": "zoo.models.CNNV1"}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "export", str(path), "--name", "x", "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and message in error
    assert not (tmp_path / "out").exists()


def test_export_refuses_weights_that_do_not_fit_the_hyperparameters(tmp_path):
    _, path = fitted_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["hyper_parameters"]["num_filters"] = [3, 3, 3]
    torch.save(state, path)
    with pytest.raises(registry.WeightsError, match="do not load into zoo.models.CNNV1 .* nothing was written"):
        registry.export_checkpoint(path, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_names_must_be_plain(tmp_path, capsys):
    _, path = fitted_checkpoint(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "export", str(path), "--name", "../../escaped", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "must be a plain file name" in capsys.readouterr().err
    assert list(tmp_path.rglob("escaped*")) == []
