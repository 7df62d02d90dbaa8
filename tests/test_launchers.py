"""Launchers: syntax, the overrides model_train.sh hands verl, and real CPU dry runs.

Most tests run the launcher with a recording stand-in for Python (`recorded_calls`): no verl start-up,
and the test reads the exact arguments each stage would receive. The dry-run tests at the end run the
real pre-flight on the tiny model and the sample parquet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rationanomaly.paths import REPO_ROOT
from rationanomaly.train.tiny_run import (
    as_dict,
    build_dry_run_inputs,
    module_of,
    overrides_of,
    recorded_calls,
    strict_template_model,
)

LAUNCHERS = sorted(REPO_ROOT.glob("*.sh"))
REWARD_FILE = REPO_ROOT / "verl/utils/reward_score/RationAnomaly/__init__.py"


@pytest.fixture(scope="module")
def dry_run_inputs(tmp_path_factory) -> dict[str, str]:
    return build_dry_run_inputs(tmp_path_factory.mktemp("dry_run_inputs"))


@pytest.mark.parametrize("script", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_parses_with_bash_n(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_is_shellcheck_clean(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_both_launchers_exist():
    assert {p.name for p in LAUNCHERS} >= {"model_train.sh", "model_export.sh"}


@pytest.fixture(scope="module")
def reference_grpo(tmp_path_factory):
    """`DRY_RUN=1 bash model_train.sh` with no knobs: the reference run's overrides."""
    result, calls = recorded_calls({"DRY_RUN": "1", "ATTN_IMPL": "sdpa"}, tmp_path_factory.mktemp("reference"))
    assert result.returncode == 0, result.stderr
    return result, calls


@pytest.mark.parametrize(
    "key, value",
    [
        ("algorithm.adv_estimator", "grpo"),
        ("data.train_files", "datasets/bgl_train.parquet"),
        # validation is off (test_freq -1): the training file stands in for verl's validation dataset, never scored
        ("data.val_files", "datasets/bgl_train.parquet"),
        ("data.train_batch_size", "32"),  # 32 prompts
        ("data.max_prompt_length", "2048"),
        ("data.max_response_length", "1024"),
        ("actor_rollout_ref.model.path", "models/RationAnomaly-SFT"),  # GRPO starts from the CoT-SFT model
        ("actor_rollout_ref.actor.optim.lr", "4e-7"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size", "8"),
        ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "1"),
        ("actor_rollout_ref.actor.use_kl_loss", "True"),
        ("actor_rollout_ref.actor.kl_loss_coef", "0.001"),
        ("actor_rollout_ref.actor.kl_loss_type", "low_var_kl"),
        # the reference's per-response weighting in verl 0.9.1 terms (tests/test_loss_aggregation.py)
        ("actor_rollout_ref.actor.loss_agg_mode", "seq-mean-token-mean"),
        ("actor_rollout_ref.model.enable_gradient_checkpointing", "True"),
        ("actor_rollout_ref.actor.fsdp_config.param_offload", "True"),
        ("actor_rollout_ref.actor.fsdp_config.optimizer_offload", "True"),
        ("actor_rollout_ref.ref.fsdp_config.param_offload", "True"),
        ("actor_rollout_ref.rollout.name", "vllm"),
        ("actor_rollout_ref.rollout.n", "16"),
        ("actor_rollout_ref.rollout.temperature", "0.9"),
        ("actor_rollout_ref.rollout.gpu_memory_utilization", "0.8"),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size", "1"),
        ("algorithm.kl_ctrl.kl_coef", "0.001"),
        ("reward.custom_reward_function.path", str(REWARD_FILE)),
        ("reward.custom_reward_function.name", "compute_score"),
        ("reward.custom_reward_function.reward_kwargs.ppl_model", str(REPO_ROOT / "models/distilgpt2")),
        ("reward.custom_reward_function.reward_kwargs.answer_scheme", "reference"),
        ("reward.custom_reward_function.reward_kwargs.think_reward", "true"),
        ("trainer.logger", "[console,file,wandb]"),
        ("trainer.n_gpus_per_node", "8"),
        ("trainer.nnodes", "1"),
        ("trainer.default_local_dir", "targets/RationAnomaly"),
        ("trainer.save_freq", "10"),
        ("trainer.test_freq", "-1"),
        ("trainer.resume_mode", "disable"),  # fresh unless RESUME=1 (verl's own default would reuse old checkpoints)
        ("trainer.total_epochs", "2"),
    ],
)
def test_default_grpo_run_passes_the_reference_hyperparameters(reference_grpo, key, value):
    _, calls = reference_grpo
    assert as_dict(overrides_of(calls[0][0]))[key] == value


