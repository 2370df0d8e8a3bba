"""The zoo registry, offline: weights are served from a local HTTP server on 127.0.0.1."""

import functools
import http.server
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from zoo import registry
from zoo.cli import main
from zoo.models import CNNV1

TINY = dict(n_neurons=3, in_shape=[1, 12, 12], filter_size=[5, 3, 3], num_filters=[2, 2, 2])


class Server:
    """Serves a folder on 127.0.0.1 and counts requests; ``/broken/<file>`` promises the whole file and sends half."""

    def __init__(self, folder: Path, delay: float = 0.0):
        self.requests = 0
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                time.sleep(delay)
                if self.path.startswith("/broken/"):
                    data = (folder / self.path.rsplit("/", 1)[-1]).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A tiny model published to a served folder, and a registry whose entries point at it."""
    torch.manual_seed(0)
    model = CNNV1(**TINY).eval()
    served = tmp_path / "served"
    path = registry.write_weights_file("zoo.models.CNNV1", TINY, model.state_dict(), served, "tiny")
    server = Server(served)
    entry = {"model": "zoo.models.CNNV1", "init_args": TINY, "metrics": {"test/corr": 0.5},
             "weights": {"file": path.name, "sha256": registry.sha256_of(path), "size": path.stat().st_size,
                         "urls": [f"{server.url}/{path.name}"]}}

    def use(entries):
        file = tmp_path / "registry.yaml"
        file.write_text(yaml.safe_dump({"models": entries}))
        monkeypatch.setattr(registry, "REGISTRY_FILE", file)
        registry._read_registry.cache_clear()

    use({"tiny-cnn": entry})
    monkeypatch.setenv("BIOVIZ_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BIOVIZ_OFFLINE", raising=False)
    monkeypatch.delenv("BIOVIZ_ZOO_URL", raising=False)
    monkeypatch.setattr(registry, "CHECKPOINTS_DIR", tmp_path / "no-checkpoints")
    yield dict(model=model, path=path, server=server, entry=entry, use=use, served=served)
    server.close()
    registry._read_registry.cache_clear()


def cache_files():
    return sorted(p.name for p in registry.cache_dir().iterdir() if not p.name.endswith(".lock"))


def test_download_verify_load_and_cache_hit(published):
    model = registry.load_model("tiny-cnn")
    assert not model.training
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(model(x), published["model"](x))
    assert published["server"].requests == 1
    assert cache_files() == [f"{published['entry']['weights']['sha256']}.pt"]
    registry.load_model("tiny-cnn")
    assert published["server"].requests == 1  # served from the cache, re-verified


def test_tampered_cache_is_detected_and_replaced(published):
    path = registry.download_weights("tiny-cnn")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    again = registry.download_weights("tiny-cnn")
    assert published["server"].requests == 2
    assert registry.sha256_of(again) == published["entry"]["weights"]["sha256"]


@pytest.mark.parametrize("damage, message", [
    ("truncate", r"broke off after \d+ of \d+ bytes"),
    ("corrupt", "failed the sha256 check"),
    ("broken", "/broken/"),
])
def test_bad_downloads_leave_the_cache_as_it_was(published, damage, message):
    entry, served = published["entry"], published["served"]
    file = served / entry["weights"]["file"]
    data = file.read_bytes()
    if damage == "truncate":
        file.write_bytes(data[:-100])
    elif damage == "corrupt":
        file.write_bytes(data[:50] + bytes([data[50] ^ 0xFF]) + data[51:])
    else:
        entry["weights"]["urls"] = [f"{published['server'].url}/broken/{file.name}"]
        published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match=message) as err:
        registry.download_weights("tiny-cnn")
    assert published["server"].url in str(err.value)  # names the URL that failed
    assert cache_files() == []  # nothing half-written


def test_wrong_sha256_in_the_registry(published):
    entry = published["entry"]
    entry["weights"]["sha256"] = "0" * 64
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match="failed the sha256 check .* expected 0000"):
        registry.load_model("tiny-cnn")
    assert cache_files() == []


def test_offline_mode_uses_only_local_files(published, monkeypatch):
    monkeypatch.setenv("BIOVIZ_OFFLINE", "1")
    with pytest.raises(registry.WeightsError, match="BIOVIZ_OFFLINE is set"):
        registry.download_weights("tiny-cnn")
    assert published["server"].requests == 0
    monkeypatch.setattr(registry, "CHECKPOINTS_DIR", published["served"])  # the repository's checkpoints/
    assert registry.download_weights("tiny-cnn").exists()
    assert published["server"].requests == 0


def test_mirror_is_tried_before_the_entry_urls(published, monkeypatch):
    entry = published["entry"]
    entry["weights"]["urls"] = ["http://127.0.0.1:9/unreachable"]
    published["use"]({"tiny-cnn": entry})
    monkeypatch.setenv("BIOVIZ_ZOO_URL", published["server"].url)
    assert registry.download_weights("tiny-cnn").exists()


def test_unknown_names_suggest_the_closest(published):
    with pytest.raises(registry.UnknownModelError, match="Did you mean 'tiny-cnn'"):
        registry.load_model("tiny_cnn")
    assert registry.list_models("tiny*") == ["tiny-cnn"] and registry.list_models("x*") == []


def test_a_refused_url_falls_through_to_the_next(published):
    entry = published["entry"]
    entry["weights"]["urls"] = ["ftp://127.0.0.1/x.pt", f"file://{published['path']}"]
    published["use"]({"tiny-cnn": entry})
    assert registry.download_weights("tiny-cnn").exists()


def test_refused_scheme_is_named(published):
    entry = published["entry"]
    entry["weights"]["urls"] = ["ftp://127.0.0.1/x.pt"]
    published["use"]({"tiny-cnn": entry})
    with pytest.raises(registry.WeightsError, match="ftp://127.0.0.1/x.pt: refused: only https, http, file"):
        registry.download_weights("tiny-cnn")


def test_concurrent_pulls_fetch_once_and_agree(published):
    published["server"].close()
    slow = Server(published["served"], delay=0.3)
    entry = published["entry"]
    entry["weights"]["urls"] = [f"{slow.url}/{entry['weights']['file']}"]
    published["use"]({"tiny-cnn": entry})
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
    slow.close()
    assert not errors and len(set(results)) == 1
    assert slow.requests == 1
    assert registry.sha256_of(results[0]) == entry["weights"]["sha256"]
    assert cache_files() == [results[0].name]


def test_weights_file_holds_tensors_and_config_only(published):
    content = registry.load_weights_file(published["path"], published["entry"]["weights"]["sha256"])
    assert set(content) == {"format", "model", "init_args", "state_dict"}
    with pytest.raises(registry.WeightsError, match="refusing to load"):
        registry.load_weights_file(published["path"], "f" * 64)


def test_pretrained_false_needs_no_weights(published):
    published["server"].close()
    model = registry.load_model("tiny-cnn", pretrained=False)
    assert isinstance(model, CNNV1) and not model.training


def test_export_turns_a_checkpoint_into_a_loadable_entry(published, tmp_path, monkeypatch):
    import lightning.pytorch as pl

    model = CNNV1(**TINY, mean_responses=[0.5, 1.0, 2.0])
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(model)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(ckpt)
    ckpt_state = torch.load(ckpt, weights_only=True)
    ckpt_state["hyper_parameters"]["_class_path"] = "zoo.models.CNNV1"  # as LightningCLI records it
    torch.save(ckpt_state, ckpt)
    monkeypatch.chdir(tmp_path)
    main(["zoo", "export", str(ckpt), "--name", "exported", "--metric", "test/corr=0.42"])
    [weights] = list((tmp_path / "checkpoints").glob("exported-*.pt"))
    content = registry.load_weights_file(weights)
    assert "mean_responses" not in content["init_args"]  # it only initialises the bias the weights overwrite
    path, entry = registry.export_checkpoint(ckpt, "exported", tmp_path / "again", {"test/corr": 0.42})
    assert entry["exported"]["weights"]["sha256"] == registry.sha256_of(path) == registry.sha256_of(weights)
    assert entry["exported"]["metrics"] == {"test/corr": 0.42}
    published["use"]({"exported": entry["exported"]})
    monkeypatch.setattr(registry, "CHECKPOINTS_DIR", tmp_path / "checkpoints")
    loaded = registry.load_model("exported")
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_zoo_command_line(published, capsys):
    main(["zoo", "list"])
    assert "tiny-cnn" in capsys.readouterr().out
    main(["zoo", "info", "tiny-cnn"])
    assert yaml.safe_load(capsys.readouterr().out)["model"] == "zoo.models.CNNV1"
    main(["zoo", "verify"])
    assert "tiny-cnn: not downloaded" in capsys.readouterr().out
    main(["zoo", "pull", "tiny-cnn"])
    main(["zoo", "verify", "tiny-cnn"])
    assert "tiny-cnn: ok" in capsys.readouterr().out
    cached = registry.download_weights("tiny-cnn")
    cached.write_bytes(cached.read_bytes()[:-1])
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "verify", "tiny-cnn"])
    assert exit_info.value.code == 1 and "SHA-256 MISMATCH" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "info", "tiny"])
    assert exit_info.value.code == 2 and "Did you mean 'tiny-cnn'" in capsys.readouterr().err
