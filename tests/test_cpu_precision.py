"""A CPU run set to a 16-bit precision that PyTorch has no oneDNN kernels for on this processor is warned about (its
fallback for bfloat16 / float16 convolutions there is many times slower than float32)."""

import sys
import warnings

import lightning.pytorch as pl
import pytest
import torch

import zoo.cli
from zoo.cli import BiovizCLI, onednn_supports, warn_slow_cpu_precision
from zoo.models import CNNV1, Lissom

from conftest import TINY_SIM_ARGS

SLOW = "will be slow on this CPU"


ONEDNN = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="a PyTorch build without oneDNN")


def conv_backend(dtype: torch.dtype | None) -> str:
    """The ATen kernel PyTorch picks for a 9 x 9 convolution on this CPU, autocast to ``dtype`` (None: float32)."""
    conv, x = torch.nn.Conv2d(4, 4, 9, padding=4), torch.rand(2, 4, 12, 12)
    with (torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None),
          torch.profiler.profile() as profile):
        conv(x)
    names = {event.name for event in profile.events()}
    if "aten::mkldnn_convolution" in names:
        return "oneDNN"
    return "fallback" if "aten::_slow_conv2d_forward" in names else f"other: {sorted(names)}"


@ONEDNN
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_check_predicts_which_convolution_kernel_this_cpu_runs(dtype):
    # whatever this machine is: oneDNN where the check says it has the kernels, the slow fallback where not
    assert conv_backend(dtype) == ("oneDNN" if onednn_supports(dtype) else "fallback")


@ONEDNN
def test_float32_convolutions_run_in_onednn():
    assert conv_backend(None) == "oneDNN"


def test_a_build_without_onednn_has_no_16_bit_kernels(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not onednn_supports(torch.bfloat16) and not onednn_supports(torch.float16)


def trainer(precision: str) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False)


@pytest.mark.parametrize("precision,dtype", [("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16),
                                             ("16-true", torch.float16)])
def test_a_16_bit_precision_without_kernels_is_warned_about_with_the_fix(precision, dtype, monkeypatch):
    asked = []
    monkeypatch.setattr(zoo.cli, "onednn_supports", lambda d: asked.append(d) or False)
    model = CNNV1(n_neurons=3, in_shape=[1, 16, 16], filter_size=[5, 3, 3], num_filters=[4, 4, 4])
    with pytest.warns(UserWarning, match=SLOW) as caught:
        assert warn_slow_cpu_precision(trainer(precision), model)
    assert asked == [dtype]
    assert "--trainer.precision 32-true" in str(caught[0].message)


@pytest.mark.parametrize("precision,native", [("bf16-mixed", True), ("16-true", True), ("32-true", False),
                                              ("64-true", False)])
def test_no_warning_where_the_cpu_has_the_kernels_or_the_run_is_not_16_bit(precision, native, monkeypatch):
    monkeypatch.setattr(zoo.cli, "onednn_supports", lambda d: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not warn_slow_cpu_precision(trainer(precision), None)
    assert not [w for w in caught if SLOW in str(w.message)]


def test_self_organising_models_are_warned_about_only_where_their_weights_are_16_bit(monkeypatch):
    # under bf16-mixed they switch the autocast off and compute in float32; under bf16-true their weights are bf16
    monkeypatch.setattr(zoo.cli, "onednn_supports", lambda d: False)
    lissom = Lissom(in_shape=[1, 24, 24], cortex_size=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not warn_slow_cpu_precision(trainer("bf16-mixed"), lissom)
    assert not [w for w in caught if SLOW in str(w.message)]
    with pytest.warns(UserWarning, match=SLOW):
        assert warn_slow_cpu_precision(trainer("bf16-true"), lissom)


def test_bioviz_fit_warns_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bioviz"])
    monkeypatch.setattr(zoo.cli, "onednn_supports", lambda d: False)
    args = ["--model=CNNV1", "--data=SyntheticV1DataModule", *TINY_SIM_ARGS, "--trainer.precision=bf16-mixed"]
    with pytest.warns(UserWarning, match=SLOW):  # when the trainer is built, before anything trains
        BiovizCLI(args=args, run=False)
