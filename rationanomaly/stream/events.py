"""Records that travel through the service: an input event, a line verdict, a window verdict.

Input messages carry the raw line plus three optional stamps the replayer writes: `src` (which log the line
belongs to), `seq` (its line number in that log, 0-based: windows are cut on it) and `t` (the intended send time
in ns since the epoch, so a generator that falls behind shows up as latency instead of hiding it). Every verdict
carries an idempotent key, `src:seq` (or `src:id` without a seq), so a consumer can drop the duplicates that
at-least-once delivery allows.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from rationanomaly.labels import ABNORMAL, NORMAL

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "default"
MAX_LINE_CHARS = 8192  # ours: longer lines are cut; Drain's cost and template size grow with the token count
BINARY_SHARE = 0.1  # ours: a line with more than 10% undecodable or control characters is reported as binary
LINE, SOURCE, SEQ, SENT = "line", "src", "seq", "t"
_BYTES_NAMES = {name: name.encode() for name in (LINE, SOURCE, SEQ, SENT)}
NO_TEMPLATE = "-"  # the template key of a line that was not parsed (empty, or no line field)

# Notes a verdict can carry about its input (empty when the line was fine).
NOTE_EMPTY, NOTE_BINARY, NOTE_TRUNCATED, NOTE_MISSING = "empty", "binary", "truncated", "no line field"


@dataclass(frozen=True)
class Event:
    """One input line with its transport position (`id`), its log (`source`, `seq`) and intended send time."""

    id: str
    source: str
    seq: int | None
    line: str
    sent_ns: int = 0
    note: str = ""

    @property
    def key(self) -> str:
        """The idempotent verdict key: the same input line always gets the same key, however often delivered."""
        return f"{self.source}:{self.seq if self.seq is not None else self.id}"


@dataclass(frozen=True)
class LineVerdict:
    """The verdict of one line: its template (text and hash), the label and where it came from."""

    event: Event
    template_key: str
    template: str
    verdict: str
    path: str  # "cache": the template's verdict was known; "model": the line waited for the detector

    def fields(self, published_ns: int) -> dict[str, str | int]:
        """The message published for this verdict (flat, so it fits a Redis stream entry or Kafka JSON)."""
        event = self.event
        return {
            "key": event.key,
            "src": event.source,
            "seq": -1 if event.seq is None else event.seq,
            "id": event.id,
            "tkey": self.template_key,
            "template": self.template,
            "verdict": self.verdict,
            "path": self.path,
            "note": event.note,
            "t": event.sent_ns,
            "tp": published_ns,
        }


@dataclass(frozen=True)
class WindowVerdict:
    """A finished window of `lines` consecutive lines of one log; abnormal if any line is (the paper's rule)."""

    source: str
    window: int
    lines: int
    abnormal_lines: int
    template_keys: tuple[str, ...] = ()  # in line order: the sequence a window (next-key) detector scores

    @property
    def verdict(self) -> str:
        """ABNORMAL when at least one line is abnormal, else NORMAL (as sessions.Session.label)."""
        return ABNORMAL if self.abnormal_lines else NORMAL

    @property
    def key(self) -> str:
        """The idempotent window key."""
        return f"{self.source}:{self.window}"

    def fields(self, published_ns: int) -> dict[str, str | int]:
        """The message published for this window."""
        return {
            "key": self.key,
            "src": self.source,
            "window": self.window,
            "lines": self.lines,
            "abnormal_lines": self.abnormal_lines,
            "verdict": self.verdict,
            "tkeys": ",".join(self.template_keys),
            "tp": published_ns,
        }


def now_ns() -> int:
    """Wall-clock time in ns: producer, worker and collector share one clock on one machine."""
    return time.time_ns()


def clean_line(raw: bytes | str | None, max_chars: int = MAX_LINE_CHARS) -> tuple[str, str]:
    """(text, note): the line as parseable text, and why it was altered ("" when it was not).

    Undecodable bytes become U+FFFD and control characters spaces, so binary garbage still parses (into a
    template of its own) instead of stopping the worker; a line over `max_chars` is cut there.
    """
    if raw is None:
        return "", NOTE_MISSING
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    note = ""
    if len(text) > max_chars:
        text, note = text[:max_chars], NOTE_TRUNCATED
    clean = text.isprintable() and "\ufffd" not in text  # C-speed check: almost every real line is clean
    bad = 0 if clean else sum(1 for c in text if c == "\ufffd" or (unicodedata.category(c) == "Cc" and c != "\t"))
    if bad:
        text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
        if bad > BINARY_SHARE * len(text):
            note = NOTE_BINARY
    text = text.strip()
    if not text and not note:
        note = NOTE_EMPTY
    return text, note


def _text(value: bytes | str | None) -> str | None:
    """A field value as text (Redis gives bytes, tests give str)."""
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", errors="replace")


def _integer(value: bytes | str | None) -> int | None:
    """An integer field, None when absent or not an integer (a foreign producer's message still gets a verdict)."""
    text = _text(value)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def decode_event(
    message_id: str,
    fields: Mapping[bytes | str, bytes | str],
    max_chars: int = MAX_LINE_CHARS,
    default_source: str = DEFAULT_SOURCE,
    default_seq: int | None = None,
) -> Event:
    """An Event from a message's fields (bytes or str keys); bad values are noted, never raised."""

    def get(name: str) -> bytes | str | None:
        value = fields.get(_BYTES_NAMES[name])  # Redis and Kafka hand over bytes keys; tests may use str
        return fields.get(name) if value is None else value

    line, note = clean_line(get(LINE), max_chars)
    seq = _integer(get(SEQ))
    return Event(
        message_id,
        _text(get(SOURCE)) or default_source,
        default_seq if seq is None else seq,
        line,
        _integer(get(SENT)) or 0,
        note,
    )


def encode_event(line: bytes | str, source: str, seq: int, sent_ns: int) -> dict[str, bytes | str | int]:
    """The fields the replayer and the bench generator send for one line."""
    return {LINE: line, SOURCE: source, SEQ: seq, SENT: sent_ns}


class InputReport:
    """Counts altered inputs and logs the first few of each kind, then every 1,000th (no log flood at 15k ev/s)."""

    FIRST = 5

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def note(self, event: Event) -> None:
        """Log one clear line for an altered input (what, where, what was done with it)."""
        if not event.note:
            return
        self.counts[event.note] += 1
        count = self.counts[event.note]
        if count <= self.FIRST or count % 1000 == 0:
            action = {
                NOTE_EMPTY: "verdict normal without a model call",
                NOTE_MISSING: "verdict normal, nothing to parse",
                NOTE_TRUNCATED: f"cut to {MAX_LINE_CHARS} characters and classified",
                NOTE_BINARY: "undecodable bytes replaced, classified as text",
            }[event.note]
            logger.warning(
                "input %s (message %s, key %s): %s line; %s (%d so far)",
                event.note,
                event.id,
                event.key,
                event.note,
                action,
                count,
            )
