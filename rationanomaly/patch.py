"""Expert label rectification: apply an anomaly patch to a template sheet or a loghub structured log.

Patch file (reference layout): a JSON list of `{"instruction", "input", "rectified", "label"}` where
`input` is the template, `label` the label the experts found and `rectified` the label they set
(in the public patch, 221 entries go normal -> abnormal and 4 abnormal -> normal).

Matching is exact by default, as the reference script did. The public patch has one entry that
differs from its template by a comma and so silently matches nothing there; `match="normalized"`
compares templates with punctuation and whitespace removed (the `<*>` placeholders kept), but only
for entries without an exact match, and the report lists which entries matched only that way. A
normalized key shared by several templates is ambiguous and is applied to none (reported).

In a template sheet the `label` column is set to 0/1. In a structured log every line of a matched
EventTemplate gets `Label` `-` (normal) or RECTIFIED_TAG (abnormal) unless it already had that class,
so lines keep their original alert tag when the patch agrees with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rationanomaly.io import atomic_path, check_outputs, output_set, path_identity, write_json_atomic
from rationanomaly.labels import ABNORMAL, INSTRUCTION, NORMAL, LabelError, label_to_int, normalize_label
from rationanomaly.loaders import (
    NORMAL_LINE,
    SHEET,
    DataFormatError,
    detect_format,
    line_labels,
    load_structured_log,
    load_template_sheet,
)
from rationanomaly.samples import read_records

logger = logging.getLogger(__name__)

EXACT, NORMALIZED = "exact", "normalized"
MATCH_MODES = (EXACT, NORMALIZED)
RECTIFIED_TAG = "RECTIFIED"  # alert tag given to structured-log lines that the patch turns abnormal
PLACEHOLDER = "<*>"
_NON_WORD = re.compile(r"[^\w]+")


@dataclass(frozen=True)
class PatchEntry:
    """One expert correction: `input` template, the label found (`label`) and the label set (`rectified`)."""

    input: str
    rectified: str
    label: str
    instruction: str = INSTRUCTION


@dataclass(frozen=True)
class EntryMatch:
    """How one patch entry met the templates of one file: the template it hit (None if none) and how."""

    entry: PatchEntry
    template: str | None
    how: str | None  # EXACT, NORMALIZED, or None
    candidates: tuple[str, ...] = ()  # several templates sharing the normalized key (then nothing applied)


def read_patch(path: str | Path) -> list[PatchEntry]:
    """Read a patch file; labels are normalised to normal/abnormal, empty inputs rejected."""
    path = Path(path)
    entries = []
    for index, record in enumerate(read_records(path, ("input", "rectified"))):  # an empty patch is refused
        if not record["input"].strip():
            raise DataFormatError(f"{path}: item {index} has an empty 'input' template; remove the entry")
        try:
            rectified = normalize_label(record["rectified"])
            before = normalize_label(record.get("label", ABNORMAL if rectified == NORMAL else NORMAL))
        except LabelError as error:
            raise DataFormatError(f"{path}: item {index} (input {record['input']!r}): {error}") from error
        entries.append(PatchEntry(record["input"], rectified, before, record.get("instruction") or INSTRUCTION))
    return entries


def normalize_template(template: str) -> str:
    """Template with punctuation and whitespace runs collapsed to single spaces, `<*>` kept as a token.

    Case is kept: the known near-miss is a comma, and case can carry meaning in log text (`ERROR`, `Error`).
    """
    parts = (" ".join(_NON_WORD.sub(" ", part).split()) for part in template.split(PLACEHOLDER))
    return f" {PLACEHOLDER} ".join(parts).strip()


def match_entries(templates: Iterable[str], entries: Sequence[PatchEntry], match: str = EXACT) -> list[EntryMatch]:
    """Match each patch entry to a template: exactly, else (match="normalized") by normalized text."""
    if match not in MATCH_MODES:
        raise ValueError(f"match={match!r}; use one of {MATCH_MODES}")
    known = list(dict.fromkeys(templates))
    exact = set(known)
    by_key: dict[str, list[str]] = {}
    if match == NORMALIZED:
        for template in known:
            by_key.setdefault(normalize_template(template), []).append(template)
    results = []
    for entry in entries:
        if entry.input in exact:
            results.append(EntryMatch(entry, entry.input, EXACT))
            continue
        candidates = by_key.get(normalize_template(entry.input), []) if match == NORMALIZED else []
        if len(candidates) == 1:
            results.append(EntryMatch(entry, candidates[0], NORMALIZED))
        else:
            results.append(EntryMatch(entry, None, None, tuple(candidates)))
    return results


def rectified_labels(matches: Sequence[EntryMatch]) -> dict[str, str]:
    """template -> label the patch sets (a later entry for the same template wins, as a loop of updates would)."""
    return {m.template: m.entry.rectified for m in matches if m.template is not None}


def _template_labels(frame: pd.DataFrame, kind: str) -> dict[str, str]:
    """Current label word of each template; a structured-log template is abnormal if any of its lines is."""
    if kind == SHEET:
        pairs = zip(frame["log"], frame["label"], strict=True)
    else:
        pairs = zip(frame["EventTemplate"], line_labels(frame["Label"]), strict=True)
    labels: dict[str, str] = {}
    for template, value in pairs:
        word = ABNORMAL if int(value) else NORMAL
        labels[template] = ABNORMAL if labels.get(template) == ABNORMAL else word
    return labels


def apply_to_frame(frame: pd.DataFrame, kind: str, new_labels: dict[str, str]) -> pd.DataFrame:
    """A copy of `frame` with the patched labels written into its label column (layout otherwise unchanged)."""
    frame = frame.copy()
    if kind == SHEET:
        frame["label"] = [
            label_to_int(new_labels[t]) if t in new_labels else v
            for t, v in zip(frame["log"], frame["label"], strict=True)
        ]
        return frame
    labels = []
    for template, tag in zip(frame["EventTemplate"], frame["Label"], strict=True):
        target = new_labels.get(template)
        if target == ABNORMAL and tag.strip() == NORMAL_LINE:
            tag = RECTIFIED_TAG
        elif target == NORMAL and tag.strip() != NORMAL_LINE:
            tag = NORMAL_LINE
        labels.append(tag)
    frame["Label"] = labels
    return frame


def patch_report(before: dict[str, str], matches: Sequence[EntryMatch]) -> dict:
    """Counts and lists describing what a patch did to one file's templates (see module docstring)."""
    after = dict(before)
    after.update(rectified_labels(matches))
    changed = {t for t in before if before[t] != after[t]}
    return {
        "templates": len(before),
        "patch_entries": len(matches),
        "matched": sum(m.template is not None for m in matches),
        "matched_exact": sum(m.how == EXACT for m in matches),
        "matched_normalized_only": [
            {"input": m.entry.input, "template": m.template} for m in matches if m.how == NORMALIZED
        ],
        "changed": len(changed),
        "normal_to_abnormal": sum(after[t] == ABNORMAL for t in changed),
        "abnormal_to_normal": sum(after[t] == NORMAL for t in changed),
        # matched, but the file already had the rectified label (the patch's `label` disagrees with the file)
        "already_rectified": [m.template for m in matches if m.template is not None and m.template not in changed],
        "anomalies_before": sum(v == ABNORMAL for v in before.values()),
        "anomalies_after": sum(v == ABNORMAL for v in after.values()),
        "ambiguous": [{"input": m.entry.input, "templates": list(m.candidates)} for m in matches if m.candidates],
        "unmatched": [m.entry.input for m in matches if m.template is None],
    }


