"""Stream service units: input cleaning, Drain3 keys and snapshots, single-flight engine, windows, detectors,
and the Redis transport's transaction on fakeredis (no broker process)."""

from __future__ import annotations

import hashlib
import inspect
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("drain3", reason="the stream service needs drain3: run `make install-stream`")
fakeredis = pytest.importorskip("fakeredis", reason="unit tests need fakeredis: run `make install-stream`")

import test_predict  # noqa: E402  (tests/ is on sys.path under pytest)

from rationanomaly.baselines import keyword_label  # noqa: E402
from rationanomaly.evaluate import UNKNOWN  # noqa: E402
from rationanomaly.labels import ABNORMAL, NORMAL  # noqa: E402
from rationanomaly.paths import SAMPLE_DATA_DIR  # noqa: E402
from rationanomaly.predict import openai_backend  # noqa: E402
from rationanomaly.predict.backends import Request  # noqa: E402
from rationanomaly.stream import detectors, events  # noqa: E402
from rationanomaly.stream import engine as engine_module  # noqa: E402
from rationanomaly.stream import offline as stream_offline  # noqa: E402
from rationanomaly.stream.engine import CACHE, MODEL, DetectionEngine, MemoryWindows, ModelWorker  # noqa: E402
from rationanomaly.stream.events import Event, LineVerdict, clean_line, decode_event  # noqa: E402
from rationanomaly.stream.feed import read_lines  # noqa: E402
from rationanomaly.stream.parser import TemplateParser, log_content, template_key  # noqa: E402
from rationanomaly.stream.redis_transport import (  # noqa: E402
    CLAIM_IDLE_MS,
    DONE_TTL_S,
    WINDOW_PREFIX,
    WINDOW_TTL_S,
    RedisTransport,
    RedisVerdicts,
)
from rationanomaly.stream.service import StopFlag, run_worker  # noqa: E402

SAMPLE_LOG = SAMPLE_DATA_DIR / "bgl_structured.csv"
chat_server = test_predict.chat_server  # the stub OpenAI-compatible endpoint of the prediction tests


def offline_verdicts(lines: list[bytes]) -> tuple[list[str], dict[int, str]]:
    """The keyword rule's answer computed offline (fresh Drain, session builder's windows)."""
    return stream_offline.offline_verdicts(lines, detectors.RulesDetector())


@pytest.mark.parametrize(
    ("raw", "expected_note"),
    [
        (b"instruction cache parity error corrected", ""),  # a plain line
        (b"", events.NOTE_EMPTY),  # an empty line
        (b"   \t ", events.NOTE_EMPTY),  # whitespace only
        (None, events.NOTE_MISSING),  # a message without a line field
        (bytes(range(256)) * 4, events.NOTE_BINARY),  # binary garbage
        (b"x" * 1_000_000, events.NOTE_TRUNCATED),  # a 1 MB line
    ],
)
def test_clean_line_notes_bad_input_and_keeps_good_lines(raw, expected_note):
    text, note = clean_line(raw)
    assert note == expected_note
    assert len(text) <= events.MAX_LINE_CHARS
    assert all(ord(c) >= 32 or c == "\t" for c in text)  # no control characters reach the parser


def test_decode_event_reads_stamps_and_tolerates_foreign_messages():
    event = decode_event("1-0", {b"line": b"a b", b"src": b"node7", b"seq": b"41", b"t": b"123"})
    assert (event.source, event.seq, event.line, event.sent_ns, event.key) == ("node7", 41, "a b", 123, "node7:41")
    foreign = decode_event("5-3", {b"line": b"x", b"seq": b"not a number"})
    assert (foreign.source, foreign.seq, foreign.key) == (events.DEFAULT_SOURCE, None, "default:5-3")


def test_template_key_is_a_sha1_prefix_of_the_template_text():
    assert template_key("a <*> b") == hashlib.sha1(b"a <*> b").hexdigest()[:16]
    assert template_key("a <*> b") != template_key("a <*> c")


def test_log_content_drops_the_loghub_bgl_header():
    line = (
        "- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL "
        "INFO instruction cache parity error corrected"
    )
    assert log_content(line, "bgl") == "instruction cache parity error corrected"
    assert log_content("too short", "bgl") == "too short"  # not a BGL line: kept whole
    assert log_content(line, "raw") == line


