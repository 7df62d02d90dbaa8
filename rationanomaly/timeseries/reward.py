"""Rewards of the dynamic-reward agent: the extrinsic table, the two intrinsic terms, the lambda rules, epsilon.

Line references are to the public code (baharehgl/Dynamic-Reward-RL-VAE, HEAD 06436af; `A1:` myasp-A1.py,
`SMD:` myasp-smd.py, `WaDi:` myasp-wadi.py), as read in notes/dynamic-reward.md. All functions are pure
and vectorised over windows: rewards come back as [N, 2] arrays, column a = the reward of action a
(0 = normal, 1 = anomaly), because the reference stores and learns from both actions' rewards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

NORMAL_ACTION, ANOMALY_ACTION = 0, 1
UNLABELLED = -1  # a window whose label is unknown (the reference's label column starts at -1, env.py L69-80)
INTRINSIC_SCALE = 0.1  # ours (fixed mode): at lambda = 10 the intrinsic term is at most +-1, the size of TN/FP


@dataclass(frozen=True)
class RewardTable:
    """Extrinsic reward per (label, action): label 0 -> [tn, fp], label 1 -> [fn, tp], unlabelled -> [0, 0]."""

    tn: float
    fp: float
    fn: float
    tp: float


YAHOO_REWARD = RewardTable(tn=1.0, fp=-1.0, fn=-5.0, tp=5.0)  # A1 L42-45
SMD_REWARD = RewardTable(tn=1.0, fp=-1.0, fn=-10.0, tp=10.0)  # SMD L45-48: TP/FN = +-10
WADI_REWARD = RewardTable(tn=1.0, fp=-1.0, fn=-10.0, tp=10.0)  # WaDi: TN, TP, FP, FN = 1, 10, -1, -10


@dataclass(frozen=True)
class LambdaRule:
    """lambda <- clip(lambda + alpha * (target - R_episode), low, high), applied once per episode.

    The reference's `update_dynamic_coef_proportional` (A1 L235-238) in its own parameterisation; the
    first episode runs with `initial` even when it lies outside [low, high] (SMD and WaDi start at 20).
    """

    initial: float
    alpha: float
    target: float
    low: float
    high: float


A1_LAMBDA = LambdaRule(initial=10.0, alpha=0.001, target=0.0, low=0.1, high=10.0)  # A1 L372 (lambda0), L455 (call)
SMD_LAMBDA = LambdaRule(initial=20.0, alpha=0.001, target=0.0, low=0.1, high=10.0)  # SMD L367 (20), L448 (cap 10)
WADI_LAMBDA = LambdaRule(initial=20.0, alpha=-0.0005, target=0.0, low=0.1, high=5.0)  # WaDi L278, L348: +0.0005 R


def extrinsic_rewards(labels: np.ndarray, table: RewardTable) -> np.ndarray:
    """[N, 2] rewards of both actions from labels in {-1, 0, 1} (A1 L137-151 without the VAE term)."""
    labels = np.asarray(labels)
    rewards = np.zeros((len(labels), 2), dtype=np.float32)
    rewards[labels == 0] = (table.tn, table.fp)
    rewards[labels == 1] = (table.fn, table.tp)
    return rewards


def reference_intrinsic(errors: np.ndarray, labels: np.ndarray, lam: float) -> np.ndarray:
    """+lambda * reconstruction error on *both* actions of labelled windows, as coded (A1 L139-151).

    Adding the same amount to both actions shifts both Q targets equally, so it cannot change which action
    wins; it only moves the episode return and so lambda (notes bug 1). Unlabelled windows get 0: the
    reference returns [0, 0] before it adds the term.
    """
    bonus = (lam * np.asarray(errors, dtype=np.float32) * (np.asarray(labels) != UNLABELLED))[:, None]
    return np.repeat(bonus, 2, axis=1).astype(np.float32)


def action_intrinsic(scores: np.ndarray, lam: float, scale: float = INTRINSIC_SCALE) -> np.ndarray:
    """Ours (fixed mode): [-lambda*scale*s, +lambda*scale*s] with s = the window's standardised VAE error.

    A window the VAE reconstructs worse than usual (s > 0) pays for flagging it and costs for passing it,
    so the intrinsic signal can change the greedy decision (the paper's intent; the code's term cannot).
    """
    term = lam * scale * np.asarray(scores, dtype=np.float32)
    return np.stack([-term, term], axis=1).astype(np.float32)


def standardized_scores(errors: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """tanh((e - mean) / sd): reconstruction errors on a bounded, dataset-free scale in (-1, 1) (ours)."""
    return np.tanh((np.asarray(errors, dtype=np.float64) - mean) / (sd if sd > 0 else 1.0)).astype(np.float32)


def next_lambda(lam: float, episode_return: float, rule: LambdaRule) -> float:
    """One lambda update: clip(lambda + alpha * (target - R), low, high) (A1 L235-238)."""
    return float(min(max(lam + rule.alpha * (rule.target - episode_return), rule.low), rule.high))


def lambda_trajectory(returns: Iterable[float], rule: LambdaRule) -> list[float]:
    """lambda in force during each episode, given the episode returns in order (starts at rule.initial)."""
    lam, used = rule.initial, []
    for episode_return in returns:
        used.append(lam)
        lam = next_lambda(lam, episode_return, rule)
    return used


def linear_epsilon(step: int, start: float = 1.0, end: float = 0.1, decay_steps: int = 500_000) -> float:
    """np.linspace(start, end, decay_steps)[min(step, decay_steps - 1)] without building the array (A1 L324, L408).

    The reference indexes it by the number of Q updates, which reaches 3,000 in a 300-episode run, so
    epsilon never drops below 0.9946 and actions stay almost random.
    """
    fraction = min(step, decay_steps - 1) / max(decay_steps - 1, 1)
    return start + (end - start) * fraction


def episode_epsilon(episode: int, episodes: int, end: float = 0.1) -> float:
    """max(end, 1 - episode / episodes): WaDi's per-episode schedule (notes section 1, WaDi deltas)."""
    return max(end, 1.0 - episode / max(episodes, 1))
