"""verl custom reward for RationAnomaly: a thin adapter over the installed `rationanomaly` package.

verl executes this file standalone by path (reward.custom_reward_function.path), so only absolute
imports of installed packages work here. Launch with, for example:
    reward.custom_reward_function.path=verl/utils/reward_score/RationAnomaly/__init__.py
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.ppl_model=models/distilgpt2
"""

from __future__ import annotations

from collections.abc import Sequence

try:
    from rationanomaly.reward import compute_reward, score_responses
except ImportError as error:  # depends on the training environment
    raise ImportError(
        "the RationAnomaly reward needs the `rationanomaly` package: run `pip install -e .` in the repository "
        f"root of the training environment ({error})"
    ) from error


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **reward_kwargs) -> dict[str, float]:
    """verl's per-sample hook: a dict with `score` and the same component keys for every sample."""
    return compute_reward(solution_str, ground_truth, extra_info=extra_info, **reward_kwargs)


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[str],
    extra_infos: Sequence[dict] | None = None,
    **reward_kwargs,
) -> list[dict[str, float]]:
    """The batch form (lists in, one dict per sample out), for batch reward managers and scripts."""
    return score_responses(solution_strs, ground_truths, **reward_kwargs)