def test_log_content_cuts_the_same_bgl_header_as_the_raw_log_parser():
    from rationanomaly.parsing import parse_line

    for raw in read_lines(SAMPLE_LOG)[:200]:  # the sample's lines have no header: give each a loghub BGL one
        line = "- 1117838570 2005.06.03 R02-M1 2005-06-03-15.42.50.675872 R02-M1 RAS KERNEL INFO " + raw.decode()
        assert log_content(line, "bgl").strip() == parse_line(line, "bgl")["Content"]


def test_snapshot_restore_continues_exactly_like_the_original_parser():
    lines = [raw.decode() for raw in read_lines(SAMPLE_LOG)]
    original = TemplateParser()
    for line in lines[:700]:
        original.parse(line)
    restored = TemplateParser.restore(original.snapshot())
    assert restored.cluster_count == original.cluster_count
    rest = lines[700:]
    assert [restored.parse(line) for line in rest] == [original.parse(line) for line in rest]
    assert restored.snapshot() == original.snapshot()


def test_restore_refuses_an_unknown_snapshot_version():
    snapshot = {**TemplateParser().snapshot(), "version": 99}
    with pytest.raises(ValueError, match="version 99"):
        TemplateParser.restore(snapshot)


class CountingDetector:
    """Keyword labels, recording every template asked (thread-safe); optionally failing the first calls."""

    name = "counting"

    def __init__(self, failures: int = 0):
        self.asked: list[str] = []
        self.calls = 0
        self.failures = failures
        self.lock = threading.Lock()

    def classify(self, templates):
        with self.lock:
            self.calls += 1
            if self.calls <= self.failures:
                raise ConnectionError("model server down")
            self.asked.extend(templates)
        return [keyword_label(t)[0] for t in templates]


def drain_engine(engine: DetectionEngine, ready: list[LineVerdict], timeout: float = 10.0) -> list[LineVerdict]:
    """Collect released lines until nothing is held (bounded)."""
    import time

    deadline = time.monotonic() + timeout
    while engine.held_lines and time.monotonic() < deadline:
        ready += engine.collect(timeout=0.05)
    assert engine.held_lines == 0, "the model thread did not answer in time"
    return ready


def make_events(lines: list[bytes], source: str = "log") -> list[Event]:
    return [decode_event(f"{i}-0", {"line": raw, "src": source, "seq": str(i)}) for i, raw in enumerate(lines)]


def test_engine_asks_one_template_once_however_many_lines_wait_for_it():
    detector = CountingDetector()
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector))
    lines = [f"kernel panic on node R0{i % 9}-M1".encode() for i in range(500)]
    verdicts = drain_engine(engine, engine.submit(make_events(lines)))
    engine.model.stop()
    assert len(verdicts) == 500
    assert len(detector.asked) == len(set(detector.asked))  # single-flight
    assert {v.template for v in verdicts} == set(detector.asked)
    assert {v.verdict for v in verdicts} == {ABNORMAL}


def test_engine_model_calls_equal_distinct_templates_and_labels_match_offline():
    lines = read_lines(SAMPLE_LOG)
    detector = CountingDetector()
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector))
    verdicts = []
    for start in range(0, len(lines), 250):  # in read-sized batches, answers arriving in between
        verdicts += engine.submit(make_events(lines)[start : start + 250])
        verdicts += engine.collect()
    verdicts = drain_engine(engine, verdicts)
    engine.model.stop()
    assert sorted(v.event.seq for v in verdicts) == list(range(len(lines)))  # one verdict per line
    assert sorted(detector.asked) == sorted({v.template for v in verdicts})  # calls = distinct templates
    assert engine.model.templates_asked == len({v.template_key for v in verdicts})
    assert {v.path for v in verdicts} == {CACHE, MODEL}
    labels, _ = offline_verdicts(lines)
    assert [v.verdict for v in sorted(verdicts, key=lambda v: v.event.seq)] == labels


