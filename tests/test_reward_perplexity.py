"""The perplexity LM: same numbers as the reference way, batching changes nothing, loading fails early."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from rationanomaly.reward import FETCH_COMMAND, RewardConfigError, compute_reward, perplexity, score_responses
from rationanomaly.reward import score as score_module
from rationanomaly.reward.components import PPL_PREFIX
from rationanomaly.reward.perplexity import (
    MicroBatcher,
    PerplexityModel,
    _Request,
    load_perplexity_model,
    supports_packing,
)

TEXTS = [
    PPL_PREFIX + "The log reports a routine event.",
    PPL_PREFIX,
    PPL_PREFIX + "generating core.<*> kernel panic machine check interrupt " * 12,
    PPL_PREFIX + "ciod: failed to read message prefix on control stream",
    PPL_PREFIX + "x" * 5000,  # past 1,024 tokens: truncated like the reference
]
FP32_TOLERANCE = 1e-4  # relative; float32 reduction order differs between padded and single passes
BOUNDARY_THINKS = [
    " The log reports a routine event.",  # leading space: its own pre-token, the prefix's newline stays alone
    "  two spaces first",  # newline + space form one pre-token (no merge in the tiny vocabulary)
    "\n\nblank lines first",  # newlines form one pre-token (no merge in the tiny vocabulary)
    "\tkernel panic",  # tab
    "x",  # a single think token
]


def reference_way(folder, texts):
    """What the reference does on every call: load from disk, one text, fp32, HF's own loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    values = []
    for text in texts:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=1024)
        with torch.no_grad():
            values.append(torch.exp(model(**inputs, labels=inputs["input_ids"]).loss).item())
    return values


def fresh_model(folder, dtype="float32", **options):
    """A PerplexityModel outside the process cache, with constructor options (prefix, packed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32")
    return PerplexityModel(model, AutoTokenizer.from_pretrained(str(folder)), "cpu", dtype, **options)


def full_pass_model(folder, dtype="float32"):
    """The same weights with the prefix cache turned off: every text takes the full, uncached pass."""
    return fresh_model(folder, dtype, prefix=None)


@pytest.fixture(scope="module")
def merging_gpt2_dir(tmp_path_factory):
    """A tiny GPT-2 whose BPE learned a newline-newline merge, so the prefix's final newline can merge."""
    from rationanomaly.tiny import DEFAULT_CORPUS, build_tiny_gpt2, build_tiny_tokenizer

    path = tmp_path_factory.mktemp("merging_gpt2")
    corpus = (*DEFAULT_CORPUS, *["event.\n\n\nnext"] * 50, PPL_PREFIX)
    build_tiny_gpt2(path, tokenizer=build_tiny_tokenizer(path, corpus=corpus))
    return path


def test_perplexity_equals_the_reference_way_in_float32(tiny_gpt2_dir):
    model = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32")
    assert model.perplexities(TEXTS, batch_size=4) == pytest.approx(
        reference_way(tiny_gpt2_dir, TEXTS), rel=FP32_TOLERANCE
    )


@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_batched_perplexity_equals_one_at_a_time(tiny_gpt2_dir, batch_size):
    model = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32")
    single = [model.perplexities([text], batch_size=1)[0] for text in TEXTS]
    assert model.perplexities(TEXTS, batch_size=batch_size) == pytest.approx(single, rel=FP32_TOLERANCE)


def test_prefix_cache_equals_the_full_pass_and_the_reference_way(tiny_gpt2_dir):
    texts = [*TEXTS, *(PPL_PREFIX + think for think in BOUNDARY_THINKS), "a log line without the context line"]
    cached = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32")
    ids = [cached.token_ids(text) for text in texts]
    uses_cache = [cached.think_ids(tokens) is not None for tokens in ids]
    # the prefix alone and the text without it take the full pass; every other text here splits cleanly
    assert uses_cache == [True, False, True, True, True, True, True, True, True, True, False]
    assert len(ids[4]) == 1024 and cached.think_ids(ids[4]) == ids[4][len(cached.prefix.ids) :]  # truncated
    got = cached.perplexities(texts, batch_size=3)
    assert got == pytest.approx(full_pass_model(tiny_gpt2_dir).perplexities(texts, 3), rel=FP32_TOLERANCE)
    assert got == pytest.approx(reference_way(tiny_gpt2_dir, texts), rel=FP32_TOLERANCE)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_packed_forward_equals_the_padded_forward_and_the_reference_way(tiny_gpt2_dir, batch_size):
    texts = [*TEXTS, *(PPL_PREFIX + think for think in BOUNDARY_THINKS), "a log line without the context line"]
    packed, padded = fresh_model(tiny_gpt2_dir, packed=True), fresh_model(tiny_gpt2_dir, packed=False)
    got = packed.perplexities([*texts, "x", ""], batch_size)
    assert got[:-2] == pytest.approx(padded.perplexities(texts, batch_size), rel=FP32_TOLERANCE)
    assert got[:-2] == pytest.approx(reference_way(tiny_gpt2_dir, texts), rel=FP32_TOLERANCE)
    assert math.isnan(got[-2]) and math.isnan(got[-1])  # one token or none: nothing is predicted
    assert padded.perplexities(["x", ""], batch_size) == pytest.approx([math.nan, math.nan], nan_ok=True)


