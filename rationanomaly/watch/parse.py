"""Read verl training logs: console step lines and the `file` logger's JSON Lines, merged into runs.

verl 0.9.1 prints one console line per step, `step:N - key:value - key:value ...`, from inside the
TaskRunner Ray actor, so the driver's copy carries a `(TaskRunnerV1 pid=1234)` prefix and ANSI colour
codes; numpy scalars appear as `np.float64(0.12)` because values go through `pprint.pformat`. The
`file` logger writes `{"step": N, "data": {...}}` per line but opens its file with mode `wb`, so a
restart truncates it: only the console log keeps the steps before the last restart. A console log
that names its JSONL file (`Creating file logger at PATH`) is merged with it into one run, the JSONL
values winning where both have a step.

Nothing here raises on a bad line: a line that looks like a metric record but cannot be read (a
half-written last line, a broken value, invalid JSON, a step that is not an integer in
0..MAX_STEP) is skipped and counted in `skipped_lines`; other console output (Ray, vLLM, warnings)
is counted in `other_lines`. Inside a readable record, a value that is not a finite number (NaN,
infinity, null, a magnitude beyond MAX_ABS_VALUE, a boolean flag) is left out of the metrics and
counted in `skipped_values`: a flag is not a reward, and a NaN point carries nothing a curve can show.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

CONSOLE_SUFFIXES = (".log", ".txt", ".out")
JSONL_SUFFIXES = (".jsonl",)
# The two kinds of files a directory is searched for (the contract: *.log and *.jsonl).
SEARCH_GLOBS = ("*.log", "*.jsonl")
# Folders a search skips: model_train.sh puts WANDB_DIR under targets/, and wandb keeps its own copy of
# the console (files/output.log) and debug logs there, which would show the run twice.
SKIPPED_DIRS = frozenset({"wandb"})

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# Ray's actor prefix: `(TaskRunnerV1 pid=1234)` or `(TaskRunner pid=12, ip=10.0.0.1)`.
_RAY_PREFIX = re.compile(r"^\s*\([^()]*\bpid=\d+[^()]*\)\s*")
_STEP_RECORD = re.compile(r"^step:(\d+)(?: - (.*))?$")
_LOOKS_LIKE_STEP = re.compile(r"(?<![\w/])step:\d+")
_NUMPY_SCALAR = re.compile(r"^np\.[a-z_]+\d*\((.*)\)$")
_TOTAL_STEPS = re.compile(r"Total training steps:\s*(\d+)")
# tqdm bar: `Training Progress:  34%|###4      | 51/150 [...]`.
_PROGRESS = re.compile(r"Training Progress:.*?\|\s*(\d+)/(\d+)")
_FILE_LOGGER = re.compile(r"Creating file logger at (\S+)")
# The largest step a record may carry. verl counts optimiser steps from 0 (validation before training);
# a billion is beyond any run, and larger numbers are corrupt records (a step of 10**30 once crashed
# matplotlib, which cannot hold it in an int64 axis).
MAX_STEP = 10**9
# The largest magnitude a metric may have. No metric verl logs comes near it (a diverged grad norm of
# 1e20 still passes); beyond it a value is corrupt or overflowed, and values near float's limit break
# plotting (matplotlib cannot place ticks on an axis spanning -1e308..1e308).
MAX_ABS_VALUE = 1e30


@dataclass(frozen=True)
class ParsedLog:
    """What one file holds: metrics per step plus what the console said about the run."""

    path: Path
    kind: str  # "console" or "jsonl"
    steps: dict[int, dict[str, float]]
    total_steps: int | None = None
    file_logger_path: str | None = None
    skipped_lines: int = 0
    other_lines: int = 0
    restarts: int = 0
    skipped_values: int = 0


@dataclass(frozen=True)
class Run:
    """One training run: one or more files merged, steps in ascending order."""

    name: str
    sources: tuple[Path, ...]
    steps: dict[int, dict[str, float]]
    total_steps: int | None
    skipped_lines: int
    other_lines: int
    last_update: float | None  # newest modification time of the sources (seconds since the epoch)
    notes: tuple[str, ...] = field(default=())
    skipped_values: int = 0

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of one metric, only where it was logged."""
        pairs = [(step, metrics[key]) for step, metrics in self.steps.items() if key in metrics]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def keys(self) -> set[str]:
        """Every metric name logged at any step."""
        return {key for metrics in self.steps.values() for key in metrics}


def clean_console_line(line: str) -> str:
    """Drop ANSI colour codes and Ray's `(Actor pid=N)` prefix; keep the text verl printed."""
    return _RAY_PREFIX.sub("", _ANSI.sub("", line), count=1).strip()


def parse_value(text: str) -> float | bool | None:
    """A console value as printed: a float (`0.5`, `-3`, `nan`, `np.float64(0.12)`), a bool (`True`), else None.

    None means unreadable (the record is broken); a bool or a non-finite float is readable but is no
    metric, which `metric_value` decides.
    """
    text = text.strip()
    wrapped = _NUMPY_SCALAR.match(text)
    if wrapped:
        text = wrapped.group(1).strip()
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text)
    except ValueError:
        return None


