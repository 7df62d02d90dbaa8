"""Each reward part on hand-computed cases (numbers worked out in the comments)."""

from __future__ import annotations

import math

import pytest

from rationanomaly.reward.components import (
    MAX_PERPLEXITY,
    PPL_PREFIX,
    answer_class,
    answer_reward,
    bleu4,
    format_reward,
    length_reward,
    perplexity_reward,
    perplexity_text,
    rouge_f,
    semantic_reward,
    total_reward,
)

COMPENSATED = -1 / 0.15  # -6.667
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:nltk.translate.bleu_score")  # 0-count n-gram notes


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>a</think><answer>normal</answer>", 0.1),  # canonical
        ("  <think>\na\n</think>\n<answer> normal </answer>\n", 0.1),  # whitespace between tags is fine
        ("<think>a</think></think><answer>normal</answer>", -1.0),  # duplicated </think>
        ("<think>a</think><answer>normal</answer><answer>x</answer>", -1.0),  # repeated answer block
        ("<answer>normal</answer><think>a</think>", -1.0),  # answer before think
        ("<think>a<answer>normal</answer></think>", -1.0),  # answer nested inside think
        ("</think>a<think><answer>normal</answer>", -1.0),  # think tags swapped
        ("<think>a</think>normal", -1.0),  # no answer tags
        ("", -1.0),  # empty response
        ("<THINK>a</THINK><ANSWER>normal</ANSWER>", -1.0),  # tags are case-sensitive in the reference
    ],
)
def test_format_reward_accepts_only_four_unique_ordered_tags(response, expected):
    assert format_reward(response) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("normal", "normal"),
        (" Abnormal\n", "abnormal"),  # case and outer whitespace ignored
        ("NORMAL", "normal"),
        ("normal.", "other"),  # trailing period is not a label
        ("anomalous", "other"),
        ("", "missing"),
        ("   ", "missing"),
        (None, "missing"),
    ],
)
def test_answer_class_normalises_case_and_whitespace_only(answer, expected):
    assert answer_class(answer) == expected


@pytest.mark.parametrize(
    ("scheme", "label", "answer", "expected"),
    [
        ("reference", "normal", "normal", 1.0),
        ("reference", "abnormal", "ABNORMAL", 1.0),
        ("reference", "abnormal", "normal", COMPENSATED),  # missed anomaly
        ("reference", "normal", "abnormal", COMPENSATED),  # false alarm: symmetric in the code
        ("reference", "normal", "anomalous", -1.0),  # not a label: only -1
        ("reference", "abnormal", "normal.", -1.0),
        ("reference", "normal", None, COMPENSATED),  # missing answer / invalid format
        ("paper", "abnormal", "abnormal", 1 / 0.15),  # a found anomaly earns more
        ("paper", "normal", "normal", 1.0),
        ("paper", "abnormal", "normal", COMPENSATED),  # a missed anomaly costs more...
        ("paper", "normal", "abnormal", -1.0),  # ...than a false alarm
        ("paper", "normal", "other text", -1.0),
        ("paper", "abnormal", None, COMPENSATED),
        ("plain", "abnormal", "normal", -1.0),  # ablation: no compensation at all
        ("plain", "normal", "abnormal", -1.0),
        ("plain", "abnormal", "abnormal", 1.0),
        ("plain", "normal", None, -1.0),
    ],
)
def test_answer_reward_follows_the_scheme_table(scheme, label, answer, expected):
    assert answer_reward(answer, label, scheme) == pytest.approx(expected, abs=1e-12)


def test_answer_reward_unknown_scheme_names_the_choices():
    with pytest.raises(ValueError, match="reference, paper, plain"):
        answer_reward("normal", "normal", "symmetric")


