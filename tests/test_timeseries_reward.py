"""Reward tables, intrinsic terms, lambda rules and epsilon schedules pinned to the reference's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from rationanomaly.timeseries.reward import (
    A1_LAMBDA,
    SMD_LAMBDA,
    SMD_REWARD,
    WADI_LAMBDA,
    WADI_REWARD,
    YAHOO_REWARD,
    action_intrinsic,
    episode_epsilon,
    extrinsic_rewards,
    lambda_trajectory,
    linear_epsilon,
    next_lambda,
    reference_intrinsic,
    standardized_scores,
)

LABELS = np.array([-1, 0, 1])  # unlabelled, normal, anomaly


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (YAHOO_REWARD, [[0, 0], [1, -1], [-5, 5]]),  # A1 L42-45: TN 1, FP -1, FN -5, TP 5
        (SMD_REWARD, [[0, 0], [1, -1], [-10, 10]]),  # SMD: TP/FN = +-10
        (WADI_REWARD, [[0, 0], [1, -1], [-10, 10]]),  # WaDi: 1, 10, -1, -10
    ],
)
def test_extrinsic_reward_tables(table, expected):
    np.testing.assert_array_equal(extrinsic_rewards(LABELS, table), np.array(expected, dtype=np.float32))


def test_reference_intrinsic_adds_the_same_amount_to_both_actions_of_labelled_windows():
    rewards = reference_intrinsic(np.array([0.5, 0.5, 0.2]), LABELS, lam=10.0)
    np.testing.assert_allclose(rewards, [[0, 0], [5, 5], [2, 2]], rtol=1e-6)
    # so the action preference of the extrinsic table is unchanged
    total = extrinsic_rewards(LABELS, YAHOO_REWARD) + rewards
    np.testing.assert_allclose(total[:, 1] - total[:, 0], [0, -2, 10], rtol=1e-6)


def test_action_intrinsic_pays_for_flagging_a_badly_reconstructed_window():
    rewards = action_intrinsic(np.array([0.5, -0.5]), lam=10.0, scale=0.1)
    np.testing.assert_allclose(rewards, [[-0.5, 0.5], [0.5, -0.5]], rtol=1e-6)


def test_standardized_scores_are_bounded_and_centred():
    scores = standardized_scores(np.array([1.0, 2.0, 3.0, 100.0]), mean=2.0, sd=1.0)
    np.testing.assert_allclose(scores[:3], np.tanh([-1.0, 0.0, 1.0]), rtol=1e-6)
    assert scores[3] == pytest.approx(1.0)
    assert standardized_scores(np.array([2.0]), 2.0, 0.0)[0] == 0.0  # zero spread does not divide by zero


@pytest.mark.parametrize(
    ("rule", "returns", "used", "final"),
    [
        # A1: lambda <- clip(lambda + 0.001 * (0 - R), 0.1, 10), lambda0 = 10
        (A1_LAMBDA, [500.0, 500.0, -200.0, 10_000.0], [10.0, 9.5, 9.0, 9.2], 0.1),
        (A1_LAMBDA, [-3000.0, 100.0], [10.0, 10.0], 9.9),  # capped at 10
        # SMD: lambda0 = 20 runs the first episode, then the cap of 10 applies
        (SMD_LAMBDA, [0.0, 1000.0], [20.0, 10.0], 9.0),
        # WaDi: lambda <- clip(lambda + 0.0005 * R, 0.1, 5), lambda0 = 20 (the opposite sign)
        (WADI_LAMBDA, [100.0, -20_000.0], [20.0, 5.0], 0.1),
    ],
)
def test_lambda_trajectory_for_given_returns(rule, returns, used, final):
    assert lambda_trajectory(returns, rule) == pytest.approx(used)
    lam = rule.initial
    for episode_return in returns:
        lam = next_lambda(lam, episode_return, rule)
    assert lam == pytest.approx(final)


@pytest.mark.parametrize("step", [0, 1, 2999, 3000, 250_000, 499_999, 10**7])
def test_linear_epsilon_equals_the_reference_linspace(step):
    table = np.linspace(1.0, 0.1, 500_000)
    assert linear_epsilon(step) == pytest.approx(table[min(step, 499_999)], abs=1e-12)


def test_linear_epsilon_stays_near_one_for_a_300_episode_run():
    assert linear_epsilon(3000) == pytest.approx(0.9946, abs=1e-4)  # notes: epsilon >= 0.9946 all run


@pytest.mark.parametrize(("episode", "expected"), [(1, 0.95), (10, 0.5), (18, 0.1), (20, 0.1)])
def test_episode_epsilon_is_wadis_schedule(episode, expected):
    assert episode_epsilon(episode, 20) == pytest.approx(expected)
