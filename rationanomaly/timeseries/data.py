"""Readers for the Yahoo A1/A2 CSV, SMD txt and WaDi CSV layouts -> validated `Series` records.

Every reader returns raw values (scaling belongs to the method, not the data) and fails with one line
that names the file, the row or column and the fix: a wrong column count, labels that do not match the
rows, NaN, labels outside {0, 1}. Files are taken in natural order (`real_2` before `real_10`), so the
train/validation split never depends on the filesystem (the reference used `os.walk` order).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

LAYOUTS = ("yahoo", "smd", "wadi")
YAHOO_VALUE, YAHOO_LABELS = "value", ("is_anomaly", "anomaly")  # A1/A2: is_anomaly; A3/A4: anomaly
SMD_PARTS = ("train", "test", "test_label")
WADI_NORMAL_FILE = "WADI_14days_new.csv"  # the normal period (file names the reference expects, myasp-wadi.py)
WADI_ATTACK_FILE = "WADI_attackdataLABLE.csv"  # the attack period, with its labels (sic)
WADI_LABEL = "Attack LABLE (1:No Attack, -1:Attack)"  # the attack file's label column (sic)
WADI_SKIP = ("Row", "Date", "Time")
WADI_SLICES = 5  # the attack period is cut into 5 equal series (the reference validates on 5 slices; ours: split)


class SeriesFormatError(ValueError):
    """A data file does not have the layout its reader expects; the message names the file and the fix."""


@dataclass(frozen=True, eq=False)
class Series:
    """One labelled time series: float32 values [T, d], int8 labels [T] (1 = anomalous point)."""

    name: str
    values: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        validate_series(self.name, self.values, self.labels)

    @property
    def length(self) -> int:
        """Number of points T."""
        return int(self.values.shape[0])

    @property
    def dims(self) -> int:
        """Number of channels d."""
        return int(self.values.shape[1])


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled series in file order plus normal-only data for the VAE (SMD `train/`, WaDi's 14 days)."""

    layout: str
    series: tuple[Series, ...]
    normal: tuple[np.ndarray, ...] = ()
    source: str = ""


def validate_series(name: str, values: np.ndarray, labels: np.ndarray) -> None:
    """Raise SeriesFormatError unless values are finite float32 [T, d] and labels int8 0/1 of length T."""
    if values.ndim != 2 or values.dtype != np.float32:
        raise SeriesFormatError(f"{name}: values must be float32 [T, d], got {values.dtype} {values.shape}")
    if labels.ndim != 1 or labels.dtype != np.int8:
        raise SeriesFormatError(f"{name}: labels must be int8 [T], got {labels.dtype} {labels.shape}")
    if len(labels) != len(values):
        raise SeriesFormatError(
            f"{name}: {len(values)} rows of values but {len(labels)} labels; "
            "the label file must have one line per value row"
        )
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        raise SeriesFormatError(
            f"{name}: row {bad[0] + 1} holds NaN or inf ({len(bad)} rows); fill or drop those rows first"
        )
    wrong = np.flatnonzero((labels != 0) & (labels != 1))
    if len(wrong):
        raise SeriesFormatError(f"{name}: label {labels[wrong[0]]} in row {wrong[0] + 1}; labels must be 0 or 1")


