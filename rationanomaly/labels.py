"""Labels, tags and fixed strings: the one place each of them is spelled."""

from __future__ import annotations

NORMAL = "normal"
ABNORMAL = "abnormal"
LABELS = (NORMAL, ABNORMAL)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# Every instruction field in the public data is this sentence (shared/data/README.md).
INSTRUCTION = "Classify the given log entries into normal and abnormal categories."
# verl routes rows to the reward and groups validation metrics by this column.
DATA_SOURCE = "RationAnomaly"
ABILITY = "log_anomaly_detection"

_LABEL_SPELLINGS = {
    "0": NORMAL,
    "1": ABNORMAL,
    NORMAL: NORMAL,
    ABNORMAL: ABNORMAL,
}


class LabelError(ValueError):
    """A label outside {0, 1, normal, abnormal}."""


def normalize_label(value: object) -> str:
    """Map 0/1/'normal'/'abnormal' (any case, surrounding spaces) to NORMAL or ABNORMAL.

    Template sheets store 0/1, sample JSON stores words; everything downstream speaks words.
    Floats such as 1.0 (or the text "1.0" in a CSV a float column was saved to) are accepted when integral.
    """
    if isinstance(value, bool):
        raise LabelError(f"label {value!r} is a boolean; use 0/1 or normal/abnormal")
    key = str(value).strip().lower()
    if key not in _LABEL_SPELLINGS:
        key = _integral_text(key)
    if key not in _LABEL_SPELLINGS:
        raise LabelError(f"label {value!r} is not one of 0, 1, normal, abnormal")
    return _LABEL_SPELLINGS[key]


def _integral_text(text: str) -> str:
    """'1.0' -> '1' (a float column saved to CSV and read back as text); anything else unchanged."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def label_to_int(label: str) -> int:
    """ABNORMAL -> 1, NORMAL -> 0 (the template sheets' encoding)."""
    return 1 if normalize_label(label) == ABNORMAL else 0


def cot_label(think: str, label: str) -> str:
    """The training target and reward ground truth: `<think>THINK</think><answer>LABEL</answer>`."""
    return f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{normalize_label(label)}{ANSWER_CLOSE}"
