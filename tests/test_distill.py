"""CoT distillation against a real HTTP server on 127.0.0.1 that answers from a script."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import module_from_spec, spec_from_file_location

import pytest

from rationanomaly.distill import (
    FAILED,
    OK,
    DistillConfig,
    DistillError,
    JsonlCache,
    backoff_delay,
    completions_url,
    distill,
    distill_messages,
)
from rationanomaly.labels import ABNORMAL, NORMAL, cot_label
from rationanomaly.paths import REPO_ROOT
from rationanomaly.samples import Sample, read_samples

GOOD = "good"  # script step: a valid rationale for the label the request gives


class Script:
    """Answers per template from a list of steps; the last step repeats. Records every request.

    A step is GOOD, an HTTP status (int), or a literal reply text. `fail_after` turns every request after
    that many GOOD answers into HTTP 500 (a server that dies midway).
    """

    def __init__(self, steps: dict[str, list] | None = None, default=(GOOD,), fail_after: int | None = None):
        self.steps, self.default, self.fail_after = steps or {}, list(default), fail_after
        self.requests: list[str] = []
        self.probes = 0
        self.good = 0
        self.lock = threading.Lock()

    def respond(self, payload: dict) -> tuple[int, dict, dict]:
        user = payload["messages"][-1]["content"]
        template = re.search(r"Log template: (.*)\n", user).group(1)
        label = re.search(r"Correct label: (\w+)", user).group(1)
        with self.lock:
            count = self.requests.count(template)
            self.requests.append(template)
            steps = self.steps.get(template, self.default)
            step = steps[min(count, len(steps) - 1)]
            if step == GOOD and self.fail_after is not None and self.good >= self.fail_after:
                step = 500
            if step == GOOD:
                self.good += 1
        if isinstance(step, int):
            return step, {"error": {"message": f"scripted {step}"}}, {"Retry-After": "0"} if step == 429 else {}
        text = (
            cot_label(f"Step 1: the template {template} is examined. Step 2: decide.", label) if step == GOOD else step
        )
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}, {}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        """`/v1/models` as vLLM serves it: the probe before distilling reads it."""
        self.server.script.probes += 1
        data = json.dumps({"object": "list", "data": [{"id": "teacher", "object": "model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions"
        status, body, headers = self.server.script.respond(payload)
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        """Keep pytest output clean."""


@contextlib.contextmanager
def serve(script: Script):
    """A chat-completions server on a free local port, answering from `script`; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.script = script
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


def config(url: str, **overrides) -> DistillConfig:
    """Fast settings: no real sleeping (tests pass a recording sleep), short timeout."""
    return DistillConfig(
        **{
            "base_url": url,
            "model": "teacher",
            "timeout": 10.0,
            "concurrency": 4,
            "retries": 2,
            "invalid_retries": 2,
            "backoff": 0.5,
            "seed": 3,
            **overrides,
        }
    )


def templates(n: int) -> list[Sample]:
    return [Sample(f"event {i} on node <*>", ABNORMAL if i % 3 == 0 else NORMAL) for i in range(n)]


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (0, None, 0.5),  # first retry waits the base
        (3, None, 4.0),  # doubles each time
        (10, None, 30.0),  # capped
        (2, 7.0, 7.0),  # the server's Retry-After wins
        (0, 900.0, 30.0),  # but is capped too
    ],
)
def test_backoff_delay_doubles_and_caps(attempt, retry_after, expected):
    assert backoff_delay(attempt, 0.5, 30.0, retry_after) == expected


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://h:8000/v1", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/", "http://h:8000/v1/chat/completions"),  # trailing slash
        ("http://h:8000", "http://h:8000/v1/chat/completions"),  # no /v1
        ("https://api.x/v1/chat/completions", "https://api.x/v1/chat/completions"),  # full URL
    ],
)
def test_completions_url_accepts_common_base_urls(base, expected):
    assert completions_url(base) == expected


