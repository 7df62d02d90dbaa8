"""The reward's parts, one pure function each, with every number named and sourced.

Source of each constant: the reference implementation's reward file (DESIGN.md, "The reward, exactly as
the reference implementation computes it"). Deliberate differences are marked `ours:`.
"""

from __future__ import annotations

import math
import re
import warnings
from functools import lru_cache

from rationanomaly.labels import ABNORMAL, LABELS, NORMAL
from rationanomaly.response import tags_in_order

FORMAT_VALID, FORMAT_INVALID = 0.1, -1.0  # reference: format_reward=0.1, else -abs(0.1 * 10)
ANSWER_MATCH, ANSWER_MISMATCH = 1.0, -1.0  # reference: get_answer_score before compensation
# reference: a normal/abnormal confusion is divided by 0.15 (the 15% anomaly rate of the training set).
COMPENSATION = 0.15
THINK_WEIGHT = 0.5  # reference: total = format + answer + 0.5 * think
BLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)  # reference: BLEU-4, uniform weights
# reference: semantic = (BLEU + ROUGE-1 + ROUGE-2 + ROUGE-L) [each x100] / 800 - 0.5
SEMANTIC_PERCENT, SEMANTIC_DIVISOR, SEMANTIC_OFFSET = 100.0, 800.0, -0.5
# reference: related_info + "\n" + think, typo ("abnomal") kept so perplexities match.
PPL_PREFIX = "This is a log analysis task to determine if a log entry is normal or abnomal.\n"
PPL_MAX_TOKENS = 1024  # reference: tokenizer truncation max_length (DistilGPT-2's context)
PPL_BASELINE = 100.0  # reference: score = (100 - ppl) / 100
# ours: the reference computes exp(loss) in float32, which overflows to inf past loss 88.7; a cap keeps
# the reward finite. DistilGPT-2 on any text stays far below it (uniform guessing gives 50,257).
MAX_PERPLEXITY = 1e6

ANSWER_SCHEMES = ("reference", "paper", "plain")
BLEU_TOKENS = ("chars", "words")
OTHER = "other"  # an extracted answer that is not a label (`anomalous`, `normal.`)
MISSING = "missing"  # invalid format or empty answer


def _answer_table(
    *,
    normal_hit: float,
    abnormal_hit: float,
    false_alarm: float,
    missed_anomaly: float,
    not_a_label: float,
    missing: float,
) -> dict[tuple[str, str], float]:
    """(ground-truth label, predicted class) -> answer reward; the predicted class is a label, OTHER or MISSING."""
    return {
        (NORMAL, NORMAL): normal_hit,
        (ABNORMAL, ABNORMAL): abnormal_hit,
        (NORMAL, ABNORMAL): false_alarm,
        (ABNORMAL, NORMAL): missed_anomaly,
        (NORMAL, OTHER): not_a_label,
        (ABNORMAL, OTHER): not_a_label,
        (NORMAL, MISSING): missing,
        (ABNORMAL, MISSING): missing,
    }


ANSWER_TABLES: dict[str, dict[tuple[str, str], float]] = {
    # reference code: symmetric; both confusions cost -1/0.15 = -6.667, a non-label only -1.
    "reference": _answer_table(
        normal_hit=ANSWER_MATCH,
        abnormal_hit=ANSWER_MATCH,
        false_alarm=ANSWER_MISMATCH / COMPENSATION,
        missed_anomaly=ANSWER_MISMATCH / COMPENSATION,
        not_a_label=ANSWER_MISMATCH,
        missing=ANSWER_MISMATCH / COMPENSATION,
    ),
    # ours, after the paper's prose ("a found anomaly earns more than a found normal; a missed anomaly
    # costs more"): the abnormal class is weighted by 1/0.15 on both sides, the normal class by 1.
    "paper": _answer_table(
        normal_hit=ANSWER_MATCH,
        abnormal_hit=ANSWER_MATCH / COMPENSATION,
        false_alarm=ANSWER_MISMATCH,
        missed_anomaly=ANSWER_MISMATCH / COMPENSATION,
        not_a_label=ANSWER_MISMATCH,
        missing=ANSWER_MISMATCH / COMPENSATION,
    ),
    # the paper's ablation "without asymmetric compensation": +1 on a match, -1 for anything else.
    "plain": _answer_table(
        normal_hit=ANSWER_MATCH,
        abnormal_hit=ANSWER_MATCH,
        false_alarm=ANSWER_MISMATCH,
        missed_anomaly=ANSWER_MISMATCH,
        not_a_label=ANSWER_MISMATCH,
        missing=ANSWER_MISMATCH,
    ),
}