def metric_value(value: object) -> float | None:
    """`value` as a plottable metric: an int or float within +-MAX_ABS_VALUE; None for a bool, NaN, infinity,
    an absurd magnitude or anything else.

    bool is a subclass of int in Python, so a logged flag would otherwise read as a reward of 1.0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_ABS_VALUE else None


def valid_step(step: object) -> bool:
    """A step is an int (not a bool) in 0..MAX_STEP; anything else marks a corrupt record."""
    return isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP


def step_number(digits: str) -> int | None:
    """Decimal digits as a step, None beyond MAX_STEP (checked on the length first: Python refuses to
    convert strings of more than 4,300 digits, so a corrupt line must not reach int())."""
    if len(digits) > len(str(MAX_STEP)):
        return None
    step = int(digits)
    return step if valid_step(step) else None


def parse_step_line(line: str) -> tuple[int, dict[str, float], int] | None:
    """`step:N - key:value - ...` (already cleaned) as (N, metrics, values left out); None if unreadable.

    Unreadable: no `step:N` record, a step beyond MAX_STEP, or any field without a number. Values that
    read but are no metric (NaN, infinity, True/False) are left out and counted.
    """
    record = _STEP_RECORD.match(line)
    if not record:
        return None
    step = step_number(record.group(1))
    if step is None:
        return None
    metrics: dict[str, float] = {}
    left_out = 0
    fields = record.group(2).split(" - ") if record.group(2) else []
    for item in fields:
        key, sep, raw = item.rpartition(":")
        value = parse_value(raw) if sep and key else None
        if value is None:
            return None
        number = metric_value(value)
        if number is None:
            left_out += 1
        else:
            metrics[key.strip()] = number
    return step, metrics, left_out


def _split_lines(text: str) -> tuple[list[str], str]:
    """Complete lines and the unterminated tail (a line the trainer is still writing)."""
    lines = text.split("\n")
    return lines[:-1], lines[-1]


def parse_console_text(text: str, path: Path = Path("<text>")) -> ParsedLog:
    """Parse verl console output; later records of a step update earlier ones (a resume replays steps)."""
    return parse_console_lines(io.StringIO(text, newline="\n"), path)


def _console_pieces(lines: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """(text, terminated) per screen: a line without its newline is still being written.

    tqdm redraws with carriage returns, so one physical line may hold several screens.
    """
    for line in lines:
        terminated = line.endswith("\n")
        for piece in line.removesuffix("\n").split("\r"):
            yield piece, terminated


def parse_console_lines(lines: Iterable[str], path: Path = Path("<text>")) -> ParsedLog:
    """parse_console_text() over lines that keep their `\\n` (an open file): a long log is never held whole."""
    steps: dict[int, dict[str, float]] = {}
    total_steps = file_logger_path = None
    skipped = other = restarts = left_out = 0
    previous_step = None
    for raw, terminated in _console_pieces(lines):
        line = clean_console_line(raw)
        if not line:
            continue
        if _LOOKS_LIKE_STEP.search(line):
            parsed = parse_step_line(line) if terminated else None
            if parsed is None:
                skipped += 1
                continue
            step, metrics, dropped = parsed
            left_out += dropped
            if previous_step is not None and step <= previous_step:
                restarts += 1
            previous_step = step
            steps.setdefault(step, {}).update(metrics)
            continue
        total = _TOTAL_STEPS.search(line)
        progress = _PROGRESS.search(line)
        logger_path = _FILE_LOGGER.search(line)
        if total:
            total_steps = step_number(total.group(1))
        elif progress:
            total_steps = step_number(progress.group(2))
        elif logger_path:
            file_logger_path = logger_path.group(1)
        else:
            other += 1
    return ParsedLog(
        path, "console", dict(sorted(steps.items())), total_steps, file_logger_path, skipped, other, restarts, left_out
    )


def _numeric_items(data: Mapping) -> tuple[dict[str, float], int]:
    """Metrics of a JSONL record and how many values were left out (bools, NaN, infinity, null).

    Strings and containers are not counted: they are not numbers and never were meant as metrics.
    """
    metrics: dict[str, float] = {}
    left_out = 0
    for key, value in data.items():
        number = metric_value(value)
        if number is not None:
            metrics[str(key)] = number
        elif value is None or isinstance(value, (bool, int, float)):
            left_out += 1
    return metrics, left_out


def parse_jsonl_text(text: str, path: Path = Path("<text>")) -> ParsedLog:
    """Parse verl `file` logger output: one `{"step": N, "data": {...}}` per line."""
    complete, tail = _split_lines(text)
    steps: dict[int, dict[str, float]] = {}
    skipped = left_out = 0
    for line in complete:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # invalid JSON, an int over 4,300 digits, absurd nesting
            skipped += 1
            continue
        step = record.get("step") if isinstance(record, dict) else None
        data = record.get("data") if isinstance(record, dict) else None
        if not valid_step(step) or not isinstance(data, dict):
            skipped += 1
            continue
        metrics, dropped = _numeric_items(data)
        left_out += dropped
        steps.setdefault(step, {}).update(metrics)
    # The file logger writes unbuffered, so an unterminated tail is a record being written.
    skipped += bool(tail.strip())
    return ParsedLog(path, "jsonl", dict(sorted(steps.items())), skipped_lines=skipped, skipped_values=left_out)


def parse_file(path: str | Path) -> ParsedLog:
    """Parse one log file, choosing the reader by suffix (`.jsonl` is the file logger, anything else console)."""
    path = Path(path)
    if path.suffix in JSONL_SUFFIXES:
        return parse_jsonl_text(path.read_bytes().decode("utf-8", errors="replace"), path)
    with path.open(encoding="utf-8", errors="replace", newline="\n") as lines:  # split on \n only, keep \r
        return parse_console_lines(lines, path)


def find_log_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus every *.log / *.jsonl below each directory but outside wandb/ (sorted, unique)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p
                for pattern in SEARCH_GLOBS
                for p in path.rglob(pattern)
                if p.is_file() and SKIPPED_DIRS.isdisjoint(p.relative_to(path).parts[:-1])
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(
                f"{path}: no such file or directory; pass a verl console log, a JSONL "
                "metrics file or a folder holding them (e.g. targets/)"
            )
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _tail_parts(path: str | Path, parts: int = 2) -> tuple[str, ...]:
    """Last path components, used to match a logged absolute path with a copied or relative file."""
    return Path(path).parts[-parts:]


def pair_console_with_jsonl(logs: list[ParsedLog]) -> list[list[ParsedLog]]:
    """Group each console log with the JSONL file it announced; every other file is a run of its own."""
    jsonl_by_tail = {_tail_parts(log.path): log for log in logs if log.kind == "jsonl"}
    used: set[Path] = set()
    groups: list[list[ParsedLog]] = []
    for log in logs:
        if log.kind != "console":
            continue
        partner = jsonl_by_tail.get(_tail_parts(log.file_logger_path)) if log.file_logger_path else None
        if partner is not None and partner.path not in used:
            used.add(partner.path)
            groups.append([log, partner])
        else:
            groups.append([log])
    groups += [[log] for log in logs if log.kind == "jsonl" and log.path not in used]
    return groups


def merge_logs(group: list[ParsedLog], mtimes: Mapping[Path, float] | None = None) -> Run:
    """One run from a console log and/or a JSONL file; JSONL values win because they are not rounded for print."""
    steps: dict[int, dict[str, float]] = {}
    for log in sorted(group, key=lambda log: log.kind == "jsonl"):
        for step, metrics in log.steps.items():
            steps.setdefault(step, {}).update(metrics)
    notes = []
    totals = [log.total_steps for log in group if log.total_steps is not None]
    restarts = sum(log.restarts for log in group)
    if restarts:
        notes.append(f"step numbers went back {restarts} time(s): a resume replays steps; the later values are kept")
    for log in group:
        first = next(iter(log.steps), None)
        if log.kind == "jsonl" and first is not None and first > 1:
            notes.append(
                f"{log.path.name} starts at step {first}: verl's file logger truncates its file on restart, "
                "so earlier steps are only in the console log"
            )
    times = [mtimes[log.path] for log in group if mtimes and log.path in mtimes]
    return Run(
        name=group[0].path.stem,
        sources=tuple(log.path for log in group),
        steps=dict(sorted(steps.items())),
        total_steps=totals[-1] if totals else None,
        skipped_lines=sum(log.skipped_lines for log in group),
        other_lines=sum(log.other_lines for log in group),
        last_update=max(times) if times else None,
        notes=tuple(notes),
        skipped_values=sum(log.skipped_values for log in group),
    )


def load_runs(inputs: Iterable[str | Path]) -> tuple[list[Run], list[str]]:
    """Runs found in the given files and folders, plus a message per file that held no step at all."""
    logs = [parse_file(path) for path in find_log_files(inputs)]
    mtimes = {log.path: log.path.stat().st_mtime for log in logs}
    runs, empty = [], []
    for group in pair_console_with_jsonl(logs):
        run = merge_logs(group, mtimes)
        if run.steps:
            runs.append(run)
        else:
            names = ", ".join(str(p) for p in run.sources)
            empty.append(
                f"{names}: no training step found ({run.skipped_lines} unreadable, {run.other_lines} other lines)"
            )
    return _distinct_names(runs), empty


def _distinct_names(runs: list[Run]) -> list[Run]:
    """Name runs `<folder>/<stem>` when stems collide (every run writes `train.log`), and `<folder>/<file name>`
    when those collide too (`run.log` beside an unrelated `run.jsonl`), so legends stay apart."""
    stems = [run.name for run in runs]
    named = [
        replace(run, name=f"{run.sources[0].parent.name}/{run.name}") if stems.count(run.name) > 1 else run
        for run in runs
    ]
    folders = [run.name for run in named]
    return [
        replace(run, name=f"{run.sources[0].parent.name}/{run.sources[0].name}") if folders.count(run.name) > 1 else run
        for run in named
    ]
