"""The gymnasium environment: gymnasium's own checker, rewards, flags, and the greedy evaluation pass."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from rationanomaly.timeseries.env import SeriesEnv, greedy_pass  # noqa: E402
from rationanomaly.timeseries.reward import YAHOO_REWARD  # noqa: E402

N = 3


def make_env(length: int = 8, action_flags: bool = True) -> SeriesEnv:
    scaled = np.linspace(0, 1, length, dtype=np.float32)[:, None]
    labels = np.zeros(length, dtype=np.int8)
    labels[5] = 1
    return SeriesEnv(scaled, labels, YAHOO_REWARD, N, action_flags)


@pytest.mark.parametrize("action_flags", [True, False])
def test_gymnasium_env_checker_accepts_the_environment(action_flags):
    check_env(make_env(action_flags=action_flags), skip_render_check=True)


def test_without_action_flags_the_flag_channel_stays_zero():
    env = make_env(action_flags=False)
    observation, _ = env.reset()
    for action in (1, 1, 0):
        assert not observation[:, 1].any()
        observation, *_ = env.step(action)
    assert not observation[:, 1].any()


def test_step_rewards_the_true_label_and_flags_the_previous_action():
    env = make_env()
    observation, info = env.reset(seed=0)
    assert info["cursor"] == N
    assert observation[:, 1].tolist() == [0, 0, 1]  # the first state: flag 1 on the newest point (A1 L126)
    _, reward, terminated, truncated, info = env.step(1)  # cursor 3 is normal: a false positive
    assert (reward, terminated, truncated, info["label"]) == (-1.0, False, False, 0)
    observation, _, _, _, _ = env.step(0)  # cursor 4 normal: true negative, flag 0 appended
    assert observation[:, 1].tolist() == [1, 1, 0]
    _, reward, _, _, info = env.step(0)  # cursor 5 is the anomaly: missed
    assert (reward, info["label"]) == (-5.0, 1)


def test_episode_ends_after_the_last_point():
    env = make_env(length=6)
    env.reset()
    done = [env.step(0)[2] for _ in range(3)]  # cursors 3, 4, 5
    assert done == [False, False, True]


def test_greedy_pass_records_one_prediction_per_classified_point():
    env = make_env()

    def flag_high_values(observation: np.ndarray) -> np.ndarray:
        return np.array([0.0, observation[-1, 0] - 0.6])  # Q1 - Q0 = newest value - 0.6

    predictions, scores, truth = greedy_pass(env, flag_high_values)
    assert truth.tolist() == [0, 0, 1, 0, 0]  # cursors 3..7
    assert predictions.tolist() == [0, 0, 1, 1, 1]  # values 3/7, 4/7 below 0.6; 5/7, 6/7, 1 above
    np.testing.assert_allclose(scores, np.arange(3, 8) / 7 - 0.6, rtol=1e-6)


def test_a_series_without_points_to_classify_is_refused():
    with pytest.raises(ValueError, match="nothing to classify"):
        SeriesEnv(np.zeros((3, 1), np.float32), np.zeros(3, np.int8), YAHOO_REWARD, N)
