"""loghub structured logs -> key sequences in the DeepLog format (one normal and one abnormal file).

Three groupings, as the next-key literature uses them:
- `block` (HDFS): one sequence per `blk_` id named in a line's Content, lines in file order; a line naming a
  block twice counts once (LogGPT's `hdfs_blk_process`). Labels come from loghub's `anomaly_label.csv`
  (`BlockId,Label`, `Anomaly`/`Normal`) of the full release; blocks without a label go to `unlabelled`.
- `time` (BGL, Thunderbird; LogGPT's protocol): windows of 60 s sliding by 30 s, from the earliest line while the
  window starts before the latest one; a window holds the lines with start <= t <= start + 60 (both ends, as
  LogGPT's pandas `.loc` slice), is kept when it holds more than one line, and is abnormal if any line is.
  LogGPT's code silently *drops* a window with more lines than `max_lens` (its re-split loop compares a time
  span with a line count, so it never runs for 60 s windows); we cut such a window into consecutive pieces of
  `max_len` lines instead and count them in the metadata.
- `lines`: RationAnomaly's fixed windows of 100 consecutive lines (`rationanomaly.sessions.build_sessions`).

Time comes from loghub's `Timestamp` column (epoch seconds) when the file has one, else from BGL's `Time`
(`2005-06-03-15.42.50.675872`) or Thunderbird's `Date` + `Time`. Note on LogGPT's code: it converts with
`datetime.values.astype(int64) // 10**9`, which gives seconds only when pandas stores nanoseconds; pandas 2
parses BGL's `Time` at microsecond resolution, where the same line yields kiloseconds, i.e. 60 ks windows
(on loghub's BGL_2k: 283 windows, 59 abnormal, instead of 831 and 42 in seconds).

Keys: loghub's `E<n>` event ids keep their number n; other ids get numbers in first-seen order after the
largest in use. `--key_map` reuses an earlier `keys.json`, so a training and a test log share one numbering.
"""

from __future__ import annotations

import bisect
import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import write_json_atomic
from rationanomaly.loaders import DataFormatError, line_labels, load_structured_log, read_table
from rationanomaly.nextkey.keys import MAX_POSITIONS, SESSION, KeySequence, max_keys, write_sequences
from rationanomaly.sessions import DEFAULT_WINDOW, build_sessions

logger = logging.getLogger(__name__)

BLOCK, TIME, LINES = "block", "time", "lines"
GROUPINGS = (BLOCK, TIME, LINES)
WINDOW_SECONDS, STEP_SECONDS = 60, 30  # LogGPT (BGL, Thunderbird)
# LogGPT's max_lens is 512, its models' n_positions; with <bos> (and <eos>) a 512-key window would need 513-514
# positions, so the default keeps what fits a default model in either framing: 510 keys.
MAX_LEN = max_keys(MAX_POSITIONS, SESSION)
BLOCK_ID = re.compile(r"blk_-?\d+")
EVENT_NUMBER = re.compile(r"^E(\d+)$")
KEYS_FILE, META_FILE = "keys.json", "sequences.json"
NORMAL_FILE, ABNORMAL_FILE, UNLABELLED_FILE = "normal", "abnormal", "unlabelled"
TRAIN_FILE, TEST_NORMAL_FILE, TEST_ABNORMAL_FILE = "train", "test_normal", "test_abnormal"


@dataclass(frozen=True)
class KeyedSequence:
    """One grouped sequence: its id (block id or first LineId), keys, and label (1 abnormal, 0 normal, None unknown)."""

    ident: str
    keys: KeySequence
    label: int | None


def assign_keys(event_ids: Sequence[str], known: dict[str, int] | None = None) -> dict[str, int]:
    """EventId -> key number: a known mapping wins, `E<n>` keeps n, anything else counts on from the largest key."""
    mapping = dict(known or {})
    numbered = {e: int(m.group(1)) for e in dict.fromkeys(event_ids) if (m := EVENT_NUMBER.match(e))}
    for event, number in numbered.items():
        if event not in mapping and number not in mapping.values():
            mapping[event] = number
    next_key = max(mapping.values(), default=0) + 1
    for event in dict.fromkeys(event_ids):
        if event not in mapping:
            mapping[event] = next_key
            next_key += 1
    return mapping


def group_blocks(contents: Sequence[str], keys: Sequence[int]) -> dict[str, list[int]]:
    """Block id -> keys of the lines naming it, in line order (a line naming a block twice counts once)."""
    blocks: dict[str, list[int]] = {}
    for content, key in zip(contents, keys, strict=True):
        for block in dict.fromkeys(BLOCK_ID.findall(content)):
            blocks.setdefault(block, []).append(key)
    return blocks


