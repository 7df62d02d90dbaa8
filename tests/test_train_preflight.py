"""Pre-flight: the overrides model_train.sh passes, checked in-process against verl's own configuration code."""

from __future__ import annotations

import importlib.util
import re

import pytest

from rationanomaly.parquet import SFT_SYSTEM_TURN, build_parquet
from rationanomaly.paths import REPO_ROOT
from rationanomaly.prompts import COT_SYSTEM_PROMPT
from rationanomaly.train.preflight import (
    PreflightError,
    check_grpo_batches,
    check_legacy_reward_overrides,
    check_sft_batches,
    format_summary,
    lost_messages,
    main,
    override_key,
    resume_plan,
    run_preflight,
)
from rationanomaly.train.tiny_run import (
    build_dry_run_inputs,
    recorded_calls,
    sample_training_set,
    strict_template_model,
)


def replace(overrides: list[str], key: str, value: str) -> list[str]:
    """The overrides with `key` (with or without its `+`) set to `value`."""
    out, found = [], False
    for item in overrides:
        if override_key(item) == key:
            item, found = f"{item.split('=', 1)[0]}={value}", True
        out.append(item)
    assert found, f"{key} is not among the launcher's overrides"
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    return build_dry_run_inputs(tmp_path_factory.mktemp("preflight_inputs"))


@pytest.fixture(scope="module")
def launcher_overrides(inputs, tmp_path_factory) -> dict[str, list[str]]:
    """The exact overrides `DRY_RUN=1 STAGE=all bash model_train.sh` hands the pre-flight, per stage."""
    result, calls = recorded_calls({**inputs, "DRY_RUN": "1", "STAGE": "all"}, tmp_path_factory.mktemp("rec"))
    assert result.returncode == 0, result.stderr
    return {argv[argv.index("--stage") + 1]: argv[argv.index("--") + 1 :] for argv, _ in calls}


def test_grpo_preflight_passes_and_reports_rows_batches_and_reward(launcher_overrides, inputs):
    values = run_preflight("grpo", launcher_overrides["grpo"])
    assert values["train files"] == f"{inputs['TRAIN_FILES']} (81 rows)"  # every sample trains
    assert values["validation"].startswith("off (trainer.test_freq=-1, as the reference run)")
    assert values["steps"] == "20 per epoch x 2 epochs = 40"
    assert values["loss aggregation"].startswith("seq-mean-token-mean (policy and KL loss")
    assert values["reward kwargs"] == {
        "ppl_model": inputs["PPL_MODEL"],
        "answer_scheme": "reference",
        "think_reward": True,
    }
    assert values["attention"] == "sdpa"
    assert format_summary("grpo", values).splitlines()[0].startswith("pre-flight grpo: configuration OK")


