"""The composed reward: options, ground truths, never raising, properties, and the reference formula on real data."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rationanomaly.labels import TAGS
from rationanomaly.paths import REPO_ROOT
from rationanomaly.reward import (
    FETCH_COMMAND,
    REWARD_KEYS,
    GroundTruthError,
    RewardConfig,
    RewardConfigError,
    check_reward_config,
    compute_reward,
    parse_ground_truth,
    parse_reward_kwargs,
    score_response,
    score_responses,
)
from rationanomaly.reward.components import MAX_PERPLEXITY

THINK = "The log reports a routine event."
TRUTH = f"<think>{THINK}</think><answer>normal</answer>"
NO_PPL = {"ppl_model": "none"}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:nltk.translate.bleu_score")  # 0-count n-gram notes


def stub_perplexity(text: str) -> float:
    """A deterministic stand-in for the LM: 20..116 depending on the text length."""
    return 20.0 + len(text) % 97


# ---- options -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "expected"),
    [
        ({}, "think_reward", True),
        ({"think_reward": "false"}, "think_reward", False),  # Hydra string
        ({"think_reward": "False"}, "think_reward", False),
        ({"think_reward": False}, "think_reward", False),
        ({"think_reward": 0}, "think_reward", False),
        ({"think_reward": "TRUE"}, "think_reward", True),
        ({"batch_size": "32"}, "batch_size", 32),  # Hydra may pass ints as strings
        ({"batch_size": 4}, "batch_size", 4),
        ({"device": "CPU"}, "device", "cpu"),
        ({"device": "cuda:1"}, "device", "cuda:1"),
        ({"dtype": "bfloat16"}, "dtype", "bfloat16"),
        ({"answer_scheme": "Paper"}, "answer_scheme", "paper"),
        ({"bleu_tokens": "words"}, "bleu_tokens", "words"),
        ({"ppl_model": "none"}, "ppl_model", None),
        ({"ppl_model": "None"}, "ppl_model", None),
        ({"ppl_model": None}, "ppl_model", None),  # Hydra null
        ({"ppl_model": "/abs/distilgpt2"}, "ppl_model", Path("/abs/distilgpt2")),  # absolute: as given
    ],
)
def test_parse_reward_kwargs_accepts_hydra_spellings(kwargs, field, expected):
    assert getattr(parse_reward_kwargs(kwargs), field) == expected


def test_parse_reward_kwargs_defaults_reproduce_the_reference():
    config = parse_reward_kwargs({})
    assert config == RewardConfig()
    assert (config.answer_scheme, config.think_reward, config.bleu_tokens) == ("reference", True, "chars")
    assert config.ppl_model is not None and config.ppl_model.parts[-2:] == ("models", "distilgpt2")


def test_parse_reward_kwargs_resolves_a_relative_model_from_the_repo_root_when_cwd_lacks_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_reward_kwargs({"ppl_model": "models/distilgpt2"}).ppl_model == REPO_ROOT / "models/distilgpt2"
    (tmp_path / "models/distilgpt2").mkdir(parents=True)
    assert parse_reward_kwargs({"ppl_model": "models/distilgpt2"}).ppl_model == tmp_path / "models/distilgpt2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ppl_modle": "x"}, "unknown reward option\\(s\\) ppl_modle"),  # typo
        ({"device": "tpu"}, "device='tpu' is not one of: auto, cpu, cuda"),
        ({"dtype": "float16"}, "dtype='float16'"),
        ({"batch_size": 0}, "batch_size=0 is not a positive integer"),
        ({"batch_size": "many"}, "batch_size='many'"),
        ({"batch_size": True}, "batch_size=True"),
        ({"answer_scheme": "asymmetric"}, "reference, paper, plain"),
        ({"think_reward": "maybe"}, "think_reward='maybe' is not a boolean"),
        ({"bleu_tokens": "bytes"}, "chars, words"),
    ],
)
def test_parse_reward_kwargs_rejects_bad_options_with_one_clear_line(kwargs, message):
    with pytest.raises(RewardConfigError, match=message) as caught:
        parse_reward_kwargs(kwargs)
    assert "\n" not in str(caught.value)


def test_check_reward_config_accepts_a_complete_model_folder(tiny_gpt2_dir):
    assert check_reward_config({"ppl_model": str(tiny_gpt2_dir), "batch_size": 8}) is None


@pytest.mark.parametrize("kwargs", [{"ppl_model": "none"}, {"ppl_model": "/nowhere/gpt2", "think_reward": "false"}])
def test_check_reward_config_needs_no_model_when_the_term_is_off(kwargs):
    assert check_reward_config(kwargs) is None


def test_check_reward_config_missing_model_names_the_path_and_the_fetch_command(tmp_path):
    folder = tmp_path / "distilgpt2"
    with pytest.raises(RewardConfigError) as caught:
        check_reward_config({"ppl_model": str(folder)})
    assert str(folder) in str(caught.value) and FETCH_COMMAND in str(caught.value)


@pytest.mark.parametrize(
    ("files", "missing"),
    [
        (["config.json"], "tokenizer.json"),
        (["tokenizer.json", "model.safetensors"], "config.json"),
        (["config.json", "vocab.json", "merges.txt"], "weights"),
    ],
)
def test_check_reward_config_incomplete_folder_names_what_is_missing(tmp_path, files, missing):
    for name in files:
        (tmp_path / name).write_text("{}")
    with pytest.raises(RewardConfigError, match=missing):
        check_reward_config({"ppl_model": str(tmp_path)})


def test_check_reward_config_rejects_unknown_options_before_touching_files():
    with pytest.raises(RewardConfigError, match="unknown reward option"):
        check_reward_config({"ppl_model": "none", "temperature": 0.1})


# ---- ground truth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ground_truth", "message"),
    [
        ("abnormal", "lacks <think>"),  # the reference's parquet builder stored bare labels
        ("<think>x</think>", "lacks <think>"),  # no answer
        ("<answer>normal</answer>", "lacks <think>"),  # no think
        ("<think>x</think><answer>maybe</answer>", "answer 'maybe', not one of normal, abnormal"),
        ("<think>x</think><answer></answer>", "answer ''"),
        (None, "not a string"),
        ({"think": "x"}, "not a string"),  # unhashable: still a GroundTruthError
    ],
)
def test_parse_ground_truth_malformed_is_a_data_error(ground_truth, message):
    with pytest.raises(GroundTruthError, match=message):
        parse_ground_truth(ground_truth)


def test_parse_ground_truth_normalises_the_label_and_strips_the_think():
    truth = parse_ground_truth("<think>\n Because.\n</think>\n<answer> Abnormal </answer>")
    assert (truth.think, truth.label) == ("Because.", "abnormal")


def test_compute_reward_malformed_ground_truth_names_the_sample_index():
    with pytest.raises(GroundTruthError, match="sample index 17: ground truth 'normal' lacks"):
        compute_reward(TRUTH, "normal", extra_info={"index": 17}, **NO_PPL)


def test_score_responses_malformed_ground_truth_names_its_position():
    with pytest.raises(GroundTruthError, match="ground truth number 1: ground truth 'abnormal' lacks"):
        score_responses([TRUTH, TRUTH], [TRUTH, "abnormal"], **NO_PPL)


def test_compute_reward_unknown_option_fails_even_for_a_good_sample():
    with pytest.raises(RewardConfigError, match="unknown reward option"):
        compute_reward(TRUTH, TRUTH, pplmodel="none")


# ---- composition ---------------------------------------------------------------------------------------

COPY_SEMANTIC_LENGTH = 0.0  # identical think: semantic 0 (its maximum), length 0


@pytest.mark.parametrize(
    ("kwargs", "response", "expected"),
    [
        # exact copy: 0.1 + 1 + 0.5 * (0 + 0 + (100 - ppl) / 100), ppl from the stub
        ({}, TRUTH, {"format": 0.1, "answer": 1.0, "semantic": 0.0, "length": 0.0}),
        # flipped label: -6.667 and the think is zeroed
        ({}, TRUTH.replace("normal", "abnormal"), {"format": 0.1, "answer": -1 / 0.15, "think": 0.0}),
        # not a label: -1, think zeroed
        ({}, TRUTH.replace(">normal<", ">normal.<"), {"format": 0.1, "answer": -1.0, "think": 0.0}),
        # invalid format: -1 - 6.667 whatever the content
        ({}, TRUTH + "</answer>", {"format": -1.0, "answer": -1 / 0.15, "score": -1 - 1 / 0.15}),
        # empty answer with a valid format: the missing-answer penalty
        ({}, "<think>x</think><answer> </answer>", {"format": 0.1, "answer": -1 / 0.15, "think": 0.0}),
        # ablation: no thinking reward
        ({"think_reward": "false"}, TRUTH, {"score": 1.1, "think": 0.0, "perplexity": 0.0}),
        # ablation: no compensation
        ({"answer_scheme": "plain"}, TRUTH.replace("normal", "abnormal"), {"score": -0.9}),
    ],
)
def test_score_response_parts_on_hand_computed_cases(kwargs, response, expected):
    parts = score_response(response, TRUTH, parse_reward_kwargs({**NO_PPL, **kwargs}), stub_perplexity)
    assert parts == pytest.approx({**parts, **expected}, abs=1e-12)
    scored_text = "This is a log analysis task to determine if a log entry is normal or abnomal.\n" + THINK
    if parts["think"]:
        assert parts["perplexity"] == pytest.approx((100 - stub_perplexity(scored_text)) / 100, abs=1e-12)


def test_compute_reward_with_the_term_off_reports_perplexity_as_zero():
    parts = compute_reward(TRUTH, TRUTH, **NO_PPL)
    assert parts == {
        "score": pytest.approx(1.1),
        "format": 0.1,
        "answer": 1.0,
        "think": 0.0,
        "semantic": 0.0,
        "length": 0.0,
        "perplexity": 0.0,
    }


def test_score_responses_equals_one_at_a_time_and_checks_lengths(tiny_gpt2_dir):
    kwargs = {"ppl_model": str(tiny_gpt2_dir), "batch_size": 3, "dtype": "float32"}
    responses = [TRUTH, "", TRUTH.replace("routine", "very routine"), "<think></think><answer>normal</answer>"]
    batch = score_responses(responses, [TRUTH] * 4, **kwargs)
    single = [compute_reward(response, TRUTH, **kwargs) for response in responses]
    for got, want in zip(batch, single, strict=True):
        assert got == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="4 responses but 3 ground truths"):
        score_responses(responses, [TRUTH] * 3, **kwargs)


NASTY_RESPONSES = [
    "",  # empty
    "x" * 100_000,  # 100k characters, no tags
    "<think>" + "word " * 20_000 + "</think><answer>normal</answer>",  # 100k-character think, no period
    "<think>" + "a" * 5000 + "</think><answer>normal</answer>",  # long period-free token (reference recursed)
    "<think></think><answer>normal</answer>",  # empty think (reference's ROUGE raised)
    "<think>...!?</think><answer>normal</answer>",  # punctuation-only think
    "<think>日志显示节点故障 🚨</think><answer>normal</answer>",  # unicode only
    "<think>a<think>b</think></think><answer>normal</answer>",  # nested tags
    "<think>a</think><answer>normal</answer>" * 3,  # repeated blocks
    "<think>\ud800 bad surrogate</think><answer>normal</answer>",  # lone surrogate
    "<answer>normal</answer>",  # answer only
    "\x00<think>\x00</think><answer>\x00normal</answer>",  # control characters
]


@pytest.mark.parametrize("response", NASTY_RESPONSES, ids=range(len(NASTY_RESPONSES)))
def test_compute_reward_never_raises_and_stays_finite_with_the_real_model_path(response, tiny_gpt2_dir):
    parts = compute_reward(response, TRUTH, ppl_model=str(tiny_gpt2_dir))
    assert tuple(parts) == REWARD_KEYS
    assert all(math.isfinite(value) for value in parts.values())
    assert parts["score"] == pytest.approx(parts["format"] + parts["answer"] + 0.5 * parts["think"], abs=1e-9)


# ---- properties ----------------------------------------------------------------------------------------

PIECES = st.sampled_from([*TAGS, "normal", "abnormal", "Normal ", "x", " ", "\n", ".", "日志", "<", ">", "/"])
RESPONSES = st.one_of(st.lists(PIECES, max_size=14).map("".join), st.text(max_size=60))
BOUNDS = {
    "format": (-1.0, 0.1),
    "answer": (-1 / 0.15, 1 / 0.15),
    "semantic": (-0.5, 0.0),
    "length": (-2.0, 1.0),
    "perplexity": ((100 - MAX_PERPLEXITY) / 100, 0.99),
}


@settings(max_examples=300, deadline=None)
@given(
    response=RESPONSES,
    think=st.text(min_size=0, max_size=40),
    label=st.sampled_from(["normal", "abnormal"]),
    scheme=st.sampled_from(["reference", "paper", "plain"]),
    tokens=st.sampled_from(["chars", "words"]),
    use_think=st.booleans(),
)
def test_score_response_property_finite_bounded_same_keys_and_additive(
    response, think, label, scheme, tokens, use_think
):
    truth = f"<think>{think}</think><answer>{label}</answer>"
    config = parse_reward_kwargs({**NO_PPL, "answer_scheme": scheme, "bleu_tokens": tokens, "think_reward": use_think})
    parts = score_response(response, truth, config, stub_perplexity)
    assert tuple(parts) == REWARD_KEYS
    assert all(math.isfinite(value) for value in parts.values())
    for key, (low, high) in BOUNDS.items():
        assert low - 1e-9 <= parts[key] <= high + 1e-9, key
    assert parts["think"] == pytest.approx(parts["semantic"] + parts["length"] + parts["perplexity"], abs=1e-12)
    assert parts["score"] == pytest.approx(parts["format"] + parts["answer"] + 0.5 * parts["think"], abs=1e-12)
    if parts["answer"] < 0 or not use_think:
        assert parts["think"] == 0.0


# ---- the reference formula on the real rationales ------------------------------------------------------


def restated_reference(response: str, ground_truth: str, perplexity_of) -> float:
    """DESIGN.md's formula written out again, independently of the package (nltk and rouge-score direct)."""
    from nltk.translate.bleu_score import sentence_bleu
    from rouge_score.rouge_scorer import RougeScorer

    def last(tag: str, text: str) -> str | None:
        found = re.findall(f"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
        return found[-1].strip() if found else None

    tags = ["<think>", "</think>", "<answer>", "</answer>"]
    valid = all(response.count(tag) == 1 for tag in tags)
    valid = valid and [response.find(tag) for tag in tags] == sorted(response.find(tag) for tag in tags)
    fmt = 0.1 if valid else -1.0
    ref_think, label = last("think", ground_truth), last("answer", ground_truth).lower()
    think_text, answer_text = last("think", response), last("answer", response)
    think = 0.0
    if valid and answer_text:
        predicted = answer_text.lower().strip()
        answer = 1.0 if predicted == label else -1.0
        if {predicted, label} == {"normal", "abnormal"}:
            answer = answer / 0.15
        if answer >= 0:
            bleu = sentence_bleu([ref_think], think_text, weights=(0.25, 0.25, 0.25, 0.25))
            rouge = RougeScorer(["rouge1", "rouge2", "rougeL"]).score(ref_think, think_text)
            semantic = (100 * bleu + sum(100 * rouge[k].fmeasure for k in ("rouge1", "rouge2", "rougeL"))) / 800 - 0.5
            lp, lr = len(think_text), len(ref_think)
            variation = 2 * abs(lp - lr) / (lp + lr)
            length = variation if lp > lr and variation < 1 else -variation
            related = "This is a log analysis task to determine if a log entry is normal or abnomal."
            ppl = perplexity_of(f"{related}\n{think_text}")
            think = semantic + length + (100 - ppl) / 100
    else:
        answer = -1.0 / 0.15
    return fmt + answer + 0.5 * think


def variants(reasoning: str, other: str) -> dict[str, str]:
    """Responses made from one real rationale (and another template's rationale)."""
    think = re.search(r"<think>(.*?)</think>", reasoning, re.DOTALL).group(1)
    label = re.search(r"<answer>(.*?)</answer>", reasoning, re.DOTALL).group(1).strip()
    flipped = "normal" if label == "abnormal" else "abnormal"
    return {
        "copy": reasoning,
        "flipped": f"<think>{think}</think><answer>{flipped}</answer>",
        "truncated": f"<think>{think[: len(think) // 2]}</think><answer>{label}</answer>",
        "padded": f"<think>{think} {think[: len(think) // 2]}</think><answer>{label}</answer>",
        "padded_3x": f"<think>{think * 3}</think><answer>{label}</answer>",
        "no_close_answer": f"<think>{think}</think><answer>{label}",
        "duplicated": f"<think>{think}</think><think>{think}</think><answer>{label}</answer>",
        "case_space": f"\n<think>\n{think}\n</think>\n<answer> {label.upper()} \n</answer>\n",
        "empty_think": f"<think></think><answer>{label}</answer>",
        "other_template": f"<think>{other}</think><answer>{label}</answer>",
        "empty": "",
        "very_long": f"<think>{think * 40}</think><answer>{label}</answer>",
    }


@pytest.fixture(scope="module")
def rationales(public_data):
    rows = json.loads((public_data / "rlog/AnomalyDetection_with_reason.json").read_text())
    return [row["reasoning"] for row in rows]


@pytest.mark.realdata
def test_reward_equals_the_restated_reference_formula_on_real_rationales(rationales):
    tagged = [text for text in rationales if "<think>" in text and "</answer>" in text]
    picked = tagged[::12]  # ~28 templates x 12 variants, a few seconds
    config = parse_reward_kwargs(NO_PPL)
    checked = 0
    for position, reasoning in enumerate(picked):
        other = re.search(r"<think>(.*?)</think>", picked[position - 1], re.DOTALL).group(1)
        for name, response in variants(reasoning, other).items():
            want = restated_reference(response, reasoning, stub_perplexity)
            got = score_response(response, reasoning, config, stub_perplexity)
            assert got["score"] == pytest.approx(want, abs=1e-9), (name, position)
            checked += 1
    assert checked == len(picked) * 12


@pytest.mark.realdata
def test_real_rationales_without_tags_are_rejected_as_ground_truth(rationales):
    untagged = [text for text in rationales if "<think>" not in text]
    assert len(untagged) == 2  # shared/data/README.md: 2 rationales lack the tags
    for text in untagged:
        with pytest.raises(GroundTruthError, match="lacks <think>"):
            parse_ground_truth(text)


# ---- strict ground truths, configuration checked before the first score -------------------------------


@pytest.mark.parametrize(
    "ground_truth",
    [
        "<think>a</think><answer>normal</answer><think>b</think><answer>abnormal</answer>",  # two pairs: last wins?
        "<think>a</think><answer>abnormal</answer><answer>normal</answer>",  # two answers
        "<answer>normal</answer><think>a</think>",  # answer before think
        "Label: <think>a</think><answer>normal</answer>",  # text before the blocks
        "<think>a</think> so <answer>normal</answer>",  # text between them
        "<think>a</think><answer>normal</answer> (checked)",  # text after them
    ],
)
def test_parse_ground_truth_accepts_only_one_think_then_one_answer(ground_truth):
    with pytest.raises(GroundTruthError, match="is not exactly one <think>..</think> followed by one <answer>"):
        parse_ground_truth(ground_truth)


def test_parse_ground_truth_allows_whitespace_around_the_blocks():
    truth = parse_ground_truth("\n <think>a</think>\n\n<answer>normal</answer> \n")
    assert (truth.think, truth.label) == ("a", "normal")


@pytest.mark.parametrize("response", [TRUTH.replace("normal", "abnormal"), "", "no tags"])
def test_a_missing_perplexity_model_fails_on_the_first_call_whatever_the_response(tmp_path, response):
    missing = tmp_path / "distilgpt2"
    with pytest.raises(RewardConfigError, match=f"perplexity model {missing} is missing the folder itself"):
        compute_reward(response, TRUTH, ppl_model=str(missing))  # a wrong answer never needs the model
    with pytest.raises(RewardConfigError, match="is missing the folder itself"):
        score_responses([response], [TRUTH], ppl_model=str(missing))
    assert compute_reward(response, TRUTH, ppl_model=str(missing), think_reward="false")["think"] == 0.0
