"""Raw supercomputer logs (BGL, Thunderbird layout) to the loghub structured CSV that the session builder reads.

loghub ships structured CSVs only for its 2,000-line samples; its full BGL release is the raw `BGL.log`.
Each raw line starts with the alert label (`-` = normal, else an alert category), then fixed header
fields, then the message. The header is split off exactly as loghub's own structured files have it
(tested on its BGL and Thunderbird samples). The template is the message with every token that holds a
digit replaced by `<*>`: a simple masking parser, not loghub's Drain, so it yields more templates than
loghub lists, but the same message always gets the same template, which is all a session window needs.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import atomic_path

logger = logging.getLogger(__name__)

# loghub's column names per layout; the message is always the last one, `Content`.
HEADERS = {
    "bgl": ("Label", "Timestamp", "Date", "Node", "Time", "NodeRepeat", "Type", "Component", "Level"),
    "thunderbird": ("Label", "Timestamp", "Date", "User", "Month", "Day", "Time", "Location"),
}
# Thunderbird-layout messages start with `component[pid]: `; loghub's component is everything before the
# first ": " (spaces included, e.g. "- User ID"), the pid the bracketed number just before it.
THUNDERBIRD_PROGRAM = re.compile(r"(?P<Component>.+?)(?:\[(?P<PID>\d+)\])?: (?P<Content>.*)")
VARIABLE = re.compile(r"\S*\d\S*")  # any token holding a digit: node names, addresses, counters, times
WILDCARD = "<*>"


@dataclass(frozen=True)
class ParseSummary:
    """What a conversion read and wrote."""

    lines: int
    alerts: int
    templates: int
    output: Path


def mask_template(content: str) -> str:
    """The message with each token that holds a digit replaced by `<*>` (whitespace normalised)."""
    return " ".join(WILDCARD if VARIABLE.fullmatch(token) else token for token in content.split())


def parse_line(line: str, layout: str) -> dict[str, str]:
    """Header fields and `Content` of one raw line, named as in loghub's structured CSV of that layout."""
    names = HEADERS[layout]
    parts = line.rstrip("\r\n").split(maxsplit=len(names))
    parts += [""] * (len(names) + 1 - len(parts))
    row = dict(zip(names, parts[:-1], strict=True))
    message = parts[-1].strip()
    if layout == "thunderbird":
        program = THUNDERBIRD_PROGRAM.fullmatch(message)
        row["Component"], row["PID"] = (program["Component"], program["PID"] or "") if program else ("", "")
        message = program["Content"].strip() if program else message
    row["Content"] = message
    return row


def structure_lines(lines: Iterable[str], layout: str) -> Iterator[dict[str, str]]:
    """loghub structured rows (`LineId`, header fields, `Content`, `EventId`, `EventTemplate`) for raw lines.

    Event ids number templates in order of first appearance (E1, E2, ...), so a rerun gives the same ids.
    Blank lines are skipped but still counted in LineId, which stays the raw file's line number.
    """
    if layout not in HEADERS:
        raise ValueError(f"unknown log layout {layout!r}; choose one of {', '.join(HEADERS)}")
    events: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = parse_line(line, layout)
        template = mask_template(row["Content"]) or WILDCARD
        event = events.setdefault(template, f"E{len(events) + 1}")
        yield {"LineId": str(number), **row, "EventId": event, "EventTemplate": template}


def structure_log(raw: str | Path, output: str | Path, layout: str) -> ParseSummary:
    """Convert a raw log file into a loghub structured CSV, written atomically."""
    from tqdm import tqdm

    raw, output = Path(raw), Path(output)
    columns = [
        "LineId",
        *HEADERS[layout],
        *(("Component", "PID") if layout == "thunderbird" else ()),
        "Content",
        "EventId",
        "EventTemplate",
    ]
    lines = alerts = 0
    templates: set[str] = set()
    with (
        raw.open(encoding="utf-8", errors="replace") as source,
        atomic_path(output) as tmp,
        tmp.open("w", encoding="utf-8", newline="") as sink,
    ):
        writer = csv.DictWriter(sink, fieldnames=columns)
        writer.writeheader()
        for row in tqdm(structure_lines(source, layout), desc=f"parsing {raw.name}", unit=" lines", mininterval=2):
            writer.writerow(row)
            lines += 1
            alerts += row["Label"] != "-"
            templates.add(row["EventTemplate"])
    logger.info("%s: %d lines, %d alerts, %d templates -> %s", raw, lines, alerts, len(templates), output)
    return ParseSummary(lines, alerts, len(templates), output)