def test_packing_is_used_for_gpt2_on_a_cpu_only(tiny_gpt2_dir, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    gpt2 = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir)).base_model
    assert supports_packing(gpt2) and fresh_model(tiny_gpt2_dir).packed
    assert perplexity.packs_by_default(gpt2, "cpu") and not perplexity.packs_by_default(gpt2, "cuda:1")
    gpt2.config.scale_attn_by_inverse_layer_idx = True  # an attention variant the packed forward does not mirror
    assert not supports_packing(gpt2)
    assert not supports_packing(AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).base_model)


@pytest.mark.parametrize(
    ("packed", "device", "bound"),
    [(False, "cpu", perplexity.MAX_PADDING_SHARE), (True, "cpu", 1.0), (False, "cuda:0", 1.0), (False, "cuda", 1.0)],
)
def test_padding_is_bounded_only_for_a_padded_pass_on_a_cpu(packed, device, bound):
    assert perplexity.padding_bound(packed, device) == bound
    # unbounded: sorted by length and cut at batch_size only, however uneven the lengths
    assert perplexity.length_batches({0: 300, 1: 5, 2: 40}, 2, 1.0) == [[1, 2], [0]]


def test_another_causal_lm_takes_the_padded_path_with_the_same_numbers(tiny_llama_dir):
    texts = [PPL_PREFIX + "The log reports a routine event.", PPL_PREFIX + "kernel panic " * 20, "no context line"]
    llama = fresh_model(tiny_llama_dir)
    assert not llama.packed and llama.prefix is not None
    assert llama.perplexities(texts, 2) == pytest.approx(reference_way(tiny_llama_dir, texts), rel=FP32_TOLERANCE)


def test_prefix_state_holds_the_prefix_tokens_and_their_summed_loss(tiny_gpt2_dir):
    import torch
    from transformers import AutoModelForCausalLM

    prefix = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32").prefix
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir))
    ids = torch.tensor([prefix.ids])
    with torch.no_grad():
        mean_loss = model(input_ids=ids, labels=ids).loss.item()  # HF's mean over len(ids) - 1 positions
    assert prefix.loss_sum == pytest.approx(mean_loss * (len(prefix.ids) - 1), rel=FP32_TOLERANCE)
    assert len(prefix.layers) == model.config.n_layer and prefix.layers[0][0].shape[2] == len(prefix.ids)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_text_whose_tokens_merge_across_the_prefix_boundary_takes_the_full_pass(merging_gpt2_dir, dtype):
    crossing = PPL_PREFIX + "\n\nThe log reports a routine event."  # three newlines: the prefix's one merges
    clean = PPL_PREFIX + "The log reports a routine event."
    model = load_perplexity_model(merging_gpt2_dir, device="cpu", dtype=dtype)
    assert model.token_ids(crossing)[: len(model.prefix.ids)] != list(model.prefix.ids)  # the merge happened
    assert model.think_ids(model.token_ids(crossing)) is None
    assert model.think_ids(model.token_ids(clean)) is not None
    got = model.perplexities([crossing, clean], batch_size=2)
    tolerance = FP32_TOLERANCE if dtype == "float32" else 1e-2
    assert got == pytest.approx(reference_way(merging_gpt2_dir, [crossing, clean]), rel=tolerance)
    assert got == pytest.approx(full_pass_model(merging_gpt2_dir, dtype).perplexities([crossing, clean], 2), rel=1e-2)


def test_bfloat16_stays_within_one_percent_of_float32(tiny_gpt2_dir):
    fp32 = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32").perplexities(TEXTS, 8)
    bf16 = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="bfloat16").perplexities(TEXTS, 8)
    assert bf16 == pytest.approx(fp32, rel=1e-2)
    assert bf16 != fp32  # it really ran in bf16


def test_model_is_loaded_once_per_path_device_dtype(tiny_gpt2_dir):
    first = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32")
    assert load_perplexity_model(str(tiny_gpt2_dir), device="cpu", dtype="float32") is first
    assert load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="bfloat16") is not first


