"""Session windows: consecutive log lines grouped into fixed windows (a session is abnormal if any line is).

This module holds the record and its JSON form; building windows from a structured log lives beside it.
Session JSON file: a list of objects
`{"session_id": int, "first_line": int, "templates": [str, ...], "line_labels": [0|1, ...], "label": str}`
where `templates[i]` is the EventTemplate of the i-th line of the window and `first_line` its LineId.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import write_json_atomic
from rationanomaly.labels import ABNORMAL, NORMAL, normalize_label
from rationanomaly.samples import SampleFormatError, read_records


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
    """Read a session JSON file, checking that templates and line labels agree with the stored label."""
    records = read_records(path, ("label",))
    sessions = []
    for index, record in enumerate(records):
        templates, line_labels = record.get("templates"), record.get("line_labels")
        if not isinstance(templates, list) or not isinstance(line_labels, list) or len(templates) != len(line_labels):
            raise SampleFormatError(f"{path}: session {index} needs equally long 'templates' and 'line_labels' lists")
        session = Session(
            int(record.get("session_id", index)),
            int(record.get("first_line", 0)),
            tuple(str(t) for t in templates),
            tuple(int(v) for v in line_labels),
        )
        if normalize_label(record["label"]) != session.label:
            raise SampleFormatError(f"{path}: session {index} is labelled {record['label']!r} but its lines say "
                                    f"{session.label!r}")
        sessions.append(session)
    return sessions
