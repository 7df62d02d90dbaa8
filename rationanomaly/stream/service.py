"""The worker loop: read a batch, parse and look up, publish what is ready, ack; stop cleanly on SIGTERM.

Every loop is bounded: reads block at most `block_s`, the model thread's batches at most MAX_WAIT_S, reconnects
at most the transport's budget, and the whole run by `max_seconds` / `idle_exit_s` when they are set. When
more than `max_held` lines wait for the model, reading pauses (backpressure) instead of buffering without end.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rationanomaly.io import write_json_atomic
from rationanomaly.stream.engine import MAX_BATCH, DetectionEngine, ModelWorker
from rationanomaly.stream.events import Event, LineVerdict
from rationanomaly.stream.parser import TemplateParser

logger = logging.getLogger(__name__)

READ_BATCH = 1000  # ours: messages per read; one round trip carries many lines
BLOCK_S = 0.005  # ours: a short block keeps latency low when the stream is quiet
MAX_HELD = 50_000  # ours: lines waiting for the model before reading pauses
SNAPSHOT_EVERY_S = 1.0  # ours: the Drain snapshot is saved at most this often (and on stop) when templates changed


class Transport(Protocol):
    """What the loop needs from a broker."""

    windows_finished: int

    def read(self, count: int, block_s: float) -> list[Event]: ...

    def publish(self, verdicts: Sequence[LineVerdict], snapshot: dict | None = None) -> None: ...

    def load_snapshot(self) -> dict | None: ...


@dataclass
class RunStats:
    """What a worker did: lines in and out, model calls, windows finished, held lines left at the end."""

    lines_in: int = 0
    verdicts: int = 0
    windows: int = 0
    model_calls: int = 0
    templates_asked: int = 0
    templates: int = 0
    held_at_exit: int = 0
    seconds: float = 0.0
    paths: Counter = field(default_factory=Counter)
    stopped_by: str = ""

    def to_dict(self) -> dict:
        """JSON-ready counts."""
        return {
            "lines_in": self.lines_in,
            "verdicts": self.verdicts,
            "windows": self.windows,
            "model_calls": self.model_calls,
            "templates_asked": self.templates_asked,
            "templates": self.templates,
            "held_at_exit": self.held_at_exit,
            "seconds": round(self.seconds, 3),
            "paths": dict(self.paths),
            "stopped_by": self.stopped_by,
        }


class StopFlag:
    """Set by SIGTERM/SIGINT (or by a test): the loop finishes its batch, publishes and exits."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        """Ask the loop to stop."""
        self.reason = self.reason or reason
        self.event.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop instead of killing it mid-batch (main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _frame: self.set(signal.Signals(number).name))


def restore_parser(transport: Transport, snapshot_file: Path | None, options: dict[str, Any]) -> TemplateParser:
    """The Drain state saved last (Redis first, then the snapshot file), else a fresh parser."""
    snapshot = transport.load_snapshot()
    if snapshot is None and snapshot_file is not None and snapshot_file.is_file():
        import json

        snapshot = json.loads(snapshot_file.read_text(encoding="utf-8"))
    if snapshot is None:
        return TemplateParser(**options)
    parser = TemplateParser.restore(snapshot)
    logger.info("restored Drain state: %d templates", parser.cluster_count)
    return parser


def run_worker(
    transport: Transport,
    engine: DetectionEngine,
    stop: StopFlag,
    read_batch: int = READ_BATCH,
    block_s: float = BLOCK_S,
    max_held: int = MAX_HELD,
    max_seconds: float | None = None,
    idle_exit_s: float | None = None,
    max_lines: int | None = None,
    snapshot_file: Path | None = None,
    snapshot_every_s: float = SNAPSHOT_EVERY_S,
    snapshot_in_transport: bool = True,
) -> RunStats:
    """Serve until stopped (signal, time, idleness or line budget); returns what was done."""
    stats = RunStats()
    started = time.monotonic()
    quiet_since = None  # when reads started coming back empty (idleness is measured from there)
    saved_changes, last_save = engine.parser.changes, 0.0
    while not stop.event.is_set():
        now = time.monotonic()
        if max_seconds is not None and now - started >= max_seconds:
            stop.set("max_seconds")
            break
        if (
            idle_exit_s is not None
            and quiet_since is not None
            and now - quiet_since >= idle_exit_s
            and not engine.held_lines
        ):
            stop.set("idle")
            break
        if max_lines is not None and stats.lines_in >= max_lines and not engine.held_lines:
            stop.set("max_lines")
            break
        room = read_batch if max_lines is None else min(read_batch, max_lines - stats.lines_in)
        events = transport.read(room, block_s) if engine.held_lines < max_held and room > 0 else []
        if events:
            quiet_since = None
            stats.lines_in += len(events)
        elif quiet_since is None and getattr(transport, "ready", True):
            quiet_since = time.monotonic()
        ready = engine.submit(events)
        ready += engine.collect(timeout=block_s if not events and engine.held_lines else 0.0)
        snapshot = None
        if engine.parser.changes != saved_changes and time.monotonic() - last_save >= snapshot_every_s:
            snapshot, saved_changes, last_save = engine.parser.snapshot(), engine.parser.changes, time.monotonic()
        _publish(transport, ready, snapshot, snapshot_file, snapshot_in_transport, stats)
    ready = engine.collect()  # answers that arrived during the last batch
    snapshot = engine.parser.snapshot() if engine.parser.changes != saved_changes else None
    _publish(transport, ready, snapshot, snapshot_file, snapshot_in_transport, stats)
    engine.model.stop()
    stats.held_at_exit = engine.held_lines
    stats.seconds = time.monotonic() - started
    stats.windows = transport.windows_finished
    stats.model_calls, stats.templates_asked = engine.model.model_calls, engine.model.templates_asked
    stats.templates = engine.parser.cluster_count
    stats.stopped_by = stop.reason
    if stats.held_at_exit:
        logger.info(
            "%d lines were still waiting for the model; they stay unacknowledged for the next worker",
            stats.held_at_exit,
        )
    return stats


def _publish(
    transport: Transport,
    ready: list[LineVerdict],
    snapshot: dict | None,
    snapshot_file: Path | None,
    snapshot_in_transport: bool,
    stats: RunStats,
) -> None:
    """Publish (and ack) the ready verdicts; the snapshot rides along or goes to its file."""
    if snapshot is not None and snapshot_file is not None:
        write_json_atomic(snapshot_file, snapshot, indent=0)
    transport.publish(ready, snapshot if snapshot_in_transport else None)
    stats.verdicts += len(ready)
    stats.paths.update(v.path for v in ready)


def build_engine(
    parser: TemplateParser, detector: Any, shared: Any = None, max_batch: int = MAX_BATCH
) -> DetectionEngine:
    """An engine whose model thread asks `detector` (after the shared cache, when there is one)."""
    return DetectionEngine(parser, ModelWorker(detector, shared, max_batch=max_batch))