@pytest.fixture
def fresh_models(monkeypatch):
    """An empty process-wide model cache, so dtype=auto decides again; returns it."""
    models = {}
    monkeypatch.setattr(perplexity, "_MODELS", models)
    return models


def test_auto_dtype_takes_bf16_on_a_bf16_cpu_when_calibration_agrees(tiny_gpt2_dir, fresh_models, monkeypatch):
    monkeypatch.setattr(perplexity, "cpu_has_native_bf16", lambda: True)
    model = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="auto")
    assert model.dtype == "bfloat16"
    assert 0 < model.calibrated_deviation <= perplexity.BF16_MAX_DEVIATION  # measured, and bf16 really ran
    assert load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="bfloat16") is model
    assert {key[2] for key in fresh_models} == {"auto", "bfloat16"}  # the fp32 calibration copy is not kept


def test_auto_dtype_keeps_fp32_and_warns_when_bf16_deviates_too_much(tiny_gpt2_dir, fresh_models, monkeypatch, caplog):
    monkeypatch.setattr(perplexity, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(perplexity, "BF16_MAX_DEVIATION", 0.0)
    with caplog.at_level("WARNING", logger=perplexity.__name__):
        model = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="auto")
    assert model.dtype == "float32" and model.calibrated_deviation > 0
    assert "using float32" in caplog.text and "bfloat16 deviates" in caplog.text
    assert load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32") is model


def test_auto_dtype_is_float32_without_native_bf16_and_skips_calibration(tiny_gpt2_dir, fresh_models, monkeypatch):
    monkeypatch.setattr(perplexity, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(perplexity, "calibration_texts", lambda: pytest.fail("calibrated without bf16"))
    model = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="auto")
    assert model.dtype == "float32" and model.calibrated_deviation is None


@pytest.mark.parametrize(
    ("dtype", "device", "native", "expected"),
    [
        ("auto", "cpu", True, ("bfloat16", "float32")),
        ("auto", "cpu", False, ("float32",)),
        ("auto", "cuda:1", True, ("float32",)),  # a GPU runs DistilGPT-2 fast in fp32: stay exact
        ("bfloat16", "cpu", False, ("bfloat16",)),  # an explicit dtype is never second-guessed
        ("float32", "cpu", True, ("float32",)),
    ],
)
def test_dtype_candidates(dtype, device, native, expected, monkeypatch):
    monkeypatch.setattr(perplexity, "cpu_has_native_bf16", lambda: native)
    assert perplexity.dtype_candidates(dtype, device) == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("fpu avx512f avx512_bf16 sha_ni", True), ("fpu amx_bf16 amx_tile", True), ("fpu avx512f avx2", False)],
)
def test_cpu_has_native_bf16_reads_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert perplexity.cpu_has_native_bf16(cpuinfo) is expected
    assert perplexity.cpu_has_native_bf16(tmp_path / "absent") is False


def test_calibration_texts_are_the_packaged_thinks_in_the_scored_form():
    texts = perplexity.calibration_texts()
    assert len(texts) == perplexity.CALIBRATION_TEXTS
    assert all(text.startswith(PPL_PREFIX) and len(text) > len(PPL_PREFIX) + 100 for text in texts)
    assert not any("<think>" in text or "</think>" in text for text in texts)


@pytest.mark.parametrize(
    ("values", "reference", "expected"),
    [
        ([101.0, 50.0], [100.0, 50.0], 0.01),
        ([1.0], [1.0], 0.0),
        ([math.inf], [2.0], math.inf),
        ([math.nan], [2.0], math.inf),
    ],
)
def test_max_relative_deviation(values, reference, expected):
    assert perplexity.max_relative_deviation(values, reference) == pytest.approx(expected)


def test_length_batches_bound_padding_and_size():
    lengths = {0: 100, 1: 300, 2: 105, 3: 100, 4: 310, 5: 20, 6: 100, 7: 100}
    batches = perplexity.length_batches(lengths, batch_size=3)
    assert batches == [[5], [0, 3, 6], [7, 2], [1, 4]]  # 20 alone; at most 3 per pass; 300 and 310 together
    for batch in batches:
        width = max(lengths[index] for index in batch)
        assert sum(lengths[index] for index in batch) >= (1 - perplexity.MAX_PADDING_SHARE) * width * len(batch)
    assert perplexity.length_batches({}, 8) == []