def test_sft_preflight_passes_and_reports_lora_and_steps(launcher_overrides):
    values = run_preflight("sft", launcher_overrides["sft"])
    assert values["LoRA"] == "rank 32 alpha 16 targets all-linear"
    assert values["steps"] == "20 per epoch x 3 epochs = 60"
    assert values["validation"] == "none (SFT_VAL_FILES unset: every sample trains)"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("actor_rollout_ref.model.path", "/nonexistent/model", "/nonexistent/model does not exist; run STAGE=sft"),
        (
            "data.train_files",
            "/nonexistent/train.parquet",
            "data.train_files (TRAIN_FILES): /nonexistent/train.parquet",
        ),
        ("data.val_files", "/nonexistent/val.parquet", "/nonexistent/val.parquet does not exist"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size", "8", "(8) is larger than data.train_batch_size (4)"),
        ("trainer.n_gpus_per_node", "3", "4 x 2 responses do not divide over 3 GPUs"),
        ("data.train_batch_size", "128", "holds 81 rows, fewer than data.train_batch_size (128)"),
        ("reward.custom_reward_function.reward_kwargs.ppl_model", "/nonexistent/distilgpt2", "reward options:"),
        ("reward.custom_reward_function.reward_kwargs.answer_scheme", "asymmetric", "reward options:"),
        ("reward.custom_reward_function.path", "null", "reward.custom_reward_function.path is not set"),
        ("reward.custom_reward_function.path", "/nonexistent/reward.py", "reward file /nonexistent/reward.py"),
        ("reward.custom_reward_function.name", "no_such_function", "does not load"),
        ("actor_rollout_ref.model.override_config.attn_implementation", "flash_attention_2", "ATTN_IMPL=sdpa"),
        ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", "null", "verl validate_config"),
    ],
)
def test_grpo_preflight_fails_with_a_fix_for_a_broken_knob(launcher_overrides, key, value, message):
    if value == "flash_attention_2" and importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here, so flash_attention_2 is valid")
    with pytest.raises(PreflightError) as error:
        run_preflight("grpo", replace(launcher_overrides["grpo"], key, value))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "appended, message",
    [
        ("actor_rollout_ref.actor.ppo_mini_bach_size=2", "verl rejects the overrides"),  # typo
        ("trainer.nnodes=3", "do not divide over 6 GPUs"),  # 2 per node x 3 nodes
        ("actor_rollout_ref.rollout.mode=sync", "actor_rollout_ref.rollout configuration"),  # removed in verl 0.9.1
        ("reward_model.enable=True", "write reward.reward_model.enable instead"),  # legacy key
    ],
)
def test_grpo_preflight_fails_for_a_bad_appended_override(launcher_overrides, appended, message):
    with pytest.raises(PreflightError) as error:
        run_preflight("grpo", [*launcher_overrides["grpo"], appended])
    assert message in str(error.value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.path", "/nonexistent/base", "set BASE_MODEL=<folder>"),
        ("data.train_files", "/nonexistent/sft.parquet", "/nonexistent/sft.parquet does not exist"),
        ("trainer.n_gpus_per_node", "3", "data.train_batch_size (4) does not divide over 3 GPUs"),
    ],
)
def test_sft_preflight_fails_with_a_fix_for_a_broken_knob(launcher_overrides, key, value, message):
    with pytest.raises(PreflightError) as error:
        run_preflight("sft", replace(launcher_overrides["sft"], key, value))
    assert message in str(error.value)


@pytest.fixture(scope="module")
def sft_with_system_turn(tmp_path_factory) -> str:
    """SFT rows with a separate system message (right for ChatML, wrong for a Llama-2 template)."""
    path = tmp_path_factory.mktemp("sft_turn") / "sft_train.parquet"
    build_parquet(
        sample_training_set(), {"sft_train": path}, COT_SYSTEM_PROMPT, validation_ratio=0.25, sft_system=SFT_SYSTEM_TURN
    )
    return str(path)


@pytest.mark.parametrize(
    "ignore_mismatch, message",
    [
        ("False", "verl cannot read data.train_files"),  # verl's own sanity check raises
        ("True", "drops the system message(s)"),  # verl would silently train without the system prompt
    ],
)
def test_sft_preflight_catches_a_system_turn_a_llama2_template_cannot_render(
    launcher_overrides, sft_with_system_turn, ignore_mismatch, message
):
    overrides = replace(launcher_overrides["sft"], "data.train_files", sft_with_system_turn)
    overrides = replace(overrides, "data.ignore_input_ids_mismatch", ignore_mismatch)
    with pytest.raises(PreflightError) as error:
        run_preflight("sft", overrides)
    assert message in str(error.value)


