import pytest
import torch
from torch import nn

from bioviz.hooks import first_conv, get_module, get_tensor, layer_output, record


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 5))


def test_record_captures_inputs_and_outputs_and_removes_hooks():
    net = small_net()
    x = torch.randn(4, 1, 8, 8)
    with record(net, ["0", "1", "3"]) as rec:
        y = net(x)
    torch.testing.assert_close(rec.outputs["0"], net[0](x))
    torch.testing.assert_close(rec.inputs["1"], net[0](x))
    torch.testing.assert_close(rec["1"], torch.relu(net[0](x)))
    torch.testing.assert_close(rec.outputs["3"], y)
    assert not rec.outputs["0"].requires_grad and rec.calls == {"0": 1, "1": 1, "3": 1}
    assert all(len(m._forward_hooks) == 0 for m in net.modules())


def test_record_keeps_every_call_and_cleans_up_after_an_exception():
    relu = nn.ReLU()
    net = nn.Sequential(relu, relu)  # one module run twice, like a settling loop
    with record(net, "0", keep_all=True) as rec:
        net(torch.tensor([-1.0, 2.0]))
    assert rec.calls["0"] == 2 and len(rec.all_outputs["0"]) == 2
    with pytest.raises(RuntimeError), record(net, "0"):
        raise RuntimeError("boom")
    assert len(relu._forward_hooks) == 0


def test_unknown_names_say_what_exists():
    net = small_net()
    with pytest.raises(KeyError, match=r"no layer named '4'.*Known layers"):
        with record(net, "4"):
            pass
    with pytest.raises(KeyError, match=r"Did you mean '0.weight'"):
        get_tensor(net, "0.weigth")
    assert get_tensor(net, "0") is net[0].weight and get_tensor(net, "3.bias") is net[3].bias
    assert get_module(net, "") is net
    assert first_conv(net) == ("0", net[0])
    with pytest.raises(LookupError, match="name the layer"):
        first_conv(nn.Linear(2, 2))


class BuiltFilters(nn.Module):
    """A convolution whose filter bank is built from other parameters (like a Hermite rotation layer)."""

    def __init__(self):
        super().__init__()
        self.coeffs = nn.Parameter(torch.randn(3, 2))

    @property
    def weight(self):
        return self.coeffs.reshape(6, 1, 1, 1).expand(6, 1, 3, 3)


def test_first_conv_finds_convolutions_without_nn_conv2d():
    net = nn.Sequential(nn.BatchNorm2d(1), BuiltFilters(), nn.Conv2d(6, 2, 1))
    assert first_conv(net) == ("1", net[1])  # the batch norm's 1-D weight is not a filter bank


def test_layer_output():
    net = small_net()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(layer_output(net, "0", x), net[0](x).detach())
    torch.testing.assert_close(layer_output(net, None, x), net(x).detach())
    assert not layer_output(net, "0", x.requires_grad_(True)).requires_grad


class Fails(nn.Module):
    def forward(self, x):
        raise AssertionError("ran after the requested layer")


def test_layer_output_can_stop_after_the_layer_and_keep_the_graph():
    net = small_net()
    x = torch.randn(2, 1, 8, 8)
    stopped = nn.Sequential(net[0], net[1], Fails())
    torch.testing.assert_close(layer_output(stopped, "1", x, stop=True), torch.relu(net[0](x)).detach())
    with pytest.raises(AssertionError, match="ran after"):
        layer_output(stopped, "1", x)  # without stop the pass runs in full
    assert all(len(m._forward_hooks) == 0 for m in stopped.modules())
    x.requires_grad_(True)
    out = layer_output(net, "0", x, stop=True, no_grad=False)
    out[0, 0, 4, 4].backward()  # the conv is linear: the gradient is its filter
    torch.testing.assert_close(x.grad[0, 0, 3:6, 3:6], net[0].weight[0, 0].detach())


def test_layer_output_of_a_layer_run_twice_is_its_last_call_unless_stopped():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    x = torch.randn(3, 2)
    first = torch.relu(net[0](x)).detach()
    torch.testing.assert_close(layer_output(net, "1", x, stop=True), first)
    torch.testing.assert_close(layer_output(net, "1", x), torch.relu(net[2](first)).detach())


def test_layer_output_errors():
    net = small_net()
    with pytest.raises(KeyError, match="no layer named"):
        layer_output(net, "9", torch.randn(1, 1, 8, 8))
    unused = nn.Sequential(net, nn.Identity())
    unused.forward = lambda x: net(x)  # the Identity never runs
    with pytest.raises(RuntimeError, match="did not run"):
        layer_output(unused, "1", torch.randn(1, 1, 8, 8))


def test_record_without_detach_keeps_the_graph_for_gradients():
    net = small_net()
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    with record(net, "0", detach=False) as rec:  # the conv: linear, so the gradient is its filter
        net(x)
    rec.outputs["0"][0, 0, 4, 4].backward()
    torch.testing.assert_close(x.grad[0, 0, 3:6, 3:6], net[0].weight[0, 0])
