"""Through stock verl 0.9.1: its loader finds our adapter, its reward manager and worker return our numbers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from rationanomaly.labels import DATA_SOURCE
from rationanomaly.paths import REPO_ROOT
from rationanomaly.reward import REWARD_KEYS, compute_reward

verl = pytest.importorskip("verl")

ADAPTER = REPO_ROOT / "verl/utils/reward_score/RationAnomaly/__init__.py"
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
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_dir = str(Path(verl.__file__).parent / "trainer/config")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(
            config_name="ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={model_dir}",
                f"reward.custom_reward_function.path={ADAPTER}",
                "reward.custom_reward_function.name=compute_score",
                f"+reward.custom_reward_function.reward_kwargs.ppl_model={ppl_dir}",
                "+reward.custom_reward_function.reward_kwargs.batch_size=4",
                "+reward.custom_reward_function.reward_kwargs.device=cpu",
                *extra,
            ],
        )


def as_data_proto(tokenizer, responses, truth=TRUTH):
    """A DataProto shaped like the agent loop's output: right-padded responses plus the parquet columns."""
    import numpy as np
    import torch

    from verl import DataProto

    prompt = tokenizer("Classify the given log entries.", return_tensors="pt")["input_ids"][0]
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in responses]
    width = max(1, *(len(ids) for ids in encoded))
    rows = []
    for ids in encoded:
        response = torch.full((width,), tokenizer.pad_token_id, dtype=torch.long)
        response[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask = torch.cat([torch.ones(len(prompt), dtype=torch.long), torch.zeros(width, dtype=torch.long)])
        mask[len(prompt) : len(prompt) + len(ids)] = 1
        rows.append((response, torch.cat([prompt, response]), mask))
    batch = {
        "prompts": prompt.repeat(len(responses), 1),
        "responses": torch.stack([row[0] for row in rows]),
        "input_ids": torch.stack([row[1] for row in rows]),
        "attention_mask": torch.stack([row[2] for row in rows]),
    }
    batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).repeat(len(responses), 1)
    non_tensors = {
        "data_source": np.array([DATA_SOURCE] * len(responses), dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": truth}] * len(responses), dtype=object),
        "extra_info": np.array([{"index": i} for i in range(len(responses))], dtype=object),
    }
    return DataProto.from_dict(tensors=batch, non_tensors=non_tensors)


@pytest.fixture(scope="module")
def verl_setup(tiny_llama_dir, tiny_gpt2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    # the tags must survive decoding with skip_special_tokens=True, as verl does
    assert tokenizer.decode(tokenizer(TRUTH, add_special_tokens=False)["input_ids"], skip_special_tokens=True) == TRUTH
    return compose(tiny_llama_dir, tiny_gpt2_dir), tokenizer


def expected(tiny_gpt2_dir, response):
    return compute_reward(response, TRUTH, ppl_model=str(tiny_gpt2_dir), batch_size=4, device="cpu")


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
