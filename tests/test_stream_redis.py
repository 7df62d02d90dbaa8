"""Stream service against a real redis-server on a free loopback port: replay, crash and restart, bad input,
a broker that goes away and comes back, clean SIGTERM, and the bench's record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("drain3", reason="the stream service needs drain3: run `make install-stream`")
redis = pytest.importorskip("redis", reason="the stream service needs redis-py: run `make install-stream`")

from rationanomaly.paths import SAMPLE_DATA_DIR  # noqa: E402
from rationanomaly.stream import events  # noqa: E402
from rationanomaly.stream.bench import (  # noqa: E402
    BenchConfig,
    free_port,
    redis_server,
    redis_server_binary,
    run_bench,
    wait_until,
)
from rationanomaly.stream.detectors import RulesDetector  # noqa: E402
from rationanomaly.stream.feed import RedisSender, cycle, feed, read_lines  # noqa: E402
from rationanomaly.stream.offline import offline_verdicts  # noqa: E402

SAMPLE_LOG = SAMPLE_DATA_DIR / "bgl_structured.csv"
WAIT_S = 60.0  # bound on every wait below; a healthy run needs a few seconds

pytestmark = pytest.mark.skipif(
    redis_server_binary() is None, reason="no redis-server on PATH (.ci/run installs it: apt-get install redis-server)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """One private redis-server for the module (each test flushes it)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def url(server) -> str:
    redis.Redis.from_url(server).flushall()
    return server


def stream_cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "rationanomaly.stream", *arguments]


