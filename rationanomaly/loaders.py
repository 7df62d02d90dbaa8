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

import csv
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from rationanomaly.io import check_input_file, decode_error
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
        logger.warning(
            "%s: %d %s occur more than once (%d with conflicting labels), first %r on rows %s; kept as they are",
            path,
            len(duplicates),
            what,
            conflicting,
            duplicates[0].key,
            list(duplicates[0].rows),
        )


def _require_columns(path: Path, frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; a {what} needs columns {list(required)} "
            f"(found {list(frame.columns)})"
        )


def check_csv_rows(path: Path) -> list[str]:
    """check_csv_rows_once, remembered per file version: detecting a format and then loading reads it once."""
    info = path.stat()
    return list(_checked_header(str(path), info.st_mtime_ns, info.st_size))


@lru_cache(maxsize=32)
def _checked_header(name: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    """The header of an unchanged file (`mtime_ns`, `size` are only the cache key)."""
    return tuple(check_csv_rows_once(Path(name)))


def check_csv_rows_once(path: Path) -> list[str]:
    """The header of a CSV after checking every row has exactly as many fields as it.

    pandas reads a row with one extra field by turning the first column into the index (every template
    silently shifted by one column) and pads a short row with empty cells, so the field counts are checked
    with the csv module first: one streaming pass, about a second per million lines. Blank lines are skipped
    as pandas skips them. Errors name the file and line and say how to fix it.
    """
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # a long template is data, not an attack; pandas has no limit either
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if header is None:
                raise DataFormatError(f"{path}: the file is empty; it needs a header row and at least one data row")
            start = reader.line_num + 1
            for row in reader:
                if row and len(row) != len(header):
                    raise DataFormatError(
                        f"{path}: line {start} has {len(row)} field{'s' * (len(row) != 1)} but the header has {len(header)} "
                        f'({", ".join(header)}); quote fields that contain commas ("a, b") or fix the row'
                    )
                start = reader.line_num + 1
    except UnicodeDecodeError as error:
        raise decode_error(path, error) from error
    except csv.Error as error:
        raise DataFormatError(
            f"{path}: line {start}: not valid CSV ({error}); a quoted field may never be "
            "closed: check the quotes on that line"
        ) from error
    finally:
        csv.field_size_limit(limit)
    _check_header(path, header)
    return header


def _check_header(path: Path, columns: Sequence[object]) -> None:
    """Every column named, each name once: the header is the contract the loaders read by."""
    names = [str(c).strip() for c in columns]
    if any(not name for name in names):
        raise DataFormatError(
            f"{path}: header column {names.index('') + 1} has no name (header: {names}); name it or delete the column"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataFormatError(f"{path}: header names {repeated} more than once; keep one column per name")


def _read_xlsx(path: Path, **options) -> pd.DataFrame:
    """pd.read_excel with a one-line error for a file that is not a readable workbook (truncated, renamed).

    A broken workbook fails deep inside openpyxl with whatever its zip or XML reader raises (BadZipFile,
    KeyError, an XML ParseError, EOFError, ...): every one of them means "not a readable .xlsx".
    """
    try:
        return pd.read_excel(path, engine="openpyxl", **options)
    except (PermissionError, MemoryError):
        raise
    except Exception as error:
        raise DataFormatError(
            f"{path}: not a readable .xlsx workbook ({' '.join(str(error).split())}); re-save "
            "it from Excel or LibreOffice, or export it as .csv"
        ) from error


def _xlsx_frame(path: Path) -> pd.DataFrame:
    """A workbook's first sheet as text cells; values under no header are an error, empty unnamed columns go."""
    frame = _read_xlsx(path, dtype=object).fillna("")
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    for column in unnamed:
        filled = [i for i, v in enumerate(frame[column]) if str(v).strip()]
        if filled:
            raise DataFormatError(
                f"{path}: row {spreadsheet_row(filled[0])} has a value in column "
                f"{frame.columns.get_loc(column) + 1}, which has no header; name the column or "
                "move the value into a named one"
            )
    return frame.drop(columns=unnamed)


def read_header(path: str | Path) -> list[str]:
    """The column names of a .csv or .xlsx (rows checked for a CSV), with the same errors as read_table."""
    path = check_input_file(path, "check the path (the datasets/ scripts say which files they read)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return check_csv_rows(path)
    if suffix == ".xlsx":
        return [str(c) for c in _read_xlsx(path, nrows=0).columns]
    raise DataFormatError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .xlsx")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a .csv or .xlsx as text cells (no NaN guessing), so values round-trip unchanged.

    A CSV is checked row by row first (`check_csv_rows`); a header-only file gives an empty frame (the
    loaders refuse it with the file named).
    """
    path = check_input_file(path, "check the path (the datasets/ scripts say which files they read)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        check_csv_rows(path)
        try:
            # index_col=False: never promote the first column to the index (rows were checked above)
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", index_col=False)
        except pd.errors.ParserError as error:
            raise DataFormatError(
                f"{path}: not valid CSV ({' '.join(str(error).split())}); check the quotes and "
                "field counts on that line"
            ) from error
    if suffix == ".xlsx":
        return _xlsx_frame(path)
    raise DataFormatError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .xlsx")


def _require_rows(path: Path, frame: pd.DataFrame, what: str) -> None:
    """A file with a header and no rows is refused: every later step would run on nothing and say so only then."""
    if frame.empty:
        raise DataFormatError(f"{path}: no rows below the header; a {what} needs at least one row")


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
    _require_rows(path, frame, "template sheet")
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
    duplicates = find_duplicates(
        list(frame["log"]), [str(v) for v in labels], [spreadsheet_row(i) for i in range(len(frame))]
    )
    _log_duplicates(path, "templates", duplicates)
    return TemplateSheet(path, frame, duplicates)


def load_structured_log(path: str | Path) -> StructuredLog:
    """Load a loghub structured CSV; rejects missing columns, non-integer LineIds, empty templates or labels."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise DataFormatError(f"{path}: a loghub structured log is a .csv file (got {path.suffix!r})")
    frame = read_table(path)
    _require_columns(path, frame, STRUCTURED_COLUMNS, "loghub structured log")
    _require_rows(path, frame, "loghub structured log")
    for index, (line_id, label, template) in enumerate(
        zip(frame["LineId"], frame["Label"], frame["EventTemplate"], strict=True)
    ):
        row = spreadsheet_row(index)
        if not str(line_id).strip().isdigit():
            raise DataFormatError(f"{path}: row {row} has LineId {line_id!r}; LineId must be a positive integer")
        if not str(label).strip():
            raise DataFormatError(f"{path}: row {row} has an empty Label; use '-' for a normal line or an alert tag")
        if not str(template).strip():
            raise DataFormatError(
                f"{path}: row {row} has an empty EventTemplate; parse the log (e.g. with Drain) before loading it"
            )
    duplicates = find_duplicates(
        list(frame["LineId"]), list(frame["Label"]), range(spreadsheet_row(0), spreadsheet_row(len(frame)))
    )
    _log_duplicates(path, "LineIds", duplicates)
    return StructuredLog(path, frame, duplicates)


REFUSE, SORT = "refuse", "sort"
LINE_ORDERS = (REFUSE, SORT)  # what to do with a structured log whose LineIds go backwards


def first_out_of_order(line_ids: Sequence[int]) -> int | None:
    """Position of the first LineId smaller than the one before it; None when the log is in time order.

    Equal neighbours are not out of order: repeated LineIds are reported as duplicates instead.
    """
    for position in range(1, len(line_ids)):
        if line_ids[position] < line_ids[position - 1]:
            return position
    return None


def in_line_order(log: StructuredLog, policy: str = REFUSE) -> StructuredLog:
    """The log in LineId order: as it is when already ordered, else refused (REFUSE) or stably sorted (SORT).

    Sessions and the chronological split take the file order as time order, so a reversed or shuffled log
    would silently make the earliest lines the "later" test set. Refusing is the default; sorting is an
    explicit choice, logged as a warning.
    """
    if policy not in LINE_ORDERS:
        raise ValueError(f"unsorted policy {policy!r}; use one of {LINE_ORDERS}")
    line_ids = [int(v) for v in log.frame["LineId"]]
    position = first_out_of_order(line_ids)
    if position is None:
        return log
    if policy == REFUSE:
        raise DataFormatError(
            f"{log.path}: row {spreadsheet_row(position)} has LineId {line_ids[position]} after "
            f"LineId {line_ids[position - 1]}; a structured log must be in time (LineId) order: "
            "sort it, or pass --unsorted sort to sort it here"
        )
    moved = sum(a > b for a, b in zip(line_ids, line_ids[1:], strict=False))
    logger.warning(
        "%s: LineIds go backwards at %d place(s), first on row %d; sorted by LineId (--unsorted sort)",
        log.path,
        moved,
        spreadsheet_row(position),
    )
    order = sorted(range(len(line_ids)), key=line_ids.__getitem__)
    frame = log.frame.iloc[order].reset_index(drop=True)
    return StructuredLog(log.path, frame, log.duplicates)


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
            raise DataFormatError(
                f"{path}: item {index} (input {sample.input!r}): {error}; a label is "
                "normal/abnormal or <think>..</think><answer>normal|abnormal</answer>"
            ) from error
    duplicates = find_duplicates([s.input for s in samples], words, list(range(len(samples))))
    _log_duplicates(path, "inputs", duplicates)
    return SampleSet(path, tuple(samples), duplicates)


SHEET, STRUCTURED = "sheet", "structured"


def detect_format(path: str | Path) -> str:
    """SHEET or STRUCTURED, from the file's header row; a clear error when it is neither."""
    path = Path(path)
    columns = set(read_header(path))
    if set(SHEET_COLUMNS) <= columns:
        return SHEET
    if set(STRUCTURED_COLUMNS) <= columns:
        return STRUCTURED
    raise DataFormatError(
        f"{path}: neither a template sheet (columns {list(SHEET_COLUMNS)}) nor a loghub "
        f"structured log (columns {list(STRUCTURED_COLUMNS)}); found {sorted(columns)}"
    )
