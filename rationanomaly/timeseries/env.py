"""A gymnasium environment over one scaled series, for the sequential (greedy) evaluation pass.

Observation: the window of the last n_steps MinMax-scaled points with a flag channel, [n_steps, d + 1], all
in [0, 1]; the flag on the newest point is the previous action, as in the reference's sequential pass
(A1 L464-516); with `action_flags=False` (fixed mode) the flag channel stays 0, as in the states the
agent was trained on. Action: Discrete(2), 1 = anomaly. Reward: the extrinsic table on the true label (the
reference's test reward, `RNNBinaryRewardFucTest`). The episode ends after the last point; points
0..n_steps-1 are never classified.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from rationanomaly.timeseries.reward import RewardTable
from rationanomaly.timeseries.windows import N_STEPS, shifted


class SeriesEnv(gym.Env):
    """One series, classified point by point from cursor n_steps to the end."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        scaled: np.ndarray,
        labels: np.ndarray,
        table: RewardTable,
        n_steps: int = N_STEPS,
        action_flags: bool = True,
    ) -> None:
        if len(scaled) <= n_steps:
            raise ValueError(f"a series of {len(scaled)} points has nothing to classify with windows of {n_steps}")
        self.scaled, self.labels, self.table, self.n_steps = scaled.astype(np.float32), labels, table, n_steps
        self.action_flags = action_flags
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(n_steps, scaled.shape[1] + 1), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.cursor = n_steps
        self.state = self._first_state()

    def _first_state(self) -> np.ndarray:
        """values[1 .. n_steps] with flag 1 on the newest point only (A1 L121-126), or no flag at all."""
        flags = np.zeros((self.n_steps, 1), dtype=np.float32)
        flags[-1] = float(self.action_flags)
        return np.concatenate([self.scaled[1 : self.n_steps + 1], flags], axis=1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Back to the first classified point; the observation does not depend on the seed."""
        super().reset(seed=seed)
        self.cursor = self.n_steps
        self.state = self._first_state()
        return self.state.copy(), {"cursor": self.cursor}

    def step(self, action):
        """Reward the action on the true label at the cursor, then move to the next point."""
        label = int(self.labels[self.cursor])
        reward = (
            (self.table.tn, self.table.fp)[int(action)] if label == 0 else (self.table.fn, self.table.tp)[int(action)]
        )
        info = {"cursor": self.cursor, "label": label}
        self.cursor += 1
        terminated = self.cursor >= len(self.scaled)
        if not terminated:
            self.state = shifted(self.state, self.scaled[self.cursor], float(action) * self.action_flags)
        return self.state.copy(), float(reward), terminated, False, info


def greedy_pass(
    env: SeriesEnv, q_function: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the greedy policy over the series: (predictions, scores Q1 - Q0, true labels), one per classified point.

    Ties go to action 0 (numpy argmax), as in the reference's greedy policy.
    """
    observation, _ = env.reset()
    predictions, scores, truth = [], [], []
    while True:
        q = q_function(observation)
        action = int(np.argmax(q))
        observation, _, terminated, _, info = env.step(action)
        predictions.append(action)
        scores.append(float(q[1] - q[0]))
        truth.append(info["label"])
        if terminated:
            break
    return np.array(predictions, dtype=np.int8), np.array(scores, dtype=np.float64), np.array(truth, dtype=np.int8)
