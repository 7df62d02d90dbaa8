"""Read verl training logs: console step lines and the `file` logger's JSON Lines, merged into runs.

verl 0.9.1 prints one console line per step, `step:N - key:value - key:value ...`, from inside the
TaskRunner Ray actor, so the driver's copy carries a `(TaskRunnerV1 pid=1234)` prefix and ANSI colour
codes; numpy scalars appear as `np.float64(0.12)` because values go through `pprint.pformat`. The
`file` logger writes `{"step": N, "data": {...}}` per line but opens its file with mode `wb`, so a
restart truncates it: only the console log keeps the steps before the last restart. A console log
that names its JSONL file (`Creating file logger at PATH`) is merged with it into one run, the JSONL
values winning where both have a step.

Nothing here raises on a bad line: a line that looks like a metric record but cannot be read (a
half-written last line, a broken value, invalid JSON) is skipped and counted in `skipped_lines`;
other console output (Ray, vLLM, warnings) is counted in `other_lines`.
"""

from __future__ import annotations

import io
import json
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


def parse_value(text: str) -> float | None:
    """A console value as a float: `0.5`, `-3`, `nan`, `True`, `np.float64(0.12)`; None if it is not a number."""
    text = text.strip()
    wrapped = _NUMPY_SCALAR.match(text)
    if wrapped:
        text = wrapped.group(1).strip()
    if text in ("True", "False"):
        return 1.0 if text == "True" else 0.0
    try:
        return float(text)
    except ValueError:
        return None


def parse_step_line(line: str) -> tuple[int, dict[str, float]] | None:
    """`step:N - key:value - ...` (already cleaned) as (N, metrics); None if any field is unreadable."""
    record = _STEP_RECORD.match(line)
    if not record:
        return None
    metrics: dict[str, float] = {}
    fields = record.group(2).split(" - ") if record.group(2) else []
    for item in fields:
        key, sep, raw = item.rpartition(":")
        value = parse_value(raw) if sep and key else None
        if value is None:
            return None
        metrics[key.strip()] = value
    return int(record.group(1)), metrics


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
    skipped = other = restarts = 0
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
            step, metrics = parsed
            if previous_step is not None and step <= previous_step:
                restarts += 1
            previous_step = step
            steps.setdefault(step, {}).update(metrics)
            continue
        total = _TOTAL_STEPS.search(line)
        progress = _PROGRESS.search(line)
        logger_path = _FILE_LOGGER.search(line)
        if total:
            total_steps = int(total.group(1))
        elif progress:
            total_steps = int(progress.group(2))
        elif logger_path:
            file_logger_path = logger_path.group(1)
        else:
            other += 1
    return ParsedLog(path, "console", dict(sorted(steps.items())), total_steps, file_logger_path, skipped, other,
                     restarts)


def _numeric_items(data: Mapping) -> dict[str, float]:
    """Numbers of a JSONL record; strings and nulls (NaN is written as null) are left out."""
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, str)}


def parse_jsonl_text(text: str, path: Path = Path("<text>")) -> ParsedLog:
    """Parse verl `file` logger output: one `{"step": N, "data": {...}}` per line."""
    complete, tail = _split_lines(text)
    steps: dict[int, dict[str, float]] = {}
    skipped = 0
    for line in complete:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        step = record.get("step") if isinstance(record, dict) else None
        data = record.get("data") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or not isinstance(data, dict):
            skipped += 1
            continue
        steps.setdefault(step, {}).update(_numeric_items(data))
    # The file logger writes unbuffered, so an unterminated tail is a record being written.
    skipped += bool(tail.strip())
    return ParsedLog(path, "jsonl", dict(sorted(steps.items())), skipped_lines=skipped)


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
            found += sorted(p for pattern in SEARCH_GLOBS for p in path.rglob(pattern)
                            if p.is_file() and SKIPPED_DIRS.isdisjoint(p.relative_to(path).parts[:-1]))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory; pass a verl console log, a JSONL "
                                    "metrics file or a folder holding them (e.g. targets/)")
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
            notes.append(f"{log.path.name} starts at step {first}: verl's file logger truncates its file on restart, "
                         "so earlier steps are only in the console log")
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
            empty.append(f"{names}: no training step found ({run.skipped_lines} unreadable, "
                         f"{run.other_lines} other lines)")
    return _distinct_names(runs), empty


def _distinct_names(runs: list[Run]) -> list[Run]:
    """Name runs `<folder>/<stem>` when stems collide (every run writes `train.log`), so legends stay apart."""
    stems = [run.name for run in runs]
    return [replace(run, name=f"{run.sources[0].parent.name}/{run.name}") if stems.count(run.name) > 1 else run
            for run in runs]