def test_default_dry_run_checks_grpo_only_and_starts_no_training(reference_grpo):
    result, calls = reference_grpo
    assert [module_of(argv) for argv, _ in calls] == ["rationanomaly.train.preflight"]
    assert calls[0][0][calls[0][0].index("--stage") + 1] == "grpo"
    assert "dry run: configuration valid, nothing trained" in result.stdout
    assert "-m verl.trainer.main_ppo" in result.stdout


def test_legacy_and_deprecated_reference_keys_are_not_passed(reference_grpo):
    keys = set(as_dict(overrides_of(reference_grpo[1][0][0])))
    assert not {k for k in keys if k.startswith(("custom_reward_function.", "reward_model."))}
    assert "data.val_batch_size" not in keys  # deprecated in verl 0.9.1 (notes §1)


def test_real_grpo_run_gives_verl_the_checked_overrides_and_logs_under_targets(tmp_path, dry_run_inputs):
    knobs = {**dry_run_inputs, "LOG_DIR": str(tmp_path / "logs"), "OUTPUT_DIR": str(tmp_path / "out")}
    result, calls = recorded_calls(knobs, tmp_path / "rec", ["trainer.total_epochs=1"])
    assert result.returncode == 0, result.stderr
    (check, _), (train, env) = calls
    assert module_of(check) == "rationanomaly.train.preflight" and module_of(train) == "verl.trainer.main_ppo"
    assert overrides_of(check) == overrides_of(train)
    assert overrides_of(train)[-1] == "trainer.total_epochs=1"  # appended overrides come last
    assert env["WANDB_MODE"] == "offline"
    metrics = Path(env["VERL_FILE_LOGGER_PATH"])
    assert metrics.parent == tmp_path / "out" and metrics.name.startswith("rationanomaly_grpo_")
    assert metrics.suffix == ".jsonl"
    logs = list((tmp_path / "logs").glob("verl_grpo_rationanomaly_*.log"))
    assert len(logs) == 1 and "GRPO command" not in logs[0].read_text()


def test_skip_preflight_still_refuses_legacy_reward_keys(tmp_path, dry_run_inputs):
    knobs = {**dry_run_inputs, "SKIP_PREFLIGHT": "1", "LOG_DIR": str(tmp_path), "OUTPUT_DIR": str(tmp_path)}
    _, calls = recorded_calls(knobs, tmp_path / "rec")
    assert "--overrides-only" in calls[0][0]


