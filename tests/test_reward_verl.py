"""Through stock verl 0.9.1: its loader finds our adapter, its reward manager and worker return our numbers."""

from __future__ import annotations

import json
import tempfile

import pytest

from rationanomaly.labels import DATA_SOURCE
from rationanomaly.reward import REWARD_KEYS, compute_reward
from rationanomaly.reward.verl_run import (
    MAX_DIFFERENCE,
    compose_reward_config,
    largest_difference,
    main,
    mean_by_kind,
    rollouts_as_data_proto,
    sample_rollouts,
)

verl = pytest.importorskip("verl")

TRUTH = "<think>The log reports a routine event.</think><answer>normal</answer>"
RESPONSES = [
    TRUTH,  # exact copy
    "<think>The log reports a hardware failure.</think><answer>abnormal</answer>",  # false alarm
    "<think>A routine event is reported by the log.</think><answer>Normal</answer>",  # paraphrase, case
    "<think>The log reports a routine event.</think><answer>normal</answer></answer>",  # invalid format
    "",  # empty
]


def compose(model_dir, ppl_dir, extra=()):
    """verl's ppo_trainer config with our reward keys, composed the way main_ppo does it."""
    kwargs = {"ppl_model": ppl_dir, "batch_size": 4, "device": "cpu", "dtype": "float32"}
    return compose_reward_config(model_dir, kwargs, extra)


def as_data_proto(tokenizer, responses, truth=TRUTH):
    """A DataProto shaped like the agent loop's output: right-padded responses plus the parquet columns."""
    return rollouts_as_data_proto(tokenizer, responses, [truth] * len(responses))


@pytest.fixture(scope="module")
def verl_setup(tiny_llama_dir, tiny_gpt2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    # the tags must survive decoding with skip_special_tokens=True, as verl does
    assert tokenizer.decode(tokenizer(TRUTH, add_special_tokens=False)["input_ids"], skip_special_tokens=True) == TRUTH
    return compose(tiny_llama_dir, tiny_gpt2_dir), tokenizer


def expected(tiny_gpt2_dir, response):
    return compute_reward(response, TRUTH, ppl_model=str(tiny_gpt2_dir), batch_size=4, device="cpu", dtype="float32")


def test_verl_loader_returns_our_compute_score_with_the_kwargs(verl_setup, tiny_gpt2_dir):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config, _ = verl_setup
    score = get_custom_reward_fn(config)
    result = score(data_source=DATA_SOURCE, solution_str=TRUTH, ground_truth=TRUTH, extra_info={"index": 0})
    assert result == pytest.approx(expected(tiny_gpt2_dir, TRUTH), rel=1e-6)
    assert result["perplexity"] < -1  # the tiny random GPT-2 really scored it (ppl in the hundreds)


def test_verl_reward_manager_run_single_returns_our_total_and_components(verl_setup, tiny_gpt2_dir):
    from verl.trainer.ppo.reward import load_reward_manager

    config, tokenizer = verl_setup
    manager = load_reward_manager(config, tokenizer)
    data = as_data_proto(tokenizer, RESPONSES)
    for row, response in enumerate(RESPONSES):
        out = manager.loop.run_until_complete(manager.run_single(data[row : row + 1]))
        want = expected(tiny_gpt2_dir, response)
        assert out["reward_score"] == pytest.approx(want["score"], rel=1e-5)
        assert tuple(out["reward_extra_info"]) == REWARD_KEYS
        assert out["reward_extra_info"] == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_verl_reward_loop_worker_scores_a_batch_concurrently_with_our_numbers(verl_setup, tiny_gpt2_dir):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    config, tokenizer = verl_setup
    worker = RewardLoopWorker(config)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(as_data_proto(tokenizer, RESPONSES)))
    assert [out["reward_score"] for out in outputs] == pytest.approx(
        [expected(tiny_gpt2_dir, response)["score"] for response in RESPONSES], rel=1e-5
    )
    for out, response in zip(outputs, RESPONSES, strict=True):
        assert out["reward_extra_info"] == pytest.approx(expected(tiny_gpt2_dir, response), rel=1e-5, abs=1e-9)


def test_verl_reward_manager_surfaces_a_malformed_ground_truth(verl_setup):
    from verl.trainer.ppo.reward import load_reward_manager

    config, tokenizer = verl_setup
    manager = load_reward_manager(config, tokenizer)
    data = as_data_proto(tokenizer, [TRUTH], truth="normal")  # a bare label, as the reference's builder wrote
    with pytest.raises(ValueError, match="sample index 0: ground truth 'normal' lacks <think>"):
        manager.loop.run_until_complete(manager.run_single(data))


