"""Prediction: prompts, resumable output, the transformers / openai / vLLM backends and the CLI."""

from __future__ import annotations

import json
import os
import re
import runpy
import socket
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rationanomaly.evaluate import UNKNOWN, binarize, evaluate_files
from rationanomaly.labels import ABNORMAL, NORMAL
from rationanomaly.paths import REPO_ROOT
from rationanomaly.predict import (
    BackendUnavailable,
    SamplingConfig,
    check_local_model,
    make_backend,
    openai_backend,
    predict_file,
    predict_samples,
)
from rationanomaly.predict.backends import TransformersBackend, prompt_token_ids, resolve_backend
from rationanomaly.predict.catalog import CatalogError, load_catalog, reference_ids, select, session_path
from rationanomaly.predict.openai_backend import EndpointError
from rationanomaly.predict.runner import build_requests
from rationanomaly.prompts import COT_SYSTEM_PROMPT, LOG_SYSTEM_PROMPT, chat_messages
from rationanomaly.samples import Sample, SampleFormatError, write_samples

LOGS = [
    "ciod: failed to read message prefix on control stream",
    "instruction cache parity error corrected",
    "generating core.<*>",
    "kernel panic",
    "<*> double-hummer alignment exceptions",
    "Lustre mount FAILED : bglio<*> : point <*>",
    "idoproxydb hit ASSERT condition",
]
LABELS = [ABNORMAL, NORMAL, NORMAL, ABNORMAL, NORMAL, ABNORMAL, ABNORMAL]
SAMPLES = [Sample(log, label) for log, label in zip(LOGS, LABELS, strict=True)]
SHORT = SamplingConfig(max_new_tokens=6)  # the tiny model is random: a few tokens prove the path


class EchoBackend:
    """Deterministic stand-in: answers `<seed>:<log>`, counts calls, and can fail on a given call."""

    name = "echo"

    def __init__(self, fail_on_call: int | None = None):
        self.calls, self.fail_on_call, self.seen = 0, fail_on_call, []

    def generate(self, requests):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        self.seen.extend(r.log for r in requests)
        return [f"{r.seed}:{r.log}" for r in requests]


def _read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_build_requests_use_the_training_prompt_and_a_seed_per_position():
    requests = build_requests(SAMPLES[2:4], COT_SYSTEM_PROMPT, seed=10, start=2)
    assert [r.seed for r in requests] == [12, 13]
    assert [list(r.messages) for r in requests] == [chat_messages(s.input, COT_SYSTEM_PROMPT) for s in SAMPLES[2:4]]
    assert requests[0].log == LOGS[2]


def test_predict_samples_writes_the_reference_layout_and_run_metadata(tmp_path):
    run = predict_samples(
        SAMPLES, EchoBackend(), tmp_path / "p.json", None, SamplingConfig(seed=5), batch_size=3, metadata={"model": "m"}
    )
    records = _read(tmp_path / "p.json")
    assert [list(r) for r in records] == [["instruction", "input", "output"]] * len(SAMPLES)
    assert [r["output"] for r in records] == [f"{5 + i}:{log}" for i, log in enumerate(LOGS)]
    meta = _read(tmp_path / "p.json.meta.json")
    assert (meta["model"], meta["backend"], meta["sampling"]["seed"], meta["items"]) == ("m", "echo", 5, 7)
    assert (run.total, run.resumed, run.generated) == (7, 0, 7)


@pytest.mark.parametrize(
    ("batch_size", "save_every", "fail_on_call", "saved"),
    [
        (2, 2, 3, 4),  # saved after each of the two finished batches
        (2, 3, 3, 4),  # 2 unsaved after batch 1 (< 3), saved at 4 after batch 2
        (2, 3, 2, 0),  # interrupted before the first save: no file at all
        (1, 100, 5, 0),  # save_every never reached
    ],
)
def test_interrupted_prediction_keeps_the_saved_prefix(tmp_path, batch_size, save_every, fail_on_call, saved):
    output = tmp_path / "p.json"
    with pytest.raises(KeyboardInterrupt):
        predict_samples(SAMPLES, EchoBackend(fail_on_call), output, None, batch_size=batch_size, save_every=save_every)
    assert len(_read(output) if output.exists() else []) == saved