def test_distill_messages_give_template_and_normalized_label():
    messages = distill_messages("ciod: failed <*>", "1")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Log template: ciod: failed <*>\nCorrect label: abnormal" in messages[1]["content"]
    assert "<think>" in messages[0]["content"] and "<answer>" in messages[0]["content"]


def test_distill_retries_errors_and_invalid_answers_then_reports_failures(tmp_path):
    t = templates(6)
    script = Script(
        {
            t[0].input: [500, GOOD],  # server error, then fine
            t[1].input: [429, GOOD],  # rate limited (Retry-After: 0), then fine
            t[2].input: ["no tags at all", GOOD],  # malformed answer is asked again
            t[3].input: [cot_label("It is fine.", NORMAL)],  # always the wrong label (t[3] is abnormal)
            t[4].input: [503],  # never recovers
        }
    )
    sleeps = []
    with serve(script) as url:
        result = distill(t, config(url), tmp_path / "cache.jsonl", sleep=sleeps.append, progress=False)
    assert [r.input for r in result.rationales] == [t[i].input for i in (0, 1, 2, 5)]
    assert all(
        r.reasoning.endswith(f"<answer>{t[i].label}</answer>")
        for r, i in zip(result.rationales, (0, 1, 2, 5), strict=True)
    )
    assert {f["input"]: (f["status"], f["reason"]) for f in result.failures} == {
        t[3].input: (FAILED, "conflict"),
        t[4].input: (FAILED, "request_failed"),
    }
    requests = Counter(script.requests)
    assert [requests[s.input] for s in t] == [2, 2, 2, 3, 3, 1]  # 1 + invalid_retries; 1 + retries
    assert sorted(sleeps) == [0.0, 0.5, 0.5, 1.0]  # 500 and 503 back off 0.5 then 1.0; 429 obeys Retry-After: 0
    assert (result.requested, result.cached) == (6, 0)


def test_distill_fatal_http_error_raises_with_hint(tmp_path):
    with serve(Script(default=[401])) as url:
        with pytest.raises(DistillError, match="HTTP 401.*OPENAI_API_KEY"):
            distill(templates(2), config(url), tmp_path / "cache.jsonl", sleep=lambda s: None, progress=False)


def test_distill_rerun_after_server_dies_requests_only_unfinished_items(tmp_path):
    t, cache = templates(8), tmp_path / "cache.jsonl"
    dying = Script(fail_after=3)
    with serve(dying) as url:
        first = distill(t, config(url, retries=1), cache, sleep=lambda s: None, progress=False)
    assert (len(first.rationales), len(first.failures)) == (3, 5)
    done = {r.input for r in first.rationales}
    healthy = Script()
    with serve(healthy) as url:
        second = distill(t, config(url), cache, sleep=lambda s: None, progress=False)
    assert sorted(healthy.requests) == sorted(s.input for s in t if s.input not in done)  # no re-requests
    assert [r.input for r in second.rationales] == [s.input for s in t]  # all, in order, once each
    assert (second.requested, second.cached, second.failures) == (5, 3, [])
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert Counter(r["status"] for r in lines) == {OK: 8, FAILED: 5}
    assert Counter(r["input"] for r in lines if r["status"] == OK) == Counter(s.input for s in t)


def test_distill_killed_midway_keeps_finished_items(tmp_path):
    t, cache = templates(6), tmp_path / "cache.jsonl"

    def killed(_seconds):
        raise KeyboardInterrupt  # the first retry after the server dies kills the run

    with serve(Script(fail_after=2)) as url, pytest.raises(KeyboardInterrupt):
        distill(t, config(url, concurrency=1), cache, sleep=killed, progress=False)
    assert [json.loads(line)["input"] for line in cache.read_text().splitlines()] == [t[0].input, t[1].input]
    healthy = Script()
    with serve(healthy) as url:
        result = distill(t, config(url, concurrency=1), cache, sleep=lambda s: None, progress=False)
    assert healthy.requests == [s.input for s in t[2:]]
    assert len(result.rationales) == 6


