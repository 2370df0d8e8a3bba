import hashlib
import http.server
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10
from torchvision.io import write_png

from zoo.data import write_synthetic_v1

REPO = Path(__file__).resolve().parents[1]


def load_script(path: Path):
    """A script of bench/ or examples/ as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TESTS = Path(__file__).resolve().parent

# The smallest population that still trains: used wherever a test only needs real-format data.
TINY_SIM = dict(n_neurons=6, image_shape=[16, 16], n_train=96, n_val=33, n_test=21, n_repeats=4)
TINY_SIM_ARGS = [f"--data.init_args.{k}={v}" for k, v in TINY_SIM.items()]
TINY_MODEL_ARGS = ["--model.init_args.filter_size=[5,3,3]", "--model.init_args.num_filters=[4,4,4]"]


@pytest.fixture
def tiny_npz(tmp_path):
    """A simulated population written in the neural-response file layout."""
    return write_synthetic_v1(tmp_path / "tiny.npz", seed=1, **TINY_SIM)


def run_bioviz(args, cwd, env_extra=None, check=True, timeout=600):
    """Run the real console entry point in a fresh process, as a user would."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"bioviz {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


class Server:
    """Serves ``routes[path] = (body, declared length or None)`` on 127.0.0.1 and records the requests' paths (GET
    and HEAD); a declared length above ``len(body)`` is a transfer that broke off. ``headers[path]`` adds response
    headers (a Hugging Face Hub endpoint sends X-Repo-Commit and ETag); ``delay`` seconds pass before each answer;
    ``redirects[path]`` answers 302 to that location; ``trickle[path]`` sends the body a byte per that many
    seconds."""

    def __init__(self):
        self.routes, self.headers, self.requests, self.delay = {}, {}, [], 0.0
        self.redirects, self.trickle = {}, {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self, send_body: bool):
                path = self.path.split("?")[0]
                server.requests.append(path)
                time.sleep(server.delay)
                if path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path not in server.routes:
                    self.send_error(404)
                    return
                body, length = server.routes[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for key, value in server.headers.get(path, {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if send_body and path in server.trickle:
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle[path])
                elif send_body:
                    self.wfile.write(body)

            def do_GET(self):
                self.answer(send_body=True)

            def do_HEAD(self):
                self.answer(send_body=False)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    """A local HTTP server standing in for a dataset's official host."""
    s = Server()
    yield s
    s.close()


def write_image_folder(root: Path, classes=("cat", "dog", "frog"), per_class=(12, 4), size=(8, 8), seed=0) -> Path:
    """``root/train/<class>/<i>.png`` and ``root/test/<class>/<i>.png``: random RGB images, ``per_class`` =
    (train, test) images per class."""
    g = torch.Generator().manual_seed(seed)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
                write_png(image, str(root / split / name / f"{i:04d}.png"))
    return root


@pytest.fixture
def image_folder(tmp_path):
    """A tiny folder-of-class-folders dataset (3 classes, 12 train and 4 test images each, 8 x 8 RGB PNGs)."""
    return write_image_folder(tmp_path / "images")


def cifar_archive(n_per_batch=4, seed=0) -> tuple[bytes, dict]:
    """A tiny archive laid out as the official cifar-10-python.tar.gz (pickled dicts, which Python 3 reads with str
    keys as it reads the official Python 2 pickles), and the per-file md5s torchvision checks."""
    rng = np.random.default_rng(seed)
    files = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        files[name] = pickle.dumps({"data": data, "labels": labels}, protocol=2)
    files["batches.meta"] = pickle.dumps({"label_names": list("abcdefghij")}, protocol=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue(), {name: hashlib.md5(body).hexdigest() for name, body in files.items()}


def use_tiny_cifar(monkeypatch) -> bytes:
    """The tiny archive, with torchvision's table of official per-file md5s replaced by the tiny files' ones."""
    archive, md5s = cifar_archive()
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5s[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5s["batches.meta"]})
    return archive


@pytest.fixture
def tiny_cifar(monkeypatch):
    return use_tiny_cifar(monkeypatch)