def test_rerun_resumes_without_duplicates_and_matches_an_uninterrupted_run(tmp_path):
    interrupted, clean = tmp_path / "interrupted.json", tmp_path / "clean.json"
    with pytest.raises(KeyboardInterrupt):
        predict_samples(SAMPLES, EchoBackend(fail_on_call=3), interrupted, None, batch_size=2, save_every=2)
    resumed_backend = EchoBackend()
    run = predict_samples(SAMPLES, resumed_backend, interrupted, None, batch_size=2, save_every=2)
    predict_samples(SAMPLES, EchoBackend(), clean, None, batch_size=2, save_every=2)
    assert (run.resumed, run.generated) == (4, 3)
    assert resumed_backend.seen == LOGS[4:]  # nothing generated twice
    assert _read(interrupted) == _read(clean)
    finished = EchoBackend()
    assert predict_samples(SAMPLES, finished, interrupted, None, batch_size=2).generated == 0 and finished.calls == 0


def test_resume_refuses_a_file_from_another_test_set(tmp_path):
    output = tmp_path / "p.json"
    predict_samples(SAMPLES[:2], EchoBackend(), output, None)
    with pytest.raises(SampleFormatError, match="item 0 is for input 'ciod"):
        predict_samples(SAMPLES[1:], EchoBackend(), output, None)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("gpt", "unknown backend 'gpt'"),  # not a backend
    ],
)
def test_resolve_backend_rejects_unknown_names(name, error):
    with pytest.raises(ValueError, match=error):
        resolve_backend(name)


def test_auto_backend_is_transformers_without_vllm_or_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert resolve_backend("auto") == "transformers"


def test_missing_vllm_is_an_error_naming_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now raises ImportError
    with pytest.raises(BackendUnavailable, match="'vllm' package is not installed.*pip install -r requirements.txt"):
        make_backend("vllm", tmp_path, SamplingConfig())


