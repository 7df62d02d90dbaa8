"""Evaluation: binarise model outputs, then score the abnormal class per template and per session.

Binarisation follows the reference's model_evaluate.py in order (last `<answer>`, `<em>` or `<b>`
content, its first line, then phrase rules) with two deliberate changes: words are matched without
their punctuation (`abnormal.` counts), and among phrase matches the *last* one wins (a conclusion
comes at the end; the reference took the first phrase of its normal list, a bias towards normal).
When neither decides, an output naming only one of the two labels (anywhere) gets it; `not` before a
label flips it (`not abnormal` is normal) on the first line and in that last rule as in the phrases.
What no rule decides is `unknown`: counted, listed, and treated as "not abnormal" in the metrics.

Metrics are computed here without scikit-learn (a test-only dependency); the tests check that every
number equals scikit-learn's on the same labels.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rationanomaly.io import check_outputs, output_set, read_text, write_json_atomic
from rationanomaly.labels import ABNORMAL, INSTRUCTION, NORMAL, normalize_label
from rationanomaly.patch import EXACT, MATCH_MODES, normalize_template
from rationanomaly.predict.runner import prediction_meta_path
from rationanomaly.response import last_block, tag_pattern
from rationanomaly.samples import Sample, SampleFormatError, read_records, read_samples
from rationanomaly.sessions import Session, read_sessions

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"
CLASSES = (NORMAL, ABNORMAL, UNKNOWN)
# Tags tried in order; the first that occurs decides, and its last occurrence is read (reference).
ANSWER_TAGS = ("answer", "em", "b")
MISSING_POLICIES = ("drop", "normal")  # sessions with an unpredicted template: dropped (reference) or lines normal

_LABEL = r"(?P<label>abnormal|normal)"
_ARTICLE = r"(?:(?:a|an) )?"
_NEGATION = r"(?P<negation>not )?"
# Phrase rules on the lower-cased, punctuation-free text (all ours, written after the reference's lists).
PHRASE_RULES = tuple(
    re.compile(p)
    for p in (
        # "the log entry is (not) abnormal", "this entry appears to be normal", "the answer would be abnormal"
        r"\b(?:log entry|entry|log|it|this|that|output|answer|status|result|message|event)"
        rf" (?:is|would be|should be|appears to be|seems to be|can be considered|is considered|belongs to the)"
        rf" {_NEGATION}{_ARTICLE}{_LABEL}\b",
        # "classified as normal", "classify it as an abnormal", "label this as abnormal"
        rf"\b(?:classified|classify (?:it|this)|categorized|categorize (?:it|this)|labelled|labeled|marked|flagged)"
        rf" as {_NEGATION}{_ARTICLE}{_LABEL}\b",
        # "classification: abnormal", "verdict normal", "final answer: normal"
        rf"\b(?:classification|judgement|judgment|observation|verdict|label|answer|output|category|conclusion)"
        rf" {_LABEL}\b",
        # "a normal log entry", "an abnormal event"
        rf"\b(?:a|an) {_LABEL} (?:log|entry|event|message|behaviou?r|operation)\b",
    )
)
_FLIP = {NORMAL: ABNORMAL, ABNORMAL: NORMAL}


_ANSWER_TAG_PATTERNS = tuple(tag_pattern(f"<{tag}>", f"</{tag}>", re.IGNORECASE) for tag in ANSWER_TAGS)


def tagged_answer(output: str) -> str | None:
    """Stripped content of the last `<answer>` (else `<em>`, else `<b>`) block, None if there is none.

    Read with response.last_block, linear in the output (a lazy `<tag>(.*?)</tag>` regex is quadratic on
    unclosed tags, and prediction files are not length-capped).
    """
    for pattern in _ANSWER_TAG_PATTERNS:
        found = last_block(output, pattern)
        if found is not None:
            return found
    return None


def words(text: str) -> list[str]:
    """Lower-case words with punctuation and markup removed (`**Abnormal.**` -> `abnormal`)."""
    return re.findall(r"[a-z]+", text.lower())


def single_label(tokens: Sequence[str]) -> str | None:
    """The label when exactly one of normal/abnormal is named, read through `not` (`not abnormal` is normal).

    Every mention must agree: `abnormal ... not abnormal` names both readings and decides nothing.
    """
    readings = set()
    for index, word in enumerate(tokens):
        if word in _FLIP:
            before = tokens[max(0, index - 2) : index]
            negated = bool(before) and (before[-1] == "not" or before[-2:] in (["not", "a"], ["not", "an"]))
            readings.add(_FLIP[word] if negated else word)
    return readings.pop() if len(readings) == 1 else None


def first_line_label(text: str) -> str | None:
    """The label named on the first non-empty line when exactly one of normal/abnormal is named there."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return single_label(words(lines[0])) if lines else None