def test_sft_preflight_names_the_template_fix_for_a_llama2_template_that_refuses_two_user_turns(
    launcher_overrides, inputs, tmp_path, monkeypatch
):
    # Llama-2-chat's own template raises on [user, user], which verl's SFT dataset templates to find the prefix
    strict = strict_template_model(inputs["BASE_MODEL"], tmp_path / "strict-llama")
    overrides = replace(launcher_overrides["sft"], "model.path", strict)
    monkeypatch.delenv("RATIONANOMALY_SFT_CHAT_TEMPLATE", raising=False)
    with pytest.raises(PreflightError) as error:
        run_preflight("sft", overrides)
    assert "SFT_CHAT_TEMPLATE" in str(error.value) and "roles must alternate" in str(error.value)
    # the launcher's default: the project's template, handed to verl through the environment
    template = (REPO_ROOT / "rationanomaly/train/llama2_chat_template.jinja").read_text().rstrip("\n")
    monkeypatch.setenv("RATIONANOMALY_SFT_CHAT_TEMPLATE", template)
    assert run_preflight("sft", overrides)["steps"] == "20 per epoch x 3 epochs = 60"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("+reward.custom_reward_function.reward_kwargs.dtype=x", "reward.custom_reward_function.reward_kwargs.dtype"),
        ("~trainer.logger", "trainer.logger"),
        ("data.train_files=a=b", "data.train_files"),  # only the first = separates
    ],
)
def test_override_key_drops_prefixes_and_value(override, expected):
    assert override_key(override) == expected


@pytest.mark.parametrize(
    "override, replacement",
    [
        ("custom_reward_function.path=r.py", "reward.custom_reward_function.path"),
        (
            "+custom_reward_function.reward_kwargs.ppl_model=none",
            "reward.custom_reward_function.reward_kwargs.ppl_model",
        ),
        ("reward_model.enable=True", "reward.reward_model.enable"),
        ("sandbox_fusion.url=http://x", "reward.sandbox_fusion.url"),
    ],
)
def test_legacy_reward_override_is_refused_with_its_new_name(override, replacement):
    with pytest.raises(PreflightError, match=f"write {replacement} instead"):
        check_legacy_reward_overrides([override])


@pytest.mark.parametrize(
    "override",
    [
        "reward.custom_reward_function.path=r.py",
        "+reward.custom_reward_function.reward_kwargs.ppl_model=none",
        "trainer.custom_reward_function_note=x",  # only the top-level key is legacy
    ],
)
def test_current_reward_override_is_accepted(override):
    check_legacy_reward_overrides([override])


@pytest.mark.parametrize(
    "batch, mini, n, gpus, message",
    [
        (32, 8, 16, 8, None),  # reference run
        (32, 8, 16, 16, None),  # two nodes
        (32, 64, 16, 8, "larger than"),
        (32, 8, 16, 6, "do not divide over 6 GPUs"),  # 512 % 6
        (30, 5, 1, 6, "does not divide over 6"),  # 30 divides, the mini-batch 5 does not
    ],
)
def test_grpo_batch_arithmetic(batch, mini, n, gpus, message):
    if message is None:
        check_grpo_batches(batch, mini, n, gpus)
    else:
        with pytest.raises(PreflightError, match=message):
            check_grpo_batches(batch, mini, n, gpus)


@pytest.mark.parametrize("batch, gpus, ok", [(32, 8, True), (32, 16, True), (32, 6, False)])
def test_sft_batch_must_divide_over_the_gpus(batch, gpus, ok):
    if ok:
        check_sft_batches(batch, gpus)
    else:
        with pytest.raises(PreflightError, match="does not divide"):
            check_sft_batches(batch, gpus)


@pytest.mark.parametrize(
    "messages, text, expected",
    [
        (
            [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "log A"}],
            "<s>[INST] log A [/INST]",
            ["system"],
        ),  # Llama-2 template, system turn rendered alone
        (
            [{"role": "user", "content": "<<SYS>>\nBe terse.\n<</SYS>>\n\nlog A"}],
            "<s>[INST] <<SYS>>\nBe terse.\n<</SYS>>\n\nlog A [/INST]",
            [],
        ),  # system folded into the user turn
        ([{"role": "system", "content": "  "}, {"role": "user", "content": "log A"}], "log A", []),  # empty system
    ],
)
def test_lost_messages_names_roles_missing_from_the_trained_text(messages, text, expected):
    assert lost_messages(messages, text) == expected


