"""The VAE whose reconstruction error is the intrinsic reward (A1 L87-113, L539-544), in plain torch.

Encoder Dense 64 relu x3 (he_normal) -> mu, log sigma^2 (latent 10, log variance clipped to +-10) -> z ->
Dense 64 relu -> Dense D sigmoid. Loss D * MSE + KL, Adam 1e-3 with clipnorm 1 (Keras clips each
gradient tensor on its own, so this does too). The VAE is frozen once trained, so its errors are
computed once per window in batches (the reference called `vae.predict` per window per step, notes bug 10).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VaeConfig:
    """Architecture and training knobs; defaults are the A1 script's."""

    hidden: tuple[int, ...] = (64, 64, 64)  # A1 L89-91
    latent: int = 10  # A1 L112
    decoder_hidden: tuple[int, ...] = (64,)  # A1 L96
    epochs: int = 200  # A1 L543
    batch_size: int = 32  # A1 L543
    learning_rate: float = 1e-3  # A1 L106
    clipnorm: float = 1.0  # A1 L106
    log_var_clip: float = 10.0  # A1 L94


def build_vae(input_dim: int, config: VaeConfig):
    """A torch VAE module with the reference's layers and initialisers (he_normal, glorot on the output layer)."""
    import torch
    from torch import nn

    class Vae(nn.Module):
        """x -> (reconstruction, mu, log_var); `sample=False` decodes the mean instead of a draw."""

        def __init__(self) -> None:
            super().__init__()
            layers, width = [], input_dim
            for size in config.hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            self.encoder = nn.Sequential(*layers)
            self.mu, self.log_var = nn.Linear(width, config.latent), nn.Linear(width, config.latent)
            layers, width = [], config.latent
            for size in config.decoder_hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            self.decoder = nn.Sequential(*layers, nn.Linear(width, input_dim), nn.Sigmoid())
            linear = [m for m in [*self.encoder, self.mu, self.log_var, *self.decoder] if isinstance(m, nn.Linear)]
            for module in linear[:-1]:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # Keras he_normal (not truncated here)
                nn.init.zeros_(module.bias)
            nn.init.xavier_uniform_(linear[-1].weight)  # the output layer keeps Keras' default glorot_uniform
            nn.init.zeros_(linear[-1].bias)

        def forward(self, x, sample: bool = True, generator=None):
            hidden = self.encoder(x)
            mu = self.mu(hidden)
            log_var = self.log_var(hidden).clamp(-config.log_var_clip, config.log_var_clip)
            z = mu
            if sample:
                noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
                z = mu + torch.exp(0.5 * log_var) * noise
            return self.decoder(z), mu, log_var

    return Vae()


def vae_loss(x, reconstruction, mu, log_var):
    """Batch mean of D * mean squared error + KL(q(z|x) || N(0, I)) (A1 L102-104)."""
    import torch

    squared = torch.mean((reconstruction - x) ** 2, dim=1) * x.shape[1]
    kl = -0.5 * torch.sum(1 + log_var - mu**2 - torch.exp(log_var), dim=1)
    return torch.mean(squared + kl)


def train_vae(windows: np.ndarray, config: VaeConfig, seed: int, progress: bool = False):
    """Train a VAE on flattened windows [N, D]; returns (model in eval mode, last epoch's mean loss).

    Batches are reshuffled every epoch with a seeded generator (Keras fit shuffles too); the last,
    smaller batch is kept.
    """
    import torch
    from tqdm import tqdm

    data = torch.as_tensor(np.ascontiguousarray(windows, dtype=np.float32))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_vae(data.shape[1], config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_value = float("nan")
    for _ in tqdm(range(config.epochs), desc="VAE epochs", disable=not progress, leave=False):
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(data), config.batch_size):
            batch = data[order[start : start + config.batch_size]]
            loss = vae_loss(batch, *model(batch, sample=True, generator=generator))
            optimizer.zero_grad()
            loss.backward()
            for parameter in model.parameters():
                torch.nn.utils.clip_grad_norm_([parameter], config.clipnorm)
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        loss_value = total / max(len(data), 1)
    logger.info("VAE trained on %d windows for %d epochs, final loss %.4f", len(data), config.epochs, loss_value)
    return model.eval(), loss_value


def reconstruction_errors(model, windows: np.ndarray, sample: bool, seed: int, batch_size: int = 8192) -> np.ndarray:
    """Mean squared reconstruction error per flattened window [N]; `sample` draws z as the reference's predict did."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    errors = []
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = torch.as_tensor(np.ascontiguousarray(windows[start : start + batch_size], dtype=np.float32))
            reconstruction, _, _ = model(batch, sample=sample, generator=generator)
            errors.append(torch.mean((reconstruction - batch) ** 2, dim=1).numpy())
    return np.concatenate(errors) if errors else np.zeros(0, dtype=np.float32)