def test_output_layer_in_vocabulary_blocks_equals_the_reference_way(tiny_gpt2_dir, monkeypatch):
    """The tiny vocabulary fits one block; with 7-column blocks the running max and rescaled sum are used."""
    monkeypatch.setattr(perplexity, "VOCAB_BLOCK", 7)
    got = full_pass_model(tiny_gpt2_dir).perplexities(TEXTS[:4], 8)
    assert got == pytest.approx(reference_way(tiny_gpt2_dir, TEXTS[:4]), rel=FP32_TOLERANCE)


def test_fused_tanh_gelu_replaces_every_gelu_new_and_changes_only_rounding(tiny_gpt2_dir):
    import torch
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir), dtype="float32").eval()
    fused = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir), dtype="float32").eval()
    assert perplexity.fuse_tanh_gelu(fused) == original.config.n_layer
    assert perplexity.fuse_tanh_gelu(fused) == 0  # nothing left to swap
    ids = torch.arange(1, 40).unsqueeze(0)
    with torch.inference_mode():
        torch.testing.assert_close(fused(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)


def test_missing_model_fails_with_the_path_and_the_fetch_command(tmp_path):
    with pytest.raises(RewardConfigError) as caught:
        load_perplexity_model(tmp_path / "distilgpt2", device="cpu")
    assert str(tmp_path / "distilgpt2") in str(caught.value) and FETCH_COMMAND in str(caught.value)


def test_cuda_requested_without_a_gpu_is_a_config_error(tiny_gpt2_dir):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RewardConfigError, match="no CUDA device"):
        load_perplexity_model(tiny_gpt2_dir, device="cuda")


def test_micro_batcher_merges_callers_queued_behind_a_running_batch():
    started, release, calls = threading.Event(), threading.Event(), []

    def score_batch(texts):
        calls.append(list(texts))
        if len(calls) == 1:
            started.set()
            release.wait()
        return [float(len(text)) for text in texts]

    batcher = MicroBatcher(score_batch, batch_size=8)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher, "a")
        started.wait()
        rest = [pool.submit(batcher, text) for text in ("bb", "ccc", "dddd")]
        while len(batcher._pending) < 3:  # wait for a state, not for a time
            threading.Event().wait(0.001)
        release.set()
        assert [first.result(), *(future.result() for future in rest)] == [1.0, 2.0, 3.0, 4.0]
    assert calls[0] == ["a"] and sorted(calls[1]) == ["bb", "ccc", "dddd"] and len(calls) == 2


def test_micro_batcher_respects_batch_size_and_passes_errors_to_every_caller():
    def failing(texts):
        raise RuntimeError(f"boom on {len(texts)}")

    with pytest.raises(RuntimeError, match="boom on 1"):
        MicroBatcher(failing, batch_size=2)("x")
    calls = []
    batcher = MicroBatcher(lambda texts: calls.append(list(texts)) or [0.0] * len(texts), batch_size=2)
    queued = [_Request("q1"), _Request("q2"), _Request("q3")]  # left by callers that are still waiting
    batcher._pending.extend(queued)
    assert batcher("x") == 0.0
    assert calls == [["q1", "q2"], ["q3", "x"]]  # oldest first, never more than batch_size per pass
    assert all(request.done for request in queued)


def test_concurrent_compute_reward_equals_sequential(tiny_gpt2_dir):
    truth = "<think>The log reports a routine event.</think><answer>normal</answer>"
    responses = [f"<think>The log reports event number {i}.</think><answer>normal</answer>" for i in range(24)]
    kwargs = {"ppl_model": str(tiny_gpt2_dir), "batch_size": 6, "device": "cpu", "dtype": "float32"}
    sequential = [compute_reward(response, truth, **kwargs) for response in responses]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda response: compute_reward(response, truth, **kwargs), responses))
    for got, want in zip(concurrent, sequential, strict=True):
        assert got == pytest.approx(want, rel=FP32_TOLERANCE)
    assert score_module._batcher(score_module.reward_config(kwargs))._pending == []


@pytest.mark.realdata
def test_perplexity_on_real_rationales_equals_the_reference_way(public_data, tiny_gpt2_dir):
    rows = json.loads((public_data / "rlog/AnomalyDetection_with_reason.json").read_text())
    texts = [PPL_PREFIX + row["reasoning"] for row in rows[::40]]
    model = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32")
    got = model.perplexities(texts, batch_size=4)
    assert got == pytest.approx(reference_way(tiny_gpt2_dir, texts), rel=FP32_TOLERANCE)
    assert all(math.isfinite(value) and value > 1 for value in got)


