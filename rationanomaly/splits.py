"""Template-level train/test split of one dataset, with a target training anomaly rate.

The paper trains on 2,000 template entries at a 15% anomaly rate, split chronologically, and excludes
logs used in training from the session-level test sets. Steps here:

1. order the templates: CHRONOLOGICAL (file order, the paper's) or RANDOM (seeded shuffle);
2. the first `train_ratio` of that order is the training pool, the rest the test set (never sampled);
3. from the pool take the first abnormal and normal templates (in that order) so that the training set
   has `anomaly_rate` abnormal entries and at most `train_size` entries. When the pool holds too few
   anomalies for both targets, the *rate* is kept and the size shrinks; the metadata says what was
   achievable. Pool templates not taken are reported as `unused` (they go to neither side, so the
   test set stays strictly later than training in chronological mode).

The input is a template sheet (one labelled row per template) or a loghub structured log, whose lines become
templates through `rationanomaly.sessions.template_samples` (abnormal if any line is), as the session
builder's test templates do.

`exclude_training_templates` drops test sessions that contain a training template (exact match by
default, as the templates are the same strings when both come from the same parser).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import check_name, check_outputs, output_set, write_json_atomic
from rationanomaly.labels import ABNORMAL, NORMAL
from rationanomaly.loaders import (
    REFUSE,
    SHEET,
    STRUCTURED,
    detect_format,
    in_line_order,
    load_structured_log,
    load_template_sheet,
)
from rationanomaly.patch import EXACT, MATCH_MODES, NORMALIZED, normalize_template
from rationanomaly.samples import Sample, write_samples
from rationanomaly.sessions import Session, read_sessions, template_samples, warn_mixed, write_sessions

logger = logging.getLogger(__name__)

CHRONOLOGICAL, RANDOM = "chronological", "random"
ORDERS = (CHRONOLOGICAL, RANDOM)
DEFAULT_TRAIN_SIZE = 2000  # paper: 2,000-entry template-level training set
DEFAULT_ANOMALY_RATE = 0.15  # paper: 15% anomaly rate in training
DEFAULT_TRAIN_RATIO = 0.8  # ours: the paper does not give the template split ratio


@dataclass(frozen=True)
class Template:
    """One labelled template (label is NORMAL or ABNORMAL)."""

    text: str
    label: str


@dataclass(frozen=True)
class TemplateSplit:
    """Result of `split_templates`: training and test templates and the pool templates left unused."""

    train: tuple[Template, ...]
    test: tuple[Template, ...]
    unused: tuple[Template, ...]


def order_templates(templates: Sequence[Template], order: str = CHRONOLOGICAL, seed: int = 0) -> list[Template]:
    """File order (CHRONOLOGICAL) or a seeded shuffle (RANDOM)."""
    if order not in ORDERS:
        raise ValueError(f"order={order!r}; use one of {ORDERS}")
    ordered = list(templates)
    if order == RANDOM:
        random.Random(seed).shuffle(ordered)
    return ordered


def training_counts(abnormal: int, normal: int, train_size: int, anomaly_rate: float) -> tuple[int, int]:
    """(abnormal, normal) entries to take from a pool holding `abnormal`/`normal`, rate first, then size.

    Aims at round(rate * size) anomalies; if the pool has fewer, or too few normals, the other class is
    cut back so that the rate holds with a smaller set.
    """
    if not 0.0 < anomaly_rate < 1.0:
        raise ValueError(f"anomaly_rate={anomaly_rate}; use a fraction strictly between 0 and 1")
    if train_size < 1:
        raise ValueError(f"train_size={train_size}; the training set needs at least one entry")
    size = min(train_size, abnormal + normal)
    if abnormal == 0 or normal == 0:  # one class is missing: no rate can be met, keep what exists
        return min(abnormal, size), min(normal, size)
    target_abnormal = max(1, round(anomaly_rate * size))  # never drop every anomaly
    take_abnormal = min(abnormal, target_abnormal)
    take_normal = min(normal, size - target_abnormal)
    if take_abnormal < target_abnormal or take_normal < size - target_abnormal:
        normal_for_rate = max(1, round(take_abnormal * (1.0 - anomaly_rate) / anomaly_rate))
        if normal_for_rate <= take_normal:
            take_normal = normal_for_rate
        else:
            take_abnormal = min(take_abnormal, max(1, round(take_normal * anomaly_rate / (1.0 - anomaly_rate))))
    return take_abnormal, take_normal


def split_templates(
    templates: Sequence[Template],
    train_ratio: float = DEFAULT_TRAIN_RATIO,
    train_size: int = DEFAULT_TRAIN_SIZE,
    anomaly_rate: float = DEFAULT_ANOMALY_RATE,
    order: str = CHRONOLOGICAL,
    seed: int = 0,
) -> TemplateSplit:
    """Split labelled templates into train (at the target rate), test (everything after the pool) and unused."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio={train_ratio}; use a fraction strictly between 0 and 1")
    ordered = order_templates(templates, order, seed)
    cut = int(len(ordered) * train_ratio)
    pool, test = ordered[:cut], ordered[cut:]
    n_abnormal, n_normal = training_counts(
        sum(t.label == ABNORMAL for t in pool), sum(t.label != ABNORMAL for t in pool), train_size, anomaly_rate
    )
    train, unused, taken = [], [], {ABNORMAL: 0, NORMAL: 0}
    limits = {ABNORMAL: n_abnormal, NORMAL: n_normal}
    for template in pool:
        if taken[template.label] < limits[template.label]:
            taken[template.label] += 1
            train.append(template)
        else:
            unused.append(template)
    return TemplateSplit(tuple(train), tuple(test), tuple(unused))