def test_engine_reclassifies_a_template_that_drain_generalises():
    detector = CountingDetector()
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector))
    first = drain_engine(engine, engine.submit(make_events([b"user alice logged in from console"])))
    second = drain_engine(engine, engine.submit(make_events([b"user bob logged in from console"])))
    engine.model.stop()
    assert first[0].template == "user alice logged in from console"
    assert second[0].template == "user <*> logged in from console"
    assert first[0].template_key != second[0].template_key
    assert detector.asked == [first[0].template, second[0].template]


def test_engine_retries_a_failing_detector_then_answers():
    detector = CountingDetector(failures=2)
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector, retry_backoff_s=0.01))
    verdicts = drain_engine(engine, engine.submit(make_events([b"fan module failed"])))
    engine.model.stop()
    assert [v.verdict for v in verdicts] == [ABNORMAL]
    assert detector.calls == 3


def test_engine_gives_unknown_after_the_retries_and_asks_again_next_time():
    detector = CountingDetector(failures=10)
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector, retries=2, retry_backoff_s=0.01))
    verdicts = drain_engine(engine, engine.submit(make_events([b"fan module failed"])))
    assert [v.verdict for v in verdicts] == [UNKNOWN]
    assert engine.local == {}  # not cached: the next line of this template asks again
    drain_engine(engine, engine.submit(make_events([b"fan module failed"])))
    engine.model.stop()
    assert detector.calls == 4


