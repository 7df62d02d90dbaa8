"""Loading the data users already have: LogPrompt template sheets, loghub structured logs, sample JSON.

Each loader returns a small frozen record: the pandas DataFrame as read (original columns and row order
kept, so a patched file can be written back in the same layout) plus the duplicates it found. Duplicates
are reported and logged, never merged: whether two rows of the same template are an error is the user's
call, and a silent merge would change counts that the paper reports.

- Template sheet (`.xlsx`/`.csv`): columns `log` (template) and `label`; `label` is returned as int 0/1
  whatever the file spelled (0/1/normal/abnormal).
- Structured log (loghub `*.log_structured.csv`): needs `LineId`, `Label`, `Content`, `EventTemplate`;
  every column is kept as text. `Label` is `-` for a normal line and an alert tag otherwise.
- Sample JSON (reference layout): a list of {instruction, input, label}; see `rationanomaly.samples`.

Errors name the file, the row as a spreadsheet shows it (header = row 1) and the fix.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rationanomaly.labels import ABNORMAL, NORMAL, LabelError, label_to_int, normalize_label
from rationanomaly.response import extract_answer
from rationanomaly.samples import Sample, read_samples

logger = logging.getLogger(__name__)

SHEET_COLUMNS = ("log", "label")
STRUCTURED_COLUMNS = ("LineId", "Label", "Content", "EventTemplate")
NORMAL_LINE = "-"  # loghub's Label for a line that raised no alert
SHEET_SUFFIXES = (".xlsx", ".csv")


class DataFormatError(ValueError):
    """An input file that does not have the layout its loader expects."""


@dataclass(frozen=True)
class Duplicate:
    """One key (template or LineId) that occurs on more than one row."""

    key: str
    rows: tuple[int, ...]  # spreadsheet rows (header = 1) or JSON item indices
    labels: tuple[str, ...]

    @property
    def conflicting(self) -> bool:
        """True when the repeated rows disagree on the label (then the duplicate is certainly a data error)."""
        return len(set(self.labels)) > 1


@dataclass(frozen=True, eq=False)
class LoadedTable:
    """A file read into a DataFrame (file order and columns kept) with the duplicated keys found in it."""

    path: Path
    frame: pd.DataFrame
    duplicates: tuple[Duplicate, ...] = field(default=())


class TemplateSheet(LoadedTable):
    """A LogPrompt template sheet: `frame` has `log` (str) and `label` (int 0/1) plus any other columns."""

    @property
    def anomalies(self) -> int:
        """Number of rows labelled abnormal."""
        return int(self.frame["label"].sum())

    @property
    def samples(self) -> list[Sample]:
        """The rows in file order as samples with word labels (NORMAL/ABNORMAL)."""
        pairs = zip(self.frame["log"], self.frame["label"], strict=True)
        return [Sample(template, ABNORMAL if label else NORMAL) for template, label in pairs]


class StructuredLog(LoadedTable):
    """A loghub structured log: `frame` holds every column as text; duplicates are repeated LineIds."""

    @property
    def line_labels(self) -> list[int]:
        """1 for a line with an alert tag, 0 for `-` (loghub's convention)."""
        return line_labels(self.frame["Label"])


@dataclass(frozen=True)
class SampleSet:
    """A reference-layout sample file with the inputs that occur more than once."""

    path: Path
    samples: tuple[Sample, ...]
    duplicates: tuple[Duplicate, ...] = field(default=())


def spreadsheet_row(index: int) -> int:
    """The row a spreadsheet shows for DataFrame row `index` (the header is row 1), used in messages."""
    return index + 2


def line_labels(labels: Iterable[str]) -> list[int]:
    """loghub `Label` column -> 0/1 per line (`-` is normal, any alert tag is abnormal)."""
    return [0 if str(value).strip() == NORMAL_LINE else 1 for value in labels]


def find_duplicates(keys: Sequence[str], labels: Sequence[str], rows: Sequence[int]) -> tuple[Duplicate, ...]:
    """Keys that occur more than once, in first-seen order, with their rows and labels.

    Positions are collected only for repeated keys, so a full-size log (millions of unique LineIds) costs a Counter.
    """
    repeated = {key for key, count in Counter(keys).items() if count > 1}
    seen: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        if key in repeated:
            seen.setdefault(key, []).append(position)
    return tuple(
        Duplicate(key, tuple(rows[p] for p in positions), tuple(labels[p] for p in positions))
        for key, positions in seen.items()
        if len(positions) > 1
    )


def _log_duplicates(path: Path, what: str, duplicates: Sequence[Duplicate]) -> None:
    if duplicates:
        conflicting = sum(d.conflicting for d in duplicates)
        logger.warning("%s: %d %s occur more than once (%d with conflicting labels), first %r on rows %s; "
                       "kept as they are", path, len(duplicates), what, conflicting, duplicates[0].key,
                       list(duplicates[0].rows))


def _require_columns(path: Path, frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; a {what} needs columns {list(required)} "
                              f"(found {list(frame.columns)})")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a .csv or .xlsx as text cells (no NaN guessing), so values round-trip unchanged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")  # Excel adds a BOM
    if suffix == ".xlsx":
        return pd.read_excel(path, dtype=object, engine="openpyxl").fillna("")
    raise DataFormatError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .xlsx")


def _cell_text(value: object) -> str:
    """Spreadsheet cell -> text; integral floats (Excel stores every number as one) lose their `.0`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def load_template_sheet(path: str | Path) -> TemplateSheet:
    """Load a LogPrompt template sheet; rejects missing columns, empty templates and unknown labels."""
    path = Path(path)
    frame = read_table(path)
    _require_columns(path, frame, SHEET_COLUMNS, "template sheet")
    templates, labels = [], []
    for index, (template, label) in enumerate(zip(frame["log"], frame["label"], strict=True)):
        row = spreadsheet_row(index)
        text = _cell_text(template)
        if not text:
            raise DataFormatError(f"{path}: row {row} has an empty 'log' template; fill it in or delete the row")
        try:
            labels.append(label_to_int(label))
        except LabelError as error:
            raise DataFormatError(f"{path}: row {row} (template {text!r}): {error}") from error
        # Text cells keep their exact characters (the reference patch matches exactly); numbers become text.
        templates.append(template if isinstance(template, str) else text)
    frame = frame.copy()
    frame["log"] = pd.Series(templates, index=frame.index, dtype=object)
    frame["label"] = pd.Series(labels, index=frame.index, dtype="int64")
    duplicates = find_duplicates(list(frame["log"]), [str(v) for v in labels],
                                 [spreadsheet_row(i) for i in range(len(frame))])
    _log_duplicates(path, "templates", duplicates)
    return TemplateSheet(path, frame, duplicates)


def load_structured_log(path: str | Path) -> StructuredLog:
    """Load a loghub structured CSV; rejects missing columns, non-integer LineIds, empty templates or labels."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise DataFormatError(f"{path}: a loghub structured log is a .csv file (got {path.suffix!r})")
    frame = read_table(path)
    _require_columns(path, frame, STRUCTURED_COLUMNS, "loghub structured log")
    for index, (line_id, label, template) in enumerate(zip(frame["LineId"], frame["Label"], frame["EventTemplate"],
                                                           strict=True)):
        row = spreadsheet_row(index)
        if not str(line_id).strip().isdigit():
            raise DataFormatError(f"{path}: row {row} has LineId {line_id!r}; LineId must be a positive integer")
        if not str(label).strip():
            raise DataFormatError(f"{path}: row {row} has an empty Label; use '-' for a normal line or an alert tag")
        if not str(template).strip():
            raise DataFormatError(f"{path}: row {row} has an empty EventTemplate; parse the log (e.g. with Drain) "
                                  "before loading it")
    duplicates = find_duplicates(list(frame["LineId"]), list(frame["Label"]),
                                 range(spreadsheet_row(0), spreadsheet_row(len(frame))))
    _log_duplicates(path, "LineIds", duplicates)
    return StructuredLog(path, frame, duplicates)


def sample_label_word(label: str) -> str:
    """The normal/abnormal word of a sample label: the label itself, or the <answer> of a CoT target."""
    answer = extract_answer(label)
    return normalize_label(label if answer is None else answer)


def load_samples(path: str | Path) -> SampleSet:
    """Load reference-layout sample JSON; every label must be a label word or a CoT target whose answer is one."""
    path = Path(path)
    samples = read_samples(path)
    words = []
    for index, sample in enumerate(samples):
        if not sample.input.strip():
            raise DataFormatError(f"{path}: item {index} has an empty 'input'; every sample needs a log template")
        try:
            words.append(sample_label_word(sample.label))
        except LabelError as error:
            raise DataFormatError(f"{path}: item {index} (input {sample.input!r}): {error}; a label is "
                                  "normal/abnormal or <think>..</think><answer>normal|abnormal</answer>") from error
    duplicates = find_duplicates([s.input for s in samples], words, list(range(len(samples))))
    _log_duplicates(path, "inputs", duplicates)
    return SampleSet(path, tuple(samples), duplicates)


SHEET, STRUCTURED = "sheet", "structured"


def detect_format(path: str | Path) -> str:
    """SHEET or STRUCTURED, from the file's header row; a clear error when it is neither."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".xlsx":
        columns = set(pd.read_excel(path, nrows=0, engine="openpyxl").columns)
    elif path.suffix.lower() == ".csv":
        columns = set(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns)
    else:
        raise DataFormatError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .xlsx")
    if set(SHEET_COLUMNS) <= columns:
        return SHEET
    if set(STRUCTURED_COLUMNS) <= columns:
        return STRUCTURED
    raise DataFormatError(f"{path}: neither a template sheet (columns {list(SHEET_COLUMNS)}) nor a loghub "
                          f"structured log (columns {list(STRUCTURED_COLUMNS)}); found {sorted(columns)}")
