"""Sample JSON in the reference layout: a list of {"instruction", "input", "label"} records.

Test sets carry `normal`/`abnormal`; training sets carry the CoT target
`<think>..</think><answer>..</answer>` as the label. Predictions use "output" instead of "label".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from rationanomaly.io import read_text, write_json_atomic
from rationanomaly.labels import INSTRUCTION


class SampleFormatError(ValueError):
    """A sample file that does not follow the reference layout."""


@dataclass(frozen=True)
class Sample:
    """One record of a reference-layout sample file (`label` may be a word or a CoT target)."""

    input: str
    label: str
    instruction: str = INSTRUCTION


def read_records(path: str | Path, required: Iterable[str], allow_empty: bool = False) -> list[dict]:
    """Read a JSON list of objects and check that each has the `required` string keys.

    An empty list is refused unless `allow_empty` (a file this project is resuming): a test set, a patch or a
    prediction file without a single record would make every later number meaningless.
    """
    path = Path(path)
    text = read_text(path, "check the path (the datasets/ scripts build sample files)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SampleFormatError(f"{path}: not valid JSON ({error}); a half-written file? rebuild it") from error
    if not isinstance(data, list):
        raise SampleFormatError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    if not data and not allow_empty:
        raise SampleFormatError(f"{path}: the list is empty; it needs at least one record")
    required = tuple(required)
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise SampleFormatError(f"{path}: item {index} is {type(record).__name__}, expected an object")
        for key in required:
            if not isinstance(record.get(key), str):
                raise SampleFormatError(f"{path}: item {index} lacks the string field {key!r} (has {sorted(record)})")
    return data


def read_samples(path: str | Path) -> list[Sample]:
    """Read a reference-layout sample file; every record needs `input` and `label` (instruction optional)."""
    records = read_records(path, ("input", "label"))
    return [Sample(r["input"], r["label"], r.get("instruction") or INSTRUCTION) for r in records]


def write_samples(path: str | Path, samples: Iterable[Sample]) -> Path:
    """Write samples atomically in the reference key order (instruction, input, label)."""
    rows = [{"instruction": s.instruction, "input": s.input, "label": s.label} for s in samples]
    return write_json_atomic(path, rows)


def sample_as_dict(sample: Sample) -> dict:
    """The sample as a plain dict (for parquet extra_info and reports)."""
    return asdict(sample)