@pytest.mark.parametrize(
    ("reference", "prediction", "expected"),
    [
        ("abcd", "abcdef", 0.4),  # v = 2*2/10, longer and v < 1: rewarded
        ("abcd", "ab", -2 / 3),  # v = 2*2/6, shorter: penalised
        ("abcd", "abcd" * 3, -1.0),  # 3x: v = 2*8/16 = 1, flips to a penalty
        ("abcd", "a" * 11, 2 * 7 / 15),  # just under 3x still pays
        ("abcd", "", -2.0),  # empty think
        ("", "", 0.0),  # ours: both empty is 0, not ZeroDivisionError
        ("abcd", "wxyz", 0.0),  # same length
    ],
)
def test_length_reward_matches_hand_computed_variation(reference, prediction, expected):
    assert length_reward(reference, prediction) == pytest.approx(expected, abs=1e-12)


def test_bleu4_over_characters_of_a_prefix_is_the_brevity_penalty():
    # every character n-gram of the prefix occurs in the reference: precisions 1, BP = exp(1 - 22/11)
    assert bleu4("the cat sat on the mat", "the cat sat") == pytest.approx(math.exp(-1), abs=1e-12)


def test_bleu4_over_words_is_zero_without_any_four_gram():
    # nltk returns a denormal-sized epsilon instead of an exact 0 when a precision is 0
    assert bleu4("the cat sat on the mat", "the cat sat", tokens="words") == pytest.approx(0.0, abs=1e-60)


def test_rouge_f_on_a_three_word_prefix():
    # ROUGE-1: P 3/3, R 3/6 -> F 2/3; ROUGE-2: P 2/2, R 2/5 -> F 4/7; ROUGE-L: LCS 3 -> F 2/3
    assert rouge_f("the cat sat on the mat", "the cat sat") == pytest.approx((2 / 3, 4 / 7, 2 / 3), abs=1e-12)


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ("chars", (math.exp(-1) + 2 / 3 + 4 / 7 + 2 / 3) * 100 / 800 - 0.5),  # -0.21592
        ("words", (0 + 2 / 3 + 4 / 7 + 2 / 3) * 100 / 800 - 0.5),  # -0.26190
    ],
)
def test_semantic_reward_combines_bleu_and_rouge_as_the_reference(tokens, expected):
    assert semantic_reward("the cat sat on the mat", "the cat sat", tokens) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("reference", "prediction", "expected"),
    [
        ("The node failed to boot.", "The node failed to boot.", 0.0),  # identical: the maximum
        ("alpha beta gamma", "zzzz yyyy", -0.5),  # nothing shared: the minimum
        ("The node failed.", "", -0.5),  # empty think: the reference's ROUGE raised here
        ("The node failed.", "...!!!", -0.5),  # punctuation only: also raised in the reference
    ],
)
def test_semantic_reward_bounds_and_degenerate_thinks(reference, prediction, expected):
    assert semantic_reward(reference, prediction) == pytest.approx(expected, abs=1e-12)


def test_semantic_reward_rejects_unknown_bleu_tokens():
    with pytest.raises(ValueError, match="chars, words"):
        semantic_reward("a", "a", "bytes")


@pytest.mark.parametrize(
    ("perplexity", "expected"),
    [
        (100.0, 0.0),
        (1.0, 0.99),  # best possible
        (50.0, 0.5),
        (300.0, -2.0),
        (math.inf, (100 - MAX_PERPLEXITY) / 100),  # ours: capped, stays finite
        (math.nan, (100 - MAX_PERPLEXITY) / 100),
    ],
)
def test_perplexity_reward_is_hundred_minus_ppl_over_hundred(perplexity, expected):
    assert perplexity_reward(perplexity) == pytest.approx(expected, abs=1e-12)


def test_perplexity_text_keeps_the_reference_context_line_and_its_typo():
    assert perplexity_text("step") == PPL_PREFIX + "step"
    assert PPL_PREFIX == "This is a log analysis task to determine if a log entry is normal or abnomal.\n"


def test_total_reward_weights_think_by_half():
    assert total_reward(0.1, 1.0, -0.4) == pytest.approx(0.9, abs=1e-12)