def time_windows(times: Sequence[int], window: int = WINDOW_SECONDS, step: int = STEP_SECONDS) -> list[tuple[int, int]]:
    """[lo, hi) index ranges of the sliding windows over *sorted* times, kept when they hold more than one line."""
    if window < 1 or step < 1:
        raise ValueError(f"window={window}, step={step}; both are positive numbers of seconds")
    if not times:
        return []
    bounds, start, end = [], times[0], times[-1]
    while start < end:
        lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, start + window)
        if hi - lo > 1:
            bounds.append((lo, hi))
        start += step
    return bounds


def cut_long(lo: int, hi: int, max_len: int) -> list[tuple[int, int]]:
    """A window longer than `max_len` lines as consecutive pieces of at most `max_len` (pieces of one line dropped)."""
    pieces = [(start, min(start + max_len, hi)) for start in range(lo, hi, max_len)]
    return [(a, b) for a, b in pieces if b - a > 1]


def line_times(frame, path: Path) -> list[int]:
    """Epoch seconds of every line: `Timestamp` if present, else BGL's `Time`, else `Date` + `Time`."""
    import pandas as pd

    if "Timestamp" in frame.columns:
        values = frame["Timestamp"].astype(str).str.strip()
        bad = values[~values.str.fullmatch(r"-?\d+")]
        if bad.empty:
            return [int(v) for v in values]
        raise DataFormatError(
            f"{path}: row {bad.index[0] + 2} has Timestamp {bad.iloc[0]!r}; time windows need "
            "integer epoch seconds (or drop the column to use Time)"
        )
    attempts = (
        (lambda f: f["Time"], "%Y-%m-%d-%H.%M.%S.%f"),
        (lambda f: f["Date"] + " " + f["Time"], "%Y.%m.%d %H:%M:%S"),
    )
    for column, fmt in attempts:
        try:
            parsed = pd.to_datetime(column(frame), format=fmt)
        except (KeyError, ValueError):
            continue
        # Whole seconds whatever resolution pandas picked (the unit slip described in the module docstring).
        return [int(v) for v in parsed.astype("datetime64[s]").astype("int64")]
    raise DataFormatError(
        f"{path}: no usable time: need a Timestamp column (epoch seconds), a BGL-style Time "
        "(2005-06-03-15.42.50.675872) or Date + Time (2005.11.09 12:01:01)"
    )


def read_block_labels(path: str | Path) -> dict[str, int]:
    """loghub's anomaly_label.csv: BlockId -> 1 (Anomaly) / 0 (Normal)."""
    frame = read_table(path)
    missing = [c for c in ("BlockId", "Label") if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; loghub's anomaly_label.csv has BlockId,Label")
    labels = {}
    for index, (block, label) in enumerate(zip(frame["BlockId"], frame["Label"], strict=True)):
        word = str(label).strip().lower()
        if word not in ("anomaly", "normal"):
            raise DataFormatError(f"{path}: row {index + 2} has Label {label!r}; use Anomaly or Normal")
        labels[str(block).strip()] = int(word == "anomaly")
    return labels


def _keys_of(frame, known: dict[str, int] | None) -> tuple[list[int], dict[str, int]]:
    column = "EventId" if "EventId" in frame.columns else "EventTemplate"
    events = [str(e).strip() for e in frame[column]]
    mapping = assign_keys(events, known)
    return [mapping[e] for e in events], mapping


def block_sequences(path: Path, labels_path: Path | None, known: dict[str, int] | None):
    """(sequences, key mapping, frame) for HDFS-style block grouping."""
    frame = read_table(path)
    missing = [c for c in ("Content", "EventTemplate") if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {missing}; a loghub structured log has Content and EventTemplate"
        )
    keys, mapping = _keys_of(frame, known)
    labels = read_block_labels(labels_path) if labels_path else {}
    blocks = group_blocks(list(frame["Content"]), keys)
    if not blocks:
        raise DataFormatError(
            f"{path}: no line names a blk_ id; block grouping is for HDFS logs "
            "(use --grouping time or lines for BGL/Thunderbird)"
        )
    return [KeyedSequence(block, tuple(ks), labels.get(block)) for block, ks in blocks.items()], mapping, frame


def window_sequences(
    path: Path, grouping: str, known: dict[str, int] | None, window: int, step: int, max_len: int
) -> tuple[list[KeyedSequence], dict[str, int], object, int]:
    """(sequences, key mapping, frame, windows cut for length) for time or line windows."""
    log = load_structured_log(path)
    frame, labels = log.frame, line_labels(log.frame["Label"])
    keys, mapping = _keys_of(frame, known)
    line_ids = [int(v) for v in frame["LineId"]]
    if grouping == LINES:
        sessions = build_sessions(line_ids, keys, labels, window)
        return (
            [
                KeyedSequence(str(s.first_line), tuple(int(k) for k in s.templates), int(any(s.line_labels)))
                for s in sessions
            ],
            mapping,
            frame,
            0,
        )
    times = line_times(frame, path)
    order = sorted(range(len(times)), key=times.__getitem__)  # stable: ties keep file order
    sorted_times = [times[i] for i in order]
    result, cut = [], 0
    for lo, hi in time_windows(sorted_times, window, step):
        pieces = cut_long(lo, hi, max_len) if hi - lo > max_len else [(lo, hi)]
        cut += hi - lo > max_len
        for a, b in pieces:
            rows = order[a:b]
            result.append(
                KeyedSequence(str(line_ids[rows[0]]), tuple(keys[r] for r in rows), int(any(labels[r] for r in rows)))
            )
    return result, mapping, frame, cut


def split_normal(normal: Sequence[KeySequence], train_size: int, seed: int) -> tuple[list, list]:
    """LogGPT's split: shuffle the normal sequences with `seed`, the first `train_size` train, the rest test."""
    if not 0 < train_size < len(normal):
        raise ValueError(
            f"train_size={train_size}; choose between 1 and {len(normal) - 1} (there are {len(normal)} "
            "normal sequences)"
        )
    shuffled = list(normal)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:train_size], shuffled[train_size:]


