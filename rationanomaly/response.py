"""Reading a model response: the last <think>/<answer> contents and the tag-order check.

Shared by the reward (which must match the reference implementation) and by the rationale checks
at dataset-build time, so that training data is judged by the same rules as the model.
"""

from __future__ import annotations

import re

from rationanomaly.labels import ANSWER_CLOSE, ANSWER_OPEN, TAGS, THINK_CLOSE, THINK_OPEN

_THINK = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.DOTALL)
_ANSWER = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)


def _last_match(pattern: re.Pattern[str], text: str) -> str | None:
    """Stripped content of the last non-overlapping match, or None when there is none."""
    last = None
    for match in pattern.finditer(text):
        last = match
    return None if last is None else last.group(1).strip()


def extract_think(response: str) -> str | None:
    """Stripped content of the last `<think>..</think>` (across newlines), None if absent (reference)."""
    return _last_match(_THINK, response)


def extract_answer(response: str) -> str | None:
    """Stripped content of the last `<answer>..</answer>` (across newlines), None if absent (reference)."""
    return _last_match(_ANSWER, response)


def tags_in_order(response: str) -> bool:
    """True if each of the four tags occurs exactly once, in the order think, /think, answer, /answer."""
    positions = []
    for tag in TAGS:
        if response.count(tag) != 1:
            return False
        positions.append(response.index(tag))
    return positions == sorted(positions)