def test_prompt_token_ids_hold_one_bos_and_the_chat_template(tiny_llama_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    ids = prompt_token_ids(tokenizer, chat_messages(LOGS[0], LOG_SYSTEM_PROMPT))
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    text = tokenizer.decode(ids)
    assert text.startswith("<s>[INST] <<SYS>>\n" + LOG_SYSTEM_PROMPT) and text.endswith(LOGS[0] + " [/INST]")


@pytest.mark.slow
def test_transformers_backend_is_seeded_and_batching_keeps_order(tiny_llama_dir):
    backend = TransformersBackend(tiny_llama_dir, SHORT, batch_size=3, device="cpu")
    requests = build_requests(SAMPLES, COT_SYSTEM_PROMPT, seed=0)
    first, second = backend.generate(requests), backend.generate(requests)
    assert len(first) == len(SAMPLES) and all(isinstance(t, str) and t for t in first)
    assert first == second
    assert backend.generate(build_requests(SAMPLES, COT_SYSTEM_PROMPT, seed=1)) != first


@pytest.mark.slow
def test_transformers_backend_left_padding_gives_each_prompt_its_solo_answer(tiny_llama_dir):
    # near-zero temperature makes sampling an argmax, so batching may only change the answer through padding
    greedy = SamplingConfig(temperature=1e-5, max_new_tokens=8)
    backend = TransformersBackend(tiny_llama_dir, greedy, batch_size=len(SAMPLES), device="cpu")
    requests = build_requests(SAMPLES, LOG_SYSTEM_PROMPT, seed=0)
    assert len({len(prompt_token_ids(backend.tokenizer, r.messages)) for r in requests}) > 1  # padding happens
    assert backend.generate(requests) == [backend.generate([r])[0] for r in requests]


@pytest.mark.slow
def test_tiny_llama_predict_then_evaluate_end_to_end(tiny_llama_dir, tmp_path):
    write_samples(tmp_path / "test.json", SAMPLES)
    with pytest.raises(KeyboardInterrupt):
        backend = TransformersBackend(tiny_llama_dir, SHORT, batch_size=2, device="cpu")
        predict_samples(
            SAMPLES,
            _Interrupting(backend, on_call=3),
            tmp_path / "resumed.json",
            COT_SYSTEM_PROMPT,
            SHORT,
            batch_size=2,
            save_every=2,
        )
    assert len(_read(tmp_path / "resumed.json")) == 4
    run = predict_file(
        tmp_path / "test.json",
        tmp_path / "resumed.json",
        model=tiny_llama_dir,
        backend="transformers",
        sampling=SHORT,
        batch_size=2,
        save_every=2,
        device="cpu",
    )
    predict_file(
        tmp_path / "test.json",
        tmp_path / "clean.json",
        model=tiny_llama_dir,
        backend="transformers",
        sampling=SHORT,
        batch_size=2,
        save_every=2,
        device="cpu",
    )
    assert (run.resumed, run.generated) == (4, 3)
    assert _read(tmp_path / "resumed.json") == _read(tmp_path / "clean.json")
    result = evaluate_files(tmp_path / "clean.json", tmp_path / "test.json", output_json=tmp_path / "m.json")
    outputs = [binarize(r["output"]) for r in _read(tmp_path / "clean.json")]
    metrics = _read(tmp_path / "m.json")["template"]
    assert metrics["total"] == 7 and metrics["support"] == 4
    assert metrics["unknown"] == outputs.count(UNKNOWN) == len(result.unknowns)
    assert metrics["tp"] + metrics["fn"] == 4 and metrics["fp"] + metrics["tn"] == 3


class _Interrupting:
    """Wraps a backend and raises KeyboardInterrupt on a given call (a Ctrl-C mid-run)."""

    def __init__(self, backend, on_call):
        self.backend, self.on_call, self.calls, self.name = backend, on_call, 0, backend.name

    def generate(self, requests):
        self.calls += 1
        if self.calls == self.on_call:
            raise KeyboardInterrupt("simulated interruption")
        return self.backend.generate(requests)


class _ChatHandler(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /v1/chat/completions: abnormal if the log says 'fail' or 'panic'."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        if self.path != "/v1/chat/completions" or body["model"] != "tiny":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "model not found"}')
            return
        log = body["messages"][-1]["content"].lower()
        label = ABNORMAL if ("fail" in log or "panic" in log) else NORMAL
        answer = {"choices": [{"message": {"role": "assistant", "content": f"<answer>{label}</answer>"}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_sends_the_shared_sampling_and_prompt(chat_server, tmp_path):
    server, url = chat_server
    write_samples(tmp_path / "test.json", SAMPLES)
    run = predict_file(
        tmp_path / "test.json",
        tmp_path / "p.json",
        model="tiny",
        backend="openai",
        mode="cot",
        base_url=url,
        concurrency=3,
    )
    assert run.generated == 7
    outputs = [binarize(r["output"]) for r in _read(tmp_path / "p.json")]
    assert outputs == [ABNORMAL, NORMAL, NORMAL, ABNORMAL, NORMAL, ABNORMAL, NORMAL]
    body = next(b for b in server.bodies if LOGS[0] in b["messages"][-1]["content"])
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.1, 0.7, 1024, 0)
    assert body["messages"] == chat_messages(LOGS[0], COT_SYSTEM_PROMPT)


def test_openai_backend_reports_http_errors_with_status(chat_server, tmp_path):
    _, url = chat_server
    backend = make_backend("openai", "other-model", SamplingConfig(), base_url=url)
    with pytest.raises(EndpointError, match="HTTP 404.*model not found.*--model"):
        backend.generate(build_requests(SAMPLES[:1], None, 0))


def test_openai_backend_fails_fast_on_an_unreachable_server(monkeypatch):
    monkeypatch.setattr(openai_backend, "BACKOFF_SECONDS", 0.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the request: nothing listens there
    with pytest.raises(EndpointError, match=f"cannot reach http://127.0.0.1:{port}/v1/models .*start the server"):
        make_backend("openai", "tiny", SamplingConfig(), base_url=f"http://127.0.0.1:{port}/v1")


class RecordingLLM:
    """Stands in for `vllm.LLM`: records the engine arguments and the environment it was built in."""

    built: list[dict] = []

    def __init__(self, **engine_args):
        self.built.append({"args": engine_args, "multiprocessing": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")})

    def get_tokenizer(self):
        return None


def _vllm_platform(monkeypatch, cpu: bool) -> None:
    """What `vllm.platforms.current_platform.is_cpu()` answers."""
    platform = types.SimpleNamespace(is_cpu=lambda: cpu)
    monkeypatch.setitem(sys.modules, "vllm.platforms", types.SimpleNamespace(current_platform=platform))


def _recording_vllm(monkeypatch, cuda: bool) -> list[dict]:
    """A `vllm` module whose LLM records how it was built; CUDA present or not."""
    RecordingLLM.built = []
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=RecordingLLM))
    _vllm_platform(monkeypatch, cpu=not cuda)
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE"):
        monkeypatch.delenv(name, raising=False)
    return RecordingLLM.built


def test_vllm_on_a_cpu_runs_the_engine_in_process_and_eager_when_asked(monkeypatch, tmp_path):
    built = _recording_vllm(monkeypatch, cuda=False)
    make_backend("vllm", tmp_path, SHORT, enforce_eager=True)
    make_backend("vllm", tmp_path, SHORT)
    assert [b["args"]["enforce_eager"] for b in built] == [True, False]
    assert [b["multiprocessing"] for b in built] == ["0", "0"]
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_vllm_keeps_its_engine_process_on_a_gpu_and_a_users_choice_on_a_cpu(monkeypatch, tmp_path):
    built = _recording_vllm(monkeypatch, cuda=True)
    make_backend("vllm", tmp_path, SHORT)
    _vllm_platform(monkeypatch, cpu=True)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    make_backend("vllm", tmp_path, SHORT)
    assert [b["multiprocessing"] for b in built] == [None, "1"]
    assert built[0]["args"]["enforce_eager"] is False


def test_model_predict_passes_enforce_eager_to_the_vllm_engine(monkeypatch, tmp_path):
    built = _recording_vllm(monkeypatch, cuda=False)
    write_samples(tmp_path / "test.json", [Sample("", "kernel panic", "abnormal")])
    monkeypatch.setattr(
        "rationanomaly.predict.backends.VLLMBackend.generate", lambda self, requests: ["x"] * len(requests)
    )
    main = runpy.run_path(str(REPO_ROOT / "validation" / "model_predict.py"))["main"]
    args = ["--backend", "vllm", "--model", str(tmp_path), "--testset", str(tmp_path / "test.json")]
    assert main([*args, "--output", str(tmp_path / "eager.json"), "--enforce_eager"]) == 0
    assert main([*args, "--output", str(tmp_path / "compiled.json")]) == 0
    assert [b["args"]["enforce_eager"] for b in built] == [True, False]


@pytest.mark.gpu
def test_vllm_backend_answers_every_request_on_a_gpu(tiny_llama_dir):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA device")
    backend = make_backend("vllm", tiny_llama_dir, SHORT, gpu_memory_utilization=0.3)
    texts = backend.generate(build_requests(SAMPLES, COT_SYSTEM_PROMPT, 0))
    assert len(texts) == len(SAMPLES) and texts == backend.generate(build_requests(SAMPLES, COT_SYSTEM_PROMPT, 0))


def _script(name):
    return runpy.run_path(str(REPO_ROOT / "validation" / name), run_name="validation_script")


def test_model_predict_reference_form_writes_the_reference_output_path(tmp_path, capsys):
    write_samples(tmp_path / "BGL.json", SAMPLES)
    catalog = {
        "models": ["tiny"],
        "model_paths": {"tiny": "tiny"},
        "testsets": ["BGL"],
        "testset_paths": {"BGL": "BGL.json"},
        "results_dir": "results",
    }
    (tmp_path / "list.json").write_text(json.dumps(catalog))
    main = _script("model_predict.py")["main"]
    argv = ["-m", "0", "-t", "0", "-c", "log", "--backend", "rules", "--catalog", str(tmp_path / "list.json")]
    assert main(argv) == 0
    output = tmp_path / "results" / "original_vllm_output" / "BGL_by_tiny.json"
    assert [binarize(r["output"]) for r in _read(output)] == [
        ABNORMAL,
        NORMAL,
        NORMAL,
        ABNORMAL,
        NORMAL,
        ABNORMAL,
        NORMAL,
    ]
    assert _read(output.with_name(output.name + ".meta.json"))["mode"] == "log"
    assert "Running inference by tiny on BGL" in capsys.readouterr().out


def test_model_predict_needs_a_model_for_model_backends(tmp_path, capsys):
    write_samples(tmp_path / "t.json", SAMPLES)
    main = _script("model_predict.py")["main"]
    assert (
        main(["--testset", str(tmp_path / "t.json"), "--backend", "transformers", "--output", str(tmp_path / "p.json")])
        == 2
    )
    assert "needs a model: pass --model PATH" in capsys.readouterr().err


def test_shipped_catalogue_resolves_the_reference_numbers_against_the_repository():
    catalog = load_catalog()
    chosen = select(catalog, 2, 0)
    assert (chosen.model, chosen.testset) == ("RationAnomaly", "BGL")
    assert chosen.model_path == REPO_ROOT / "models" / "RationAnomaly"
    assert chosen.predictions_path == REPO_ROOT / "datasets/results/original_vllm_output/BGL_by_RationAnomaly.json"
    assert chosen.diff_path == REPO_ROOT / "datasets/results/diff/BGL_by_RationAnomaly.json"
    assert session_path(catalog, "b") == REPO_ROOT / "datasets/testsets/BGL_test_sessions.json"
    assert session_path(catalog, "s").name == "Spirit_test_sessions.json"


@pytest.mark.parametrize(
    ("model", "testset", "expected"),
    [
        ("0", "1", (0, 1)),  # reference form
        ("models/x", "1", None),  # a path: explicit form
        ("0", "test.json", None),
        (None, "0", None),  # rules backend: no model
    ],
)
def test_reference_ids_only_when_both_are_numbers(model, testset, expected):
    assert reference_ids(model, testset) == expected


def test_catalogue_number_out_of_range_lists_the_choices():
    with pytest.raises(CatalogError, match="models number 7 is not in the catalogue .*0=Llama-2-7b, 1=LogPrompt"):
        select(load_catalog(), 7, 0)


@pytest.mark.parametrize(
    "changed",
    [
        {"system_prompt": COT_SYSTEM_PROMPT},  # another mode (-c cot after -c log) into the same default path
        {"sampling": SamplingConfig(seed=1)},
        {"metadata": {"model": "other"}},
    ],
)
def test_resume_refuses_a_file_made_with_other_settings(tmp_path, changed):
    output = tmp_path / "p.json"
    first = {"system_prompt": None, "sampling": SamplingConfig(), "metadata": {"model": "m"}}
    with pytest.raises(KeyboardInterrupt):
        predict_samples(SAMPLES, EchoBackend(fail_on_call=3), output, batch_size=2, save_every=2, **first)
    with pytest.raises(ValueError, match="was made with another .*delete both files"):
        predict_samples(SAMPLES, EchoBackend(), output, batch_size=2, **{**first, **changed})
    assert len(_read(output)) == 4  # the saved predictions are left alone
    run = predict_samples(SAMPLES, EchoBackend(), output, batch_size=2, **first)
    assert (run.resumed, run.generated) == (4, 3)


def test_model_predict_reports_a_bad_catalogue_number_without_a_traceback(capsys):
    main = _script("model_predict.py")["main"]
    assert main(["-m", "9", "-t", "0", "--backend", "rules"]) == 2
    assert "models number 9 is not in the catalogue" in capsys.readouterr().err


def test_model_predict_names_a_model_folder_that_is_not_there(tmp_path, capsys):
    write_samples(tmp_path / "t.json", SAMPLES)
    main = _script("model_predict.py")["main"]
    missing = tmp_path / "models" / "RationAnomaly"
    assert (
        main(
            [
                "--model",
                str(missing),
                "--testset",
                str(tmp_path / "t.json"),
                "--backend",
                "transformers",
                "--output",
                str(tmp_path / "p.json"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == (
        f"error: model folder {missing} not found; pass an exported model folder (bash "
        "model_export.sh writes models/RationAnomaly) or a Hugging Face id (org/name)\n"
    )


def test_model_predict_reference_form_says_where_a_missing_test_set_comes_from(tmp_path, capsys):
    catalog = {
        "models": ["tiny"],
        "model_paths": {"tiny": "tiny"},
        "testsets": ["BGL"],
        "testset_paths": {"BGL": "testsets/BGL_test.json"},
    }
    (tmp_path / "list.json").write_text(json.dumps(catalog))
    main = _script("model_predict.py")["main"]
    assert main(["-m", "0", "-t", "0", "--backend", "rules", "--catalog", str(tmp_path / "list.json")]) == 2
    assert "copy the one template_split.py wrote there (e.g. runs/data/split/BGL_test.json)" in capsys.readouterr().err


# ---- resume only with the same settings; numbers that mean something --------------------------------------


def test_model_predict_refuses_to_resume_with_another_batch_size(tmp_path, cli, snapshot, tiny_llama_dir):
    write_samples(tmp_path / "t.json", SAMPLES)
    model = ["--backend", "transformers", "--model", str(tiny_llama_dir), "--device", "cpu", "--max_new_tokens", "4"]
    argv = [*model, "--testset", str(tmp_path / "t.json"), "--output", str(tmp_path / "p.json")]
    assert cli("validation/model_predict.py", [*argv, "--batch_size", "2"]).code == 0
    records = json.loads((tmp_path / "p.json").read_text())
    (tmp_path / "p.json").write_text(json.dumps(records[:2]))  # as if interrupted after the first batch
    before = snapshot(tmp_path)
    result = cli("validation/model_predict.py", [*argv, "--batch_size", "3"])
    assert result.code == 2 and result.errors == [
        f"error: {tmp_path / 'p.json'} was made with another batch_size (see {tmp_path / 'p.json.meta.json'}); pass "
        "another --output, or delete both files to start over"
    ]
    assert snapshot(tmp_path) == before
    assert cli("validation/model_predict.py", [*argv, "--batch_size", "2"]).code == 0  # same settings: resumes
    assert json.loads((tmp_path / "p.json").read_text()) == records


def test_model_predict_resumes_with_another_batch_size_where_answers_do_not_depend_on_it(tmp_path, cli):
    # rules (like vllm and openai, seeded per item) gives the same answers whatever the batch size
    write_samples(tmp_path / "t.json", SAMPLES)
    argv = ["--backend", "rules", "--testset", str(tmp_path / "t.json"), "--output", str(tmp_path / "p.json")]
    assert cli("validation/model_predict.py", [*argv, "--batch_size", "2"]).code == 0
    records = json.loads((tmp_path / "p.json").read_text())
    (tmp_path / "p.json").write_text(json.dumps(records[:3]))
    assert cli("validation/model_predict.py", [*argv, "--batch_size", "3"]).code == 0
    assert json.loads((tmp_path / "p.json").read_text()) == records


def test_model_predict_reads_no_dtype_as_auto_when_resuming(tmp_path, cli):
    write_samples(tmp_path / "t.json", SAMPLES)
    argv = ["--backend", "rules", "--testset", str(tmp_path / "t.json"), "--output", str(tmp_path / "p.json")]
    assert cli("validation/model_predict.py", argv).code == 0
    records = json.loads((tmp_path / "p.json").read_text())
    (tmp_path / "p.json").write_text(json.dumps(records[:3]))
    assert cli("validation/model_predict.py", [*argv, "--dtype", "auto"]).code == 0
    assert json.loads((tmp_path / "p.json").read_text()) == records


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_model_predict_batch_size_must_be_a_positive_integer(tmp_path, cli, capsys, value):
    with pytest.raises(SystemExit) as stopped:
        cli(
            "validation/model_predict.py",
            ["--backend", "rules", "--testset", str(tmp_path / "t.json"), "--batch_size", value],
        )
    assert stopped.value.code == 2 and "error: argument --batch_size/--batch-size" in capsys.readouterr().err


def test_predict_file_refuses_a_batch_size_below_one(tmp_path):
    write_samples(tmp_path / "t.json", SAMPLES)
    with pytest.raises(ValueError, match="batch_size=0; use 1 or more"):
        predict_file(tmp_path / "t.json", tmp_path / "p.json", backend="rules", batch_size=0)


@pytest.mark.parametrize(
    ("model", "local"),
    [
        ("{tmp}/models/RationAnomaly", True),  # absolute
        ("./models/RationAnomaly", True),  # explicitly relative
        ("models/RationAnomaly", True),  # models/ exists here, so this is a folder
        ("a/b/c", True),  # deeper than org/name
        ("meta-llama/Llama-2-7b-chat-hf", False),  # org/name: may be a hub id
        ("gpt2", False),  # a bare hub name
    ],
)
def test_check_local_model_tells_a_missing_folder_from_a_hub_id(tmp_path, monkeypatch, model, local):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    name = model.format(tmp=tmp_path)
    if local:
        with pytest.raises(FileNotFoundError, match=f"model folder {re.escape(name)} not found"):
            check_local_model(name)
    else:
        assert check_local_model(name) is None
