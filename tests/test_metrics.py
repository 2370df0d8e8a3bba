import numpy as np
import pytest
import torch

from zoo.metrics import ExplainableVariance, PerNeuronCorrelation, RepeatOracle


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


def sensorium_reference(trials, preds):
    """The Sensorium 2022 evaluation (neuralpredictors' ``fev`` and the website's correlations), written out with
    numpy for one neuron: ``trials`` a list over images of 1-D arrays of repeats, ``preds`` one value per image."""
    r = np.concatenate(trials)
    p = np.concatenate([np.full(len(t), v) for t, v in zip(trials, preds, strict=True)])
    noise = np.mean([np.var(t, ddof=1) for t in trials if len(t) >= 2])
    total = np.var(r, ddof=1)
    mse = np.mean((r - p) ** 2)
    return {"single_trial_corr": np.corrcoef(p, r)[0, 1], "fev": (total - noise) / total,
            "feve": 1 - (mse - noise) / (total - noise)}


def test_explainable_variance_and_single_trial_corr_match_the_sensorium_formulas_with_missing_trials_and_any_sharding():
    rng = np.random.default_rng(3)
    n_images, max_repeats, n_neurons = 40, 10, 5
    rates = rng.gamma(2.0, 1.0, size=(n_images, n_neurons))
    responses = rng.poisson(rates[:, None, :].repeat(max_repeats, 1)).astype(float)
    repeats = rng.integers(2, max_repeats + 1, size=(n_images, n_neurons))  # a different count per image and neuron
    responses[np.arange(max_repeats)[None, :, None] >= repeats[:, None, :]] = np.nan
    responses[:12, :, 4] = np.nan  # neuron 4 was never shown the first 12 images (as in Cadena et al.'s data)
    preds = rates + rng.normal(0, 0.5, size=rates.shape)
    metric, single = ExplainableVariance(n_neurons), PerNeuronCorrelation(n_neurons)
    for part in np.array_split(np.arange(n_images), 3):  # batches of unequal size
        p, r = torch.tensor(preds[part], dtype=torch.float32), torch.tensor(responses[part])
        metric.update(p, r)
        single.update(p[:, None].expand_as(r).flatten(0, 1), r.flatten(0, 1))  # as ResponseTask's test does
    got = metric.compute() | {"single_trial_corr": single.compute()}
    for neuron in range(n_neurons):
        images = [i for i in range(n_images) if not np.isnan(responses[i, :, neuron]).all()]
        trials = [responses[i, :repeats[i, neuron], neuron] for i in images]
        want = sensorium_reference(trials, preds[images, neuron].astype(np.float32))
        for key, value in want.items():
            assert float(got[key][neuron]) == pytest.approx(value, rel=1e-6, abs=1e-9), (key, neuron)
    # Two shards merged as DDP merges them give the same numbers.
    a, b = ExplainableVariance(n_neurons), ExplainableVariance(n_neurons)
    a.update(torch.tensor(preds[:7], dtype=torch.float32), torch.tensor(responses[:7]))
    b.update(torch.tensor(preds[7:], dtype=torch.float32), torch.tensor(responses[7:]))
    a.merge_state(b)
    for key, value in a.compute().items():
        torch.testing.assert_close(value, got[key])


def test_explainable_variance_of_a_perfect_model_of_noise_free_rates():
    rates = torch.rand(30, 4) + 0.5
    responses = rates[:, None, :] + 0.1 * torch.randn(30, 6, 4)  # the same noise level for every image
    metric = ExplainableVariance(4)
    metric.update(rates, responses)
    got = metric.compute()
    assert (got["feve"] > 0.9).all() and (got["fev"] > 0.5).all()  # the true rates explain what can be explained
    metric.reset()
    metric.update(torch.zeros(30, 4) + rates.mean(0), responses)  # a model that knows only each neuron's mean
    assert (metric.compute()["feve"].abs() < 0.1).all()
    with pytest.raises(ValueError, match=r"expected preds \[B, n\] and responses \[B, R, n\]"):
        metric.update(rates, rates)


def test_correlation_and_oracle_skip_trials_that_were_not_recorded():
    g = torch.Generator().manual_seed(0)
    responses = torch.randn(50, 4, 3, generator=g) + torch.linspace(0, 3, 50)[:, None, None]
    full = RepeatOracle(3)
    full.update(responses[:, :2])
    holes = responses.clone()
    holes[:, 2:] = float("nan")  # only two repeats recorded
    oracle = RepeatOracle(3)
    oracle.update(holes)
    torch.testing.assert_close(oracle.compute(), full.compute())
    preds, target = torch.randn(50, 3, generator=g), responses[:, 0]
    partial = target.clone()
    partial[:10, 1] = float("nan")
    corr = PerNeuronCorrelation(3)
    corr.update(preds, partial)
    ref = PerNeuronCorrelation(3)
    ref.update(preds[10:], target[10:])
    assert float(corr.compute()[1]) == pytest.approx(float(ref.compute()[1]))
