"""DDP trains the same weights as one process with the same global batch: 2 CPU processes (gloo) with batches of b
against 1 process with batches of 2b, for a response model (StringerConvFC) and a classifier (RetinaVVS), and two node
ranks launched by torchrun on 127.0.0.1 (the multi-node path) against one process.

Each step the two ranks' batches together are the one-process batch (``DistributedSampler`` deals the epoch's
permutation out in turn), the losses are batch means and DDP averages the gradients. Dropout, noise and augmentation
are off, because each rank draws its own; the models have no batch norm, which normalises by each process's own
half-batch unless it is synchronised (``--trainer.sync_batchnorm true``, which torch supports on GPUs only). What
remains is float32 summation order.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import TESTS, run_bioviz, write_image_folder

pytestmark = pytest.mark.slow

COMMON = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
          "--trainer.max_epochs=2"]
# 60 gratings: 3 steps of 20 (one process) or of 2 x 10 per epoch
RESPONSE = ["--model=StringerConvFC", "--model.lr=0.05", "--data=SimulatedStringerDataModule", "--data.n_neurons=50",
            *COMMON]


def classifier(root):
    return ["--model=RetinaVVS", "--model.n_bn=4", "--model.d_vvs=1", "--model.retina_width=8",
            "--model.vvs_width=8", "--model.dense_width=32", "--data=ImageFolderDataModule", f"--data.root={root}",
            "--data.grayscale=true", "--data.val_size=8", "--data.augment=false", *COMMON]


def final_weights(folder):
    ckpt = torch.load(folder / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


def assert_same_weights(one, two):
    (steps_one, one), (steps_two, two) = one, two
    assert steps_one == steps_two > 0
    for key, value in one.items():
        if value.is_floating_point():
            torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(two[key], value), key


def train(args, folder, batch, devices=1):
    folder.mkdir()
    extra = ["--trainer.devices=2", "--trainer.strategy=ddp"] if devices == 2 else []
    run_bioviz(["fit", *args, f"--data.batch_size={batch}", *extra], cwd=folder)
    return final_weights(folder)


@pytest.mark.parametrize("model", ["response", "classifier"])
def test_two_ddp_processes_train_the_weights_of_one(tmp_path, model):
    if model == "response":
        args, batch = RESPONSE, 10
    else:  # 40 training images: steps of 16, 16 and 8 (one process) or of 2 x 8, 2 x 8 and 2 x 4
        args, batch = classifier(write_image_folder(tmp_path / "images", size=(32, 32), per_class=(16, 4))), 8
    one = train(args, tmp_path / "one", batch=2 * batch)
    two = train(args, tmp_path / "two", batch=batch, devices=2)
    assert_same_weights(one, two)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_under_torchrun_train_the_weights_of_one_process(tmp_path):
    one = train(RESPONSE, tmp_path / "one", batch=20)
    folder = tmp_path / "nodes"
    folder.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
         "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "zoo.cli", "fit", *RESPONSE,
         "--data.batch_size=10", "--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp"],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert_same_weights(one, final_weights(folder))