# nltk warns once per missing n-gram order; inside Ray workers that is noise on every short think.
warnings.filterwarnings("ignore", message=r"\s*The hypothesis contains 0 counts", category=UserWarning)


def format_reward(response: str) -> float:
    """+0.1 if each of the four tags occurs once and in order, else -1.0 (reference)."""
    return FORMAT_VALID if tags_in_order(response) else FORMAT_INVALID


def answer_class(answer: str | None) -> str:
    """The predicted class: a label (case and outer spaces ignored), OTHER, or MISSING when empty/absent."""
    if answer is None or not answer.strip():
        return MISSING
    key = answer.strip().lower()
    return key if key in LABELS else OTHER


def answer_reward(answer: str | None, label: str, scheme: str = "reference") -> float:
    """Look up (label, predicted class) in the scheme's table; see ANSWER_TABLES for the numbers."""
    if scheme not in ANSWER_TABLES:
        raise ValueError(f"answer_scheme {scheme!r} is not one of {', '.join(ANSWER_SCHEMES)}")
    return ANSWER_TABLES[scheme][(label, answer_class(answer))]


@lru_cache(maxsize=1)
def _rouge_scorer():
    """One RougeScorer per process: building it compiles regexes and is not free."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def bleu4(reference: str, prediction: str, tokens: str = "chars") -> float:
    """nltk sentence BLEU-4 in [0, 1]; `chars` passes plain strings as the reference does, `words` splits."""
    from nltk.translate.bleu_score import sentence_bleu

    if tokens not in BLEU_TOKENS:
        raise ValueError(f"bleu_tokens {tokens!r} is not one of {', '.join(BLEU_TOKENS)}")
    if tokens == "words":
        return float(sentence_bleu([reference.split()], prediction.split(), weights=BLEU_WEIGHTS))
    return float(sentence_bleu([reference], prediction, weights=BLEU_WEIGHTS))


def rouge_f(reference: str, prediction: str) -> tuple[float, float, float]:
    """ROUGE-1, ROUGE-2, ROUGE-L F-measures in [0, 1] (rouge-score; 0 for empty or symbol-only text).

    ours: the reference used the `rouge` package, which raises on an empty or punctuation-only think and
    recurses past Python's limit on long period-free text; rouge-score does neither.
    """
    scores = _rouge_scorer().score(reference, prediction)
    return scores["rouge1"].fmeasure, scores["rouge2"].fmeasure, scores["rougeL"].fmeasure


def semantic_reward(reference: str, prediction: str, bleu_tokens: str = "chars") -> float:
    """(BLEU-4 + ROUGE-1 F + ROUGE-2 F + ROUGE-L F) * 100 / 800 - 0.5, in [-0.5, 0] (reference)."""
    parts = (bleu4(reference, prediction, bleu_tokens), *rouge_f(reference, prediction))
    return sum(parts) * SEMANTIC_PERCENT / SEMANTIC_DIVISOR + SEMANTIC_OFFSET


def length_reward(reference: str, prediction: str) -> float:
    """v = 2|Lp - Lr| / (Lp + Lr) over characters; +v if Lp > Lr and v < 1, else -v; in [-2, 1) (reference).

    Why the odd sign: the reference rewards a think up to 3x the reference length (padding pays) and
    flips to a penalty beyond. ours: both empty gives 0 instead of the reference's ZeroDivisionError.
    """
    predicted, expected = len(prediction), len(reference)
    if predicted + expected == 0:
        return 0.0
    variation = 2 * abs(predicted - expected) / (predicted + expected)
    return variation if predicted > expected and variation < 1 else 0.0 - variation


def perplexity_text(think: str) -> str:
    """The text whose perplexity is scored: the reference's fixed context line, then the think."""
    return PPL_PREFIX + think


def perplexity_reward(perplexity: float) -> float:
    """(100 - ppl) / 100, in [(100 - 1e6) / 100, 0.99]; ppl is capped at MAX_PERPLEXITY (reference + cap)."""
    if math.isnan(perplexity):
        perplexity = MAX_PERPLEXITY
    return (PPL_BASELINE - min(max(perplexity, 1.0), MAX_PERPLEXITY)) / PPL_BASELINE


def total_reward(format_score: float, answer_score: float, think_score: float) -> float:
    """Total = format + answer + THINK_WEIGHT * think (reference)."""
    return format_score + answer_score + THINK_WEIGHT * think_score


_WHITESPACE = re.compile(r"\s+")


def describe(text: str, limit: int = 80) -> str:
    """A one-line, shortened repr of a sample for error messages."""
    flat = _WHITESPACE.sub(" ", text).strip()
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")
