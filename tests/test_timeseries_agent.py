"""The LSTM Q-network's initialisation, the FIFO replay and the full-information update."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rationanomaly.timeseries.agent import (  # noqa: E402
    Replay,
    build_q_network,
    dqn_update,
    full_information_targets,
    q_values,
)


def test_full_information_targets_bootstrap_each_branch_from_its_own_next_state():
    rewards = np.array([[1.0, -1.0], [-5.0, 5.0]])
    q_next0 = np.array([[2.0, 3.0], [0.0, -1.0]])  # max 3, 0
    q_next1 = np.array([[4.0, 1.0], [-2.0, -3.0]])  # max 4, -2
    targets = full_information_targets(rewards, q_next0, q_next1, gamma=0.5)
    np.testing.assert_allclose(targets, [[1 + 1.5, -1 + 2.0], [-5 + 0.0, 5 - 1.0]])


def test_q_network_is_initialised_like_the_tensorflow_reference():
    network = build_q_network(input_dim=2, hidden=128, seed=0)
    hidden = 128
    limit = np.sqrt(6 / (2 + hidden + 4 * hidden))  # glorot_uniform over the stacked [input, hidden] kernel
    assert float(network.lstm.weight_ih_l0.detach().abs().max()) <= limit
    assert float(network.lstm.weight_hh_l0.detach().abs().max()) <= limit
    forget = network.lstm.bias_ih_l0[hidden : 2 * hidden]
    assert torch.all(forget == 1.0) and float(network.lstm.bias_hh_l0.detach().abs().sum()) == 0.0
    head = network.head.weight.detach().numpy().ravel()
    assert abs(head.std() - 1.0) < 0.15  # N(0, 1), 256 draws
    again = build_q_network(input_dim=2, hidden=128, seed=0)
    assert torch.equal(network.head.weight, again.head.weight)  # seeded


def test_replay_keeps_fifo_order_and_overwrites_the_oldest():
    replay = Replay(capacity=5)
    states = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), dtype=np.float32)
    rewards = np.stack([np.arange(7), -np.arange(7)], axis=1).astype(np.float32)
    next_states = np.repeat(states[:, None], 2, axis=1)
    replay.add(states[:3], rewards[:3], next_states[:3])
    replay.add(states[3:], rewards[3:], next_states[3:])
    assert replay.size == 5
    saved = replay.arrays()
    assert saved["rewards"][:, 0].tolist() == [2, 3, 4, 5, 6]  # 0 and 1 were pushed out
    restored = Replay.from_arrays(saved)
    assert restored.arrays()["rewards"].tolist() == saved["rewards"].tolist()
    batch = replay.sample(np.random.default_rng(0), 10)
    assert sorted(batch[1][:, 0].tolist()) == [2, 3, 4, 5, 6]  # without replacement, never more than stored


def test_replay_grows_past_its_first_allocation():
    replay = Replay(capacity=10_000)
    for start in range(0, 3000, 700):
        count = min(700, 3000 - start)
        values = np.arange(start, start + count, dtype=np.float32)
        replay.add(values[:, None, None], np.stack([values, values], 1), np.zeros((count, 2, 1, 1), np.float32))
    assert replay.size == 3000
    assert replay.arrays()["rewards"][:, 0].tolist() == list(range(3000))


def test_dqn_update_moves_q_values_towards_their_targets():
    torch.manual_seed(0)
    online, target = build_q_network(2, 16, seed=1), build_q_network(2, 16, seed=1)
    optimizer = torch.optim.Adam(online.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    states = rng.random((32, 5, 2)).astype(np.float32)
    batch = (states, np.tile([[1.0, -1.0]], (32, 1)).astype(np.float32), np.repeat(states[:, None], 2, axis=1))
    losses = [dqn_update(online, target, optimizer, batch, gamma=0.0) for _ in range(60)]
    assert losses[-1] < 0.1 * losses[0]
    assert q_values(online, states).shape == (32, 2)
