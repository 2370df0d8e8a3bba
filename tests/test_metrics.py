import numpy as np
import pytest
import torch

from zoo.metrics import PerNeuronCorrelation, RepeatOracle


def numpy_corr(x, y):
    return np.array([np.corrcoef(x[:, i], y[:, i])[0, 1] for i in range(x.shape[1])])


def test_correlation_matches_numpy_and_is_batch_invariant():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = 0.5 * x + torch.randn(200, 5, generator=g)
    whole = PerNeuronCorrelation(5)
    whole.update(x, y)
    batched = PerNeuronCorrelation(5)
    for i in range(0, 200, 37):
        batched.update(x[i:i + 37], y[i:i + 37])
    expected = numpy_corr(x.double().numpy(), y.double().numpy())
    np.testing.assert_allclose(whole.compute().numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(batched.compute().numpy(), expected, atol=1e-10)


def test_correlation_of_tiny_variance_float32_data_is_exact_not_nan():
    # torchmetrics.PearsonCorrCoef returns NaN for float32 data of small variance (below about 3.5e-4).
    g = torch.Generator().manual_seed(1)
    signal = torch.randn(500, 3, generator=g)
    x = (1e-3 * signal + 5.0).float()
    y = (1e-3 * (signal + 0.3 * torch.randn(500, 3, generator=g)) + 5.0).float()
    metric = PerNeuronCorrelation(3)
    for i in range(0, 500, 50):
        metric.update(x[i:i + 50], y[i:i + 50])
    r = metric.compute()
    assert torch.isfinite(r).all()
    np.testing.assert_allclose(r.numpy(), numpy_corr(x.double().numpy(), y.double().numpy()), atol=1e-6)


def test_constant_neuron_gets_zero_not_nan():
    x = torch.randn(50, 2)
    y = torch.randn(50, 2)
    y[:, 1] = 3.0
    metric = PerNeuronCorrelation(2)
    metric.update(x, y)
    r = metric.compute()
    assert r[1] == 0 and r[0] != 0


def test_correlation_merges_across_shards_like_ddp():
    x, y = torch.randn(101, 4), torch.randn(101, 4)
    a, b, whole = PerNeuronCorrelation(4), PerNeuronCorrelation(4), PerNeuronCorrelation(4)
    a.update(x[::2], y[::2])
    b.update(x[1::2], y[1::2])
    whole.update(x, y)
    a.merge_state(b)
    torch.testing.assert_close(a.compute(), whole.compute())


def test_correlation_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"equal shape \[B, n\]"):
        PerNeuronCorrelation(3).update(torch.zeros(4, 3), torch.zeros(4, 2))


def test_oracle_matches_formula_and_true_ceiling():
    g = torch.Generator().manual_seed(2)
    images, repeats, neurons = 400, 8, 3
    signal = torch.randn(images, 1, neurons, generator=g, dtype=torch.float64)
    noise_sd = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    responses = signal + noise_sd * torch.randn(images, repeats, neurons, generator=g, dtype=torch.float64)
    oracle = RepeatOracle(neurons)
    for i in range(0, images, 64):
        oracle.update(responses[i:i + 64])
    mean = responses.mean(1)
    total = mean.var(0, unbiased=True)
    noise = (responses.var(1, unbiased=True) / repeats).mean(0)
    np.testing.assert_allclose(oracle.compute().numpy(), ((total - noise) / total).sqrt().numpy(), atol=1e-10)
    # It estimates the correlation of the true signal with the repeat average.
    true = numpy_corr(signal[:, 0].numpy(), mean.numpy())
    np.testing.assert_allclose(oracle.compute().numpy(), true, atol=0.05)


def test_oracle_of_noise_free_repeats_is_one_and_needs_repeats():
    responses = torch.randn(30, 1, 2).expand(30, 5, 2)
    oracle = RepeatOracle(2)
    oracle.update(responses)
    torch.testing.assert_close(oracle.compute(), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="R >= 2"):
        oracle.update(torch.randn(30, 1, 2))
