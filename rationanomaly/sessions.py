"""Session windows: consecutive log lines grouped into fixed windows (a session is abnormal if any line is).

Building (`build_session_dataset`): a loghub structured log is cut into windows of N consecutive lines
(default 100, the paper's; `mode="reference"` reproduces the reference builder, which opened a new window
only once the LineId distance exceeded N and so made windows of N + 1 lines), split chronologically
(first `train_ratio` of the windows train), and the training part is subsampled with a seed towards an
anomaly ratio (reference default 0.15). Output: train/test session files, the unique templates of each side as
reference-layout sample files (`template_samples`: a test set that gives session-level evaluation a prediction for
every line) and `data_desc.json`.

Session JSON file: a list of objects
`{"session_id": int, "first_line": int, "templates": [str, ...], "line_labels": [0|1, ...], "label": str}`
where `templates[i]` is the EventTemplate of the i-th line of the window and `first_line` its LineId.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import check_outputs, output_set, write_json_atomic
from rationanomaly.labels import ABNORMAL, NORMAL, normalize_label
from rationanomaly.samples import Sample, SampleFormatError, read_records, write_samples

logger = logging.getLogger(__name__)

FIXED, REFERENCE = "fixed", "reference"
WINDOW_MODES = (FIXED, REFERENCE)
DEFAULT_WINDOW = 100  # paper: fixed windows of 100 consecutive log lines
DEFAULT_TRAIN_RATIO = 0.8  # ours: the paper gives no session split ratio
DEFAULT_TRAIN_ANOMALY_RATIO = 0.15  # reference session builder's default
TRAIN_FILE, TEST_FILE, DESC_FILE = "train_sessions.json", "test_sessions.json", "data_desc.json"
TRAIN_TEMPLATES_FILE, TEST_TEMPLATES_FILE = "train_templates.json", "test_templates.json"


@dataclass(frozen=True)
class Session:
    """One window of consecutive log lines."""

    session_id: int
    first_line: int
    templates: tuple[str, ...]
    line_labels: tuple[int, ...]

    @property
    def label(self) -> str:
        """ABNORMAL if any line of the window is abnormal, else NORMAL (paper's session rule)."""
        return ABNORMAL if any(self.line_labels) else NORMAL


@dataclass(frozen=True)
class TemplateSamples:
    """The unique templates of some log lines as NORMAL/ABNORMAL samples, with those whose lines disagree."""

    samples: tuple[Sample, ...]
    mixed: tuple[str, ...]  # templates with both normal and abnormal lines (labelled ABNORMAL)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The template texts, in first-occurrence order."""
        return tuple(s.input for s in self.samples)

    @property
    def abnormal(self) -> int:
        """Number of templates labelled abnormal."""
        return sum(s.label == ABNORMAL for s in self.samples)

    def counts(self) -> dict:
        """Templates, abnormal templates and mixed-label templates, as recorded in the metadata files."""
        return {"templates": len(self.samples), "abnormal": self.abnormal, "mixed_labels": len(self.mixed)}


def template_samples(templates: Sequence[str], line_labels: Sequence[int]) -> TemplateSamples:
    """Unique templates in first-occurrence order, ABNORMAL when any of their lines is abnormal.

    Why "any": it is the session rule applied to a template's lines, so a classifier that gets every template
    right finds every abnormal session (each holds an abnormal line, whose template is then abnormal); and the
    paper labels templates, not lines: a template that ever raised an alert is an anomaly pattern. Templates
    whose lines disagree are returned in `mixed`: their label overrides their normal lines, so even a perfect
    template classifier calls a session abnormal that holds such a line and no alert.
    """
    if len(templates) != len(line_labels):
        raise ValueError(f"templates ({len(templates)}) and line_labels ({len(line_labels)}) must be equally long")
    seen: dict[str, set[int]] = {}
    for template, label in zip(templates, line_labels, strict=True):
        seen.setdefault(template, set()).add(int(label))
    return TemplateSamples(
        tuple(Sample(t, ABNORMAL if any(labels) else NORMAL) for t, labels in seen.items()),
        tuple(t for t, labels in seen.items() if len(labels) > 1),
    )


def warn_mixed(source: str | Path, templates: TemplateSamples) -> None:
    """Log the templates whose lines disagree: their abnormal label is a choice a reader should know about."""
    if templates.mixed:
        logger.warning(
            "%s: %d of %d templates have both normal and abnormal lines (labelled abnormal), first %r",
            source,
            len(templates.mixed),
            len(templates.samples),
            templates.mixed[0],
        )


def session_template_samples(sessions: Iterable[Session]) -> TemplateSamples:
    """`template_samples` over every line of the sessions, in session order."""
    sessions = list(sessions)
    return template_samples([t for s in sessions for t in s.templates], [v for s in sessions for v in s.line_labels])


def session_to_dict(session: Session) -> dict:
    """JSON-ready form of a session, with its derived label spelled out for readers of the file."""
    return {
        "session_id": session.session_id,
        "first_line": session.first_line,
        "templates": list(session.templates),
        "line_labels": list(session.line_labels),
        "label": session.label,
    }


def write_sessions(path: str | Path, sessions: Iterable[Session]) -> Path:
    """Write sessions atomically as a JSON list."""
    return write_json_atomic(path, [session_to_dict(s) for s in sessions], indent=1)


def read_sessions(path: str | Path) -> list[Session]:
    """Read a session JSON file, checking that templates and line labels agree with the stored label.

    An empty list is refused like any empty input (samples.read_records).
    """
    records = read_records(path, ("label",))
    sessions = []
    for index, record in enumerate(records):
        templates, line_labels = record.get("templates"), record.get("line_labels")
        if not isinstance(templates, list) or not isinstance(line_labels, list) or len(templates) != len(line_labels):
            raise SampleFormatError(f"{path}: session {index} needs equally long 'templates' and 'line_labels' lists")
        try:
            session = Session(
                int(record.get("session_id", index)),
                int(record.get("first_line", 0)),
                tuple(str(t) for t in templates),
                tuple(int(v) for v in line_labels),
            )
        except (TypeError, ValueError) as error:
            raise SampleFormatError(
                f"{path}: session {index} needs integer 'session_id', 'first_line' and "
                f"'line_labels' (0/1) ({error}); rebuild it with datasets/session_builder.py"
            ) from error
        if normalize_label(record["label"]) != session.label:
            raise SampleFormatError(
                f"{path}: session {index} is labelled {record['label']!r} but its lines say {session.label!r}"
            )
        sessions.append(session)
    return sessions


def window_bounds(
    line_ids: Sequence[int], window: int = DEFAULT_WINDOW, mode: str = FIXED, keep_partial: bool = False
) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the windows over a log whose rows carry `line_ids` (in file order).

    FIXED: `window` consecutive rows. REFERENCE: the reference builder's rule, a new window once
    LineId - first LineId of the window exceeds `window`, so a window of consecutive lines holds
    window + 1 of them (101 for the default). A last window that is not full is dropped unless
    `keep_partial` (a short window would dilute the per-window anomaly rate).
    """
    if window < 1:
        raise ValueError(f"window={window}; a window holds at least one line")
    if mode not in WINDOW_MODES:
        raise ValueError(f"mode={mode!r}; use one of {WINDOW_MODES}")
    bounds, start = [], 0
    for row in range(1, len(line_ids)):
        if (row - start >= window) if mode == FIXED else (line_ids[row] - line_ids[start] > window):
            bounds.append((start, row))
            start = row
    if start < len(line_ids):
        last_full = len(line_ids) - start >= window if mode == FIXED else line_ids[-1] - line_ids[start] >= window
        if last_full or keep_partial:
            bounds.append((start, len(line_ids)))
    return bounds


def build_sessions(
    line_ids: Sequence[int],
    templates: Sequence[str],
    labels: Sequence[int],
    window: int = DEFAULT_WINDOW,
    mode: str = FIXED,
    keep_partial: bool = False,
) -> list[Session]:
    """Group consecutive log lines (LineId, EventTemplate, 0/1 label) into numbered session windows."""
    if not len(line_ids) == len(templates) == len(labels):
        raise ValueError(
            f"line_ids ({len(line_ids)}), templates ({len(templates)}) and labels ({len(labels)}) must be equally long"
        )
    return [
        Session(index, int(line_ids[start]), tuple(templates[start:stop]), tuple(int(v) for v in labels[start:stop]))
        for index, (start, stop) in enumerate(window_bounds(line_ids, window, mode, keep_partial))
    ]


def split_chronological(
    sessions: Sequence[Session],
    train_ratio: float = DEFAULT_TRAIN_RATIO,
) -> tuple[list[Session], list[Session]]:
    """The first floor(len * train_ratio) sessions train, the rest test: no future leaks into training."""
    if not 0.0 <= train_ratio <= 1.0:
        raise ValueError(f"train_ratio={train_ratio}; use a fraction between 0 and 1")
    cut = int(len(sessions) * train_ratio)
    return list(sessions[:cut]), list(sessions[cut:])


def anomaly_count(sessions: Iterable[Session]) -> int:
    """Number of abnormal sessions."""
    return sum(s.label == ABNORMAL for s in sessions)


def sample_anomaly_ratio(sessions: Sequence[Session], ratio: float, seed: int) -> list[Session]:
    """A seeded subset whose abnormal share is as close to `ratio` as whole sessions allow, in original order.

    Only the over-represented class is subsampled, so nothing of the scarcer class is thrown away.
    With a single class there is nothing to balance and the sessions come back unchanged.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio={ratio}; the training anomaly ratio is a fraction strictly between 0 and 1")
    abnormal = [s for s in sessions if s.label == ABNORMAL]
    normal = [s for s in sessions if s.label != ABNORMAL]
    if not abnormal or not normal:
        return list(sessions)
    rng = random.Random(seed)
    if len(abnormal) / len(sessions) > ratio:
        keep = max(1, round(ratio * len(normal) / (1.0 - ratio)))
        abnormal = rng.sample(abnormal, min(keep, len(abnormal)))
    else:
        keep = max(1, round((1.0 - ratio) * len(abnormal) / ratio))
        normal = rng.sample(normal, min(keep, len(normal)))
    return sorted(abnormal + normal, key=lambda s: s.session_id)


def _counts(sessions: Sequence[Session]) -> dict:
    abnormal = anomaly_count(sessions)
    return {
        "sessions": len(sessions),
        "abnormal": abnormal,
        "anomaly_ratio": round(abnormal / len(sessions), 4) if sessions else None,
    }


OUTPUT_FILES = (TRAIN_FILE, TEST_FILE, TRAIN_TEMPLATES_FILE, TEST_TEMPLATES_FILE, DESC_FILE)


def build_session_dataset(
    input_path: str | Path,
    output_dir: str | Path,
    window: int = DEFAULT_WINDOW,
    mode: str = FIXED,
    keep_partial: bool = False,
    train_ratio: float = DEFAULT_TRAIN_RATIO,
    train_anomaly_ratio: float | None = DEFAULT_TRAIN_ANOMALY_RATIO,
    seed: int = 0,
    unsorted: str = "refuse",
) -> dict:
    """Structured log -> train/test session JSON, their unique templates as sample JSON (test set for session-level
    evaluation) and `data_desc.json` (parameters, seed, input, counts).

    `train_anomaly_ratio=None` keeps every training session. A log whose LineIds go backwards is refused, or
    sorted with `unsorted="sort"` (loaders.in_line_order). The five files are written as one set: all of this
    run, or (on any failure) all of the previous one. Returns the description it wrote.
    """
    from rationanomaly.loaders import in_line_order, load_structured_log  # pandas; keep this module light

    output_dir = Path(output_dir)
    check_outputs([output_dir / name for name in OUTPUT_FILES], [input_path])
    log = in_line_order(load_structured_log(input_path), unsorted)
    frame, labels = log.frame, log.line_labels
    sessions = build_sessions(
        [int(v) for v in frame["LineId"]], list(frame["EventTemplate"]), labels, window, mode, keep_partial
    )
    train_all, test = split_chronological(sessions, train_ratio)
    train = train_all if train_anomaly_ratio is None else sample_anomaly_ratio(train_all, train_anomaly_ratio, seed)
    if not sessions:
        raise ValueError(
            f"{input_path}: {len(frame)} lines make no complete window of {window}; pass a smaller "
            "--window or --keep_partial"
        )
    templates = {
        "all": session_template_samples(sessions),
        "train": session_template_samples(train),
        "test": session_template_samples(test),
    }
    warn_mixed(input_path, templates["all"])
    used_lines = sum(len(s.templates) for s in sessions)
    desc = {
        "input": str(input_path),
        "lines": len(frame),
        "abnormal_lines": sum(labels),
        "duplicate_line_ids": len(log.duplicates),
        "parameters": {
            "window": window,
            "mode": mode,
            "keep_partial": keep_partial,
            "train_ratio": train_ratio,
            "train_anomaly_ratio": train_anomaly_ratio,
            "unsorted": unsorted,
        },
        "seed": seed,
        "dropped_lines": len(frame) - used_lines,
        "all": _counts(sessions),
        "train_before_sampling": _counts(train_all),
        "train": _counts(train),
        "test": _counts(test),
        "templates": {
            **{part: t.counts() for part, t in templates.items()},
            "test_in_train": len(set(templates["test"].inputs) & set(templates["train"].inputs)),
        },
        "outputs": {
            "train": str(output_dir / TRAIN_FILE),
            "test": str(output_dir / TEST_FILE),
            "train_templates": str(output_dir / TRAIN_TEMPLATES_FILE),
            "test_templates": str(output_dir / TEST_TEMPLATES_FILE),
        },
    }
    with output_set():
        write_sessions(output_dir / TRAIN_FILE, train)
        write_sessions(output_dir / TEST_FILE, test)
        write_samples(output_dir / TRAIN_TEMPLATES_FILE, templates["train"].samples)
        write_samples(output_dir / TEST_TEMPLATES_FILE, templates["test"].samples)
        write_json_atomic(output_dir / DESC_FILE, desc)
    logger.info("%s: %d sessions (%d abnormal) -> %s", input_path, len(sessions), desc["all"]["abnormal"], output_dir)
    return desc