class GatedDetector(CountingDetector):
    """Keyword labels, one call at a time: each call waits until the test lets it through."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Semaphore(0)
        self.sizes: list[int] = []

    def classify(self, templates):
        assert self.gate.acquire(timeout=10), "the test never let the call through"
        self.sizes.append(len(templates))
        return super().classify(templates)


def test_engine_held_lines_drop_by_the_lines_each_answer_releases():
    detector = GatedDetector()
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector, max_batch=1))
    lines = [b"fan module failed"] * 5 + [b"job started ok"] * 3 + [b"link is down now"] * 2
    assert engine.submit(make_events(lines)) == [] and engine.held_lines == 10
    released = []
    for left in (5, 2, 0):  # one template answered at a time, in the order asked
        detector.gate.release()
        released += engine.collect(timeout=10)
        assert engine.held_lines == left == sum(len(waiting) for waiting in engine.held.values())
    engine.model.stop()
    assert len(released) == 10


def test_build_engine_gives_the_model_thread_its_batch_size_from_the_start():
    from rationanomaly.stream.service import build_engine

    detector = GatedDetector()
    engine = build_engine(TemplateParser(), detector, max_batch=2)
    assert engine.model.max_batch == 2
    engine.submit(make_events([b"fan module failed", b"job started ok", b"link is down now", b"disk is full"]))
    for _ in range(4):  # a permit for every call the four templates could take
        detector.gate.release()
    drain_engine(engine, [])
    engine.model.stop()
    assert max(detector.sizes) <= 2 and sum(detector.sizes) == 4  # never the default 64 in one call


def test_engine_answers_empty_and_missing_lines_without_the_model():
    detector = CountingDetector()
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector))
    ready = engine.submit([decode_event("1-0", {"line": b""}), decode_event("2-0", {"src": b"x"})])
    engine.model.stop()
    assert [(v.verdict, v.event.note) for v in ready] == [(NORMAL, events.NOTE_EMPTY), (NORMAL, events.NOTE_MISSING)]
    assert detector.calls == 0


def verdict(source: str, seq: int, label: str) -> LineVerdict:
    return LineVerdict(Event(f"{seq}-0", source, seq, "x"), "k", "t", label, CACHE)


def test_memory_windows_close_when_every_line_has_a_verdict_and_ignore_redeliveries():
    windows = MemoryWindows(size=4)
    out = windows.add([verdict("a", s, NORMAL) for s in (0, 1, 2)])
    out += windows.add([verdict("a", 2, NORMAL), verdict("b", 0, ABNORMAL)])  # a redelivered line counts once
    assert out == []
    out = windows.add([verdict("a", 3, ABNORMAL), verdict("a", 3, ABNORMAL)])
    assert [(w.key, w.lines, w.abnormal_lines, w.verdict) for w in out] == [("a:0", 4, 1, ABNORMAL)]
    assert out[0].template_keys == ("k", "k", "k", "k")
    assert windows.add([verdict("a", 1, ABNORMAL)]) == []  # a finished window is not reopened


def test_backend_detector_uses_the_training_prompt_and_the_evaluation_binariser():
    class StubBackend:
        name = "stub"

        def __init__(self):
            self.requests: list[Request] = []

        def generate(self, requests):
            self.requests += requests
            return ["<think>bad</think><answer>abnormal</answer>", "The log entry is normal.", "no idea"]

    backend = StubBackend()
    detector = detectors.BackendDetector(backend, "SYSTEM")
    assert detector.classify(["a", "b", "c"]) == [ABNORMAL, NORMAL, UNKNOWN]
    assert backend.requests[0].messages[0] == {"role": "system", "content": "SYSTEM"}
    assert backend.requests[0].messages[1]["content"].endswith("\n\na")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nope", {}, "unknown detector 'nope'"),  # not registered
        ("openai", {}, "needs --model"),  # an endpoint without a model name
        ("transformers", {}, "needs --model"),  # a local model without a folder
    ],
)
def test_make_template_detector_rejects_bad_settings_with_a_clear_message(name, options, message):
    with pytest.raises(ValueError, match=message):
        detectors.make_template_detector(name, **options)


def test_window_detectors_are_plug_ins_registered_by_name():
    with pytest.raises(ValueError, match="register_window_detector"):
        detectors.make_window_detector("nextkey-test")

    @detectors.register_window_detector("nextkey-test")
    class AnyAbnormal:
        name = "nextkey-test"

        def score_windows(self, windows):
            return [ABNORMAL if "bad" in w else NORMAL for w in windows]

    try:
        assert detectors.make_window_detector("nextkey-test").score_windows([["ok"], ["ok", "bad"]]) == [
            NORMAL,
            ABNORMAL,
        ]
    finally:
        del detectors.WINDOW_DETECTORS["nextkey-test"]


def test_fake_detector_sleeps_once_per_micro_batch(monkeypatch):
    sleeps = []
    monkeypatch.setattr(detectors.time, "sleep", sleeps.append)
    fake = detectors.FakeModelDetector(latency_ms=30)
    assert fake.classify(["fan failed", "job started"]) == [ABNORMAL, NORMAL]
    assert sleeps == [pytest.approx(0.030)]  # one model call for the micro-batch, not one per template
    assert fake.calls == 1 and fake.asked == ["fan failed", "job started"]


def fake_transport(client, **options) -> RedisTransport:
    return RedisTransport(client, "c1", window=100, claim_idle_ms=50, **options)


def feed_fake(client, lines: list[bytes], source: str = "log") -> None:
    for seq, raw in enumerate(lines):
        client.xadd("logs.raw", events.encode_event(raw, source, seq, 0))


def serve_fake(client, detector, **options) -> dict:
    """run_worker over a fakeredis transport until the stream is idle."""
    transport = fake_transport(client)
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector, RedisVerdicts(client)))
    stats = run_worker(transport, engine, StopFlag(), idle_exit_s=0.3, block_s=0.01, **options)
    return {"stats": stats, "transport": transport}


def stream_fields(client, name: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(name)]


def test_worker_on_fakeredis_gives_one_verdict_per_line_and_offline_windows():
    client = fakeredis.FakeRedis()
    lines = read_lines(SAMPLE_LOG)
    feed_fake(client, lines)
    detector = CountingDetector()
    stats = serve_fake(client, detector)["stats"]
    verdicts = stream_fields(client, "logs.verdicts")
    assert sorted(int(v["seq"]) for v in verdicts) == list(range(len(lines)))
    labels, windows = offline_verdicts(lines)
    assert [v["verdict"] for v in sorted(verdicts, key=lambda v: int(v["seq"]))] == labels
    got = {int(w["window"]): w["verdict"] for w in stream_fields(client, "sessions.verdicts")}
    assert got == windows and len(windows) == len(lines) // 100
    by_seq = {int(v["seq"]): v["tkey"] for v in verdicts}
    for window in stream_fields(client, "sessions.verdicts"):  # template keys in line order, for window detectors
        first = int(window["window"]) * 100
        assert window["tkeys"].split(",") == [by_seq[s] for s in range(first, first + 100)]
    assert stats.model_calls == detector.calls and stats.templates_asked == len(detector.asked)
    assert len(detector.asked) == len({v["tkey"] for v in verdicts})
    assert client.xpending("logs.raw", "rationanomaly")["pending"] == 0  # everything acknowledged
    assert client.hlen("rationanomaly:templates") == len(set(detector.asked))  # shared cache filled


def test_second_worker_takes_verdicts_from_the_shared_cache_without_the_model():
    client = fakeredis.FakeRedis()
    lines = read_lines(SAMPLE_LOG)[:300]
    feed_fake(client, lines, "first")
    serve_fake(client, CountingDetector())
    client.delete("rationanomaly:drain")  # a fresh parser: the shared verdict cache alone must answer
    feed_fake(client, lines, "second")
    detector = CountingDetector()
    stats = serve_fake(client, detector)["stats"]
    assert stats.verdicts == len(lines) and detector.calls == 0


def test_unacknowledged_lines_are_replayed_to_the_same_consumer_after_a_crash():
    client = fakeredis.FakeRedis()
    lines = read_lines(SAMPLE_LOG)[:500]
    feed_fake(client, lines)
    crashed = fake_transport(client)
    assert len(crashed.read(200, 0.01)) == 200  # read, never published: the worker died here
    serve_fake(client, CountingDetector())
    keys = [v["key"] for v in stream_fields(client, "logs.verdicts")]
    assert sorted(keys) == sorted(f"log:{i}" for i in range(500)) and len(keys) == len(set(keys))


def test_messages_of_a_dead_consumer_are_claimed_after_the_idle_time():
    client = fakeredis.FakeRedis()
    feed_fake(client, read_lines(SAMPLE_LOG)[:100])
    RedisTransport(client, "dead").read(100, 0.01)
    import time

    time.sleep(0.1)  # longer than claim_idle_ms=50
    serve_fake(client, CountingDetector())
    assert len(stream_fields(client, "logs.verdicts")) == 100
    assert client.xpending("logs.raw", "rationanomaly")["pending"] == 0


def test_claims_walk_the_whole_pending_list_page_by_page():
    client = fakeredis.FakeRedis()
    feed_fake(client, read_lines(SAMPLE_LOG)[:25])
    RedisTransport(client, "dead").read(25, 0.01)
    # idle 0 ms: every pending entry is claimable at once, including the page this worker claimed just before
    taker = RedisTransport(client, "taker", claim_idle_ms=0)
    pages = [taker.read(10, 0.01) for _ in range(3)]
    assert [len(page) for page in pages] == [10, 10, 5]  # restarting at 0-0 gave [10, 0, 0]
    assert sorted(int(e.seq) for page in pages for e in page) == list(range(25))
    assert taker._claim_cursor == "0-0"  # the last page wrapped: the next pass starts over


def test_an_open_window_hash_expires_and_a_finished_one_leaves_only_its_marker():
    client = fakeredis.FakeRedis()
    feed_fake(client, read_lines(SAMPLE_LOG)[:150])  # window 0 fills, window 1 stays half open
    serve_fake(client, CountingDetector())
    open_hash, done_hash = f"{WINDOW_PREFIX}log:1", f"{WINDOW_PREFIX}log:0"
    assert client.hlen(open_hash) == 50
    assert 0 < client.ttl(open_hash) <= WINDOW_TTL_S  # without a TTL (-1) a window that never fills stays for ever
    assert not client.exists(done_hash) and 0 < client.ttl(f"{done_hash}:done") <= DONE_TTL_S


def test_drain_snapshot_is_saved_with_the_acknowledged_batch_and_restored(tmp_path: Path):
    from rationanomaly.stream.service import restore_parser

    client = fakeredis.FakeRedis()
    lines = read_lines(SAMPLE_LOG)[:400]
    feed_fake(client, lines)
    run = serve_fake(client, CountingDetector())
    parser = restore_parser(run["transport"], None, {})
    assert parser.cluster_count == run["stats"].templates > 0


class SnapshotlessTransport:
    """A broker that keeps no Drain snapshot (as Kafka): hands out its events once, records what is published."""

    def __init__(self, events: list[Event]):
        self.events, self.published, self.windows_finished = events, [], 0

    def read(self, count, block_s):
        batch, self.events = self.events[:count], self.events[count:]
        return batch

    def publish(self, verdicts, snapshot=None):
        assert snapshot is None  # snapshot_in_transport=False: nothing reaches the broker
        self.published += verdicts

    def load_snapshot(self):
        return None


def test_a_broker_without_snapshots_keeps_and_restores_drain_through_the_snapshot_file(tmp_path: Path):
    from rationanomaly.stream.service import restore_parser

    snapshot_file = tmp_path / "drain.json"
    transport = SnapshotlessTransport(make_events(read_lines(SAMPLE_LOG)[:400]))
    engine = DetectionEngine(TemplateParser(), ModelWorker(CountingDetector()))
    stats = run_worker(
        transport,
        engine,
        StopFlag(),
        idle_exit_s=0.3,
        block_s=0.01,
        snapshot_file=snapshot_file,
        snapshot_in_transport=False,
    )
    assert len(transport.published) == 400 and stats.templates > 0
    assert restore_parser(SnapshotlessTransport([]), snapshot_file, {}).cluster_count == stats.templates
    assert restore_parser(SnapshotlessTransport([]), None, {}).cluster_count == 0  # no file: Drain starts empty


def test_openai_detector_sends_the_training_prompt_to_the_endpoint(chat_server):
    from rationanomaly.prompts import COT_SYSTEM_PROMPT, chat_messages

    server, url = chat_server
    detector = detectors.make_template_detector("openai", model="tiny", base_url=url, max_new_tokens=64)
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector))
    lines = [
        b"kernel panic in thread 4",
        b"kernel panic in thread 9",
        b"job 17 started",
        b"kernel panic in thread 5",
        b"kernel panic in thread 6",
    ]
    verdicts = drain_engine(engine, engine.submit(make_events(lines)))
    engine.model.stop()
    assert [v.verdict for v in sorted(verdicts, key=lambda v: v.event.seq)] == [
        ABNORMAL,
        ABNORMAL,
        NORMAL,
        ABNORMAL,
        ABNORMAL,
    ]
    # one request per template (the first panic line's own, its generalisation, the job line), not per line
    assert sorted(b["messages"][-1]["content"].split("\n\n")[-1] for b in server.bodies) == sorted(
        {v.template for v in verdicts}
    )
    assert len(server.bodies) == 3
    body = next(b for b in server.bodies if "<*>" in b["messages"][-1]["content"])
    assert body["messages"] == chat_messages("kernel panic in thread <*>", COT_SYSTEM_PROMPT)
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (64, 0.1, 0.7)


class _OverloadedHandler(BaseHTTPRequestHandler):
    """An endpoint that answers every chat completion with HTTP 503 (a model server that stays overloaded)."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def overloaded_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OverloadedHandler)
    server.posts = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_detector_is_retried_by_its_backend_only_with_a_short_timeout(overloaded_server, monkeypatch):
    monkeypatch.setattr(openai_backend, "BACKOFF_SECONDS", 0.0)
    server, url = overloaded_server
    detector = detectors.make_template_detector("openai", model="tiny", base_url=url)
    assert detector.backend.timeout == detectors.STREAM_REQUEST_TIMEOUT_S
    engine = DetectionEngine(TemplateParser(), ModelWorker(detector, retry_backoff_s=0.01))
    verdicts = drain_engine(engine, engine.submit(make_events([b"fan module failed"])))
    engine.model.stop()
    assert [v.verdict for v in verdicts] == [UNKNOWN]
    assert engine.model.retries == 1
    assert server.posts == openai_backend.RETRIES  # 3 attempts, not the engine's 3 x the backend's 3