def _template_key(match: str):
    if match not in MATCH_MODES:
        raise ValueError(f"match={match!r}; use one of {MATCH_MODES}")
    return normalize_template if match == NORMALIZED else str


def exclude_training_templates(
    sessions: Iterable[Session], train_templates: Iterable[str], match: str = EXACT
) -> tuple[list[Session], list[Session]]:
    """(kept, dropped): a session is dropped if any of its lines has a training template (paper's rule)."""
    key = _template_key(match)
    seen = {key(t) for t in train_templates}
    kept, dropped = [], []
    for session in sessions:
        (dropped if any(key(t) in seen for t in session.templates) else kept).append(session)
    return kept, dropped


def _rate(templates: Sequence[Template]) -> float | None:
    return round(sum(t.label == ABNORMAL for t in templates) / len(templates), 4) if templates else None


def _describe(templates: Sequence[Template]) -> dict:
    return {
        "entries": len(templates),
        "abnormal": sum(t.label == ABNORMAL for t in templates),
        "anomaly_rate": _rate(templates),
    }


def achievability_note(split: TemplateSplit, train_size: int, anomaly_rate: float) -> str:
    """One sentence on whether the targets were met, and why not (too few anomalies or templates)."""
    achieved = _rate(split.train)
    if len(split.train) >= train_size and achieved is not None and abs(achieved - anomaly_rate) < 0.005:
        return f"targets met: {len(split.train)} entries at {achieved:.2%} abnormal"
    pool_abnormal = sum(t.label == ABNORMAL for t in split.train + split.unused)
    return (
        f"target {train_size} entries at {anomaly_rate:.0%} not achievable: the training pool has "
        f"{len(split.train) + len(split.unused)} templates, {pool_abnormal} abnormal; took {len(split.train)} "
        f"at {achieved if achieved is None else f'{achieved:.2%}'} abnormal"
    )


