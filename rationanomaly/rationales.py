"""Rationales: join chain-of-thought explanations to training templates and check every one of them.

A rationale file uses the R-Log layout: a JSON list of `{"instruction", "input", "label", "reasoning"}`
where `reasoning` is `<think>..</think><answer>..</answer>`. Joining it to the training templates
(which carry the *rectified* labels) gives the reference training layout, whose label is the CoT target.

Distilled rationales disagree with the rectified label more often than one would hope (31 of the 332
public R-Log rationales do, and 2 lack the tags), so nothing is trusted: each rationale is checked with
the same extraction rules the reward applies to the model, and anything that fails is reported and left
out of the training data unless the user explicitly asks to keep conflicts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import write_json_atomic
from rationanomaly.labels import ABNORMAL, INSTRUCTION, NORMAL, LabelError, cot_label, normalize_label
from rationanomaly.loaders import SHEET, detect_format, load_samples, load_template_sheet, sample_label_word
from rationanomaly.patch import EXACT, match_entries, read_patch, rectified_labels
from rationanomaly.response import extract_answer, extract_think, tags_in_order
from rationanomaly.samples import Sample, SampleFormatError, read_records

logger = logging.getLogger(__name__)

# Issue reasons. Only CONFLICT can be kept (with --keep-conflicts): its think text is well-formed, it just
# argues for the other label. The others have no usable think or answer at all.
MALFORMED_TAGS = "malformed_tags"
EMPTY_THINK = "empty_think"
NOT_A_LABEL = "answer_not_a_label"
CONFLICT = "conflict"
DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Rationale:
    """One record of an R-Log rationale file."""

    input: str
    reasoning: str
    label: str = ""
    instruction: str = INSTRUCTION


@dataclass(frozen=True)
class RationaleIssue:
    """Why a rationale was rejected (or kept only because conflicts were explicitly allowed)."""

    input: str
    reason: str
    detail: str
    label: str
    answer: str | None
    kept: bool = False


@dataclass(frozen=True)
class JoinResult:
    """Training samples with CoT labels, the problems found, and the templates still lacking a rationale.

    `missing` holds every template without a usable rationale (none given, or the one given was rejected)
    with its word label: exactly the input the distillation step needs.
    """

    samples: list[Sample]
    issues: list[RationaleIssue]
    missing: list[Sample]
    unused: list[str]
    keep_conflicts: bool = False
    templates: int = 0
    rationales: int = 0
    with_rationale: int = 0

    def report(self) -> dict:
        """Counts for the one-screen summary and the report file (issues are listed separately)."""
        reasons = Counter(issue.reason for issue in self.issues)
        conflicts = [issue for issue in self.issues if issue.reason == CONFLICT]
        return {
            "templates": self.templates,
            "rationales": self.rationales,
            "templates_with_rationale": self.with_rationale,
            "templates_without_rationale": self.templates - self.with_rationale,
            "joined": len(self.samples),
            "joined_abnormal": sum(extract_answer(s.label) == ABNORMAL for s in self.samples),
            "missing": len(self.missing),
            "unused_rationales": len(self.unused),
            "issues": len(self.issues),
            "malformed": sum(reasons[r] for r in (MALFORMED_TAGS, EMPTY_THINK, NOT_A_LABEL)),
            "by_reason": dict(sorted(reasons.items())),
            "conflicts": len(conflicts),
            "conflicts_normal_to_abnormal": sum(i.label == ABNORMAL for i in conflicts),
            "conflicts_abnormal_to_normal": sum(i.label == NORMAL for i in conflicts),
            "keep_conflicts": self.keep_conflicts,
            "kept_conflicts": sum(i.kept for i in conflicts),
        }


def read_rationales(path: str | Path) -> list[Rationale]:
    """Read an R-Log rationale file; every record needs string `input` and `reasoning` fields."""
    records = read_records(path, ("input", "reasoning"))
    return [
        Rationale(r["input"], r["reasoning"], str(r.get("label") or ""), r.get("instruction") or INSTRUCTION)
        for r in records
    ]


def write_rationales(path: str | Path, rationales: Iterable[Rationale]) -> Path:
    """Write rationales atomically in the R-Log key order (instruction, input, label, reasoning)."""
    rows = [
        {"instruction": r.instruction, "input": r.input, "label": r.label, "reasoning": r.reasoning} for r in rationales
    ]
    return write_json_atomic(path, rows)


def check_rationale(reasoning: str, label: str) -> tuple[str, str] | None:
    """None if `reasoning` is a trainable CoT for `label`, else (reason, detail) saying what is wrong.

    Uses the reward's own rules (tags once and in order, last think/answer), so a training target can
    never be one the reward would score as malformed.
    """
    if not tags_in_order(reasoning):
        return MALFORMED_TAGS, "the tags <think>, </think>, <answer>, </answer> must each occur once, in order"
    if not extract_think(reasoning):
        return EMPTY_THINK, "the <think> block is empty"
    answer = extract_answer(reasoning) or ""
    try:
        said = normalize_label(answer)
    except LabelError:
        return NOT_A_LABEL, f"the answer {answer!r} is not normal or abnormal"
    expected = normalize_label(label)
    if said != expected:
        return CONFLICT, f"the rationale answers {said!r} but the rectified label is {expected!r}"
    return None


def read_templates(path: str | Path) -> list[Sample]:
    """Templates with their (rectified) word labels from a template sheet (.csv/.xlsx) or sample JSON.

    Run datasets/anomaly_patch.py first: the labels read here are the ones the CoT labels will end in.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return [Sample(s.input, sample_label_word(s.label), s.instruction) for s in load_samples(path).samples]
    if detect_format(path) != SHEET:
        raise SampleFormatError(
            f"{path}: expected a template sheet (columns log, label) or sample JSON; for a "
            "loghub structured log, build template samples first"
        )
    return load_template_sheet(path).samples


