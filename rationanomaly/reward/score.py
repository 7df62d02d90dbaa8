"""Composing the reward: parse the ground truth, score the parts, add them up the reference's way."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from rationanomaly.labels import ANSWER_CLOSE, ANSWER_OPEN, LABELS, THINK_CLOSE, THINK_OPEN
from rationanomaly.response import extract_answer, extract_think, tags_in_order
from rationanomaly.reward.components import (
    FORMAT_VALID,
    answer_reward,
    describe,
    format_reward,
    length_reward,
    perplexity_reward,
    perplexity_text,
    semantic_reward,
    total_reward,
)
from rationanomaly.reward.config import RewardConfig, check_model_folder, parse_reward_kwargs
from rationanomaly.reward.perplexity import MicroBatcher, load_perplexity_model

# verl copies every returned key into reward_extra_info and asserts equal lengths: same keys, always.
REWARD_KEYS = ("score", "format", "answer", "think", "semantic", "length", "perplexity")


class GroundTruthError(ValueError):
    """A ground truth that is not `<think>REF</think><answer>normal|abnormal</answer>` (a data error)."""


@dataclass(frozen=True)
class GroundTruth:
    """The reference think text and the label of one training row."""

    think: str
    label: str


def parse_ground_truth(ground_truth: object) -> GroundTruth:
    """Extract the reference think and label; raise GroundTruthError naming the sample when malformed.

    The reference's own parquet builder stored bare labels, which its reward could not parse; here
    that is a loud data error, never a silent 0.
    """
    if not isinstance(ground_truth, str):
        raise GroundTruthError(f"ground truth {describe(repr(ground_truth))} is not a string; rebuild the parquet")
    return _parse_ground_truth(str(ground_truth))


@lru_cache(maxsize=4096)
def _parse_ground_truth(ground_truth: str) -> GroundTruth:
    """parse_ground_truth for a string, cached: 16 rollouts share each ground truth.

    Strict: each tag exactly once and in order, nothing but whitespace outside the two blocks. A second
    pair of tags would otherwise be resolved silently (the last answer wins) and train on the wrong label.
    """
    think, answer = extract_think(ground_truth), extract_answer(ground_truth)
    if think is None or answer is None:
        raise GroundTruthError(
            f"ground truth {describe(ground_truth)} lacks <think>..</think> or <answer>..</answer>; "
            "rebuild the parquet with CoT labels (`<think>REF</think><answer>LABEL</answer>`)"
        )
    if not tags_in_order(ground_truth) or _outside_blocks(ground_truth):
        raise GroundTruthError(
            f"ground truth {describe(ground_truth)} is not exactly one <think>..</think> followed by one "
            "<answer>..</answer> (with nothing else around them); rebuild the parquet from checked rationales "
            "(datasets/cot_distill.py)"
        )
    label = answer.strip().lower()
    if label not in LABELS:
        raise GroundTruthError(
            f"ground truth {describe(ground_truth)} has answer {answer!r}, not one of {', '.join(LABELS)}"
        )
    return GroundTruth(think=think, label=label)


def _outside_blocks(ground_truth: str) -> str:
    """Non-whitespace text before <think>, between </think> and <answer>, or after </answer>."""
    before, _, rest = ground_truth.partition(THINK_OPEN)
    between = rest.partition(THINK_CLOSE)[2].partition(ANSWER_OPEN)[0]
    after = rest.partition(ANSWER_CLOSE)[2]
    return (before + between + after).strip()


def _checked_config(reward_kwargs: Mapping[str, object]) -> RewardConfig:
    """Options parsed and, when the perplexity term is on, its model folder checked before the first score.

    Without this check a missing `ppl_model` surfaced only on the first *correct* response, possibly many
    steps into training; now any first call fails with the fix.
    """
    config = parse_reward_kwargs(reward_kwargs)
    if _uses_perplexity(config):
        check_model_folder(config.ppl_model)
    return config


@lru_cache(maxsize=64)
def _cached_config(items: tuple[tuple[str, object], ...]) -> RewardConfig:
    return _checked_config(dict(items))


def reward_config(reward_kwargs: Mapping[str, object]) -> RewardConfig:
    """Checked options, cached: verl passes the same kwargs on every one of thousands of calls."""
    try:
        return _cached_config(tuple(sorted(reward_kwargs.items())))
    except TypeError:  # an unhashable value (a list from Hydra): parse it every time, it will fail clearly
        return _checked_config(reward_kwargs)


@dataclass(frozen=True)
class _Draft:
    """Every part except perplexity, plus the text whose perplexity is still needed (None: not needed)."""

    parts: dict[str, float]
    perplexity_text: str | None


def _draft(response: object, truth: GroundTruth, config: RewardConfig, with_perplexity: bool) -> _Draft:
    """Format, answer, semantic and length; think only when the format is valid and the answer scores >= 0."""
    text = "" if response is None else str(response)
    parts = dict.fromkeys(REWARD_KEYS, 0.0)
    parts["format"] = format_reward(text)
    answer = extract_answer(text)
    valid = parts["format"] == FORMAT_VALID and bool(answer)
    parts["answer"] = answer_reward(answer if valid else None, truth.label, config.answer_scheme)
    # reference: think is scored only for a valid format with an answer, and zeroed when answer < 0;
    # ours skips computing what would be zeroed, so the reported parts always add up to `think`.
    if not (valid and config.think_reward and parts["answer"] >= 0):
        return _Draft(parts, None)
    think = extract_think(text) or ""
    parts["semantic"] = semantic_reward(truth.think, think, config.bleu_tokens)
    parts["length"] = length_reward(truth.think, think)
    return _Draft(parts, perplexity_text(think) if with_perplexity else None)


def _finish(draft: _Draft, perplexity: float | None) -> dict[str, float]:
    """Add the perplexity term, think = semantic + length + perplexity, and the total."""
    parts = dict(draft.parts)
    if perplexity is not None:
        parts["perplexity"] = perplexity_reward(perplexity)
    parts["think"] = parts["semantic"] + parts["length"] + parts["perplexity"]
    parts["score"] = total_reward(parts["format"], parts["answer"], parts["think"])
    return parts


def score_response(
    response: object, ground_truth: str, config: RewardConfig, perplexity_of: Callable[[str], float] | None
) -> dict[str, float]:
    """All reward parts of one response (REWARD_KEYS); `perplexity_of=None` turns that term off.

    Never raises on the response; raises GroundTruthError on a malformed ground truth.
    """
    draft = _draft(response, parse_ground_truth(ground_truth), config, perplexity_of is not None)
    return _finish(draft, None if draft.perplexity_text is None else perplexity_of(draft.perplexity_text))


def _uses_perplexity(config: RewardConfig) -> bool:
    return config.ppl_model is not None and config.think_reward


def _sample_name(extra_info: object) -> str:
    """How an error names a row: verl's extra_info carries the parquet row's `index`."""
    index = extra_info.get("index") if isinstance(extra_info, Mapping) else None
    return "a sample without extra_info.index" if index is None else f"sample index {index}"


def compute_reward(
    response: object, ground_truth: str, *, extra_info: object = None, **reward_kwargs: object
) -> dict[str, float]:
    """One response with verl's reward_kwargs; concurrent calls are scored together (`_batcher`)."""
    config = reward_config(reward_kwargs)
    try:
        parse_ground_truth(ground_truth)
    except GroundTruthError as error:
        raise GroundTruthError(f"{_sample_name(extra_info)}: {error}") from None
    if not _uses_perplexity(config):
        return score_response(response, ground_truth, config, None)
    return _batcher(config)((response, ground_truth))