def key_table(mapping: dict[str, int], frame, lines: dict[int, int]) -> list[dict]:
    """keys.json rows: key, event id, template (when the log has one) and how many lines carry it."""
    templates = {}
    if "EventId" in frame.columns:
        templates = dict(zip((str(e).strip() for e in frame["EventId"]), frame["EventTemplate"], strict=True))
    return [
        {"key": key, "event_id": event, "template": templates.get(event, event), "lines": lines.get(key, 0)}
        for event, key in sorted(mapping.items(), key=lambda item: item[1])
    ]


def read_key_map(path: str | Path) -> dict[str, int]:
    """EventId -> key from an earlier keys.json."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))["keys"]
        return {str(row["event_id"]): int(row["key"]) for row in rows}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DataFormatError(f"{path}: not a keys.json written by `nextkey sequences` ({error})") from error


def build_sequences(
    input_path: str | Path,
    output_dir: str | Path,
    grouping: str,
    labels: str | Path | None = None,
    key_map: str | Path | None = None,
    window: int | None = None,
    step: int = STEP_SECONDS,
    max_len: int = MAX_LEN,
    train_size: int | None = None,
    seed: int = 0,
) -> dict:
    """Group a structured log into key sequences and write the DeepLog files, keys.json and sequences.json.

    `window` is seconds for `time` (default 60) and lines for `lines` (default 100). With `train_size`, also
    writes LogGPT's split: `train` (that many shuffled normal sequences), `test_normal` and `test_abnormal`.
    Returns the metadata it wrote.
    """
    input_path, output_dir = Path(input_path), Path(output_dir)
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping={grouping!r}; use one of {GROUPINGS}")
    known = read_key_map(key_map) if key_map else None
    cut = 0
    if grouping == BLOCK:
        found, mapping, frame = block_sequences(input_path, Path(labels) if labels else None, known)
        window = None
    else:
        if labels:
            raise ValueError(
                "--labels is for block grouping (HDFS); time and line windows take labels from the log's Label column"
            )
        window = window or (WINDOW_SECONDS if grouping == TIME else DEFAULT_WINDOW)
        found, mapping, frame, cut = window_sequences(input_path, grouping, known, window, step, max_len)
    parts = {
        NORMAL_FILE: [s.keys for s in found if s.label == 0],
        ABNORMAL_FILE: [s.keys for s in found if s.label == 1],
        UNLABELLED_FILE: [s.keys for s in found if s.label is None],
    }
    written = {name: str(write_sequences(output_dir / name, seqs)) for name, seqs in parts.items() if seqs}
    if train_size is not None:
        train, test_normal = split_normal(parts[NORMAL_FILE], train_size, seed)
        for name, seqs in (
            (TRAIN_FILE, train),
            (TEST_NORMAL_FILE, test_normal),
            (TEST_ABNORMAL_FILE, parts[ABNORMAL_FILE]),
        ):
            if seqs:
                written[name] = str(write_sequences(output_dir / name, seqs))
    line_counts: dict[int, int] = {}
    for sequence in found:
        for key in sequence.keys:
            line_counts[key] = line_counts.get(key, 0) + 1
    write_json_atomic(
        output_dir / KEYS_FILE, {"input": str(input_path), "keys": key_table(mapping, frame, line_counts)}
    )
    meta = {
        "input": str(input_path),
        "labels": str(labels) if labels else None,
        "key_map": str(key_map) if key_map else None,
        "grouping": grouping,
        "window": window,
        "step": step if grouping == TIME else None,
        "max_len": max_len,
        "lines": len(frame),
        "sequences": len(found),
        **{name: len(seqs) for name, seqs in parts.items()},
        "windows_cut_for_length": cut,
        "keys": len(mapping),
        "train_size": train_size,
        "seed": seed,
        "files": written,
    }
    write_json_atomic(output_dir / META_FILE, meta)
    logger.info(
        "%s: %d sequences (%d normal, %d abnormal) -> %s",
        input_path,
        len(found),
        len(parts[NORMAL_FILE]),
        len(parts[ABNORMAL_FILE]),
        output_dir,
    )
    return meta