def test_cache_torn_last_line_is_cut_off_and_appends_continue(tmp_path):
    t, cache = templates(3), tmp_path / "cache.jsonl"
    with serve(Script()) as url:
        distill(t[:2], config(url), cache, sleep=lambda s: None, progress=False)
    intact = cache.read_bytes()
    cache.write_bytes(intact + b'{"input": "event 2 on node <*>", "status": "o')  # crash mid-write
    with serve(Script()) as url:
        result = distill(t, config(url), cache, sleep=lambda s: None, progress=False)
    assert (result.requested, result.cached, len(result.rationales)) == (1, 2, 3)
    assert cache.read_bytes().startswith(intact) and len(cache.read_text().splitlines()) == 3


def test_cache_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"input": "a", "status": "ok"}\nnot json\n{"input": "b", "status": "ok"}\n')
    with pytest.raises(DistillError, match="line 2"):
        JsonlCache(cache)


def test_cache_rationale_for_the_other_label_is_asked_again(tmp_path):
    cache = JsonlCache(tmp_path / "cache.jsonl")
    cache.append({"input": "x <*>", "label": NORMAL, "status": OK, "reasoning": cot_label("fine", NORMAL)})
    assert cache.done("x <*>", "normal") and not cache.done("x <*>", "abnormal")


def test_cot_distill_cli_distils_missing_and_rejected_then_joins(tmp_path):
    sheet = tmp_path / "templates.csv"
    sheet.write_text("log,label\nfan speed normal <*>,0\ndisk failure on <*>,1\nuser <*> logged in,0\n")
    rationales = tmp_path / "rationales.json"
    rationales.write_text(
        json.dumps(
            [
                {
                    "instruction": "i",
                    "input": "fan speed normal <*>",
                    "label": "normal",
                    "reasoning": cot_label("Routine reading.", NORMAL),
                },
                {
                    "instruction": "i",
                    "input": "disk failure on <*>",
                    "label": "normal",
                    "reasoning": cot_label("Looks routine.", NORMAL),
                },  # conflicts with the label 1
            ]
        )
    )
    spec = spec_from_file_location("cot_distill_cli", REPO_ROOT / "datasets" / "cot_distill.py")
    cli = module_from_spec(spec)
    spec.loader.exec_module(cli)
    script, out = Script(), tmp_path / "out"
    with serve(script) as url:
        assert (
            cli.main(
                [
                    "--input",
                    str(sheet),
                    "--rationales",
                    str(rationales),
                    "--output_dir",
                    str(out),
                    "--base_url",
                    url,
                    "--model",
                    "teacher",
                    "--concurrency",
                    "2",
                ]
            )
            == 0
        )
    assert sorted(script.requests) == ["disk failure on <*>", "user <*> logged in"]
    samples = read_samples(out / "train_cot.json")
    assert [s.input for s in samples] == ["fan speed normal <*>", "disk failure on <*>", "user <*> logged in"]
    assert samples[0].label == cot_label("Routine reading.", NORMAL)
    assert samples[1].label.endswith("<answer>abnormal</answer>")
    report = json.loads((out / "cot_report.json").read_text())
    assert (report["joined"], report["missing"], report["conflicts"]) == (3, 0, 1)
    assert report["distillation"]["distilled"] == 2 and report["distillation"]["seed"] == 0
    assert len(json.loads((out / "distilled.json").read_text())) == 2


def test_connection_broken_mid_reply_is_retried(monkeypatch):
    import http.client
    import urllib.request

    from rationanomaly.distill import request_with_retries

    class Reply:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return json.dumps({"choices": [{"message": {"content": "fine"}}]}).encode()

    calls = []

    def urlopen(request, timeout):
        calls.append(request.full_url)
        if len(calls) == 1:
            raise http.client.IncompleteRead(b'{"cho')  # the server hung up halfway through the body
        return Reply()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    sleeps = []
    assert request_with_retries(config("http://127.0.0.1:9/v1"), [], sleeps.append) == "fine"
    assert len(calls) == 2 and sleeps == [0.5]


