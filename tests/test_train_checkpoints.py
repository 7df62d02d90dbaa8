"""Checkpoint planning: the steps verl saves, their size for the paper's model, and the disk check."""

from __future__ import annotations

import pytest

from rationanomaly.train.checkpoints import (
    CheckpointPlan,
    checkpoint_bytes,
    checkpoint_steps,
    format_bytes,
    format_steps,
    kept_checkpoints,
    model_parameters,
    save_steps,
)
from rationanomaly.train.preflight import PreflightError, check_disk, describe_checkpoints


@pytest.mark.parametrize(
    "total, save_freq, save_last, expected",
    [
        (92, 10, False, (10, 20, 30, 40, 50, 60, 70, 80, 90, 92)),  # the public-data GRPO run: the last step too
        (90, 10, False, (10, 20, 30, 40, 50, 60, 70, 80, 90)),  # last step already a multiple
        (138, 46, True, (46, 92, 138)),  # SFT after each epoch (46 steps per epoch x 3)
        (40, -1, False, ()),  # GRPO with saving off writes nothing
        (40, -1, True, (40,)),  # the SFT trainer still saves its last step
        (0, 10, False, ()),
    ],
)
def test_save_steps_are_multiples_of_save_freq_plus_the_last_step(total, save_freq, save_last, expected):
    assert save_steps(total, save_freq, save_last) == expected


@pytest.mark.parametrize("count, keep, expected", [(10, None, 10), (10, 0, 10), (10, 3, 3), (2, 3, 2)])
def test_kept_checkpoints_follow_verls_keep_last_setting(count, keep, expected):
    assert kept_checkpoints(count, keep) == expected


@pytest.mark.parametrize(
    "steps, expected",
    [
        ((10, 20, 30), "10, 20, 30"),
        ((10, 20, 30, 40, 50, 60, 70, 80, 90, 92), "10, 20, 30, ..., 80, 90, 92"),
    ],
)
def test_format_steps_shortens_long_plans(steps, expected):
    assert format_steps(steps) == expected


@pytest.mark.parametrize(
    "count, expected",
    [(999, "999 B"), (211_400, "211.4 kB"), (80_860_987_392, "80.9 GB"), (1_050_000_000_000, "1.1 TB")],
)
def test_format_bytes_uses_decimal_units(count, expected):
    assert format_bytes(count) == expected


def test_checkpoint_steps_lists_only_step_folders(tmp_path):
    for name in ("global_step_20", "global_step_3", "global_step_x", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "global_step_7").write_text("a file, not a checkpoint")
    assert checkpoint_steps(tmp_path) == [3, 20]
    assert checkpoint_steps(tmp_path / "missing") == []


@pytest.fixture(scope="module")
def llama2_7b_config(tmp_path_factory):
    """Llama-2-7B's config (transformers' LlamaConfig defaults are its shape; vocabulary 32,000): no weights."""
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("llama-2-7b-config")
    LlamaConfig(vocab_size=32000).save_pretrained(folder)
    return folder


def test_grpo_checkpoint_of_llama2_7b_is_about_81_gb(llama2_7b_config):
    parameters, trainable = model_parameters(llama2_7b_config)
    assert parameters == trainable == 6_738_415_616  # Llama-2-7B's published parameter count
    assert checkpoint_bytes(parameters, trainable) == 12 * 6_738_415_616  # fp32 weights + two fp32 Adam moments
    assert format_bytes(checkpoint_bytes(parameters, trainable)) == "80.9 GB"


def test_lora_sft_checkpoint_counts_adam_moments_for_the_adapter_only(llama2_7b_config):
    parameters, trainable = model_parameters(llama2_7b_config, lora_rank=32)
    # per layer: q, k, v, o (4096 -> 4096) and gate, up (4096 -> 11008), down (11008 -> 4096); 32 layers
    per_layer = 4 * 32 * (4096 + 4096) + 3 * 32 * (4096 + 11008)
    assert trainable == 32 * per_layer == 79_953_920
    assert parameters == 6_738_415_616 + trainable
    assert format_bytes(checkpoint_bytes(parameters, trainable)) == "27.9 GB"


def plan(free: int | None, kept: int = 10) -> CheckpointPlan:
    from pathlib import Path

    return CheckpointPlan(
        Path("targets/RationAnomaly"), (10, 20, 30, 40, 50, 60, 70, 80, 90, 92), kept, 80_860_987_392, free
    )


def test_check_disk_passes_when_the_kept_checkpoints_fit():
    check_disk(plan(free=900_000_000_000), "trainer.max_actor_ckpt_to_keep")
    check_disk(plan(free=300_000_000_000, kept=3), "trainer.max_actor_ckpt_to_keep")


@pytest.mark.parametrize(
    "free, expected",
    [
        (
            500_000_000_000,
            "10 checkpoints x ~80.9 GB = 808.6 GB will not fit in the 500.0 GB free under "
            "targets/RationAnomaly: keep the last 6 with trainer.max_actor_ckpt_to_keep=6",
        ),
        (50_000_000_000, "not even one fits"),
    ],
)
def test_check_disk_names_how_many_would_fit(free, expected):
    with pytest.raises(PreflightError) as error:
        check_disk(plan(free), "trainer.max_actor_ckpt_to_keep")
    assert expected in str(error.value)


def test_describe_checkpoints_reads_as_one_line():
    assert describe_checkpoints(plan(free=1_200_000_000_000, kept=3)) == (
        "targets/RationAnomaly/global_step_N at steps 10, 20, 30, ..., 80, 90, 92: 10 x ~80.9 GB, the last 3 kept "
        "= 242.6 GB; 1.2 TB free"
    )