@lru_cache(maxsize=8)
def _batcher(config: RewardConfig) -> MicroBatcher:
    """One per config: whichever concurrent caller runs first scores every queued (response, truth) pair."""
    return MicroBatcher(lambda pairs: _score_with_config(*zip(*pairs, strict=True), config), config.batch_size)


def score_responses(
    responses: Sequence[str], ground_truths: Sequence[str], **reward_kwargs: object
) -> list[dict[str, float]]:
    """Many responses at once: one sorted, batched perplexity pass over every think that needs it."""
    if len(responses) != len(ground_truths):
        raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths; pass one per response")
    return _score_with_config(responses, ground_truths, reward_config(reward_kwargs))


def _score_with_config(
    responses: Sequence[object], ground_truths: Sequence[str], config: RewardConfig
) -> list[dict[str, float]]:
    """score_responses for a parsed config: drafts first, then one perplexity call for the thinks that need it."""
    with_perplexity = _uses_perplexity(config)
    drafts = []
    for position, (response, truth) in enumerate(zip(responses, ground_truths, strict=True)):
        try:
            parsed = parse_ground_truth(truth)
        except GroundTruthError as error:
            raise GroundTruthError(f"ground truth number {position}: {error}") from None
        drafts.append(_draft(response, parsed, config, with_perplexity))
    texts = [draft.perplexity_text for draft in drafts if draft.perplexity_text is not None]
    values = iter([])
    if texts:
        model = load_perplexity_model(config.ppl_model, config.device, config.dtype)
        values = iter(model.perplexities(texts, config.batch_size))
    return [_finish(draft, None if draft.perplexity_text is None else next(values)) for draft in drafts]