def test_cot_distill_cli_reports_a_data_error_without_a_traceback(tmp_path, capsys):
    structured = tmp_path / "structured.csv"
    structured.write_text("LineId,Label,Content,EventTemplate\n1,-,fan ok,fan <*>\n")
    spec = spec_from_file_location("cot_distill_cli", REPO_ROOT / "datasets" / "cot_distill.py")
    cli = module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--input", str(structured), "--output_dir", str(tmp_path / "out")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "out").exists()


# ---- failures are not success; an endpoint that is not there fails at once --------------------------------


def _cli_inputs(tmp_path):
    sheet = tmp_path / "templates.csv"
    sheet.write_text("log,label\nfan speed normal <*>,0\ndisk failure on <*>,1\nuser <*> logged in,0\n")
    return ["--input", str(sheet), "--output_dir", str(tmp_path / "out"), "--retries", "0"]


@pytest.mark.parametrize(
    ("steps", "failed"),
    [
        ({"fan speed normal <*>": [503], "disk failure on <*>": [503], "user <*> logged in": [503]}, 3),  # all fail
        ({"disk failure on <*>": [503]}, 1),  # some fail
    ],
)
def test_cot_distill_cli_exits_1_when_a_requested_rationale_could_not_be_made(tmp_path, cli, steps, failed):
    with serve(Script(steps)) as url:
        result = cli("datasets/cot_distill.py", [*_cli_inputs(tmp_path), "--base_url", url, "--model", "teacher"])
    assert result.code == 1
    assert result.errors == [
        f"error: {failed} of 3 templates could not be distilled (request_failed: {failed}); "
        f"they are listed in {tmp_path / 'out' / 'missing.json'} and the cache: rerun the same "
        "command to ask again"
    ]
    report = json.loads((tmp_path / "out" / "cot_report.json").read_text())
    assert (report["distillation"]["failed"], report["missing"]) == (failed, failed)  # outputs say what is missing
    with serve(Script()) as url:  # the rerun asks only for the failures and then succeeds
        assert (
            cli("datasets/cot_distill.py", [*_cli_inputs(tmp_path), "--base_url", url, "--model", "teacher"]).code == 0
        )


def test_distill_fails_fast_with_one_probe_when_nothing_listens(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    calls = []

    def refused(request, timeout):
        calls.append(request.full_url)
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with pytest.raises(
        DistillError,
        match=r"cannot reach http://127.0.0.1:9/v1/models \(\[Errno 111\] Connection "
        r"refused\); start the server",
    ):
        distill(
            templates(5),
            config("http://127.0.0.1:9/v1"),
            tmp_path / "cache.jsonl",
            sleep=lambda s: None,
            progress=False,
        )
    assert calls == ["http://127.0.0.1:9/v1/models"]  # one probe, no request per item, no retries


def test_distill_probe_names_the_models_the_endpoint_serves(tmp_path):
    script = Script()
    with serve(script) as url:
        with pytest.raises(DistillError, match="serves teacher, not model 'teahcer'; pass one of those as --model"):
            distill(templates(2), config(url, model="teahcer"), tmp_path / "c.jsonl", progress=False)
    assert (script.probes, script.requests) == (1, [])


@pytest.mark.parametrize("argv", [["--model", " "], ["--model", ""], ["--base_url", ""]])
def test_cot_distill_cli_refuses_an_empty_model_or_url(tmp_path, cli, capsys, argv):
    full = {"--base_url": "http://127.0.0.1:9/v1", "--model": "teacher"}
    full[argv[0]] = argv[1]
    with pytest.raises(SystemExit) as stopped:
        cli("datasets/cot_distill.py", [*_cli_inputs(tmp_path), *(x for kv in full.items() for x in kv)])
    assert stopped.value.code == 2 and f"error: argument {argv[0]}" in capsys.readouterr().err
    with pytest.raises(DistillError, match="the model name is empty"):
        DistillConfig("http://127.0.0.1:9/v1", " ")
