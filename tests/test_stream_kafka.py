"""Stream service over Kafka, against librdkafka's built-in mock cluster (one broker on 127.0.0.1, in this process):
replay, one verdict per line, windows as offline, and a worker killed mid-stream and restarted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("drain3", reason="the stream service needs drain3: run `make install-stream`")
pytest.importorskip("confluent_kafka", reason="the Kafka transport needs confluent-kafka: run `make install-stream`")

from rationanomaly.paths import SAMPLE_DATA_DIR  # noqa: E402
from rationanomaly.stream.bench import kafka_mock_cluster, read_kafka_topic, wait_until  # noqa: E402
from rationanomaly.stream.detectors import RulesDetector  # noqa: E402
from rationanomaly.stream.feed import KafkaSender, cycle, feed, read_lines  # noqa: E402
from rationanomaly.stream.offline import offline_verdicts  # noqa: E402

SAMPLE_LOG = SAMPLE_DATA_DIR / "bgl_structured.csv"
WAIT_S = 90.0  # bound on every wait; the mock cluster's group join alone takes about 3 s
# a killed member holds its partition until its session times out (librdkafka default 45 s): 6 s, the broker's minimum
FAST_REJOIN = ("--kafka_option", "session.timeout.ms=6000", "--kafka_option", "heartbeat.interval.ms=1000")


@pytest.fixture(scope="module")
def bootstrap() -> str:
    holder, address = kafka_mock_cluster()
    yield address
    holder.flush(5)


def topics(name: str) -> dict[str, str]:
    """Topic names of one test, so tests sharing the mock cluster never see each other's messages."""
    return {"input": f"{name}.raw", "lines": f"{name}.verdicts", "windows": f"{name}.windows"}


def kafka_command(command: str, bootstrap: str, input_topic: str, *extra: str) -> list[str]:
    """`python -m rationanomaly.stream COMMAND` on the Kafka transport of the mock cluster."""
    return [
        sys.executable,
        "-m",
        "rationanomaly.stream",
        command,
        *extra,
        "--transport",
        "kafka",
        "--bootstrap_servers",
        bootstrap,
        "--input_stream",
        input_topic,
    ]


def start_serve(bootstrap: str, names: dict[str, str], log: Path, *extra: str) -> subprocess.Popen:
    command = kafka_command(
        "serve",
        bootstrap,
        names["input"],
        "--lines_stream",
        names["lines"],
        "--windows_stream",
        names["windows"],
        *FAST_REJOIN,
        *extra,
    )
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def run_serve(bootstrap: str, names: dict[str, str], tmp_path: Path) -> dict:
    stats, log = tmp_path / "stats.json", tmp_path / "serve.log"
    process = start_serve(bootstrap, names, log, "--idle_exit_seconds", "1.5", "--stats_json", str(stats))
    assert process.wait(WAIT_S) == 0, log.read_text()
    return json.loads(stats.read_text())


def test_kafka_replay_gives_one_verdict_per_line_and_offline_windows(bootstrap, tmp_path):
    names = topics("replay")
    replayed = subprocess.run(
        kafka_command("replay", bootstrap, names["input"], str(SAMPLE_LOG), "--source", "log"),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    lines = read_lines(SAMPLE_LOG)
    assert replayed.returncode == 0, replayed.stderr
    stats = run_serve(bootstrap, names, tmp_path)
    verdicts = read_kafka_topic(bootstrap, names["lines"], len(lines), timeout_s=30)
    assert sorted(v["seq"] for v in verdicts) == list(range(len(lines)))
    labels, windows = offline_verdicts(lines, RulesDetector())
    assert [v["verdict"] for v in sorted(verdicts, key=lambda v: v["seq"])] == labels
    got = read_kafka_topic(bootstrap, names["windows"], len(windows), timeout_s=30)
    assert {w["window"]: w["verdict"] for w in got} == windows and len(got) == len(windows)
    by_seq = {v["seq"]: v["tkey"] for v in verdicts}
    assert all(w["tkeys"].split(",") == [by_seq[w["window"] * 100 + i] for i in range(100)] for w in got)
    assert stats["templates_asked"] == len({v["tkey"] for v in verdicts})


def test_kafka_worker_killed_mid_stream_and_restarted_loses_no_verdict(bootstrap, tmp_path):
    names = topics("crash")
    total = 30_000  # below the mock broker's retained tail (about 50,000 messages per partition)
    lines = list(cycle(read_lines(SAMPLE_LOG), total))
    worker = start_serve(bootstrap, names, tmp_path / "first.log", "--read_batch", "200")
    sender = KafkaSender(bootstrap, names["input"])
    feed(sender.send, lines[:100], "log")  # the first lines at once: their verdicts say the worker has joined
    sender.producer.flush(10)
    wait_until(
        lambda: len(read_kafka_topic(bootstrap, names["lines"], 100, timeout_s=1)) >= 100,
        WAIT_S,
        "the first worker published nothing",
        every_s=0.2,
    )
    with ThreadPoolExecutor(1) as pool:  # then a live stream at 10,000 lines/s, so the worker dies mid-way
        fed = pool.submit(feed, sender.send, lines[100:], "log", 10_000, first_seq=100)
        time.sleep(1.0)
        worker.send_signal(signal.SIGKILL)
        worker.wait(WAIT_S)
        assert not fed.done(), "the feed ended before the worker was killed: nothing was tested"
        fed.result(WAIT_S)
    sender.close()
    before = {v["seq"] for v in read_kafka_topic(bootstrap, names["lines"], total, timeout_s=3)}
    run_serve(bootstrap, names, tmp_path)
    keys = [v["key"] for v in read_kafka_topic(bootstrap, names["lines"], total + 5_000, timeout_s=5)]
    assert set(keys) == {f"log:{i}" for i in range(total)}  # nothing lost
    duplicates = len(keys) - len(set(keys))
    twice = {int(k.split(":")[1]) for k, n in Counter(keys).items() if n > 1}
    resumed_at = min(twice, default=total)
    print(f"Kafka restart: {duplicates} duplicates of {total}, resumed at line {resumed_at}")  # the README quotes it
    # at-least-once from one commit point: everything the first worker published from there on came again, and
    # nothing before it
    assert twice == {seq for seq in before if seq >= resumed_at}
    windows = {w["key"] for w in read_kafka_topic(bootstrap, names["windows"], total // 100 + 50, timeout_s=5)}
    assert windows == {f"log:{w}" for w in range(total // 100)}  # every window, rebuilt after the restart