def test_stream_request_timeout_gives_up_before_other_workers_claim_the_held_lines():
    backoff = sum(openai_backend.BACKOFF_SECONDS * attempt for attempt in range(1, openai_backend.RETRIES))
    worst = openai_backend.RETRIES * detectors.STREAM_REQUEST_TIMEOUT_S + backoff
    assert worst < CLAIM_IDLE_MS / 1000.0
    # offline prediction keeps its own long timeout
    assert inspect.signature(openai_backend.OpenAIBackend).parameters["timeout"].default == 600.0


def test_engine_keeps_its_own_retries_for_detectors_that_do_not_retry():
    assert ModelWorker(CountingDetector()).retries == engine_module.RETRIES


@pytest.mark.slow
def test_transformers_detector_answers_every_template_with_a_label(tiny_llama_dir):
    detector = detectors.make_template_detector("transformers", model=str(tiny_llama_dir), max_new_tokens=8)
    labels = detector.classify(["kernel panic in thread <*>", "job <*> started"])
    assert len(labels) == 2 and set(labels) <= {NORMAL, ABNORMAL, UNKNOWN}  # a random tiny model: any label
    assert detector.calls == 1


class FakeKafka:
    """Stands in for confluent_kafka in KafkaTransport: records subscriptions and commits, delivers on poll/flush."""

    class KafkaException(Exception):
        pass

    class TopicPartition:
        def __init__(self, topic, partition, offset=-1001):
            self.topic, self.partition, self.offset = topic, partition, offset

    class Message:
        def __init__(self, topic, partition, offset, key):
            self._where, self._key = (topic, partition, offset), key

        def error(self):
            return None

        def topic(self):
            return self._where[0]

        def partition(self):
            return self._where[1]

        def offset(self):
            return self._where[2]

        def value(self):
            return f"job {self._where[2]} finished".encode()

        def key(self):
            return self._key

        def headers(self):
            return None

    class Consumer:
        def __init__(self, config):
            self.callbacks, self.commits, self.queue = {}, [], []

        def subscribe(self, topics, **callbacks):
            self.callbacks = callbacks

        def consume(self, num_messages, timeout):
            batch, self.queue = self.queue[:num_messages], self.queue[num_messages:]
            return batch

        def commit(self, offsets, asynchronous):
            self.commits.append(({(tp.partition, tp.offset) for tp in offsets}, asynchronous))

        def assignment(self):
            return []

        def close(self):
            pass

    class Producer:
        def __init__(self, config):
            self.reports = []

        def produce(self, topic, value, key, on_delivery):
            self.reports.append(on_delivery)

        def poll(self, timeout):
            reports, self.reports = self.reports, []
            for report in reports:
                report(None, None)
            return len(reports)

        def flush(self, timeout):
            self.poll(timeout)
            return 0