@pytest.mark.slow
def test_verl_ray_reward_loop_manager_puts_our_score_on_the_last_response_token(tiny_llama_dir, tiny_gpt2_dir):
    ray = pytest.importorskip("ray")
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    config = compose(tiny_llama_dir, tiny_gpt2_dir, extra=["reward.num_workers=2"])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    data = as_data_proto(tokenizer, RESPONSES)
    # Ray's socket paths must stay under 107 bytes: pytest's tmp_path is too deep
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as ray_dir:
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            _temp_dir=ray_dir,
            runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}},
        )
        try:
            out = RewardLoopManager(config).compute_rm_score(data)
        finally:
            ray.shutdown()
    want = [expected(tiny_gpt2_dir, response) for response in RESPONSES]
    for row, parts in enumerate(want):
        assert int((out.batch["rm_scores"][row] != 0).sum()) == 1  # one token carries the sequence reward
        assert out.batch["rm_scores"][row].sum().item() == pytest.approx(parts["score"], rel=1e-5)
    for key in REWARD_KEYS:
        assert list(out.non_tensor_batch[key]) == pytest.approx([parts[key] for parts in want], rel=1e-5, abs=1e-9)


def test_sample_rollouts_cover_copy_flip_short_think_and_missing_tags():
    rollouts = sample_rollouts(TRUTH)
    assert rollouts["reference_copy"] == TRUTH
    assert rollouts["flipped_label"] == "<think>The log reports a routine event.</think><answer>abnormal</answer>"
    assert rollouts["half_think"] == "<think>The log reports </think><answer>normal</answer>"
    assert "<think>" not in rollouts["no_tags"]


def test_mean_by_kind_averages_each_key_within_a_kind():
    means = mean_by_kind(["a", "b", "a"], [{"score": 1.0}, {"score": 5.0}, {"score": 3.0}])
    assert means == {"a": {"score": 2.0}, "b": {"score": 5.0}}


def test_verl_run_cli_scores_parquet_rollouts_like_the_direct_call(tmp_path, tiny_llama_dir, tiny_gpt2_dir, capsys):
    import pandas as pd

    from rationanomaly.labels import cot_label
    from rationanomaly.parquet import rl_row
    from rationanomaly.samples import Sample

    samples = [
        Sample("ciod: failed to read message prefix", cot_label("A read failure.", "abnormal")),
        Sample("instruction cache parity error corrected", cot_label("Corrected, routine.", "normal")),
    ]
    parquet = tmp_path / "rl.parquet"
    pd.DataFrame([rl_row(i, "train", s, "system") for i, s in enumerate(samples)]).to_parquet(parquet)
    out = tmp_path / "check"
    assert (
        main(
            [
                "--parquet",
                str(parquet),
                "--model",
                str(tiny_llama_dir),
                "--ppl_model",
                str(tiny_gpt2_dir),
                "--dtype",
                "float32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "rewards.json").read_text())
    assert len(result["rollouts"]) == 8 and result["max_difference"] < 1e-6
    assert result["mean_by_kind"]["flipped_label"]["score"] == pytest.approx(0.1 - 1 / 0.15)
    assert result["mean_by_kind"]["no_tags"]["score"] == pytest.approx(-1.0 - 1 / 0.15)
    assert "8 sample rollouts scored by verl's reward manager" in capsys.readouterr().out


def test_rollouts_as_data_proto_works_with_a_tokenizer_without_a_pad_token(tiny_llama_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    tokenizer.pad_token = None  # as Llama-2's own tokenizer ships
    assert tokenizer.pad_token_id is None
    data = rollouts_as_data_proto(tokenizer, RESPONSES[:2], [TRUTH] * 2)
    assert data.batch["responses"].shape[0] == 2


def test_largest_difference_is_absolute_for_bounded_parts_and_relative_for_a_large_perplexity_term():
    direct = [{"score": 1.1, "perplexity": -500.0}, {"score": -7.667, "perplexity": 0.5}]
    noisy = [{"score": 1.1, "perplexity": -500.1}, {"score": -7.667, "perplexity": 0.5}]  # 2e-4 of the term
    assert largest_difference(noisy, direct) == pytest.approx(0.1 / 500)
    assert largest_difference(noisy, direct) < MAX_DIFFERENCE
    stripped_tags = [{"score": 1.1, "perplexity": -500.0}, {"score": -7.667 + 0.1, "perplexity": 0.5}]
    assert largest_difference(stripped_tags, direct) > MAX_DIFFERENCE  # a broken hook moves a part by >= 0.1
    assert largest_difference([], []) == 0.0