def test_cli_prints_one_error_line_and_exits_2(capsys):
    assert main(["--stage", "grpo", "custom_reward_function.path=x.py"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pre-flight error:") and err.count("\n") == 1


def test_cli_overrides_only_accepts_current_keys_without_composing(capsys):
    assert main(["--stage", "grpo", "--overrides-only", "reward.custom_reward_function.path=x.py"]) == 0


def test_logger_backend_without_its_package_is_refused(monkeypatch):
    from rationanomaly.train import preflight

    monkeypatch.setitem(preflight.LOGGER_PACKAGES, "wandb", "no_such_package_for_wandb")
    preflight.check_loggers(["console", "file"])
    with pytest.raises(PreflightError, match="pip install no_such_package_for_wandb, or drop it from trainer.logger"):
        preflight.check_loggers(["console", "wandb"])


def test_grpo_preflight_reports_every_problem_in_one_pass(launcher_overrides):
    overrides = replace(launcher_overrides["grpo"], "actor_rollout_ref.model.path", "/nonexistent/model")
    overrides = replace(overrides, "trainer.n_gpus_per_node", "3")
    overrides = replace(overrides, "reward.custom_reward_function.reward_kwargs.answer_scheme", "asymmetric")
    with pytest.raises(PreflightError) as error:
        run_preflight("grpo", overrides)
    messages = error.value.messages
    assert len(messages) == 3  # the model folder, the GPU count, the reward option; nothing that follows from them
    assert "/nonexistent/model does not exist" in messages[0]
    assert "do not divide over 3 GPUs" in messages[1]
    assert messages[2].startswith("reward options:")


def test_cli_prints_one_line_per_problem_then_the_count(launcher_overrides, capsys):
    overrides = replace(launcher_overrides["sft"], "model.path", "/nonexistent/base")
    overrides = replace(overrides, "trainer.n_gpus_per_node", "3")
    assert main(["--stage", "sft", "--", *overrides]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":", 1)[0] for line in lines[-3:]] == ["pre-flight error"] * 2 + ["pre-flight"]
    assert lines[-1] == "pre-flight: 2 problems found, nothing started"


def test_cli_holds_back_verl_noise_and_prints_the_verdict_last(launcher_overrides, capsys):
    assert main(["--stage", "grpo", "--", *launcher_overrides["grpo"]]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("pre-flight grpo: configuration OK")
    assert "engine is not available" not in captured.err and "No supported accelerator" not in captured.err


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> dict[str, str]:
    """A GRPO split with a held-out validation file, and a stale validation file that overlaps training."""
    folder = tmp_path_factory.mktemp("held_out")
    files = {key: str(folder / f"{key}.parquet") for key in ("rl_train", "rl_validation")}
    build_parquet(sample_training_set(), files, COT_SYSTEM_PROMPT, validation_ratio=0.25)
    return files


@pytest.mark.parametrize(
    "train, val, message",
    [
        ("launcher", "launcher", "names a training file"),  # the default stand-in, but validation is on
        ("launcher", "rl_validation", "validation template(s) are also training templates"),  # stale held-out file
        ("rl_train", "rl_validation", None),  # a real held-out split
    ],
)
def test_validation_on_needs_a_held_out_file(launcher_overrides, inputs, held_out, train, val, message):
    files = {"launcher": inputs["TRAIN_FILES"], **held_out}
    overrides = replace(launcher_overrides["grpo"], "data.train_files", files[train])
    overrides = replace(replace(overrides, "data.val_files", files[val]), "trainer.test_freq", "10")
    if message is None:
        values = run_preflight("grpo", overrides)
        assert values["validation"] == f"every 10 steps on {files[val]} (21 rows)"
        assert values["train files"] == f"{files[train]} (60 rows)"
    else:
        with pytest.raises(PreflightError, match=re.escape(message)):
            run_preflight("grpo", overrides)


def checkpoint_folder(root, steps: list[int], latest: int | None = None) -> str:
    """A trainer.default_local_dir holding global_step_N folders (and verl's tracker file)."""
    for step in steps:
        (root / f"global_step_{step}").mkdir(parents=True)
    if latest is not None:
        (root / "latest_checkpointed_iteration.txt").write_text(str(latest))
    return str(root)


@pytest.mark.parametrize(
    "steps, resume, overwrite, expected",
    [
        ([], "disable", False, "fresh (no checkpoint in {dir})"),
        ([10, 20], "disable", True, "fresh; OVERWRITE=1 first deletes the 2 checkpoint(s) in {dir}"),
        ([], "auto", False, "fresh (RESUME=1, but {dir} holds no checkpoint yet)"),
        ([10, 20], "auto", False, "resumes from step 20 of 40 in {dir} (RESUME=1)"),
    ],
)
def test_resume_plan_says_how_the_run_starts(tmp_path, steps, resume, overwrite, expected):
    folder = checkpoint_folder(tmp_path / "out", steps, steps[-1] if steps else None)
    assert resume_plan(folder, resume, overwrite, 40) == expected.format(dir=folder)


@pytest.mark.parametrize(
    "steps, resume, message",
    [
        ([10, 20], "disable", "already holds checkpoints of an earlier run (steps 10, 20); RESUME=1 continues"),
        ([10, 20, 30, 40], "auto", "already holds the last step (40 of 40), so RESUME=1 would train nothing"),
    ],
)
def test_resume_plan_refuses_to_reuse_or_mix_an_earlier_run(tmp_path, steps, resume, message):
    folder = checkpoint_folder(tmp_path / "out", steps, steps[-1])
    with pytest.raises(PreflightError, match=re.escape(message)):
        resume_plan(folder, resume, False, 40)


def test_sft_preflight_refuses_an_earlier_sft_run_and_reports_the_export_target(launcher_overrides, tmp_path):
    # a stale SFT run: verl's default resume_mode=auto would have resumed it and exported its weights
    folder = checkpoint_folder(tmp_path / "sft", [20, 40, 60], 60)
    target = tmp_path / "sft-merged"
    target.mkdir()
    (target / "config.json").write_text("{}")  # not an export: even OVERWRITE=1 must keep it
    overrides = replace(launcher_overrides["sft"], "trainer.default_local_dir", folder)
    with pytest.raises(PreflightError) as error:
        run_preflight("sft", overrides, export_target=str(target))
    assert len(error.value.messages) == 2
    assert "model_export.sh did not write" in error.value.messages[0]
    assert "RESUME=1 continues that run, OVERWRITE=1 deletes them first" in error.value.messages[1]
    (target / "config.json").unlink()  # an empty folder may be filled
    values = run_preflight("sft", overrides, overwrite=True, export_target=str(target))
    assert values["start"] == f"fresh; OVERWRITE=1 first deletes the 3 checkpoint(s) in {folder}"


def test_grpo_preflight_refuses_checkpoints_that_do_not_fit_and_names_the_keep_setting(launcher_overrides, monkeypatch):
    from rationanomaly.train import preflight

    values = run_preflight("grpo", launcher_overrides["grpo"])
    each = int(values["checkpoints"].split("4 x ~")[1].split(" kB")[0].replace(".", "")) * 100  # ~211.4 kB
    monkeypatch.setattr(preflight, "free_bytes", lambda folder: 2 * each + each // 2)  # room for two
    with pytest.raises(
        PreflightError,
        match=r"4 checkpoints x ~.* will not fit .* keep the last 2 with "
        r"trainer\.max_actor_ckpt_to_keep=2",
    ):
        run_preflight("grpo", launcher_overrides["grpo"])
    kept = run_preflight("grpo", [*launcher_overrides["grpo"], "trainer.max_actor_ckpt_to_keep=2"])
    assert ", the last 2 kept = " in kept["checkpoints"]