def kafka_verdicts(events):
    return [LineVerdict(e, "k", "job <*> finished", NORMAL, CACHE) for e in events]


def test_kafka_revoke_commits_the_revoked_partitions_and_forgets_them(monkeypatch):
    from rationanomaly.stream import kafka_transport

    monkeypatch.setattr(kafka_transport, "import_kafka", lambda: FakeKafka)
    monkeypatch.setattr(kafka_transport, "COMMIT_EVERY_S", 0.0)
    transport = kafka_transport.KafkaTransport("fake:9092", "in", "lines", "windows", window=100)
    consumer, tp = transport.consumer, FakeKafka.TopicPartition
    consumer.callbacks["on_assign"](consumer, [tp("in", 0), tp("in", 1)])
    consumer.queue = [FakeKafka.Message("in", 0, o, b"a") for o in range(250)]
    consumer.queue += [FakeKafka.Message("in", 1, o, b"b") for o in range(120)]
    events = transport.read(1000, 0.0)
    late = [e for e in events if e.id == "in:1:119"]  # held for the model while partition 1 is revoked
    transport.publish(kafka_verdicts([e for e in events if e not in late]))
    consumer.commits.clear()
    consumer.callbacks["on_revoke"](consumer, [tp("in", 1)])
    # partition 1: window 0 (offsets 0-99) closed, window 1 open from offset 100: committed there, synchronously
    assert consumer.commits == [({(1, 100)}, False)]
    assert transport.assigned == {("in", 0)} and ("in", 1) not in transport.outstanding
    assert ("b", 1) not in transport.windows.open and ("b", 1) not in transport.window_start
    consumer.commits.clear()
    transport.publish(kafka_verdicts(late))  # its delivery report must not touch the forgotten partition
    transport.close()
    assert consumer.commits == [({(0, 200)}, False)]  # only the partition still assigned, at its open window
    assert ("b", 1) not in transport.windows.open