def natural_key(path: Path) -> list[int | str]:
    """Sort key that orders numbers by value: real_2 < real_10 (plain sorting puts real_10 first)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _files(folder: Path, pattern: str, what: str) -> list[Path]:
    """The files matching `pattern` in `folder`, in natural order; an error says what was expected there."""
    if not folder.is_dir():
        raise SeriesFormatError(f"{folder} is not a folder; pass the folder that holds the {what}")
    files = sorted(folder.glob(pattern), key=natural_key)
    if not files:
        raise SeriesFormatError(f"{folder} holds no {pattern} files; pass the folder that holds the {what}")
    return files


def _read_table(path: Path, header: int | None, **options):
    """pandas.read_csv with its parse errors turned into one line naming the file."""
    import pandas as pd

    try:
        return pd.read_csv(path, header=header, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        message = str(error).strip().splitlines()[-1]
        raise SeriesFormatError(
            f"{path}: {message}; every row needs the same number of comma-separated fields"
        ) from error


def _float_block(frame, path: Path, first_line: int) -> np.ndarray:
    """A numeric table as float32, or an error naming the first line and column that is not a number."""
    import pandas as pd

    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna().to_numpy()
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        name = frame.columns[column]
        where = repr(name) if isinstance(name, str) else str(int(name) + 1)
        raise SeriesFormatError(
            f"{path}: line {row + first_line}, column {where} is {str(frame.iat[row, column])!r}, "
            "not a number (NaN or a short row); fix or drop it"
        )
    return numeric.to_numpy(dtype=np.float32)


def _label_block(column, path: Path, first_line: int) -> np.ndarray:
    """A 0/1 label column as int8, or an error naming the first line that is not 0 or 1."""
    values = _float_block(column.to_frame(), path, first_line)[:, 0]
    wrong = np.flatnonzero((values != 0) & (values != 1))
    if len(wrong):
        raise SeriesFormatError(
            f"{path}: line {wrong[0] + first_line} has label {values[wrong[0]]:g}; "
            "labels must be 0 (normal) or 1 (anomaly)"
        )
    return values.astype(np.int8)


def read_yahoo_csv(path: str | Path) -> Series:
    """One Yahoo benchmark CSV (`timestamp,value,is_anomaly`; A3/A4: `timestamps,value,anomaly,...`)."""
    path = Path(path)
    frame = _read_table(path, header=0)
    columns = [str(c).strip() for c in frame.columns]
    if len(columns) < 3 or columns[1] != YAHOO_VALUE or columns[2] not in YAHOO_LABELS:
        raise SeriesFormatError(
            f"{path}: header {','.join(columns)!r} has {len(columns)} columns; the Yahoo layout "
            f"is timestamp,{YAHOO_VALUE},{YAHOO_LABELS[0]} (value 2nd, label 3rd)"
        )
    values = _float_block(frame.iloc[:, [1]], path, first_line=2)
    labels = _label_block(frame.iloc[:, 2], path, first_line=2)
    return Series(path.stem, values, labels)


def read_yahoo(folder: str | Path) -> Dataset:
    """Every *.csv of a Yahoo benchmark folder (e.g. A1Benchmark), natural order; no extra normal data."""
    folder = Path(folder)
    series = tuple(read_yahoo_csv(path) for path in _files(folder, "*.csv", "Yahoo CSVs (e.g. A1Benchmark)"))
    return Dataset("yahoo", series, (), str(folder))


def read_smd_values(path: Path) -> np.ndarray:
    """One SMD value file: comma-separated floats, no header, the same column count on every row."""
    return _float_block(_read_table(path, header=None), path, first_line=1)


def read_smd(folder: str | Path) -> Dataset:
    """SMD's ServerMachineDataset folder: test/*.txt with test_label/*.txt as series, train/*.txt as normal data.

    Only `*.txt` is read: the reference also loaded the `.csv` copies it had written beside them, so
    every machine entered twice (notes bug 8).
    """
    folder = Path(folder)
    tests = _files(folder / "test", "*.txt", "SMD's test/ value files (machine-*.txt)")
    series, width = [], None
    for path in tests:
        values = read_smd_values(path)
        label_path = folder / "test_label" / path.name
        if not label_path.is_file():
            raise SeriesFormatError(f"{path}: no label file {label_path}; SMD needs test_label/{path.name}")
        label_frame = _read_table(label_path, header=None)
        if label_frame.shape[1] != 1:
            raise SeriesFormatError(f"{label_path}: {label_frame.shape[1]} columns; a label file has one 0/1 column")
        labels = _label_block(label_frame.iloc[:, 0], label_path, first_line=1)
        if len(labels) != len(values):
            raise SeriesFormatError(
                f"{label_path}: {len(labels)} labels for {len(values)} rows in {path}; "
                "the two files must have one line per time step"
            )
        width = width or values.shape[1]
        if values.shape[1] != width:
            raise SeriesFormatError(
                f"{path}: {values.shape[1]} columns, but {tests[0]} has {width}; every machine needs the same metrics"
            )
        series.append(Series(path.stem, values, labels))
    normal = []
    for path in _files(folder / "train", "*.txt", "SMD's train/ value files (machine-*.txt)"):
        values = read_smd_values(path)
        if values.shape[1] != width:
            raise SeriesFormatError(f"{path}: {values.shape[1]} columns, but the test files have {width}")
        normal.append(values)
    return Dataset("smd", tuple(series), tuple(normal), str(folder))


def _wadi_frame(path: Path, header: int):
    """A WaDi CSV with stripped column names, any path prefix dropped, empty columns and rows removed."""
    if not path.is_file():
        raise SeriesFormatError(
            f"{path} is missing; WaDi comes from iTrust (SUTD) on request: put "
            f"{WADI_NORMAL_FILE} and {WADI_ATTACK_FILE} in one folder"
        )
    frame = _read_table(path, header=header, low_memory=False)
    frame.columns = [str(c).strip().split("\\")[-1] for c in frame.columns]
    return frame.dropna(axis=1, how="all").dropna(axis=0, how="all").reset_index(drop=True)


def read_wadi(folder: str | Path, slices: int = WADI_SLICES) -> Dataset:
    """WaDi: the attack period (with its labels) cut into `slices` series; the 14 normal days as VAE data.

    Sensors are the numeric columns of the normal file that are not constant there (the reference's
    choice); the attack file must hold the same columns. Label -1 (attack) becomes 1, 1 becomes 0. The
    reference paired the normal period's readings with the attack period's labels (notes bug 9).
    """
    folder = Path(folder)
    normal = _wadi_frame(folder / WADI_NORMAL_FILE, header=0)
    attack = _wadi_frame(folder / WADI_ATTACK_FILE, header=1)
    if WADI_LABEL not in attack.columns:
        raise SeriesFormatError(
            f"{folder / WADI_ATTACK_FILE}: no column {WADI_LABEL!r} in its second line; "
            "is this the labelled attack file?"
        )
    sensors = [c for c in normal.columns if c not in WADI_SKIP and c != WADI_LABEL]
    normal_values = _float_block(normal[sensors], folder / WADI_NORMAL_FILE, first_line=2)
    varying = [c for c, spread in zip(sensors, np.ptp(normal_values, axis=0), strict=True) if spread > 0]
    missing = [c for c in varying if c not in attack.columns]
    if missing:
        raise SeriesFormatError(
            f"{folder / WADI_ATTACK_FILE}: sensor columns {missing[:3]} of {WADI_NORMAL_FILE} "
            "are missing; both files must come from the same WaDi release"
        )
    values = _float_block(attack[varying], folder / WADI_ATTACK_FILE, first_line=3)
    raw = _float_block(attack[[WADI_LABEL]], folder / WADI_ATTACK_FILE, first_line=3)[:, 0]
    if not np.isin(raw, (-1, 1)).all():
        raise SeriesFormatError(f"{folder / WADI_ATTACK_FILE}: {WADI_LABEL!r} must be 1 (no attack) or -1 (attack)")
    labels = (raw == -1).astype(np.int8)
    bounds = np.linspace(0, len(values), slices + 1).astype(int)
    series = tuple(
        Series(f"attack_{i}", values[a:b], labels[a:b])
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    )
    kept = np.array([sensors.index(c) for c in varying])
    return Dataset("wadi", series, (normal_values[:, kept],), str(folder))


def read_dataset(folder: str | Path, layout: str) -> Dataset:
    """Read a dataset folder in the named layout (yahoo, smd or wadi)."""
    if layout not in LAYOUTS:
        raise SeriesFormatError(f"layout {layout!r} is unknown; choose one of {', '.join(LAYOUTS)}")
    readers = {"yahoo": read_yahoo, "smd": read_smd, "wadi": read_wadi}
    dataset = readers[layout](folder)
    logger.info(
        "read %d %s series (%d points, %d anomalous) from %s",
        len(dataset.series),
        layout,
        sum(s.length for s in dataset.series),
        sum(int(s.labels.sum()) for s in dataset.series),
        folder,
    )
    return dataset
