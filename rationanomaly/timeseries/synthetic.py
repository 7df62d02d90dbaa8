"""Seeded synthetic series in the Yahoo CSV and SMD txt layouts, for the demo, CI and the A1-sized benchmark.

Yahoo, WaDi and SMD's value files cannot be shipped (licences; SMD's values were not obtainable here), so
every run in this repository uses series generated here: a seasonal signal with trend and noise per
channel, plus injected spikes, level shifts and contextual anomalies (a segment mirrored around the
channel's level: inside the global range, wrong for its phase) until the chosen share of points is
anomalous. The defaults follow the statistics of the real releases (Yahoo A1: 741-1,461 points, 1.76%
anomalous; SMD: 23,687-28,743 rows, 38 metrics, 4.16% anomalous; notes/dynamic-reward.md section 4).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rationanomaly.io import write_text_atomic

SPIKE, LEVEL_SHIFT, CONTEXTUAL = "spike", "level_shift", "contextual"
KIND_SHARES = {SPIKE: 0.5, LEVEL_SHIFT: 0.3, CONTEXTUAL: 0.2}  # ours: A1's anomalies are mostly spikes
SEGMENT_POINTS = (5, 15)  # ours: length range of a level shift or contextual segment
SPIKE_SIZE = (4.0, 8.0)  # ours: spike height in units of the channel's seasonal amplitude
SHIFT_SIZE = (2.0, 4.0)  # ours: level shift in units of the amplitude
QUIET_START = 30  # ours: no anomaly before point 30 (the first 25 points are never classified)


@dataclass(frozen=True)
class SynthSpec:
    """Shape of a synthetic dataset: number of series, length range, channels and anomalous share."""

    series: int
    min_length: int
    max_length: int
    dims: int
    anomaly_rate: float


YAHOO_A1 = SynthSpec(series=67, min_length=741, max_length=1461, dims=1, anomaly_rate=0.0176)  # A1 statistics
SMD_RELEASE = SynthSpec(series=28, min_length=23687, max_length=28743, dims=38, anomaly_rate=0.0416)  # SMD test
DEFAULT_SPECS = {"yahoo": YAHOO_A1, "smd": SMD_RELEASE}


def seasonal_signal(length: int, dims: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Level + trend + sinusoid + Gaussian noise per channel; returns (values [T, d], amplitude per channel)."""
    t = np.arange(length, dtype=np.float64)[:, None]
    level = rng.uniform(0.0, 10.0, dims)
    amplitude = rng.uniform(1.0, 3.0, dims)
    period = rng.uniform(20.0, 80.0, dims)
    phase = rng.uniform(0.0, 2 * np.pi, dims)
    trend = rng.normal(0.0, amplitude / max(length, 1), dims)
    noise = rng.uniform(0.05, 0.15, dims) * amplitude
    values = (
        level
        + trend * t
        + amplitude * np.sin(2 * np.pi * t / period + phase)
        + rng.normal(0, 1, (length, dims)) * noise
    )
    return values, amplitude


def inject_anomalies(values: np.ndarray, amplitude: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Add spikes, level shifts and mirrored segments in place until `rate` of the points are labelled.

    Each anomaly hits one to three random channels; segments never overlap an earlier anomaly, and the
    loop gives up after many failed placements (a very high rate on a short series) instead of hanging.
    """
    length, dims = values.shape
    labels = np.zeros(length, dtype=np.int8)
    kinds, shares = list(KIND_SHARES), np.array(list(KIND_SHARES.values()))
    target, tries = int(round(rate * length)), 0
    while labels.sum() < target and tries < 50 * (target + 1) and length > QUIET_START + SEGMENT_POINTS[1]:
        tries += 1
        kind = kinds[rng.choice(len(kinds), p=shares)]
        size = 1 if kind == SPIKE else int(rng.integers(SEGMENT_POINTS[0], SEGMENT_POINTS[1] + 1))
        start = int(rng.integers(QUIET_START, length - size))
        if labels[max(0, start - 1) : start + size + 1].any():
            continue
        channels = rng.choice(dims, size=min(dims, int(rng.integers(1, 4))), replace=False)
        span = slice(start, start + size)
        sign = rng.choice([-1.0, 1.0])
        if kind == SPIKE:
            values[span, channels] += sign * rng.uniform(*SPIKE_SIZE) * amplitude[channels]
        elif kind == LEVEL_SHIFT:
            values[span, channels] += sign * rng.uniform(*SHIFT_SIZE) * amplitude[channels]
        else:
            local = values[max(0, start - 40) : start, channels].mean(axis=0)
            values[span, channels] = 2 * local - values[span, channels]
        labels[span] = 1
    return labels


def synth_series(length: int, dims: int, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One labelled synthetic series: (float32 values [T, d], int8 labels [T])."""
    values, amplitude = seasonal_signal(length, dims, rng)
    labels = inject_anomalies(values, amplitude, rate, rng)
    return values.astype(np.float32), labels


def _table_text(columns: list[np.ndarray], formats: str | list[str], header: str | None = None) -> str:
    """CSV text of equally long columns (numpy formats the rows; far faster than a Python loop)."""
    buffer = io.StringIO()
    np.savetxt(buffer, np.column_stack(columns), fmt=formats, delimiter=",", header=header or "", comments="")
    return buffer.getvalue()


def write_yahoo(folder: str | Path, spec: SynthSpec, seed: int) -> list[Path]:
    """Write `spec.series` files real_1.csv ... in the Yahoo A1 layout (timestamp,value,is_anomaly)."""
    rng = np.random.default_rng(seed)
    written = []
    for index in range(1, spec.series + 1):
        length = int(rng.integers(spec.min_length, spec.max_length + 1))
        values, labels = synth_series(length, 1, spec.anomaly_rate, rng)
        text = _table_text(
            [np.arange(1, length + 1), values[:, 0], labels], ["%d", "%.6g", "%d"], header="timestamp,value,is_anomaly"
        )
        written.append(write_text_atomic(Path(folder) / f"real_{index}.csv", text))
    return written


def write_smd(folder: str | Path, spec: SynthSpec, seed: int) -> list[Path]:
    """Write SMD's layout: train/, test/ and test_label/ machine-1-N.txt (train/ holds no anomaly)."""
    rng = np.random.default_rng(seed)
    written = []
    for index in range(1, spec.series + 1):
        name = f"machine-1-{index}.txt"
        length = int(rng.integers(spec.min_length, spec.max_length + 1))
        normal, _ = synth_series(length, spec.dims, 0.0, rng)
        values, labels = synth_series(length, spec.dims, spec.anomaly_rate, rng)
        written.append(write_text_atomic(Path(folder) / "train" / name, _table_text([normal], "%.6g")))
        written.append(write_text_atomic(Path(folder) / "test" / name, _table_text([values], "%.6g")))
        written.append(write_text_atomic(Path(folder) / "test_label" / name, _table_text([labels], "%d")))
    return written


def write_synthetic(folder: str | Path, layout: str, spec: SynthSpec, seed: int) -> list[Path]:
    """Write a synthetic dataset in the Yahoo or SMD layout; returns the files written."""
    writers = {"yahoo": write_yahoo, "smd": write_smd}
    if layout not in writers:
        raise ValueError(f"synthetic layout {layout!r} is unknown; choose one of {', '.join(writers)}")
    if spec.min_length > spec.max_length or spec.min_length < 60:
        raise ValueError(f"length range {spec.min_length}..{spec.max_length} is invalid; need 60 <= min <= max")
    return writers[layout](folder, spec, seed)
