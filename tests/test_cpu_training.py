"""Real training on the CPU: what verl's own SFT and GRPO loops wrote during `make demo` (tests/conftest.py:
demo_run), the export of the real checkpoints, prediction with the exported model, and the watch tool on the logs.

These are the checks of a real run: every step logged, finite losses, a KL that moves once the actor moves, vLLM
following the updated actor, the reward parts per step adding up to the reward, and an export that keeps the
weights the trainer saved.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rationanomaly.demo import GRPO_STEPS, newest
from rationanomaly.reward import REWARD_KEYS
from rationanomaly.watch.parse import parse_file

pytestmark = pytest.mark.slow

THINK_WEIGHT = 0.5  # DESIGN.md: total = format + answer + 0.5 x think


def metrics_by_step(log: Path) -> dict[int, dict[str, float]]:
    return parse_file(log).steps


@pytest.fixture(scope="module")
def grpo_steps(demo_run) -> dict[int, dict[str, float]]:
    log = newest(demo_run / "targets" / "RationAnomaly", "*.jsonl")
    assert log is not None, "verl's file logger wrote no GRPO JSONL"
    return metrics_by_step(log)


@pytest.fixture(scope="module")
def sft_steps(demo_run) -> dict[int, dict[str, float]]:
    log = newest(demo_run / "targets" / "RationAnomaly-SFT", "*.jsonl")
    assert log is not None, "verl's file logger wrote no SFT JSONL"
    return metrics_by_step(log)


def test_grpo_logged_every_step(grpo_steps):
    assert sorted(grpo_steps) == list(range(1, GRPO_STEPS + 1))


@pytest.mark.parametrize("key", ["actor/pg_loss", "actor/grad_norm", "actor/kl_loss", "critic/score/mean"])
def test_grpo_losses_and_reward_are_finite_at_every_step(grpo_steps, key):
    assert all(math.isfinite(metrics[key]) for metrics in grpo_steps.values())


def test_kl_loss_rises_above_zero_once_the_actor_has_moved(grpo_steps):
    assert all(grpo_steps[step]["actor/kl_loss"] > 0 for step in grpo_steps if step > 1)
    assert any(grpo_steps[step]["actor/grad_norm"] > 0 for step in grpo_steps)


def test_vllm_follows_the_updated_actor(grpo_steps):
    """The actor's and vLLM's token probabilities agree at every step: the weight sync reached the rollout."""
    assert max(metrics["training/rollout_probs_diff_max"] for metrics in grpo_steps.values()) < 1e-2


def test_reward_components_are_logged_per_step_and_add_up_to_the_reward(grpo_steps):
    for step, metrics in grpo_steps.items():
        means = {key: metrics[f"reward_components/{key}/mean"] for key in REWARD_KEYS}
        assert means["score"] == pytest.approx(metrics["critic/score/mean"], abs=1e-4), step
        assert means["score"] == pytest.approx(
            means["format"] + means["answer"] + THINK_WEIGHT * means["think"], abs=1e-6
        ), step


def test_reward_responses_vary_so_grpo_has_advantages(grpo_steps):
    """Some rollouts are well formed and some not: GRPO sees reward differences (the SFT stage did its job)."""
    assert any(
        metrics["reward_components/format/max"] > 0 > metrics["reward_components/format/min"]
        for metrics in grpo_steps.values()
    )


def test_sft_trained_every_step_with_a_finite_falling_loss(sft_steps):
    losses = [sft_steps[step]["train/loss"] for step in sorted(sft_steps) if "train/loss" in sft_steps[step]]
    assert len(losses) == 14 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4


def load_checkpoint_model(actor_dir: Path):
    """The trainer's own saved weights (FSDP, one rank) in the Hugging Face model class, float32."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    state = torch.load(actor_dir / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    state = {name: getattr(value, "to_local", lambda v=value: v)().float() for name, value in state.items()}
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(actor_dir / "huggingface"))
    model.load_state_dict(state)
    return model.eval()


def test_exported_model_holds_the_checkpoint_weights_within_bf16_rounding(demo_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    actor = demo_run / "targets" / "RationAnomaly" / f"global_step_{GRPO_STEPS}" / "actor"
    exported_dir = demo_run / "models" / "RationAnomaly"
    checkpoint = load_checkpoint_model(actor)
    exported = AutoModelForCausalLM.from_pretrained(exported_dir, dtype=torch.float32).eval()
    exported_weights = dict(exported.named_parameters())
    for name, weight in checkpoint.named_parameters():  # verl's merger writes bf16: one rounding, nothing else
        assert torch.equal(exported_weights[name], weight.to(torch.bfloat16).float()), name
    tokenizer = AutoTokenizer.from_pretrained(exported_dir)
    ids = tokenizer("instruction cache parity error corrected", return_tensors="pt").input_ids
    with torch.no_grad():
        for weight in checkpoint.parameters():
            weight.copy_(weight.to(torch.bfloat16).float())
        assert torch.allclose(exported(ids).logits, checkpoint(ids).logits, atol=1e-5)
    assert json.loads((exported_dir / "rationanomaly_export.json").read_text())  # the export marks its folder


def test_sft_export_merged_the_lora_adapter_into_the_base_weights(demo_run):
    import torch
    from safetensors.torch import load_file

    base = load_file(demo_run / "models" / "tiny-llama" / "model.safetensors")
    sft = load_file(demo_run / "models" / "RationAnomaly-SFT" / "model.safetensors")
    moved = [
        name for name in base if "proj" in name and not torch.allclose(base[name].float(), sft[name].float(), atol=1e-3)
    ]
    assert moved, "no linear weight changed: the LoRA adapter was not merged"
    assert torch.equal(base["model.embed_tokens.weight"].bfloat16(), sft["model.embed_tokens.weight"])


@pytest.mark.parametrize("name, backend", [("BGL_by_grpo", "transformers"), ("BGL_by_grpo-vllm", "vllm")])
def test_exported_model_predicts_every_test_item_with_both_backends(demo_run, name, backend):
    predictions = json.loads((demo_run / "predictions" / f"{name}.json").read_text())
    testset = json.loads((demo_run / "data" / "split" / "BGL_test.json").read_text())
    assert len(predictions) == len(testset) and all(item["output"].strip() for item in predictions)
    evaluation = json.loads((demo_run / "evaluation" / f"{name}.json").read_text())
    assert evaluation["template"]["total"] == len(testset)
    assert evaluation["backend"] == backend


def test_watch_reads_the_real_run_and_checks_the_components(demo_run):
    summary = json.loads((demo_run / "watch" / "summary.json").read_text())
    grpo = next(run for run in summary["runs"] if run["name"].startswith("verl_grpo_rationanomaly"))
    assert (grpo["status"], grpo["last_step"], grpo["total_steps"]) == ("finished", GRPO_STEPS, GRPO_STEPS)
    assert grpo["component_sum_check"]["ok"] and grpo["component_sum_check"]["steps_checked"] == GRPO_STEPS
    assert set(grpo["train_components_last"]) == set(REWARD_KEYS)