@pytest.mark.parametrize(
    "ablation, expected",
    [
        (
            "no_asymmetric",
            {
                "reward.custom_reward_function.reward_kwargs.answer_scheme": "plain",
                "trainer.default_local_dir": "targets/RationAnomaly-no_asymmetric",
            },
        ),
        (
            "no_think_reward",
            {
                "reward.custom_reward_function.reward_kwargs.think_reward": "false",
                "trainer.experiment_name": "rationanomaly_grpo-no_think_reward",
            },
        ),
        (
            "no_sft",
            {
                "actor_rollout_ref.model.path": "models/llama-2-7b-chat-hf",  # GRPO from the base model
                "trainer.default_local_dir": "targets/RationAnomaly-no_sft",
            },
        ),
    ],
)
def test_ablation_preset_changes_the_reward_or_start_model_and_the_output_folder(tmp_path, ablation, expected):
    result, calls = recorded_calls({"DRY_RUN": "1", "ATTN_IMPL": "sdpa", "ABLATION": ablation}, tmp_path)
    assert result.returncode == 0, result.stderr
    overrides = as_dict(overrides_of(calls[0][0]))
    assert {key: overrides[key] for key in expected} == expected


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"ABLATION": "no_rl"}, "trains no GRPO"),  # the SFT model is evaluated directly
        ({"ABLATION": "no_sft", "STAGE": "all"}, "use STAGE=grpo"),
        ({"ABLATION": "typo"}, "unknown ABLATION"),
        ({"STAGE": "ppo"}, "unknown STAGE"),
    ],
)
def test_launcher_refuses_unknown_or_contradictory_knobs_with_one_line(tmp_path, knobs, message):
    result, calls = recorded_calls({"DRY_RUN": "1", "ATTN_IMPL": "sdpa", **knobs}, tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert calls == []


def test_stage_all_checks_both_stages_before_training_anything(tmp_path, dry_run_inputs):
    knobs = {**dry_run_inputs, "DRY_RUN": "1", "STAGE": "all", "SFT_MODEL": str(tmp_path / "sft-merged")}
    result, calls = recorded_calls(knobs, tmp_path / "rec")
    assert result.returncode == 0, result.stderr
    stages = [argv[argv.index("--stage") + 1] for argv, _ in calls]
    assert stages == ["sft", "grpo"]
    # the merged SFT model does not exist yet: the GRPO check stands the base model in for it
    assert as_dict(overrides_of(calls[1][0]))["actor_rollout_ref.model.path"] == dry_run_inputs["BASE_MODEL"]
    assert f"actor_rollout_ref.model.path={tmp_path / 'sft-merged'}" in result.stdout


def test_real_sft_run_trains_with_torchrun_then_exports_and_merges_the_adapter(tmp_path, dry_run_inputs):
    knobs = {
        **dry_run_inputs,
        "STAGE": "sft",
        "SFT_MODEL": str(tmp_path / "sft-merged"),
        "SFT_OUTPUT_DIR": str(tmp_path / "sft-ckpt"),
        "LOG_DIR": str(tmp_path / "logs"),
    }
    result, calls = recorded_calls(knobs, tmp_path / "rec")
    assert result.returncode == 0, result.stderr
    modules = [module_of(argv) for argv, _ in calls]
    assert modules == [
        "rationanomaly.train.preflight",
        "verl.trainer.sft_trainer",
        "rationanomaly.train.export",
        "rationanomaly.train.export",
        "verl.model_merger",
        "rationanomaly.train.export",
        "rationanomaly.train.export",
    ]
    # the pre-flight already checks the export target, before hours of training
    assert calls[0][0][calls[0][0].index("--export_target") + 1] == str(tmp_path / "sft-merged")
    train = calls[1][0]
    assert train[:3] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=2" in train
    sft = as_dict(overrides_of(train))
    assert (sft["model.lora_rank"], sft["model.path"]) == ("32", dry_run_inputs["BASE_MODEL"])
    assert sft["data.val_files"] == "null" and sft["trainer.resume_mode"] == "disable"
    assert calls[2][0][2:] == [
        "check-target",
        "--checkpoints",
        str(tmp_path / "sft-ckpt"),
        "--target",
        str(tmp_path / "sft-merged"),
    ]
    assert calls[3][0][-4:] == ["--checkpoints", str(tmp_path / "sft-ckpt"), "--step", "latest"]
    # the merge is built beside the target and moved into place only when every step succeeds
    staging = calls[4][0][-1]
    assert calls[4][0][-2] == "--target_dir" and staging.startswith(f"{tmp_path / 'sft-merged'}.partial.")
    assert calls[5][0][-3:] == ["merge-lora", "--model", staging]
    assert calls[6][0][2:5] == ["mark", "--model", staging]
    assert (tmp_path / "sft-merged").is_dir() and not Path(staging).exists()


@pytest.mark.parametrize(
    "knobs, flags",
    [
        ({}, {"--export_target"}),
        ({"OVERWRITE": "true"}, {"--export_target", "--overwrite"}),  # the pre-flight plans the deletion
        ({"SKIP_PREFLIGHT": "yes"}, {"--export_target", "--overrides-only"}),  # still checks the export target
    ],
)
def test_sft_preflight_is_told_the_export_target_and_overwrite(tmp_path, dry_run_inputs, knobs, flags):
    knobs = {
        **dry_run_inputs,
        "STAGE": "sft",
        "DRY_RUN": "0",
        "SFT_MODEL": str(tmp_path / "sft-merged"),
        "SFT_OUTPUT_DIR": str(tmp_path / "sft-ckpt"),
        "LOG_DIR": str(tmp_path / "logs"),
        **knobs,
    }
    result, calls = recorded_calls(knobs, tmp_path / "rec")
    assert result.returncode == 0, result.stderr
    check = calls[0][0]
    assert {arg for arg in check[: check.index("--")] if arg.startswith("--")} == flags | {"--stage"}


def run_launcher(knobs: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """model_train.sh with this interpreter (the real pre-flight, verl included)."""
    env = {**os.environ, **knobs, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO_ROOT / "model_train.sh"), *args], env=env, capture_output=True, text=True)


