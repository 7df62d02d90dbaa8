"""The RationAnomaly reward: format + answer + 0.5 * (semantic + length + perplexity), as the reference.

Public entry points: `compute_reward` (one response, what verl's adapter calls), `score_responses`
(a batch, for the demo), `check_reward_config` (the launcher's pre-flight), and the parts in `components`.
"""

from __future__ import annotations

from rationanomaly.reward.config import (
    FETCH_COMMAND,
    RewardConfig,
    RewardConfigError,
    check_reward_config,
    parse_reward_kwargs,
)
from rationanomaly.reward.score import (
    REWARD_KEYS,
    GroundTruth,
    GroundTruthError,
    compute_reward,
    parse_ground_truth,
    score_response,
    score_responses,
)

__all__ = [
    "FETCH_COMMAND",
    "REWARD_KEYS",
    "GroundTruth",
    "GroundTruthError",
    "RewardConfig",
    "RewardConfigError",
    "check_reward_config",
    "compute_reward",
    "parse_ground_truth",
    "parse_reward_kwargs",
    "score_response",
    "score_responses",
]
