"""Kafka transport (confluent-kafka): consume, produce verdicts, commit what the broker acknowledged.

Delivery: offsets are committed by hand (every COMMIT_EVERY_S), only up to the first line whose verdict has no
delivery report from the broker yet, and never past the first line of a window that is still open. Produce and
commit are pipelined (no flush per batch: a round trip per batch would cap the rate). A worker killed in between
leaves those lines uncommitted, so the next worker of the group consumes them again and
rebuilds the open windows: at-least-once, with duplicates limited to the lines after the commit point (one batch,
the lines held for the model, and the lines of the windows open at that moment: about one window per log). Every
verdict's Kafka key is its idempotent key (`src:seq`), so a compacted topic or a consumer keeps one per line.

Input messages: the value is the raw line; the key, if any, names the log (`src`); headers `seq` and `t` as
for Redis (events.py). Without a `seq` header the partition offset numbers the lines, so windows still work
for a single-partition topic. Window state is in this worker's memory (engine.MemoryWindows); the commit rule
above is what makes it survive a restart, and a rebalance: when partitions are revoked, the worker waits for the
delivery reports in flight, commits those partitions by the same rule, and forgets their state (the new owner
rebuilds their open windows from the commit point); it only ever commits partitions it is assigned.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from rationanomaly.stream.engine import MemoryWindows
from rationanomaly.stream.events import SENT, SEQ, Event, LineVerdict, decode_event, now_ns
from rationanomaly.stream.parser import StreamDependencyError
from rationanomaly.stream.redis_transport import INPUT_STREAM, LINES_STREAM, WINDOWS_STREAM, BrokerUnavailable

logger = logging.getLogger(__name__)

GROUP = "rationanomaly"
FLUSH_S = 30.0  # ours: how long queued verdicts may wait for the broker before the worker gives up
COMMIT_EVERY_S = 0.05  # ours: offsets are committed this often (asynchronously; a lost commit means duplicates)
# ours: low latency over throughput (the LogNEO setting is a latency target)
PRODUCER_SETTINGS = {"linger.ms": 1, "enable.idempotence": True, "acks": "all"}
CONSUMER_SETTINGS = {"enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 2}


def _position(event_id: str) -> tuple[tuple[str, int], int]:
    """((topic, partition), offset) from an event id `topic:partition:offset`."""
    topic, partition, offset = event_id.rsplit(":", 2)
    return (topic, int(partition)), int(offset)


def import_kafka() -> Any:
    """The confluent_kafka package, or a clear error saying how to install it."""
    try:
        import confluent_kafka
    except ImportError as error:
        raise StreamDependencyError(
            f"confluent-kafka is missing ({error}); run `make install-stream` or `pip install -e .[stream]`"
        ) from error
    return confluent_kafka


class KafkaTransport:
    """Manual commits after produce + flush; commit points never pass a message whose verdict is not out."""

    def __init__(
        self,
        bootstrap_servers: str,
        input_topic: str = INPUT_STREAM,
        lines_topic: str = LINES_STREAM,
        windows_topic: str = WINDOWS_STREAM,
        group: str = GROUP,
        window: int = 100,
        flush_s: float = FLUSH_S,
        extra: dict | None = None,
        max_line_chars: int | None = None,
    ):
        kafka = import_kafka()
        self.kafka = kafka
        common = {"bootstrap.servers": bootstrap_servers, **(extra or {})}
        self.consumer = kafka.Consumer({**common, **CONSUMER_SETTINGS, "group.id": group})
        self.producer = kafka.Producer({**common, **PRODUCER_SETTINGS})
        self.consumer.subscribe(
            [input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self.input_topic, self.lines_topic, self.windows_topic = input_topic, lines_topic, windows_topic
        self.flush_s = flush_s
        self.windows = MemoryWindows(window)
        self.windows_finished = 0
        self.decode_options = {} if max_line_chars is None else {"max_chars": max_line_chars}
        self.outstanding: dict[tuple[str, int], set[int]] = {}  # partition -> offsets read, verdict not out
        self.read_up_to: dict[tuple[str, int], int] = {}  # partition -> next offset after the last one read
        self.window_start: dict[tuple[str, int], tuple[tuple[str, int], int]] = {}  # window -> (partition, offset)
        self.assigned: set[tuple[str, int]] = set()  # partitions this worker owns now: the only ones it commits
        self._failed: list[str] = []
        self._closing = False  # close() flushes and commits itself: the revoke consumer.close() triggers only forgets
        self._last_commit = 0.0
        self._committed: list[tuple[tuple[str, int], int]] = []

    @property
    def ready(self) -> bool:
        """True once the group has assigned partitions (joining takes seconds: not idleness)."""
        return bool(self.consumer.assignment())

    def read(self, count: int, block_s: float) -> list[Event]:
        """Up to `count` messages (waits at most `block_s`); broker errors are logged, not raised."""
        events = []
        # what is already fetched, without waiting; block only when nothing is (a blocking consume waits out its
        # whole timeout unless `count` messages arrive, which caps the rate at a batch per timeout)
        messages = self.consumer.consume(num_messages=count, timeout=0) or self.consumer.consume(
            num_messages=count, timeout=block_s
        )
        for message in messages:
            if message.error():
                logger.warning("Kafka consumer: %s", message.error())
                continue
            partition = (message.topic(), message.partition())
            offset = message.offset()
            self.outstanding.setdefault(partition, set()).add(offset)
            self.read_up_to[partition] = max(self.read_up_to.get(partition, 0), offset + 1)
            fields = {k: v for k, v in (message.headers() or []) if k in (SEQ, SENT)}
            fields["line"] = message.value()
            key = message.key()
            if key:
                fields["src"] = key
            events.append(
                decode_event(
                    f"{partition[0]}:{partition[1]}:{offset}",
                    fields,
                    default_source=f"{partition[0]}.{partition[1]}",
                    default_seq=offset,
                    **self.decode_options,
                )
            )
        return events

    def publish(self, verdicts: Sequence[LineVerdict], snapshot: dict | None = None) -> None:
        """Produce line and window verdicts; commit (every COMMIT_EVERY_S) what the broker has acknowledged."""
        stamp = now_ns()
        owned = []  # a line held for the model while its partition was revoked gets its verdict, but no window here
        for verdict in verdicts:
            position = _position(verdict.event.id)
            self._produce(self.lines_topic, verdict.event.key, verdict.fields(stamp), position)
            if position[0] in self.outstanding:
                owned.append(verdict)
                self._note_window_line(verdict, position)
        for window in self.windows.add(owned):
            self._produce(self.windows_topic, window.key, window.fields(stamp))
            self.windows_finished += 1
            self.window_start.pop((window.source, window.window), None)
        self.producer.poll(0)  # serve delivery reports
        self._raise_failures()
        self._commit(force=False)

    def _note_window_line(self, verdict: LineVerdict, position: tuple[tuple[str, int], int]) -> None:
        """Remember the earliest offset of each open window: commits stay behind it (see _commit)."""
        seq = verdict.event.seq
        if seq is None or seq < 0:
            return
        window = (verdict.event.source, seq // self.windows.size)
        if window in self.windows.done:
            return
        partition, offset = position
        known = self.window_start.get(window)
        if known is None or (known[0] == partition and offset < known[1]):
            self.window_start[window] = (partition, offset)

    def _produce(self, topic: str, key: str, fields: dict, position: tuple[tuple[str, int], int] | None = None) -> None:
        """Queue one JSON message; a full local queue is drained by polling (bounded by flush_s)."""
        payload = json.dumps(fields, ensure_ascii=False).encode("utf-8")
        report = functools.partial(self._delivered, position)
        deadline = time.monotonic() + self.flush_s
        while True:
            try:
                self.producer.produce(topic, payload, key.encode("utf-8"), on_delivery=report)
                return
            except BufferError as error:
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(
                        f"Kafka producer queue full for {self.flush_s:g} s ({error}); is the broker reachable?"
                    ) from error
                self.producer.poll(0.05)

    def _delivered(self, position: tuple[tuple[str, int], int] | None, error: Any, message: Any) -> None:
        """Delivery report: the line's offset may now be committed; a failure stops the worker before a commit."""
        if error is not None:
            self._failed.append(str(error))
        elif position is not None and position[0] in self.outstanding:  # not a partition revoked since
            self.outstanding[position[0]].discard(position[1])

    def _raise_failures(self) -> None:
        """Stop (without committing) when the broker refused a verdict: a restarted worker consumes it again."""
        if self._failed:
            failures, self._failed = self._failed[:3], []
            raise BrokerUnavailable(
                f"Kafka did not take some verdicts (errors: {failures}); their lines were not "
                "committed, a restarted worker consumes them again"
            )

    def _commit(self, force: bool) -> None:
        """Commit, per partition, up to the first line whose verdict the broker has not acknowledged, and never past
        the first line of a window still open, so that a successor rebuilds that window instead of losing it.

        Asynchronous every COMMIT_EVERY_S (a lost commit only means duplicates), synchronous when `force`.
        """
        if not force and time.monotonic() - self._last_commit < COMMIT_EVERY_S:
            return
        offsets = self._commit_points(p for p in self.outstanding if p in self.assigned)
        if offsets and (force or offsets != self._committed):
            self._commit_offsets(offsets, asynchronous=not force)
            self._committed = offsets
        self._last_commit = time.monotonic()

    def _commit_points(self, partitions: Any) -> list[tuple[tuple[str, int], int]]:
        """Per partition read from: the first offset whose verdict is not out, or the first line of an open window."""
        offsets = []
        for partition in partitions:
            waiting = self.outstanding[partition]
            upto = min(waiting) if waiting else self.read_up_to[partition]
            starts = [offset for (p, offset) in self.window_start.values() if p == partition]
            offsets.append((partition, min([upto, *starts])))
        return offsets

    def _commit_offsets(self, offsets: list[tuple[tuple[str, int], int]], asynchronous: bool) -> None:
        self.consumer.commit(
            offsets=[self.kafka.TopicPartition(p[0], p[1], o) for p, o in offsets], asynchronous=asynchronous
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Rebalance callback: partitions this worker now owns."""
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Rebalance callback: commit what is finished in the revoked partitions, then forget their state.

        Delivery reports in flight are awaited first (bounded by flush_s) so the commit covers every verdict out.
        """
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        if self._closing:
            self._forget(revoked)
            return
        self.producer.flush(self.flush_s)
        offsets = self._commit_points(p for p in self.outstanding if p in revoked)
        if offsets and not self._failed:
            try:
                self._commit_offsets(offsets, asynchronous=False)
            except self.kafka.KafkaException as error:  # the new owner then starts from the previous commit
                logger.warning("commit of revoked partitions failed (%s); their lines may be read again", error)
        self._forget(revoked)
        logger.info("partitions revoked: %s", sorted(revoked))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        """Rebalance callback: partitions lost without a clean revoke (commits would be refused): forget them."""
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._forget(lost)
        logger.warning("partitions lost: %s; their lines after the last commit will be read again", sorted(lost))

    def _forget(self, partitions: set[tuple[str, int]]) -> None:
        """Drop the offsets and open windows of partitions this worker no longer owns."""
        self.assigned -= partitions
        for partition in partitions:
            self.outstanding.pop(partition, None)
            self.read_up_to.pop(partition, None)
        for window, (partition, _) in list(self.window_start.items()):
            if partition in partitions:
                del self.window_start[window]
                self.windows.open.pop(window, None)
        self._committed = [(p, o) for p, o in self._committed if p not in partitions]

    def load_snapshot(self) -> dict | None:
        """Kafka keeps no Drain snapshot, nor does Redis with this transport: serve restores from --snapshot_file."""
        return None

    def close(self) -> None:
        """Deliver what is queued, commit it synchronously, and leave the group (a rebalance follows at once)."""
        self._closing = True
        remaining = self.producer.flush(self.flush_s)
        if remaining or self._failed:
            logger.warning(
                "%d verdicts undelivered at exit (%s); their lines stay uncommitted", remaining, self._failed[:3]
            )
        else:
            self._commit(force=True)
        self.consumer.close()
