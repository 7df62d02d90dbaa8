"""The VAE: its loss formula, seeded training that lowers the loss, and per-window reconstruction errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rationanomaly.timeseries.vae import VaeConfig, build_vae, reconstruction_errors, train_vae, vae_loss  # noqa: E402


def test_vae_loss_is_dimension_times_mse_plus_kl():
    x = torch.tensor([[0.0, 1.0]])
    reconstruction = torch.tensor([[0.5, 0.5]])
    mu, log_var = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    # 2 * mean((0.25, 0.25)) = 0.5; KL = -0.5 * (1 + 0 - 1 - 1) = 0.5
    assert float(vae_loss(x, reconstruction, mu, log_var)) == pytest.approx(1.0)


def test_vae_has_the_reference_layers():
    model = build_vae(25, VaeConfig())
    shapes = [tuple(p.shape) for name, p in model.named_parameters() if name.endswith("weight")]
    assert shapes == [(64, 25), (64, 64), (64, 64), (10, 64), (10, 64), (64, 10), (25, 64)]


def test_training_lowers_the_loss_and_is_seeded():
    rng = np.random.default_rng(0)
    windows = (0.5 + 0.3 * np.sin(np.arange(8)[None, :] + rng.uniform(0, 6, (256, 1)))).astype(np.float32)
    config = VaeConfig(epochs=30, batch_size=64, hidden=(16,), decoder_hidden=(16,), latent=2)
    first_model, first_loss = train_vae(windows, config, seed=0)
    _, again = train_vae(windows, config, seed=0)
    assert first_loss == again
    with torch.no_grad():
        untrained = build_vae(8, config)
        torch.manual_seed(0)
        start = float(vae_loss(torch.as_tensor(windows), *untrained(torch.as_tensor(windows), sample=False)))
    assert first_loss < 0.5 * start
    errors = reconstruction_errors(first_model, windows, sample=False, seed=0)
    assert errors.shape == (256,) and np.all(errors >= 0)
    sampled = [reconstruction_errors(first_model, windows, sample=True, seed=s) for s in (1, 1, 2)]
    np.testing.assert_array_equal(sampled[0], sampled[1])  # a seed fixes the latent draws
    assert not np.array_equal(sampled[0], sampled[2])
