"""Labels and response parsing shared by data building and the reward."""

from __future__ import annotations

import pytest

from rationanomaly.labels import ABNORMAL, NORMAL, LabelError, cot_label, label_to_int, normalize_label
from rationanomaly.response import extract_answer, extract_think, tags_in_order


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, NORMAL),
        (1, ABNORMAL),
        (1.0, ABNORMAL),  # spreadsheet float
        ("1.0", ABNORMAL),  # the same float saved to CSV and read as text
        (" 0.0 ", NORMAL),
        ("1.00", ABNORMAL),
        ("1", ABNORMAL),
        (" Abnormal ", ABNORMAL),  # case and spaces
        ("NORMAL", NORMAL),
    ],
)
def test_normalize_label_accepts_the_four_spellings(value, expected):
    assert normalize_label(value) == expected


@pytest.mark.parametrize("value", [2, "anomalous", "", None, True, 0.5, "0.5", "2.0", "nan", "inf", "normal."])
def test_normalize_label_rejects_anything_else(value):
    with pytest.raises(LabelError):
        normalize_label(value)


def test_label_to_int_and_cot_label_round_trip():
    assert label_to_int(ABNORMAL) == 1 and label_to_int("normal") == 0
    assert cot_label("why", 1) == "<think>why</think><answer>abnormal</answer>"


@pytest.mark.parametrize(
    ("response", "think", "answer", "ordered"),
    [
        ("<think> a </think><answer> normal </answer>", "a", "normal", True),
        ("<think>a\nb</think>\n<answer>\nAbnormal\n</answer>", "a\nb", "Abnormal", True),
        ("<answer>x</answer><think>t</think>", "t", "x", False),  # wrong order
        ("<think>a</think><think>b</think><answer>y</answer>", "b", "y", False),  # duplicated think: last wins
        ("<think>a</think><answer>x</answer><answer>y</answer>", "a", "y", False),  # last answer wins
        ("no tags at all", None, None, False),
        ("", None, None, False),
        ("<think>open only<answer>normal</answer>", None, "normal", False),  # unclosed think
    ],
)
def test_extraction_and_tag_order(response, think, answer, ordered):
    assert extract_think(response) == think
    assert extract_answer(response) == answer
    assert tags_in_order(response) is ordered