def read_templates(path: str | Path, unsorted: str = REFUSE) -> tuple[list[Template], dict]:
    """Labelled templates (file order) and what the input held, from a template sheet or a loghub structured log.

    The format comes from the header row, so a structured log (lines, not templates) needs no extra flag. A
    structured log's first occurrences give the chronological order, so LineIds going backwards are refused
    (or sorted with `unsorted="sort"`).
    """
    if detect_format(path) == SHEET:
        sheet = load_template_sheet(path)
        return (
            [Template(s.input, s.label) for s in sheet.samples],
            {"format": SHEET, "duplicates": len(sheet.duplicates)},
        )
    log = in_line_order(load_structured_log(path), unsorted)
    labels = log.line_labels
    derived = template_samples(list(log.frame["EventTemplate"]), labels)
    warn_mixed(path, derived)
    return (
        [Template(s.input, s.label) for s in derived.samples],
        {
            "format": STRUCTURED,
            "lines": len(log.frame),
            "abnormal_lines": sum(labels),
            "duplicate_line_ids": len(log.duplicates),
            "mixed_labels": len(derived.mixed),
        },
    )


def build_template_split(
    input_path: str | Path,
    output_dir: str | Path,
    name: str,
    train_ratio: float = DEFAULT_TRAIN_RATIO,
    train_size: int = DEFAULT_TRAIN_SIZE,
    anomaly_rate: float = DEFAULT_ANOMALY_RATE,
    order: str = CHRONOLOGICAL,
    seed: int = 0,
    sessions_path: str | Path | None = None,
    match: str = EXACT,
    unsorted: str = REFUSE,
) -> dict:
    """Template sheet or structured log -> `{name}_train.json`, `{name}_test.json` (reference layout, normal/abnormal),
    optionally `{name}_test_sessions.json` without sessions that contain a training template, and
    `{name}_split.json` (parameters, seed, inputs, counts, achievability). Returns that metadata.

    `name` must be a plain name (io.check_name). The files are written as one set (io.output_set).
    """
    output_dir = Path(output_dir)
    outputs = {"train": output_dir / f"{check_name(name)}_train.json", "test": output_dir / f"{name}_test.json"}
    if sessions_path is not None:
        outputs["test_sessions"] = output_dir / f"{name}_test_sessions.json"
    meta_path = output_dir / f"{name}_split.json"
    check_outputs([*outputs.values(), meta_path], [input_path, sessions_path])
    templates, source = read_templates(input_path, unsorted)
    split = split_templates(templates, train_ratio, train_size, anomaly_rate, order, seed)
    if not split.train or not split.test:
        side = "training" if not split.train else "test"
        raise ValueError(
            f"{input_path}: {len(templates)} templates leave the {side} side empty at --train_ratio "
            f"{train_ratio}; a split needs templates on both sides"
        )
    meta = {
        "dataset": name,
        "input": str(input_path),
        "templates": len(templates),
        **source,
        "parameters": {
            "order": order,
            "train_ratio": train_ratio,
            "train_size": train_size,
            "anomaly_rate": anomaly_rate,
            "match": match,
            "unsorted": unsorted,
        },
        "seed": seed,
        "train": _describe(split.train),
        "test": _describe(split.test),
        "unused": _describe(split.unused),
        "note": achievability_note(split, train_size, anomaly_rate),
    }
    kept: list[Session] = []
    if sessions_path is not None:
        kept, dropped = exclude_training_templates(read_sessions(sessions_path), (t.text for t in split.train), match)
        meta["sessions"] = {
            "input": str(sessions_path),
            "kept": len(kept),
            "dropped": len(dropped),
            "kept_abnormal": sum(s.label == ABNORMAL for s in kept),
            "dropped_abnormal": sum(s.label == ABNORMAL for s in dropped),
        }
        if not kept:  # a secondary output may be empty (it is written and said); evaluation refuses it
            logger.warning(
                "%s: every one of its %d sessions holds a training template, so the session test set "
                "is empty; split with a smaller --train_ratio for session-level evaluation",
                sessions_path,
                len(dropped),
            )
    meta["outputs"] = {key: str(path) for key, path in outputs.items()}
    with output_set():
        write_samples(outputs["train"], [Sample(t.text, t.label) for t in split.train])
        write_samples(outputs["test"], [Sample(t.text, t.label) for t in split.test])
        if sessions_path is not None:
            write_sessions(outputs["test_sessions"], kept)
        write_json_atomic(meta_path, meta)
    logger.info("%s: %s", name, meta["note"])
    return meta
