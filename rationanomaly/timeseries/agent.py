"""The LSTM Q-network, its replay memory and the full-information DQN update (A1 L165-210, L414-450).

The reference learns from *both* actions of every stored window: the target of action a is
r_a + gamma * max_a' Q_target(s'_a, a'), with the next state of the branch a (the flag on its newest
point = a). `done` is ignored, as there. This is why a stock DQN (one action, one next state per
transition) would be a different algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIDDEN = 128  # A1 L54: LSTM(128)
LEARNING_RATE = 3e-4  # A1 L572: Adam 3e-4
FORGET_BIAS = 1.0  # A1 L165-210 (Q_Estimator_Nonlinear): LSTMCell(forget_bias=1.0)


def build_q_network(input_dim: int, hidden: int = HIDDEN, seed: int = 0):
    """LSTM over the window -> last output -> linear to 2 action values, initialised like the reference.

    TF's LSTMCell: glorot_uniform over the stacked [input, hidden] kernel, zero biases plus a forget bias
    of 1; the output layer's weights and bias are N(0, 1) (tf.random_normal in Q_Estimator_Nonlinear,
    A1 L165-210), so the initial Q values are large and the first active-learning margins arbitrary.
    """
    import torch
    from torch import nn

    class QNetwork(nn.Module):
        """[B, n_steps, input_dim] states -> [B, 2] action values."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(input_dim, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 2)

        def forward(self, states):
            outputs, _ = self.lstm(states)
            return self.head(outputs[:, -1])

    torch.manual_seed(seed)
    network = QNetwork()
    limit = float(np.sqrt(6.0 / (input_dim + hidden + 4 * hidden)))
    with torch.no_grad():
        network.lstm.weight_ih_l0.uniform_(-limit, limit)
        network.lstm.weight_hh_l0.uniform_(-limit, limit)
        network.lstm.bias_ih_l0.zero_()
        network.lstm.bias_hh_l0.zero_()
        network.lstm.bias_ih_l0[hidden : 2 * hidden] = FORGET_BIAS  # torch gate order: input, forget, cell, output
        network.head.weight.normal_(0.0, 1.0)
        network.head.bias.normal_(0.0, 1.0)
    return network


def q_values(network, states: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Action values [N, 2] of many states, in batches, without gradients."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(states), batch_size):
            out.append(network(torch.as_tensor(np.ascontiguousarray(states[start : start + batch_size]))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)


def full_information_targets(rewards: np.ndarray, q_next0: np.ndarray, q_next1: np.ndarray, gamma: float) -> np.ndarray:
    """Targets [B, 2]: r_a + gamma * max_a' Q_target(s'_a, a') for both a (A1 L428-450)."""
    bootstrap = np.stack([q_next0.max(axis=1), q_next1.max(axis=1)], axis=1)
    return (rewards + gamma * bootstrap).astype(np.float32)


@dataclass
class Replay:
    """FIFO replay of (state, rewards of both actions, next states of both branches), grown by doubling.

    The reference kept a Python list and `pop(0)` (A1 L414-416); this ring buffer keeps the same
    first-in-first-out order without the quadratic cost.
    """

    capacity: int
    states: np.ndarray | None = None
    rewards: np.ndarray | None = None
    next_states: np.ndarray | None = None
    size: int = 0
    head: int = 0

    def _reserve(self, needed: int, shape: tuple[int, ...]) -> None:
        """Make room for `needed` rows (up to the capacity) keeping the stored rows in FIFO order."""
        allocated = 0 if self.states is None else len(self.states)
        if needed <= allocated:
            return
        new = min(self.capacity, max(needed, 2 * allocated, 1024))
        order = self._order()
        states = np.empty((new, *shape), dtype=np.float32)
        rewards = np.empty((new, 2), dtype=np.float32)
        next_states = np.empty((new, 2, *shape), dtype=np.float32)
        if self.size:
            states[: self.size], rewards[: self.size] = self.states[order], self.rewards[order]
            next_states[: self.size] = self.next_states[order]
        self.states, self.rewards, self.next_states, self.head = states, rewards, next_states, self.size % new

    def _order(self) -> np.ndarray:
        """Indices of the stored rows from oldest to newest."""
        if self.states is None or self.size < len(self.states):
            return np.arange(self.size)
        return (self.head + np.arange(self.size)) % len(self.states)

    def add(self, states: np.ndarray, rewards: np.ndarray, next_states: np.ndarray) -> None:
        """Append transitions; beyond the capacity the oldest are overwritten."""
        for start in range(0, len(states), self.capacity):
            chunk = slice(start, start + self.capacity)
            self._add(states[chunk], rewards[chunk], next_states[chunk])

    def _add(self, states: np.ndarray, rewards: np.ndarray, next_states: np.ndarray) -> None:
        count = len(states)
        if not count:
            return
        self._reserve(min(self.size + count, self.capacity), states.shape[1:])
        rows = (self.head + np.arange(count)) % len(self.states)
        self.states[rows], self.rewards[rows], self.next_states[rows] = states, rewards, next_states
        self.head = int((self.head + count) % len(self.states))
        self.size = min(self.size + count, len(self.states))

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A batch drawn without replacement (random.sample in the reference), in stored order of draw."""
        rows = self._order()[rng.choice(self.size, size=min(batch_size, self.size), replace=False)]
        return self.states[rows], self.rewards[rows], self.next_states[rows]

    def arrays(self) -> dict[str, np.ndarray | int]:
        """The stored rows, oldest first (for checkpoints)."""
        order = self._order()
        empty = self.states is None
        return {
            "capacity": self.capacity,
            "states": np.zeros((0,)) if empty else self.states[order],
            "rewards": np.zeros((0, 2)) if empty else self.rewards[order],
            "next_states": np.zeros((0,)) if empty else self.next_states[order],
        }

    @classmethod
    def from_arrays(cls, saved: dict) -> Replay:
        """A replay holding the rows saved by `arrays` (the next add continues after the newest)."""
        replay = cls(int(saved["capacity"]))
        if len(saved["rewards"]):
            replay.add(saved["states"], saved["rewards"], saved["next_states"])
        return replay


def dqn_update(online, target, optimizer, batch: tuple[np.ndarray, np.ndarray, np.ndarray], gamma: float) -> float:
    """One gradient step on the mean squared error of both action values against their targets; returns the loss."""
    import torch

    states, rewards, next_states = batch
    q_next = q_values(target, np.concatenate([next_states[:, 0], next_states[:, 1]]))  # one pass for both branches
    targets = torch.as_tensor(full_information_targets(rewards, q_next[: len(states)], q_next[len(states) :], gamma))
    loss = torch.mean((online(torch.as_tensor(np.ascontiguousarray(states))) - targets) ** 2)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())