def rectify_templates(templates: Sequence[Sample], patch_path: str | Path, match: str = EXACT) -> list[Sample]:
    """Templates with the expert patch applied in memory (same matching as datasets/anomaly_patch.py)."""
    new = rectified_labels(match_entries([s.input for s in templates], read_patch(patch_path), match))
    return [Sample(s.input, new.get(s.input, s.label), s.instruction) for s in templates]


def _index_templates(templates: Sequence[Sample]) -> dict[str, str]:
    """Template text -> rectified label word; a template listed twice with two labels is a data error."""
    labels: dict[str, str] = {}
    for row, sample in enumerate(templates):
        label = normalize_label(sample.label)
        if labels.get(sample.input, label) != label:
            raise SampleFormatError(
                f"template {sample.input!r} (item {row}) appears with both labels; "
                "rectify the template file so each template has one label"
            )
        labels[sample.input] = label
    return labels


def join_rationales(
    templates: Sequence[Sample], rationales: Sequence[Rationale], keep_conflicts: bool = False
) -> JoinResult:
    """Attach a checked rationale to each template; the CoT label always ends in the *rectified* label.

    Returns samples in template order. A rationale whose answer conflicts with the rectified label is
    excluded unless `keep_conflicts`, in which case its think text is kept, its answer rewritten to the
    rectified label, and the issue marked kept=True in the report. The first accepted rationale per
    template wins (later ones are reported as duplicates); a rejected one leaves room for a later one,
    so distilled rationales can stand in for rejected ones.
    """
    labels = _index_templates(templates)
    chosen: dict[str, str] = {}
    issues: list[RationaleIssue] = []
    for rationale in rationales:
        label = labels.get(rationale.input)
        if label is None:
            continue
        answer = extract_answer(rationale.reasoning)
        if rationale.input in chosen:
            issues.append(
                RationaleIssue(
                    rationale.input, DUPLICATE, "an accepted rationale for this template came earlier", label, answer
                )
            )
            continue
        problem = check_rationale(rationale.reasoning, label)
        kept = problem is None or (problem[0] == CONFLICT and keep_conflicts)
        if problem is not None:
            issues.append(RationaleIssue(rationale.input, problem[0], problem[1], label, answer, kept))
        if kept:
            chosen[rationale.input] = cot_label(extract_think(rationale.reasoning) or "", label)
    samples, missing, seen = [], [], set()
    for sample in templates:
        if sample.input in seen:
            continue
        seen.add(sample.input)
        target = chosen.get(sample.input)
        if target is not None:
            samples.append(Sample(sample.input, target, sample.instruction))
        else:
            missing.append(Sample(sample.input, labels[sample.input], sample.instruction))
    given = {r.input for r in rationales}
    unused = sorted(given - set(labels))
    logger.info(
        "joined %d rationales to %d templates: %d issues, %d templates without rationale",
        len(samples),
        len(labels),
        len(issues),
        len(missing),
    )
    return JoinResult(
        samples, issues, missing, unused, keep_conflicts, len(labels), len(rationales), len(given & set(labels))
    )


def issues_as_records(issues: Iterable[RationaleIssue]) -> list[dict]:
    """The issues as JSON-ready dicts (the report file lists them with their reason)."""
    return [
        {
            "input": i.input,
            "reason": i.reason,
            "detail": i.detail,
            "rectified_label": i.label,
            "rationale_answer": i.answer,
            "kept": i.kept,
        }
        for i in issues
    ]
