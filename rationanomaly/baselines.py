"""Baselines in the same harness as the trained model: a keyword rule (no model) and a zero-shot prompt.

Both write reference-layout predictions through rationanomaly.predict, so model_evaluate.py scores
them exactly like RationAnomaly. The keyword lists are ours: generic failure vocabulary of system
logs, not tuned on any test set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rationanomaly.labels import ABNORMAL, NORMAL, cot_label
from rationanomaly.predict.backends import Request

# Words and phrases that report a failure (matched as whole words, case-insensitive).
ABNORMAL_KEYWORDS = (
    "error",
    "errors",
    "fail",
    "failed",
    "failure",
    "failures",
    "fatal",
    "panic",
    "exception",
    "abort",
    "aborted",
    "abnormally",
    "terminated",
    "fault",
    "faults",
    "timeout",
    "timed out",
    "assertion",
    "segmentation",
    "lost",
    "disconnected",
    "unable",
    "cannot",
    "can't",
    "not present",
    "not found",
    "deactivated",
    "critical",
    "crash",
    "crashed",
    "killed",
    "refused",
    "denied",
    "unreachable",
    "corrupt",
    "corrupted",
    "uncorrectable",
    "bad",
    "invalid",
    "no ethernet link",
)
# Phrases that report a handled or harmless condition; they win over a failure word in the same line.
NORMAL_OVERRIDES = ("corrected", "correctable", "no errors", "0 errors", "successfully", "recovered")
# The zero-shot baseline is the base model with the rules-only system prompt (reference mode `log`).
ZERO_SHOT_MODE = "log"


def _pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    """A case-insensitive whole-word alternation, longest phrase first so `timed out` beats shorter words."""
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


_ABNORMAL = _pattern(ABNORMAL_KEYWORDS)
_NORMAL = _pattern(NORMAL_OVERRIDES)


def keyword_label(log: str) -> tuple[str, str]:
    """(label, reason): abnormal when a failure word occurs and no override phrase does."""
    failure, override = _ABNORMAL.search(log), _NORMAL.search(log)
    if failure and override:
        return NORMAL, f"it mentions {failure.group(0)!r} but also {override.group(0)!r}, a handled condition"
    if failure:
        return ABNORMAL, f"it mentions {failure.group(0)!r}, which reports a failure"
    return NORMAL, "it mentions no failure word"


def keyword_response(log: str) -> str:
    """The rule's verdict in the model's output format, so binarisation treats it like a model answer."""
    label, reason = keyword_label(log)
    return cot_label(f"Keyword rule: {reason}.", label)


class RuleBackend:
    """The keyword rule as a prediction backend (`--backend rules`): deterministic, no model, no GPU."""

    name = "rules"

    def generate(self, requests: Sequence[Request]) -> list[str]:
        """One keyword verdict per request, read from the raw log (prompts and seeds do not matter)."""
        return [keyword_response(r.log) for r in requests]


def predict_zero_shot(
    testset: str | Path, output: str | Path, model: str | Path, backend: str = "auto", **options: Any
):
    """The paper's zero-shot row: the untuned base model with the rules-only prompt, through any backend."""
    from rationanomaly.predict import predict_file

    return predict_file(testset, output, model=model, backend=backend, mode=ZERO_SHOT_MODE, **options)