def start_serve(url: str, log: Path, *extra: str) -> subprocess.Popen:
    """A worker process (consumer w1) logging to `log`."""
    command = stream_cli("serve", "--redis_url", url, "--consumer", "w1", *extra)
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def run_serve(url: str, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    """Run a worker until the stream is idle; returns its stats JSON and its log."""
    import json

    stats, log = tmp_path / "stats.json", tmp_path / "serve.log"
    process = start_serve(url, log, "--idle_exit_seconds", "1", "--stats_json", str(stats), *extra)
    assert process.wait(WAIT_S) == 0, log.read_text()
    return json.loads(stats.read_text()), log.read_text()


def entries(url: str, stream: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(url)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(stream)]


@pytest.mark.parametrize("which", ["sample", pytest.param("bgl_2k", marks=pytest.mark.realdata)])
def test_replay_gives_one_verdict_per_line_windows_as_offline_and_one_call_per_template(url, tmp_path, which, request):
    log = (
        SAMPLE_LOG
        if which == "sample"
        else request.getfixturevalue("public_data") / "loghub" / "BGL_2k.log_structured.csv"
    )
    replayed = subprocess.run(
        stream_cli("replay", str(log), "--redis_url", url, "--source", "log"),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    lines = read_lines(log)
    assert replayed.returncode == 0 and f"sent {len(lines)} lines" in replayed.stdout
    stats, _ = run_serve(url, tmp_path, "--detector", "fake", "--fake_latency_ms", "5")
    verdicts = entries(url, "logs.verdicts")
    assert sorted(int(v["seq"]) for v in verdicts) == list(range(len(lines)))  # exactly one per line
    labels, windows = offline_verdicts(lines, RulesDetector())
    assert [v["verdict"] for v in sorted(verdicts, key=lambda v: int(v["seq"]))] == labels
    got = {int(w["window"]): (w["verdict"], int(w["lines"])) for w in entries(url, "sessions.verdicts")}
    assert got == {w: (label, 100) for w, label in windows.items()}
    assert stats["templates_asked"] == len({v["tkey"] for v in verdicts})  # model calls = distinct templates
    assert stats["verdicts"] == len(lines) and stats["stopped_by"] == "idle"


def test_worker_killed_mid_stream_and_restarted_loses_no_verdict(url, tmp_path):
    lines = read_lines(SAMPLE_LOG)
    total = 30_000
    feed(RedisSender(redis.Redis.from_url(url)).send, list(cycle(lines, total)), "log")
    worker = start_serve(url, tmp_path / "first.log", "--read_batch", "200")
    client = redis.Redis.from_url(url)
    wait_until(lambda: client.xlen("logs.verdicts") >= 3000, WAIT_S, "the first worker published nothing")
    worker.send_signal(signal.SIGKILL)
    worker.wait(WAIT_S)
    published_before = client.xlen("logs.verdicts")
    assert published_before < total, "the worker finished before it was killed: nothing was tested"
    run_serve(url, tmp_path)
    keys = [v["key"] for v in entries(url, "logs.verdicts")]
    assert set(keys) == {f"log:{i}" for i in range(total)}  # nothing lost
    print(f"Redis restart: killed after {published_before} of {total}, {len(keys) - len(set(keys))} duplicates")
    assert len(keys) - len(set(keys)) <= 200  # at-least-once: at most one unacknowledged batch again (ack is
    # in the publish transaction, so in practice none)
    windows = [w["key"] for w in entries(url, "sessions.verdicts")]
    assert sorted(windows) == sorted(f"log:{w}" for w in range(total // 100))  # every window exactly once


def test_bad_input_gets_one_verdict_each_and_a_clear_log_line(url, tmp_path):
    client = redis.Redis.from_url(url)
    bad = {0: b"\x00\xff\xfe" * 300, 1: b"A" * 1_000_000, 2: b"", 3: None, 4: b"ciod: failed to read message"}
    for seq, line in bad.items():
        fields = {"src": "bad", "seq": seq, "t": 0} if line is None else events.encode_event(line, "bad", seq, 0)
        client.xadd("logs.raw", fields)
    _, log = run_serve(url, tmp_path)
    verdicts = {int(v["seq"]): v for v in entries(url, "logs.verdicts")}
    assert sorted(verdicts) == [0, 1, 2, 3, 4]
    assert [verdicts[s]["note"] for s in range(5)] == [
        events.NOTE_BINARY,
        events.NOTE_TRUNCATED,
        events.NOTE_EMPTY,
        events.NOTE_MISSING,
        "",
    ]
    assert verdicts[4]["verdict"] == "abnormal" and verdicts[2]["verdict"] == "normal"
    assert len(verdicts[1]["template"]) <= events.MAX_LINE_CHARS
    for note in (events.NOTE_BINARY, events.NOTE_TRUNCATED, events.NOTE_EMPTY, events.NOTE_MISSING):
        assert f"input {note} (message" in log


def test_broker_that_goes_away_and_comes_back_loses_and_duplicates_nothing(tmp_path):
    lines = read_lines(SAMPLE_LOG)
    port = free_port()
    worker_log = tmp_path / "serve.log"
    with redis_server(tmp_path, port, persist=True) as url:
        feed(RedisSender(redis.Redis.from_url(url)).send, lines, "log")
        worker = start_serve(url, worker_log, "--reconnect_seconds", "30")
        client = redis.Redis.from_url(url)
        wait_until(lambda: client.xlen("logs.verdicts") >= len(lines), WAIT_S, "no verdicts before the restart")
    # the server is stopped here (its data is in the append-only file); the worker keeps retrying
    time.sleep(1.0)
    with redis_server(tmp_path, port, persist=True) as url:
        feed(RedisSender(redis.Redis.from_url(url)).send, lines, "log", first_seq=len(lines))
        client = redis.Redis.from_url(url)
        wait_until(lambda: client.xlen("logs.verdicts") >= 2 * len(lines), WAIT_S, "no verdicts after the restart")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(WAIT_S) == 0  # SIGTERM: finish the batch, exit cleanly
        keys = [v["key"] for v in entries(url, "logs.verdicts")]
    assert sorted(keys) == sorted(f"log:{i}" for i in range(2 * len(lines)))
    log = worker_log.read_text()
    assert "Redis unreachable" in log and "served" in log


def test_serve_exits_with_one_line_when_redis_never_answers(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = subprocess.run(
        stream_cli("serve", "--redis_url", url, "--reconnect_seconds", "1"),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: Redis unreachable for 1 s")
    assert "Traceback" not in done.stderr


def test_replay_of_a_missing_file_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        stream_cli("replay", str(tmp_path / "nope.log")), capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"error: log file {tmp_path / 'nope.log'} not found; pass a raw log or a loghub "
        "structured CSV"
    )


@pytest.mark.slow
def test_bench_record_has_the_issue_keys_and_counts_every_event(tmp_path):
    corpus = tuple(read_lines(SAMPLE_LOG))
    record = run_bench(BenchConfig(rate=2000, seconds=2, corpus=corpus), tmp_path / "cached")
    for key in (
        "rate_target",
        "rate_achieved",
        "events",
        "lost",
        "duplicates",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "path",
        "machine",
    ):
        assert key in record
    assert (record["events"], record["lost"], record["duplicates"]) == (4000, 0, 0)
    assert 0 < record["rate_achieved"] <= 2000 * 1.01  # open loop: intended send times never run ahead
    assert 0 < record["p50_ms"] <= record["p99_ms"] <= record["max_ms"]
    assert record["worker_exit_status"] == 0 and record["machine"]["cpus"] == os.cpu_count()


@pytest.mark.slow
def test_bench_first_seen_lines_wait_for_the_fake_model(tmp_path):
    corpus = tuple(read_lines(SAMPLE_LOG))
    record = run_bench(
        BenchConfig(rate=1000, seconds=2, path="first_seen", corpus=corpus, fake_latency_ms=20, novel_every=100),
        tmp_path / "first_seen",
    )
    assert (record["events"], record["lost"], record["duplicates"]) == (2000, 0, 0)
    assert record["first_seen_events"] == 20
    assert record["first_seen_p50_ms"] >= 20  # a new template's line waits at least one model call


def test_demo_replays_the_sample_and_matches_the_offline_verdicts(tmp_path):
    import json

    done = subprocess.run(
        [sys.executable, "-m", "rationanomaly.stream.demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["lines"], summary["verdicts"], summary["windows"]) == (1500, 1500, 15)
    assert summary["matches_offline"] is True and summary["worker_exit_status"] == 0
    assert "same verdicts as the offline computation: yes" in done.stdout
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_sigterm_while_redis_is_unreachable_stops_at_once_with_one_line(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        stream_cli("serve", "--redis_url", url, "--reconnect_seconds", "60"),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    wait_until(lambda: "Redis unreachable" in log.read_text(), WAIT_S, "the worker never tried to connect")
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 1  # far below the 60 s reconnect budget
    assert log.read_text().strip().splitlines()[-1].startswith("error: stopped while Redis was unreachable")