def test_stage_all_over_several_nodes_is_refused_with_one_line(tmp_path):
    result, calls = recorded_calls({"DRY_RUN": "1", "ATTN_IMPL": "sdpa", "STAGE": "all", "NNODES": "2"}, tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "STAGE=sft on every node" in result.stderr
    assert calls == []


def test_multi_node_sft_exports_on_node_zero_only(tmp_path, dry_run_inputs):
    knobs = {
        **dry_run_inputs,
        "STAGE": "sft",
        "NNODES": "2",
        "NODE_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "SFT_MODEL": str(tmp_path / "sft-merged"),
        "SFT_OUTPUT_DIR": str(tmp_path / "sft-ckpt"),
        "LOG_DIR": str(tmp_path / "logs"),
    }
    result, calls = recorded_calls(knobs, tmp_path / "rec")
    assert result.returncode == 0, result.stderr
    assert [module_of(argv) for argv, _ in calls] == ["rationanomaly.train.preflight", "verl.trainer.sft_trainer"]
    assert "--node_rank=1" in calls[1][0] and "--master_addr=10.0.0.1" in calls[1][0]
    assert not (tmp_path / "sft-merged").exists()


def test_multi_node_grpo_hands_the_logging_environment_to_the_ray_cluster(tmp_path, dry_run_inputs):
    # workers of a cluster started by `ray start` inherit that shell's environment, not the launcher's
    knobs = {**dry_run_inputs, "NNODES": "2", "LOG_DIR": str(tmp_path / "logs"), "OUTPUT_DIR": str(tmp_path / "out")}
    result, calls = recorded_calls(knobs, tmp_path / "rec")
    assert result.returncode == 0, result.stderr
    (_, _), (train, env) = calls
    ray_env = {
        key.rsplit(".", 1)[1]: value
        for key, value in as_dict(overrides_of(train)).items()
        if key.startswith("ray_kwargs.ray_init.runtime_env.env_vars.")
    }
    assert ray_env["WANDB_MODE"] == "offline" and ray_env["TOKENIZERS_PARALLELISM"] == "false"
    assert ray_env["VERL_FILE_LOGGER_PATH"] == env["VERL_FILE_LOGGER_PATH"]
    assert Path(ray_env["VERL_FILE_LOGGER_PATH"]).parent == tmp_path / "out"
    assert Path(ray_env["WANDB_DIR"]) == tmp_path / "logs"


def test_multi_node_grpo_passes_absolute_paths(tmp_path):
    result, calls = recorded_calls({"DRY_RUN": "1", "ATTN_IMPL": "sdpa", "NNODES": "2"}, tmp_path)
    assert result.returncode == 0, result.stderr
    overrides = as_dict(overrides_of(calls[0][0]))
    for key, relative in [
        ("data.train_files", "datasets/bgl_train.parquet"),
        ("actor_rollout_ref.model.path", "models/RationAnomaly-SFT"),
        ("trainer.default_local_dir", "targets/RationAnomaly"),
    ]:
        assert overrides[key] == str(REPO_ROOT / relative)


def test_multi_node_grpo_dry_run_composes_the_ray_environment(dry_run_inputs):
    result = run_launcher({**dry_run_inputs, "NNODES": "2", "DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 per node x 2 nodes = 4" in result.stdout
    assert "env_vars.VERL_FILE_LOGGER_PATH=" in result.stdout


def test_grpo_dry_run_passes_on_cpu_and_prints_reward_knobs_and_numbers(dry_run_inputs):
    result = run_launcher(dry_run_inputs, "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "pre-flight grpo: configuration OK" in out
    assert f"reward.custom_reward_function.path={REWARD_FILE}" in out
    assert "reward.custom_reward_function.name=compute_score" in out
    assert f"ppl_model={dry_run_inputs['PPL_MODEL']}" in out
    assert "trainer.n_gpus_per_node=2" in out and "actor_rollout_ref.rollout.n=2" in out
    assert "4 prompts x 2 rollouts = 8 responses per step" in out
    assert "20 per epoch x 2 epochs = 40" in out  # 81 training rows // 4: every sample trains
    assert "loss aggregation                  seq-mean-token-mean (policy and KL loss" in out
    assert f"start                             fresh (no checkpoint in {dry_run_inputs['OUTPUT_DIR']})" in out
    assert f"{dry_run_inputs['OUTPUT_DIR']}/global_step_N at steps 10, 20, 30, 40: 4 x ~" in out
    assert out.rstrip().endswith("dry run: configuration valid, nothing trained")  # the verdict comes last
    assert "engine is not available" not in result.stderr  # verl's import noise is held back


def test_sft_dry_run_passes_on_cpu_and_prints_lora_and_steps(dry_run_inputs):
    result = run_launcher({**dry_run_inputs, "STAGE": "sft", "DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pre-flight sft: configuration OK" in result.stdout
    assert "rank 32 alpha 16 targets all-linear" in result.stdout
    assert "20 per epoch x 3 epochs = 60" in result.stdout
    assert "at steps 20, 40, 60: 3 x ~" in result.stdout  # after each epoch
    assert "-m verl.trainer.sft_trainer" in result.stdout


def test_sft_dry_run_works_with_a_llama2_template_that_refuses_two_user_turns(tmp_path, dry_run_inputs):
    strict = strict_template_model(dry_run_inputs["BASE_MODEL"], tmp_path / "strict-llama")
    knobs = {**dry_run_inputs, "BASE_MODEL": strict, "STAGE": "sft", "DRY_RUN": "1"}
    result = run_launcher(knobs)  # default SFT_CHAT_TEMPLATE: the project's Llama-2 template
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.custom_chat_template=" in result.stdout
    result = run_launcher({**knobs, "SFT_CHAT_TEMPLATE": "model"})  # the model's own template
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("pre-flight error:")]
    assert len(errors) == 1 and "SFT_CHAT_TEMPLATE" in errors[0]


def test_missing_sft_chat_template_file_is_refused_with_one_line(tmp_path):
    knobs = {"DRY_RUN": "1", "ATTN_IMPL": "sdpa", "STAGE": "sft", "SFT_CHAT_TEMPLATE": str(tmp_path / "none.jinja")}
    result, calls = recorded_calls(knobs, tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "SFT_CHAT_TEMPLATE" in result.stderr
    assert calls == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("actor_rollout_ref.actor.ppo_mini_bach_size=2", "verl rejects the overrides"),  # typo in an appended key
        ("custom_reward_function.path=x.py", "write reward.custom_reward_function.path instead"),  # legacy key
    ],
)
def test_dry_run_fails_with_one_line_for_a_bad_appended_override(dry_run_inputs, override, message):
    result = run_launcher({**dry_run_inputs, "DRY_RUN": "1"}, override)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("pre-flight error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "dry run: configuration valid" not in result.stdout


@pytest.mark.parametrize(
    "script, knobs",
    [
        (
            "model_train.sh",
            [
                "STAGE",
                "DRY_RUN",
                "RESUME",
                "OVERWRITE",
                "LOSS_AGG_MODE",
                "NNODES",
                "N_GPUS_PER_NODE",
                "SAVE_FREQ",
                "TEST_FREQ",
                "BASE_MODEL",
            ],
        ),
        ("model_export.sh", ["CHECKPOINTS", "STEP", "TARGET_DIR", "OVERWRITE"]),
    ],
)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_knobs_with_their_defaults_and_runs_nothing(tmp_path, script, knobs, flag):
    result, calls = recorded_calls({}, tmp_path, [flag], script=REPO_ROOT / script)
    assert result.returncode == 0 and calls == []
    lines = result.stdout.splitlines()
    for knob in knobs:
        assert any(line.strip().startswith(f"{knob}=${{{knob}:-") for line in lines), knob
    assert "LOSS_AGG_MODE=${LOSS_AGG_MODE:-seq-mean-token-mean}" in result.stdout or script == "model_export.sh"


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE", "Yes", "on"])
def test_every_yes_value_of_dry_run_means_a_dry_run(tmp_path, value):
    result, calls = recorded_calls({"DRY_RUN": value, "ATTN_IMPL": "sdpa"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert [module_of(argv) for argv, _ in calls] == ["rationanomaly.train.preflight"]  # nothing trains
    assert "dry run: configuration valid, nothing trained" in result.stdout


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"DRY_RUN": "maybe"}, "DRY_RUN=maybe is not a yes/no value"),  # would have launched training before
        ({"NNODES": "a[$(touch {marker})]"}, "NNODES=a[$(touch {marker})] is not a whole number >= 1"),
        ({"N_GPUS_PER_NODE": "x[$(touch {marker})]"}, "is not a whole number >= 1"),
        ({"N_GPUS_PER_NODE": "0"}, "N_GPUS_PER_NODE=0 is not a whole number >= 1"),
        ({"TRAIN_BATCH_SIZE": "32 "}, "TRAIN_BATCH_SIZE=32  is not a whole number"),
        ({"SAVE_FREQ": "ten"}, "SAVE_FREQ=ten is not a whole number (or -1 for off)"),
        ({"ACTOR_LR": "4e-7;x"}, "ACTOR_LR=4e-7;x is not a non-negative number"),
        ({"NODE_RANK": "$(touch {marker})"}, "NODE_RANK="),
        ({"RESUME": "1", "OVERWRITE": "yes"}, "set one of them"),
    ],
)
def test_bad_knobs_are_refused_with_one_line_before_any_shell_arithmetic(tmp_path, knobs, message):
    marker = tmp_path / "executed"
    knobs = {key: value.format(marker=marker) for key, value in knobs.items()}
    result, calls = recorded_calls({"DRY_RUN": "1", "ATTN_IMPL": "sdpa", **knobs}, tmp_path / "rec")
    assert result.returncode == 2 and calls == []
    assert message.format(marker=marker) in result.stderr and result.stderr.count("\n") == 1
    assert not marker.exists()  # the crafted value was never evaluated


@pytest.mark.parametrize("knobs, resume_mode", [({}, "disable"), ({"RESUME": "true"}, "auto")])
def test_resume_knob_sets_verl_resume_mode_in_both_stages(tmp_path, knobs, resume_mode):
    result, calls = recorded_calls({"DRY_RUN": "1", "ATTN_IMPL": "sdpa", "STAGE": "all", **knobs}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert [as_dict(overrides_of(argv))["trainer.resume_mode"] for argv, _ in calls] == [resume_mode] * 2


@pytest.mark.parametrize(
    "test_freq, val_files",
    [
        ("-1", "datasets/bgl_train.parquet"),  # validation off: the training file stands in, never scored
        ("10", "datasets/bgl_validation.parquet"),  # validation on: the held-out file
    ],
)
def test_validation_file_follows_test_freq(tmp_path, test_freq, val_files):
    result, calls = recorded_calls({"DRY_RUN": "1", "ATTN_IMPL": "sdpa", "TEST_FREQ": test_freq}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert as_dict(overrides_of(calls[0][0]))["data.val_files"] == val_files


def test_overwrite_deletes_only_verl_checkpoints_in_the_output_folder(tmp_path, dry_run_inputs):
    out = tmp_path / "out"
    for name in (
        "global_step_10/actor/model.pt",
        "global_step_20/data.pt",
        "global_step_x/keep.txt",
        "rationanomaly_grpo_20250101.jsonl",
        "notes.txt",
    ):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    (out / "latest_checkpointed_iteration.txt").write_text("20")
    knobs = {**dry_run_inputs, "OVERWRITE": "1", "OUTPUT_DIR": str(out), "LOG_DIR": str(tmp_path / "logs")}
    result, calls = recorded_calls(knobs, tmp_path / "rec")
    assert result.returncode == 0, result.stderr
    assert "--overwrite" in calls[0][0] and module_of(calls[1][0]) == "verl.trainer.main_ppo"
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["global_step_x/keep.txt", "notes.txt", "rationanomaly_grpo_20250101.jsonl"]


def test_dry_run_with_overwrite_deletes_nothing(tmp_path, dry_run_inputs):
    out = tmp_path / "out"
    (out / "global_step_10").mkdir(parents=True)
    knobs = {**dry_run_inputs, "DRY_RUN": "1", "OVERWRITE": "1", "OUTPUT_DIR": str(out)}
    result, _ = recorded_calls(knobs, tmp_path / "rec")
    assert result.returncode == 0, result.stderr
    assert (out / "global_step_10").is_dir()
