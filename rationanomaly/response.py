"""Reading a model response: the last <think>/<answer> contents and the tag-order check.

Shared by the reward (which must match the reference implementation) and by the rationale checks
at dataset-build time, so that training data is judged by the same rules as the model.
"""

from __future__ import annotations

import re

from rationanomaly.labels import ANSWER_CLOSE, ANSWER_OPEN, TAGS, THINK_CLOSE, THINK_OPEN


def tag_pattern(open_tag: str, close_tag: str, flags: int = 0) -> re.Pattern[str]:
    """A pattern that finds the tags themselves (group 1: an opening tag), never what lies between them."""
    return re.compile(f"({re.escape(open_tag)})|{re.escape(close_tag)}", flags)


def last_block(text: str, tags: re.Pattern[str]) -> str | None:
    """Stripped content of the last `open..close` block as `re.finditer("open(.*?)close")` finds it, or None.

    The lazy regex retries from every unclosed opening tag, which is quadratic (128 KB of `<answer>` took
    7 s, 1 MB minutes). Here each tag is seen once: an opening tag starts a block unless one is already
    open (then it is part of the content), the first closing tag after it ends the block. Same result,
    linear time.
    """
    start = last = None
    for match in tags.finditer(text):
        if match.group(1) is not None:
            if start is None:
                start = match.end()
        elif start is not None:
            last, start = (start, match.start()), None
    return None if last is None else text[last[0] : last[1]].strip()


_THINK = tag_pattern(THINK_OPEN, THINK_CLOSE)
_ANSWER = tag_pattern(ANSWER_OPEN, ANSWER_CLOSE)


def extract_think(response: str) -> str | None:
    """Stripped content of the last `<think>..</think>` (across newlines), None if absent (reference)."""
    return last_block(response, _THINK)


def extract_answer(response: str) -> str | None:
    """Stripped content of the last `<answer>..</answer>` (across newlines), None if absent (reference)."""
    return last_block(response, _ANSWER)


def tags_in_order(response: str) -> bool:
    """True if each of the four tags occurs exactly once, in the order think, /think, answer, /answer."""
    positions = []
    for tag in TAGS:
        if response.count(tag) != 1:
            return False
        positions.append(response.index(tag))
    return positions == sorted(positions)