def write_like(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` atomically in the format its suffix names (.xlsx or .csv), without an index column."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise DataFormatError(f"{path}: unsupported output type {path.suffix!r}; use .csv or .xlsx")
    with atomic_path(path) as tmp:
        if suffix == ".xlsx":
            frame.to_excel(tmp, index=False, engine="openpyxl")
        else:
            frame.to_csv(tmp, index=False)
    return path


def patch_file(
    input_path: str | Path, output_path: str | Path, entries: Sequence[PatchEntry], match: str = EXACT
) -> dict:
    """Patch one template sheet or structured log, write it in the input's format and return its report."""
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.suffix.lower() != output_path.suffix.lower():
        raise DataFormatError(
            f"{output_path}: the output keeps the input's format; name it with {input_path.suffix!r} like {input_path}"
        )
    kind = detect_format(input_path)
    loaded = load_template_sheet(input_path) if kind == SHEET else load_structured_log(input_path)
    frame = loaded.frame
    template_column = "log" if kind == SHEET else "EventTemplate"
    matches = match_entries(frame[template_column], entries, match)
    before = _template_labels(frame, kind)
    patched = apply_to_frame(frame, kind, rectified_labels(matches))
    write_like(patched, output_path)
    report = {
        "input": str(input_path),
        "output": str(output_path),
        "format": kind,
        "match": match,
        "duplicates": len(loaded.duplicates),
        **patch_report(before, matches),
    }
    if kind != SHEET:
        old, new = line_labels(frame["Label"]), line_labels(patched["Label"])
        report.update(
            lines=len(frame),
            abnormal_lines_before=sum(old),
            abnormal_lines_after=sum(new),
            lines_changed=sum(a != b for a, b in zip(old, new, strict=True)),
        )
    logger.info(
        "%s: %d of %d patch entries matched, %d templates changed",
        input_path,
        report["matched"],
        len(entries),
        report["changed"],
    )
    return report


# Counts of templates (and lines) in each file: the combined report adds them up over the files.
_SUMMED = ("templates", "changed", "normal_to_abnormal", "abnormal_to_normal", "anomalies_before", "anomalies_after")


def combine_reports(entries: Sequence[PatchEntry], reports: Sequence[dict], match: str) -> dict:
    """Totals over several files, in two kinds (README, step 1):

    - patch entries, each counted once however many files it hits: `matched` (hit a template in any file),
      `matched_exact` (hit one exactly in some file), `matched_normalized_only` (hit only through
      normalisation, wherever it hit), `unmatched` (hit nothing anywhere);
    - templates, summed over the files: `templates`, `changed`, `normal_to_abnormal`, `abnormal_to_normal`,
      `anomalies_before/after`; `already_rectified` and `ambiguous` list each file's items with the file.
    """
    inputs = list(dict.fromkeys(e.input for e in entries))
    missed = [set(r["unmatched"]) for r in reports]
    by_normalization = [{m["input"]: m["template"] for m in r["matched_normalized_only"]} for r in reports]
    exact = {i for i in inputs if any(i not in m and i not in n for m, n in zip(missed, by_normalization, strict=True))}
    matched = {i for i in inputs if any(i not in m for m in missed)}
    return {
        "match": match,
        "patch_entries": len(entries),
        "matched": sum(e.input in matched for e in entries),
        "matched_exact": sum(e.input in exact for e in entries),
        **{key: sum(r[key] for r in reports) for key in _SUMMED},
        "matched_normalized_only": [
            {"input": i, "template": n[i], "file": r["input"]}
            for i in inputs
            if i in matched and i not in exact
            for r, n in zip(reports, by_normalization, strict=True)
            if i in n
        ],
        "already_rectified": [t for r in reports for t in r["already_rectified"]],
        "ambiguous": [{**item, "file": r["input"]} for r in reports for item in r["ambiguous"]],
        "unmatched": [e.input for e in entries if e.input not in matched],
        "files": list(reports),
    }


def patch_files(
    pairs: Sequence[tuple[str | Path, str | Path]],
    patch_path: str | Path,
    report_path: str | Path,
    match: str = EXACT,
    in_place: bool = False,
) -> dict:
    """Patch each (input, output) pair with one patch file and write the combined report JSON.

    Paths are checked before anything is read (no output twice, none an input unless `in_place`), and the
    patched files and the report are committed together: a failure leaves every earlier output as it was.
    """
    pairs = [(Path(src), Path(dst)) for src, dst in pairs]
    # in place: an output may be its own input, never another pair's input or the patch
    sources = [src for src, dst in pairs if not (in_place and path_identity(src) == path_identity(dst))]
    check_outputs([*(dst for _, dst in pairs), report_path], [patch_path, *sources])
    entries = read_patch(patch_path)
    with output_set():
        reports = [patch_file(src, dst, entries, match) for src, dst in pairs]
        report = {"patch": str(patch_path), **combine_reports(entries, reports, match)}
        write_json_atomic(report_path, report)
    return report