@pytest.mark.realdata
def test_score_responses_on_real_rationales_equals_per_sample_scores(public_data, tiny_gpt2_dir):
    rows = json.loads((public_data / "rlog/AnomalyDetection_with_reason.json").read_text())
    truths = [row["reasoning"] for row in rows if "<think>" in row["reasoning"]][::25]
    responses = truths[1:] + truths[:1]  # another template's rationale, same label or not
    kwargs = {"ppl_model": str(tiny_gpt2_dir), "batch_size": 4, "dtype": "float32"}
    batch = score_responses(responses, truths, **kwargs)
    for got, response, truth in zip(batch, responses, truths, strict=True):
        assert got == pytest.approx(compute_reward(response, truth, **kwargs), rel=FP32_TOLERANCE, abs=1e-9)


def test_micro_batcher_hands_a_wrong_length_result_to_every_caller_instead_of_hanging():
    started, release = threading.Event(), threading.Event()

    def short_by_one(texts):
        started.set()
        release.wait()
        return [0.0] * (len(texts) - 1)

    batcher = MicroBatcher(short_by_one, batch_size=8)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher, "a")
        started.wait()
        rest = [pool.submit(batcher, text) for text in ("b", "c")]
        while len(batcher._pending) < 2:
            threading.Event().wait(0.001)
        release.set()
        for future in (first, *rest):  # each caller gets the error; none spins on a request nobody finishes
            with pytest.raises(RuntimeError, match="returned 1 values for 2 items|returned 0 values for 1 items"):
                future.result(timeout=30)
    assert batcher._pending == []


class _FakeRay:
    """Just enough of `ray` for ray_worker_gpu: an initialised runtime inside a named actor."""

    def __init__(self, actor_name):
        self.actor_name = actor_name

    def is_initialized(self):
        return True

    def get_runtime_context(self):
        return self

    def get_actor_name(self):
        return self.actor_name


@pytest.mark.parametrize(
    ("actor_name", "gpus", "want"),
    [
        ("reward_loop_worker_5", 8, 5),
        ("reward_loop_worker_11", 8, 3),
        ("reward_loop_worker_5", 1, None),  # one GPU: nothing to spread
        (None, 8, None),  # not an actor
    ],
)
def test_ray_reward_workers_spread_over_the_visible_gpus(monkeypatch, actor_name, gpus, want):
    import sys

    from rationanomaly.reward.perplexity import ray_worker_gpu

    monkeypatch.setitem(sys.modules, "ray", _FakeRay(actor_name))
    assert ray_worker_gpu(gpus) == want


def test_auto_device_in_a_ray_reward_worker_names_its_gpu(monkeypatch):
    import sys

    import torch

    from rationanomaly.reward.perplexity import resolve_device

    monkeypatch.setitem(sys.modules, "ray", _FakeRay("reward_loop_worker_6"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("auto") == "cuda:2"
    monkeypatch.setitem(sys.modules, "ray", _FakeRay(None))  # not an actor: the current GPU, as before
    assert resolve_device("auto") == "cuda"


def test_float32_output_layer_shares_the_tied_embedding_instead_of_a_copy(tiny_gpt2_dir):
    model = load_perplexity_model(tiny_gpt2_dir, device="cpu", dtype="float32")
    assert model._head_weight.data_ptr() == model._body.get_input_embeddings().weight.data_ptr()


def test_concurrent_compute_reward_calls_are_scored_together_by_one_thread(tiny_gpt2_dir, monkeypatch):
    """The Python parts run with the forward pass in one thread: no GIL contention, larger batches."""
    calls = []
    real = score_module._score_with_config

    def recorded(responses, truths, config):
        calls.append((threading.get_ident(), len(responses)))
        return real(responses, truths, config)

    monkeypatch.setattr(score_module, "_score_with_config", recorded)
    truth = "<think>The log reports a routine event.</think><answer>normal</answer>"
    responses = [f"<think>The log reports event number {i}.</think><answer>normal</answer>" for i in range(7)]
    kwargs = {"ppl_model": str(tiny_gpt2_dir), "batch_size": 7, "device": "cpu", "dtype": "float32"}
    batcher = score_module._batcher(score_module.reward_config(kwargs))
    with ThreadPoolExecutor(7) as pool:
        with batcher._run_lock:  # as while an earlier batch runs: every call queues up
            futures = [pool.submit(compute_reward, response, truth, **kwargs) for response in responses]
            while len(batcher._pending) < len(responses):
                threading.Event().wait(0.001)
        results = [future.result(timeout=60) for future in futures]
    assert [size for _, size in calls[:1]] == [7] and len(calls) == 1
    for got, want in zip(results, score_responses(responses, [truth] * 7, **kwargs), strict=True):
        assert got == pytest.approx(want, rel=FP32_TOLERANCE)