def phrase_label(text: str) -> str | None:
    """The label of the last phrase-rule match in the whole text ("... is not abnormal" reads normal)."""
    flat = " ".join(words(text))
    best: tuple[int, str] | None = None
    for rule in PHRASE_RULES:
        for match in rule.finditer(flat):
            label = match.group("label")
            if "negation" in match.groupdict() and match.group("negation"):
                label = _FLIP[label]
            if best is None or match.start() > best[0]:
                best = (match.start(), label)
    return None if best is None else best[1]


def binarize(output: str) -> str:
    """NORMAL, ABNORMAL or UNKNOWN for one model output (module docstring: the rule order and why)."""
    answer = tagged_answer(output)
    candidate = answer if answer is not None else output
    decided = first_line_label(candidate) or phrase_label(output)
    if decided is not None:
        return decided
    return single_label(words(output)) or UNKNOWN


@dataclass(frozen=True)
class BinaryMetrics:
    """Abnormal-class scores; `unknown` predictions count as not abnormal (in `fn` or `tn`).

    `support` is the number of truly abnormal items (scikit-learn's meaning), `total` all items; `fpr` is the
    share of truly normal items flagged abnormal (fp / (fp + tn)), what an operator pays in false alarms.
    """

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int
    unknown: int
    support: int
    total: int
    accuracy: float
    fpr: float


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0.0 when the denominator is 0 (scikit-learn's zero_division=0)."""
    return numerator / denominator if denominator else 0.0


def binary_metrics(truth: Sequence[str], predicted: Sequence[str]) -> BinaryMetrics:
    """Precision, recall and F1 of the abnormal class plus the confusion counts."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    pairs = Counter((t, p == ABNORMAL) for t, p in zip(truth, predicted, strict=True))
    tp, fn = pairs[(ABNORMAL, True)], pairs[(ABNORMAL, False)]
    fp, tn = pairs[(NORMAL, True)], pairs[(NORMAL, False)]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return BinaryMetrics(
        precision=precision,
        recall=recall,
        f1=_ratio(2 * precision * recall, precision + recall),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        unknown=sum(p == UNKNOWN for p in predicted),
        support=tp + fn,
        total=len(truth),
        accuracy=_ratio(tp + tn, len(truth)),
        fpr=_ratio(fp, fp + tn),
    )


def flag_labels(flags: Iterable[int | bool]) -> list[str]:
    """0/1 flags (time-series points, windows) as NORMAL/ABNORMAL labels, so they score like text labels."""
    return [ABNORMAL if flag else NORMAL for flag in flags]


def point_adjust(truth: Sequence[int], predicted: Sequence[int]) -> list[int]:
    """Point-adjusted predictions: a true anomalous segment counts as found in full once any point of it is flagged.

    The protocol of Xu et al. (WWW 2018, Donut) used by most time-series anomaly benchmarks (SMD, WaDi): an
    operator alerted anywhere inside an incident sees the whole incident. Points outside true segments keep
    their prediction, so false alarms still cost precision.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    adjusted = [int(bool(p)) for p in predicted]
    start = None
    for index, flag in enumerate([*truth, 0]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if any(adjusted[start:index]):
                adjusted[start:index] = [1] * (index - start)
            start = None
    return adjusted


def average_precision(truth: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the precision-recall curve as a step sum, sum_k (R_k - R_k-1) * P_k (scikit-learn's AP).

    Thresholds are the distinct scores, highest first; tied scores enter together. Without any true
    anomaly the curve is undefined: 0.0 (scikit-learn warns and returns 0 as well).
    """
    if len(truth) != len(scores):
        raise ValueError(f"{len(truth)} labels but {len(scores)} scores")
    positives = sum(bool(t) for t in truth)
    if not positives:
        return 0.0
    ranked = sorted(zip(scores, truth, strict=True), key=lambda pair: -pair[0])
    area, tp, seen, recall_before = 0.0, 0, 0, 0.0
    for index, (score, flag) in enumerate(ranked):
        tp += bool(flag)
        seen += 1
        if index + 1 < len(ranked) and ranked[index + 1][0] == score:
            continue
        recall = tp / positives
        area += (recall - recall_before) * tp / seen
        recall_before = recall
    return area


def confusion(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, int]]:
    """Counts by true label (normal, abnormal) and predicted class (normal, abnormal, unknown)."""
    pairs = Counter(zip(truth, predicted, strict=True))
    return {t: {p: pairs[(t, p)] for p in CLASSES} for t in (NORMAL, ABNORMAL)}


def class_report(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, dict[str, float] | float]:
    """Per-class precision/recall/F1/support, accuracy, macro and weighted averages.

    Laid out like scikit-learn's `classification_report(output_dict=True)`; `unknown` is a class
    only when it was predicted, as in the reference's 2- or 3-class report.
    """
    classes = [c for c in CLASSES if c != UNKNOWN or UNKNOWN in predicted]
    pairs = Counter(zip(truth, predicted, strict=True))
    report: dict[str, dict[str, float] | float] = {}
    for c in classes:
        tp = pairs[(c, c)]
        support = sum(n for (t, _), n in pairs.items() if t == c)
        predicted_c = sum(n for (_, p), n in pairs.items() if p == c)
        precision, recall = _ratio(tp, predicted_c), _ratio(tp, support)
        report[c] = {
            "precision": precision,
            "recall": recall,
            "f1-score": _ratio(2 * precision * recall, precision + recall),
            "support": support,
        }
    total = len(truth)
    report["accuracy"] = _ratio(sum(pairs[(c, c)] for c in classes), total)
    for average, weights in (
        ("macro avg", {c: 1 / len(classes) for c in classes}),
        ("weighted avg", {c: _ratio(report[c]["support"], total) for c in classes}),
    ):
        report[average] = {
            k: sum(weights[c] * report[c][k] for c in classes) for k in ("precision", "recall", "f1-score")
        }
        report[average]["support"] = total
    return report


@dataclass(frozen=True)
class LabelledPrediction:
    """A prediction joined with its label: the reference's labelled-output record plus the raw text."""

    instruction: str
    input: str
    output: str
    label: str
    response: str


def label_predictions(
    predictions: Sequence[Mapping[str, str]], testset: Sequence[Sample], source: str = "predictions"
) -> list[LabelledPrediction]:
    """Join predictions to test labels by instruction + input (reference) and binarise each output.

    Each test item takes at most one prediction (a test set that lists an input twice takes two): a
    prediction file with repeated items (two runs concatenated) would otherwise count them twice.
    """
    labels: dict[tuple[str, str], str] = {}
    for sample in testset:
        key, label = (sample.instruction, sample.input), normalize_label(sample.label)
        if labels.setdefault(key, label) != label:
            raise SampleFormatError(
                f"test set labels input {sample.input[:80]!r} both normal and abnormal; fix the test set"
            )
    room = Counter((s.instruction, s.input) for s in testset)
    joined = []
    for index, record in enumerate(predictions):
        key = (record.get("instruction") or INSTRUCTION, record["input"])
        if key not in labels:
            raise SampleFormatError(
                f"{source}: item {index} (input {record['input'][:80]!r}) is not in the test set; "
                "were the predictions made on another test set?"
            )
        if room[key] == 0:
            raise SampleFormatError(
                f"{source}: item {index} (input {record['input'][:80]!r}) is predicted more often "
                "than the test set lists it; were two prediction files joined? predict again "
                "with validation/model_predict.py"
            )
        room[key] -= 1
        raw = record["output"].strip()
        joined.append(LabelledPrediction(key[0], key[1], binarize(raw), labels[key], raw))
    return joined


def check_coverage(
    labelled: Sequence[LabelledPrediction], testset: Sequence[Sample], partial: bool, source: str = "predictions"
) -> int:
    """Test items without a prediction; an error unless `partial` (then the report says "partial: n of N").

    A prediction file that stops early (an interrupted run) scores only what it holds: 3 of 10 correct
    answers would read as F1 1.0, so a short file is refused by default.
    """
    missing = Counter((s.instruction, s.input) for s in testset)
    missing.subtract((x.instruction, x.input) for x in labelled)
    unpredicted = sum(n for n in missing.values() if n > 0)
    if unpredicted and not partial:
        first = next(key[1] for key, n in missing.items() if n > 0)
        raise SampleFormatError(
            f"{source}: {unpredicted} of {len(testset)} test items have no prediction (first "
            f"{first[:80]!r}); finish the run (validation/model_predict.py resumes it) or pass "
            f"--partial to score the {len(labelled)} predicted items"
        )
    if unpredicted:
        logger.warning("partial evaluation: %d of %d test items predicted", len(labelled), len(testset))
    return unpredicted


def template_key(match: str) -> Callable[[str], str]:
    """How session templates meet predicted ones: exactly (reference) or after rationanomaly.patch's normalisation.

    Session templates come from the structured logs, test inputs from the template sheets; the two
    sources can differ in punctuation, and an exact match then silently drops sessions.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"match={match!r}; choose one of {MATCH_MODES}")
    return (lambda template: template) if match == EXACT else normalize_template


def session_outcomes(
    sessions: Iterable[Session], predictions: Mapping[str, str], missing: str = "drop", match: str = EXACT
) -> tuple[list[str], list[str], int, int]:
    """Truth and prediction per session: abnormal if any of its templates is predicted abnormal.

    A session holding a template without a prediction is dropped (reference) or, with
    `missing="normal"`, kept with that line predicted normal. Returns (truth, predicted, dropped,
    sessions with an unknown template prediction).
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r}; choose one of {MISSING_POLICIES}")
    key = template_key(match)
    by_key = {key(template): label for template, label in predictions.items()}
    truth, predicted, dropped, unknown = [], [], 0, 0
    for session in sessions:
        found = [by_key.get(key(t)) for t in session.templates]
        if None in found and missing == "drop":
            dropped += 1
            continue
        truth.append(session.label)
        predicted.append(ABNORMAL if ABNORMAL in found else NORMAL)
        unknown += UNKNOWN in found
    return truth, predicted, dropped, unknown


@dataclass(frozen=True)
class Evaluation:
    """Everything model_evaluate.py reports and writes."""

    template: BinaryMetrics
    confusion: dict[str, dict[str, int]]
    report: dict
    unknowns: list[dict[str, str]]
    labelled: list[LabelledPrediction]
    unpredicted: int = 0
    test_items: int = 0
    session: BinaryMetrics | None = None
    sessions_total: int = 0
    sessions_dropped: int = 0
    missing_policy: str = "drop"
    match: str = EXACT

    def to_dict(self) -> dict:
        """The JSON written by --output-json (labelled items go to their own files)."""
        data: dict = {
            "template": asdict(self.template),
            "confusion": self.confusion,
            "report": self.report,
            "unknowns": self.unknowns,
            "unpredicted": self.unpredicted,
            "coverage": {"predicted": len(self.labelled), "test_items": self.test_items, "partial": self.partial},
        }
        if self.session is not None:
            data["session"] = {
                **asdict(self.session),
                "sessions_total": self.sessions_total,
                "dropped": self.sessions_dropped,
                "missing_policy": self.missing_policy,
                "match": self.match,
            }
        return data

    @property
    def partial(self) -> bool:
        """True when some test items had no prediction (allowed only with `partial=True`)."""
        return self.unpredicted > 0

    @property
    def diff(self) -> list[LabelledPrediction]:
        """Items whose binarised output differs from the label (the reference's diff file)."""
        return [item for item in self.labelled if item.output != item.label]


def evaluate(
    predictions: Sequence[Mapping[str, str]],
    testset: Sequence[Sample],
    sessions: Sequence[Session] | None = None,
    missing: str = "drop",
    match: str = EXACT,
    partial: bool = False,
    source: str = "predictions",
) -> Evaluation:
    """Template-level (and, given sessions, session-level) evaluation of reference-layout predictions.

    The predictions must cover the test set exactly (check_coverage) unless `partial`.
    """
    labelled = label_predictions(predictions, testset, source)
    unpredicted = check_coverage(labelled, testset, partial, source)
    truth, predicted = [x.label for x in labelled], [x.output for x in labelled]
    result = Evaluation(
        template=binary_metrics(truth, predicted),
        confusion=confusion(truth, predicted),
        report=class_report(truth, predicted),
        unknowns=[{"input": x.input, "response": x.response} for x in labelled if x.output == UNKNOWN],
        labelled=labelled,
        unpredicted=unpredicted,
        test_items=len(testset),
    )
    if sessions is None:
        return result
    # The last prediction of a template wins when a test set repeats it.
    by_template = {x.input: x.output for x in labelled}
    s_truth, s_predicted, dropped, unknown = session_outcomes(sessions, by_template, missing, match)
    if dropped:
        logger.warning("dropped %d of %d sessions holding a template without a prediction", dropped, len(sessions))
    metrics = binary_metrics(s_truth, s_predicted)
    return replace(
        result,
        session=replace(metrics, unknown=unknown),
        sessions_total=len(sessions),
        sessions_dropped=dropped,
        missing_policy=missing,
        match=match,
    )


def prediction_producer(predictions: str | Path) -> dict:
    """Model, backend and mode that made a prediction file, from the `.meta.json` model_predict.py writes beside it.

    Empty values (None) when the file came from elsewhere: the evaluation then says so instead of guessing.
    """
    path = prediction_meta_path(Path(predictions))
    meta = {}
    if path.is_file():
        try:
            meta = json.loads(read_text(path))
        except (ValueError, OSError) as error:
            logger.warning("%s: unreadable (%s); the evaluation records no model or backend", path, error)
    if not isinstance(meta, dict):
        meta = {}
    return {key: meta.get(key) for key in ("model", "backend", "mode", "prompt_file", "seed")}


def evaluate_files(
    predictions: str | Path,
    testset: str | Path,
    sessions: str | Path | None = None,
    missing: str = "drop",
    match: str = EXACT,
    output_json: str | Path | None = None,
    labelled: str | Path | None = None,
    diff: str | Path | None = None,
    partial: bool = False,
    method: str | None = None,
) -> Evaluation:
    """Evaluate files and write the metrics JSON, the labelled-output and the diff files that are named.

    The outputs are checked first (none of them an input, none twice) and written as one set. The metrics JSON
    records `method` and the model, backend and mode that made the predictions (prediction_producer).
    """
    check_outputs([output_json, labelled, diff], [predictions, testset, sessions])
    result = evaluate(
        read_records(predictions, ("input", "output")),
        read_samples(testset),
        read_sessions(sessions) if sessions is not None else None,
        missing,
        match,
        partial,
        str(predictions),
    )
    with output_set():
        if output_json is not None:
            write_json_atomic(
                output_json,
                {
                    "method": method,
                    **prediction_producer(predictions),
                    **result.to_dict(),
                    "predictions": str(predictions),
                    "testset": str(testset),
                    "sessions": str(sessions) if sessions else None,
                },
            )
        if labelled is not None:
            write_json_atomic(labelled, [asdict(x) for x in result.labelled])
        if diff is not None:
            write_json_atomic(diff, [asdict(x) for x in result.diff])
    return result


def format_table(result: Evaluation) -> str:
    """A plain-text summary: one row per level with P/R/F1 and the counts."""
    header = (
        f"{'level':<9} {'precision':>9} {'recall':>7} {'f1':>7} {'tp':>6} {'fp':>6} {'fn':>6} {'tn':>6} "
        f"{'unknown':>7} {'support':>7} {'total':>6}"
    )
    rows = [header]
    for level, m in (("template", result.template), ("session", result.session)):
        if m is not None:
            rows.append(
                f"{level:<9} {m.precision:>9.4f} {m.recall:>7.4f} {m.f1:>7.4f} {m.tp:>6} {m.fp:>6} "
                f"{m.fn:>6} {m.tn:>6} {m.unknown:>7} {m.support:>7} {m.total:>6}"
            )
    if result.partial:
        rows.append(f"partial: {len(result.labelled)} of {result.test_items} test items predicted (--partial)")
    if result.session is not None:
        rows.append(
            f"sessions: {result.sessions_total} in file, {result.sessions_dropped} dropped "
            f"(template without prediction; policy {result.missing_policy}, match {result.match})"
        )
    return "\n".join(rows)
