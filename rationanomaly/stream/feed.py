"""Feeding lines into the input stream: read a log file, send at a fixed rate (open loop) or as fast as possible.

Open loop: the sender computes, from the start time, how many lines are due and stamps each with its *intended*
send time (start + i / rate), so a sender that falls behind adds to the measured latency instead of silently
slowing the offered load (no coordinated omission).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rationanomaly.stream.events import encode_event, now_ns
from rationanomaly.stream.kafka_transport import import_kafka
from rationanomaly.stream.redis_transport import INPUT_STREAM

logger = logging.getLogger(__name__)

TICK_S = 0.001  # ours: the open-loop sender wakes every millisecond
SEND_CHUNK = 1000  # lines per pipeline / produce burst when sending as fast as possible
CONTENT = "Content"


def read_lines(path: str | Path) -> list[bytes]:
    """The lines to send: a loghub structured CSV's Content column, else the file's raw lines (as bytes).

    Raw bytes are kept as they are (binary garbage included): the worker, not the feeder, decides what is bad.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log file {path} not found; pass a raw log or a loghub structured CSV")
    if path.suffix.lower() == ".csv":
        from rationanomaly.loaders import read_table

        frame = read_table(path)
        if CONTENT not in frame.columns:
            raise ValueError(
                f"{path}: a structured CSV needs a {CONTENT!r} column (loghub layout); got {list(frame.columns)[:8]}"
            )
        return [str(v).encode("utf-8") for v in frame[CONTENT].fillna("")]
    return [line.rstrip(b"\r\n") for line in path.read_bytes().splitlines()]


class RedisSender:
    """Pipelined XADDs to the input stream."""

    def __init__(self, client: Any, stream: str = INPUT_STREAM):
        self.client = client
        self.stream = stream

    def send(self, batch: Sequence[tuple[bytes, str, int, int]]) -> None:
        """One round trip for the whole batch of (line, source, seq, intended ns)."""
        pipe = self.client.pipeline(transaction=False)
        for line, source, seq, sent in batch:
            pipe.xadd(self.stream, encode_event(line, source, seq, sent))
        pipe.execute()

    def close(self) -> None:
        """Nothing buffered."""


class KafkaSender:
    """Produces to the input topic: value = line, key = source, headers seq and t."""

    def __init__(self, bootstrap_servers: str, topic: str = INPUT_STREAM, extra: dict | None = None):
        kafka = import_kafka()
        self.producer = kafka.Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 1, **(extra or {})})
        self.topic = topic

    def send(self, batch: Sequence[tuple[bytes, str, int, int]]) -> None:
        """Queue the batch (polling when the local queue is full) and serve delivery callbacks."""
        for line, source, seq, sent in batch:
            headers = [("seq", str(seq).encode()), ("t", str(sent).encode())]
            for _ in range(1000):  # bounded: about 10 s of a full queue
                try:
                    self.producer.produce(self.topic, line, source.encode(), headers=headers)
                    break
                except BufferError:
                    self.producer.poll(0.01)
            else:
                raise RuntimeError("Kafka producer queue stayed full for 10 s; is the broker reachable?")
        self.producer.poll(0)

    def close(self) -> None:
        """Deliver what is queued (bounded)."""
        remaining = self.producer.flush(30)
        if remaining:
            raise RuntimeError(f"{remaining} lines were not delivered to Kafka within 30 s")


@dataclass(frozen=True)
class FeedResult:
    """What a feed sent, over how long (first intended send to the last actual send)."""

    sent: int
    seconds: float
    max_lag_ms: float  # the worst delay between a line's intended and actual send

    @property
    def rate(self) -> float:
        """Lines per second actually sent."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def cycle(lines: Sequence[bytes], count: int, start: int = 0) -> Iterator[bytes]:
    """`count` lines, going round `lines` from position `start` (a 2k-line log fed for 60 s at 15k/s)."""
    for index in range(count):
        yield lines[(start + index) % len(lines)]


def feed(
    send: Callable[[Sequence[tuple[bytes, str, int, int]]], None],
    lines: Sequence[bytes],
    source: str,
    rate: float = 0.0,
    count: int | None = None,
    first_seq: int = 0,
    progress: bool = False,
    line_at: Callable[[int], bytes] | None = None,
) -> FeedResult:
    """Send `count` lines (default: each line once) at `rate` lines/s, open loop; rate 0 sends as fast as possible.

    `line_at(i)`, when given, picks the i-th line instead of going round `lines` (the bench mixes in new ones).
    """
    count = len(lines) if count is None else count
    pick = line_at or (lambda i: lines[i % len(lines)])
    start = now_ns()
    sent, max_lag = 0, 0
    with tqdm(total=count, desc=f"feed {source}", unit="line", disable=not progress, dynamic_ncols=True) as bar:
        while sent < count:
            if rate > 0:
                due = min(count, int((now_ns() - start) * rate / 1e9) + 1)
                if due <= sent:
                    time.sleep(TICK_S)
                    continue
            else:
                due = min(count, sent + SEND_CHUNK)
            batch = [
                (pick(i), source, first_seq + i, start + int(i * 1e9 / rate) if rate > 0 else now_ns())
                for i in range(sent, due)
            ]
            send(batch)
            max_lag = max(max_lag, now_ns() - batch[0][3])
            bar.update(due - sent)
            sent = due
    return FeedResult(sent, (now_ns() - start) / 1e9, max_lag / 1e6)
