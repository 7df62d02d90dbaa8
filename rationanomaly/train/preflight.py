"""Pre-flight for model_train.sh: compose and validate the verl 0.9.1 configuration on a CPU, run nothing.

    python -m rationanomaly.train.preflight --stage grpo -- actor_rollout_ref.model.path=models/RationAnomaly-SFT

It takes exactly the overrides the real run passes to verl (appended ones included), composes them with
verl's own Hydra configuration, runs verl's own `validate_config` and the dataclass conversions its
workers perform, and loads the datasets, the tokenizer and the reward function the way the trainer does.
What a GPU node would only discover after minutes of start-up fails here in seconds with one line
naming the fix (notes/verl-0.9.1.md §1 lists the checks that only run inside GPU workers; they are
repeated here).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rationanomaly.train.checkpoints import (
    CheckpointPlan,
    checkpoint_bytes,
    checkpoint_steps,
    format_bytes,
    format_steps,
    free_bytes,
    kept_checkpoints,
    model_parameters,
    save_steps,
)
from rationanomaly.train.export import ExportError, check_target, latest_step

STAGES = ("grpo", "sft")
# verl's own entry points read these configurations (trainer/main_ppo.py, trainer/sft_trainer.py).
CONFIG_NAMES = {"grpo": "ppo_trainer", "sft": "sft_trainer_engine"}
ENTRY_POINTS = {"grpo": "verl.trainer.main_ppo", "sft": "verl.trainer.sft_trainer"}

# Top-level keys that verl 0.9.1 still composes but main_ppo silently ignores (notes §2): the run would
# fall back to verl's default scorer and die on data_source "RationAnomaly" after the first rollout.
LEGACY_REWARD_KEYS = {
    "custom_reward_function": "reward.custom_reward_function",
    "reward_model": "reward.reward_model",
    "sandbox_fusion": "reward.sandbox_fusion",
}

# trainer.logger backends that need a package of their own (verl/utils/tracking.py); the JSON-lines `file`
# logger imports orjson, which verl 0.9.1 does not declare (other packages of the GPU stack pull it in).
LOGGER_PACKAGES = {
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "swanlab": "swanlab",
    "clearml": "clearml",
    "trackio": "trackio",
    "file": "orjson",
}

# What a passing pre-flight has proven, per stage (printed with the summary).
CHECKED = {
    "grpo": "verl composition, validate_config, worker dataclasses, datasets, reward file and options",
    "sft": "verl composition, engine dataclasses, chat template applies turn by turn, datasets, every message kept",
}

# Llama-2-7B-chat is gated: accept Meta's licence on its Hugging Face page and log in (`hf auth login`) first.
BASE_MODEL_FETCH = "hf download meta-llama/Llama-2-7b-chat-hf --local-dir models/llama-2-7b-chat-hf"

# The reference fork averaged each response over its own tokens, then over responses; verl 0.9.1's name for
# that is seq-mean-token-mean (its token-mean divides by the tokens of the whole mini-batch instead).
REFERENCE_LOSS_AGG_MODE = "seq-mean-token-mean"

# verl loads the training model with this unless override_config.attn_implementation says otherwise.
VERL_DEFAULT_ATTENTION = "flash_attention_2"


class PreflightError(ValueError):
    """A configuration that would fail (or silently misbehave) on the GPU node; each message names its fix."""

    def __init__(self, *messages: str) -> None:
        super().__init__(" / ".join(messages))
        self.messages = list(messages)


class Findings:
    """Runs checks one after another and keeps every problem, so a single pass reports them all.

    A check whose input failed an earlier check is skipped by the caller (it returns None here), so
    one broken knob yields one line, not a cascade.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []

    def check(self, check: Callable[..., Any], *args: Any) -> Any:
        """The check's result, or None after recording its problem(s)."""
        try:
            return check(*args)
        except PreflightError as error:
            self.problems.extend(error.messages)
            return None

    def raise_if_any(self) -> None:
        """Raise one PreflightError holding every problem found."""
        if self.problems:
            raise PreflightError(*self.problems)


def override_key(override: str) -> str:
    """The dotted key of a Hydra override (`+a.b=1` -> `a.b`, `~a.b` -> `a.b`)."""
    return override.split("=", 1)[0].lstrip("+~")


def check_legacy_reward_overrides(overrides: Iterable[str]) -> None:
    """Refuse top-level reward keys that compose in verl 0.9.1 but are ignored by main_ppo (notes §2)."""
    for override in overrides:
        key = override_key(override)
        top = key.split(".", 1)[0]
        if top in LEGACY_REWARD_KEYS:
            new_key = LEGACY_REWARD_KEYS[top] + key[len(top) :]
            raise PreflightError(
                f"override {override!r} uses the legacy key {top}.*, which verl 0.9.1 main_ppo "
                f"silently ignores; write {new_key} instead"
            )


def verl_config_dir() -> Path:
    """verl's own Hydra configuration folder (the one `@hydra.main(config_path="config")` reads)."""
    spec = importlib.util.find_spec("verl")
    if spec is None or spec.origin is None:
        raise PreflightError("verl is not installed: pip install -r requirements.txt (GPU) or pip install -e .[test]")
    return Path(spec.origin).parent / "trainer" / "config"


def _one_line(error: BaseException) -> str:
    """An exception message folded onto one line (Hydra's span several)."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def compose_config(stage: str, overrides: Sequence[str]):
    """Compose verl's configuration for `stage` with `overrides`, exactly as its `@hydra.main` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if stage not in STAGES:
        raise PreflightError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None):
            return compose(config_name=CONFIG_NAMES[stage], overrides=list(overrides))
    except Exception as error:  # Hydra raises several unrelated types; all mean "fix an override".
        raise PreflightError(
            f"verl rejects the overrides: {_one_line(error)} (check the key against "
            f"`python -m {ENTRY_POINTS[stage]} --cfg job`; new keys need a leading +)"
        ) from error
    finally:
        GlobalHydra.instance().clear()


def as_list(value: Any) -> list[str]:
    """verl accepts one file or a list of files for data.train_files / val_files."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def check_files(files: Iterable[str], key: str) -> list[str]:
    """Every data file must exist before the trainer starts (it reads them inside a Ray actor)."""
    files = list(files)
    if not files:
        raise PreflightError(f"{key} is empty: pass a parquet file (build it with python datasets/parquet_builder.py)")
    for name in files:
        if not Path(os.path.expanduser(name)).is_file():
            raise PreflightError(
                f"{key}: {name} does not exist; build it with python datasets/parquet_builder.py "
                f"or point the knob at an existing parquet"
            )
    return files


MODEL_FIXES = {
    "BASE_MODEL": f"download it ({BASE_MODEL_FETCH}) or set BASE_MODEL=<folder>",
    "GRPO_MODEL": "run STAGE=sft bash model_train.sh to create it (GRPO starts from the SFT model), "
    "or set GRPO_MODEL=<folder>",
}


def check_model_dir(path: str, knob: str) -> Path:
    """A local Hugging Face folder with config.json: no hub download happens on a training node."""
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        raise PreflightError(f"model folder {path} does not exist; {MODEL_FIXES[knob]}")
    if not (folder / "config.json").is_file():
        raise PreflightError(f"model folder {path} has no config.json; point {knob} at a Hugging Face model folder")
    return folder


def check_attention(attention: str) -> None:
    """flash_attention_2 (verl's default) needs flash-attn, which verl[vllm] does not install (notes §0)."""
    if attention == VERL_DEFAULT_ATTENTION and importlib.util.find_spec("flash_attn") is None:
        raise PreflightError(
            "attention flash_attention_2 needs flash-attn, which is not installed: "
            "pip install flash-attn==2.8.3, or set ATTN_IMPL=sdpa"
        )


def check_loggers(loggers: Iterable[str]) -> None:
    """Each trainer.logger backend must be importable; verl would fail at the first metric otherwise."""
    for name in loggers:
        package = LOGGER_PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise PreflightError(
                f"trainer.logger includes {name} but {package} is not installed: "
                f"pip install {package}, or drop it from trainer.logger"
            )


def check_grpo_batches(train_batch_size: int, mini_batch_size: int, rollouts: int, n_gpus: int) -> bool:
    """Batch arithmetic verl checks late (validate_config) or only inside GPU workers (notes §1)."""
    if mini_batch_size > train_batch_size:
        raise PreflightError(
            f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini_batch_size}) is larger than "
            f"data.train_batch_size ({train_batch_size}): lower the mini-batch or raise the batch"
        )
    if (train_batch_size * rollouts) % n_gpus:
        raise PreflightError(
            f"data.train_batch_size x rollout.n = {train_batch_size} x {rollouts} responses do not "
            f"divide over {n_gpus} GPUs: choose a GPU count (N_GPUS_PER_NODE x NNODES) "
            f"that divides it"
        )
    if (mini_batch_size * rollouts) % n_gpus:
        raise PreflightError(
            f"ppo_mini_batch_size x rollout.n = {mini_batch_size} x {rollouts} does not divide over "
            f"{n_gpus} GPUs: choose a GPU count or mini-batch so that it does"
        )
    return True


def check_sft_batches(train_batch_size: int, n_gpus: int) -> None:
    """verl's SFT trainer gives each data-parallel rank train_batch_size // n_gpus samples."""
    if train_batch_size % n_gpus:
        raise PreflightError(
            f"data.train_batch_size ({train_batch_size}) does not divide over {n_gpus} GPUs: "
            f"choose a GPU count (N_GPUS_PER_NODE x NNODES) that divides it"
        )


def check_enough_rows(rows: int, batch_size: int, key: str) -> int:
    """Steps per epoch = rows // batch (verl drops the last partial batch); zero steps trains nothing."""
    steps = rows // batch_size
    if steps == 0:
        raise PreflightError(
            f"{key} holds {rows} rows, fewer than data.train_batch_size ({batch_size}): "
            f"lower the batch or build a larger training set"
        )
    return steps


def _convert(node, what: str, converter: Callable | None = None):
    """verl's omega_conf_to_dataclass with its error turned into a PreflightError naming the section."""
    from verl.utils.config import omega_conf_to_dataclass

    try:
        return (converter or omega_conf_to_dataclass)(node)
    except PreflightError:
        raise
    except Exception as error:
        raise PreflightError(f"verl rejects the {what} configuration: {_one_line(error)}") from error


def _ref_as_actor(config) -> Any:
    """The ref node renamed the way ActorRolloutRefWorker.init_model does before converting it."""
    from omegaconf import open_dict

    ref = copy.deepcopy(config.actor_rollout_ref.ref)
    with open_dict(ref):
        ref.ppo_mini_batch_size = config.actor_rollout_ref.actor.ppo_mini_batch_size
        ref.ppo_micro_batch_size = ref.pop("log_prob_micro_batch_size", None)
        ref.ppo_micro_batch_size_per_gpu = ref.pop("log_prob_micro_batch_size_per_gpu", None)
        ref.use_dynamic_bsz = ref.pop("log_prob_use_dynamic_bsz", False)
        ref.ppo_max_token_len_per_gpu = ref.pop("log_prob_max_token_len_per_gpu", None)
    return ref


def check_reward(config) -> dict[str, Any]:
    """Load the reward function through verl's own loader and run our reward's config check."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    reward_fn = config.reward.get("custom_reward_function") or {}
    path = reward_fn.get("path")
    if not path:
        raise PreflightError(
            "reward.custom_reward_function.path is not set, so verl would use its default scorer, "
            "which does not know data_source RationAnomaly; set it to "
            "verl/utils/reward_score/RationAnomaly/__init__.py"
        )
    if not path.startswith("pkg://") and not Path(path).is_file():
        raise PreflightError(
            f"reward file {path} does not exist; set reward.custom_reward_function.path to "
            f"verl/utils/reward_score/RationAnomaly/__init__.py"
        )
    try:
        get_custom_reward_fn(config)
    except Exception as error:
        raise PreflightError(
            f"reward function {reward_fn.get('name')} in {path} does not load: {_one_line(error)} "
            f"(run pip install -e . in the training environment)"
        ) from error
    kwargs = OmegaConf.to_container(reward_fn.get("reward_kwargs") or {}, resolve=True)
    check_reward_options(kwargs)
    return kwargs


def check_reward_options(reward_kwargs: Mapping[str, Any]) -> None:
    """Our reward's own option check (a missing perplexity model, an unknown answer scheme, ...)."""
    try:
        from rationanomaly.reward import check_reward_config
    except ImportError as error:
        raise PreflightError(
            f"rationanomaly.reward.check_reward_config is not importable ({error}); "
            f"run pip install -e . in the training environment"
        ) from error
    try:
        check_reward_config(reward_kwargs)
    except ValueError as error:
        raise PreflightError(f"reward options: {_one_line(error)}") from error


def _load_dataset(build: Callable[[], Any], key: str) -> Any:
    """Build a verl dataset and read its first row, as the trainer's dataloader would."""
    try:
        dataset = build()
        rows = len(dataset)
        if rows:
            dataset[0]
    except PreflightError:
        raise
    except Exception as error:
        raise PreflightError(
            f"verl cannot read {key}: {_one_line(error)} (rebuild it with python datasets/parquet_builder.py)"
        ) from error
    if rows == 0:
        raise PreflightError(f"{key} has no rows; rebuild it with python datasets/parquet_builder.py")
    return dataset


def lost_messages(messages: Sequence[Mapping[str, Any]], trained_text: str) -> list[str]:
    """Roles whose content is missing from the text verl actually trains on.

    verl's SFT dataset templates each message on its own and concatenates the pieces. A Llama-2 chat
    template folds the system prompt into the first [INST] block, so a lone system message renders as
    nothing and, with data.ignore_input_ids_mismatch=True, the system prompt silently disappears.
    Whitespace is ignored: decoding may re-space text around punctuation without losing anything.
    """
    trained = "".join(trained_text.split())
    return [str(m["role"]) for m in messages if "".join(str(m["content"]).split()) not in trained]


def check_sft_sample(dataset, tokenizer) -> None:
    """The first SFT sample, as verl tokenizes it, must still contain every message it was built from."""
    messages = dataset.messages[0]
    trained_text = tokenizer.decode(dataset[0]["input_ids"].tolist())
    missing = lost_messages(messages, trained_text)
    if missing:
        raise PreflightError(
            f"verl's SFT dataset drops the {', '.join(missing)} message(s) of each sample with this "
            f"chat template (it templates messages one by one); put the system prompt inside the user "
            f"turn when building datasets/sft_*.parquet"
        )


def check_chat_template(tokenizer) -> bool:
    """verl's SFT dataset templates [user] and [user, user] to find each turn's prefix (notes §4).

    Llama-2-chat's own template refuses two user turns in a row, so verl cannot even build the dataset.
    """
    from verl.utils.tokenizer.chat_template import extract_system_prompt_and_generation

    try:
        extract_system_prompt_and_generation(tokenizer)
    except Exception as error:
        raise PreflightError(
            f"the chat template of model.path cannot be applied turn by turn as verl's SFT dataset "
            f"does ({_one_line(error)}): set SFT_CHAT_TEMPLATE=rationanomaly/train/"
            f"llama2_chat_template.jinja (the launcher's default) or another template without "
            f"that check"
        ) from error
    return True


def _run_verl_validate(config) -> None:
    """main_ppo's own start: auto_set_device, then validate_config (notes §1)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    try:
        auto_set_device(config)
        with warnings.catch_warnings():  # "Disabled critic as adv_estimator != gae" is the point of GRPO
            warnings.simplefilter("ignore", UserWarning)
            use_critic = need_critic(config)
        validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=use_critic)
    except Exception as error:
        raise PreflightError(f"verl validate_config: {_one_line(error)}") from error


def validation_on(stage: str, trainer, val_files: Sequence[str]) -> bool:
    """Whether verl will ever score data.val_files: GRPO on test_freq > 0 or val_before_train; SFT whenever
    a validation file is given (its trainer validates at the last step)."""
    if stage == "sft":
        return bool(val_files)
    return int(trainer.test_freq) > 0 or bool(trainer.val_before_train)


def parquet_templates(path: str) -> set[str]:
    """The templates (`extra_info.template`) of a parquet built by datasets/parquet_builder.py; empty otherwise."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path, columns=["extra_info"])
    except Exception:  # another builder's file without our extra_info: nothing to compare
        return set()
    return {info["template"] for info in frame["extra_info"] if isinstance(info, Mapping) and "template" in info}


def check_held_out(train_files: Sequence[str], val_files: Sequence[str], knob: str) -> None:
    """Validation must not score training data: no shared file, no shared template."""
    fix = (
        f"build a held-out split with python datasets/parquet_builder.py --validation_ratio 0.1 (it writes the "
        f"validation files) and point {knob} at it, or turn validation off"
    )
    if {Path(f).resolve() for f in train_files} & {Path(f).resolve() for f in val_files}:
        raise PreflightError(f"validation is on but {knob} names a training file: {fix}")
    train = set().union(*(parquet_templates(f) for f in train_files))
    shared = train & set().union(*(parquet_templates(f) for f in val_files))
    if shared:
        raise PreflightError(
            f"validation is on but {len(shared)} validation template(s) are also training templates "
            f"(e.g. {sorted(shared)[0][:60]!r}; a file left from an earlier build?): {fix}"
        )


def resume_plan(folder: str, resume_mode: str, overwrite: bool, total_steps: int) -> str:
    """What the run does with checkpoints already in its output folder; refuses silent reuse of an old run.

    verl's default `resume_mode=auto` continues whatever the folder holds, so a rerun could export an
    earlier run's weights. The launcher passes `disable` unless RESUME=1.
    """
    existing = checkpoint_steps(folder)
    if resume_mode == "disable":
        if existing and not overwrite:
            raise PreflightError(
                f"{folder} already holds checkpoints of an earlier run (steps "
                f"{format_steps(existing)}); RESUME=1 continues that run, OVERWRITE=1 deletes them "
                f"first, or choose another output folder (OUTPUT_DIR / SFT_OUTPUT_DIR)"
            )
        if existing:
            return f"fresh; OVERWRITE=1 first deletes the {len(existing)} checkpoint(s) in {folder}"
        return f"fresh (no checkpoint in {folder})"
    if resume_mode != "auto":
        return f"trainer.resume_mode={resume_mode}"
    if not existing:
        return f"fresh (RESUME=1, but {folder} holds no checkpoint yet)"
    latest = latest_step(Path(folder))
    if latest >= total_steps:
        raise PreflightError(
            f"{folder} already holds the last step ({latest} of {total_steps}), so RESUME=1 would "
            f"train nothing: export it with bash model_export.sh, or start fresh with OVERWRITE=1"
        )
    return f"resumes from step {latest} of {total_steps} in {folder} (RESUME=1)"


def plan_checkpoints(
    folder: str, steps: Sequence[int], keep: int | None, model_dir: Path, lora_rank: int = 0
) -> CheckpointPlan:
    """The run's checkpoint steps, their estimated size (from the model's config) and the free space."""
    try:
        parameters, trainable = model_parameters(model_dir, lora_rank)
    except Exception as error:
        raise PreflightError(f"cannot size the checkpoints of {model_dir}: {_one_line(error)}") from error
    return CheckpointPlan(
        Path(folder),
        tuple(steps),
        kept_checkpoints(len(steps), keep),
        checkpoint_bytes(parameters, trainable),
        free_bytes(folder),
    )


def check_disk(plan: CheckpointPlan, keep_key: str) -> None:
    """The checkpoints the run keeps must fit in the free space of its output folder."""
    if plan.free_bytes is None or plan.bytes_needed <= plan.free_bytes:
        return
    fit = plan.free_bytes // plan.bytes_each
    keep = (
        f"keep the last {fit} with {keep_key}={fit}"
        if fit
        else "not even one fits, so free space or choose another output folder"
    )
    raise PreflightError(
        f"{plan.kept} checkpoints x ~{format_bytes(plan.bytes_each)} = "
        f"{format_bytes(plan.bytes_needed)} will not fit in the {format_bytes(plan.free_bytes)} free "
        f"under {plan.folder}: {keep} (verl deletes older ones), or save less often (SAVE_FREQ)"
    )


def describe_checkpoints(plan: CheckpointPlan) -> str:
    """One summary line: where, at which steps, how big, against the free space."""
    if not plan.steps:
        return f"none (save_freq off): nothing lands in {plan.folder}"
    kept = "" if plan.kept == len(plan.steps) else f", the last {plan.kept} kept"
    free = "" if plan.free_bytes is None else f"; {format_bytes(plan.free_bytes)} free"
    return (
        f"{plan.folder}/global_step_N at steps {format_steps(plan.steps)}: {len(plan.steps)} x "
        f"~{format_bytes(plan.bytes_each)}{kept} = {format_bytes(plan.bytes_needed)}{free}"
    )


def check_export_target(checkpoints: str, target: str, overwrite: bool) -> str:
    """The SFT stage exports into SFT_MODEL after training: refuse a target the export would refuse, now."""
    try:
        return check_target(checkpoints, target, overwrite)
    except ExportError as error:
        raise PreflightError(f"the SFT export target (SFT_MODEL, model_export.sh's TARGET_DIR): {error}") from error


def override_value(overrides: Sequence[str], key: str) -> str | None:
    """The value the last override of `key` sets (what Hydra keeps), or None."""
    values = [item.split("=", 1)[1] for item in overrides if "=" in item and override_key(item) == key]
    return values[-1] if values else None


def describe_loss_aggregation(mode: str) -> str:
    """The actor's loss aggregation and how it relates to the reference run (tests/test_loss_aggregation.py)."""
    if mode == REFERENCE_LOSS_AGG_MODE:
        return f"{mode} (policy and KL loss; every response weighs the same, as in the reference run)"
    if mode == "token-mean":
        return (
            f"{mode} (verl's default: responses weigh by their length; the reference weighed each response "
            f"the same: LOSS_AGG_MODE={REFERENCE_LOSS_AGG_MODE})"
        )
    return f"{mode} (not the reference run's {REFERENCE_LOSS_AGG_MODE})"


def _plan_run(
    findings: Findings, stage: str, config, rows: int | None, model_dir: Path | None, lora_rank: int, overwrite: bool
) -> dict[str, str]:
    """Steps, start (fresh or resumed) and checkpoint lines, once the training rows are known."""
    trainer = config.trainer
    batch = int(config.data.train_batch_size)
    per_epoch = findings.check(check_enough_rows, rows, batch, "data.train_files") if rows is not None else None
    if per_epoch is None:
        return {}
    epochs = int(trainer.total_epochs)
    total = int(trainer.total_training_steps or per_epoch * epochs)
    values = {
        "steps": f"{per_epoch} per epoch x {epochs} epochs = {total}"
        + ("" if total == per_epoch * epochs else f" (trainer.total_training_steps={total})")
    }
    start = findings.check(resume_plan, str(trainer.default_local_dir), str(trainer.resume_mode), overwrite, total)
    if start is not None:
        values["start"] = start
    save_freq = per_epoch if trainer.save_freq == "after_each_epoch" else int(trainer.save_freq)
    steps = save_steps(total, save_freq, save_last=stage == "sft")
    keep_key = "trainer.max_ckpt_to_keep" if stage == "sft" else "trainer.max_actor_ckpt_to_keep"
    if model_dir is not None:
        plan = findings.check(
            plan_checkpoints,
            str(trainer.default_local_dir),
            steps,
            trainer.get(keep_key.split(".", 1)[1]),
            model_dir,
            lora_rank,
        )
        if plan is not None:
            findings.check(check_disk, plan, keep_key)
            values["checkpoints"] = describe_checkpoints(plan)
    return values


def preflight_grpo(config, overwrite: bool = False) -> dict[str, Any]:
    """Every check the GRPO run would hit before its first rollout; returns the key resolved values."""
    from verl.trainer.ppo.utils import create_rl_dataset

    findings = Findings()
    arr, data, trainer = config.actor_rollout_ref, config.data, config.trainer
    n_gpus = int(trainer.n_gpus_per_node) * int(trainer.nnodes)
    model_dir = findings.check(check_model_dir, arr.model.path, "GRPO_MODEL")
    train_files = findings.check(check_files, as_list(data.train_files), "data.train_files (TRAIN_FILES)")
    val_files = findings.check(check_files, as_list(data.val_files), "data.val_files (VAL_FILES)")
    validating = validation_on("grpo", trainer, val_files or [])
    if validating and train_files and val_files:
        findings.check(check_held_out, train_files, val_files, "VAL_FILES")
    batches_ok = findings.check(
        check_grpo_batches, int(data.train_batch_size), int(arr.actor.ppo_mini_batch_size), int(arr.rollout.n), n_gpus
    )
    if batches_ok:  # verl's validate_config repeats the same arithmetic in its own words
        findings.check(_run_verl_validate, config)
    attention = arr.model.get("override_config", {}).get("attn_implementation", VERL_DEFAULT_ATTENTION)
    findings.check(check_attention, attention)
    findings.check(check_loggers, as_list(trainer.logger))
    model = findings.check(_convert, arr.model, "actor_rollout_ref.model") if model_dir else None
    for node, what in (
        (arr.actor, "actor_rollout_ref.actor"),
        (_ref_as_actor(config), "actor_rollout_ref.ref"),
        (arr.rollout, "actor_rollout_ref.rollout"),
        (config.algorithm, "algorithm"),
    ):
        findings.check(_convert, node, what)
    reward_kwargs = findings.check(check_reward, config)

    def rows(files: list[str] | None, is_train: bool, key: str) -> int | None:
        if model is None or not files:
            return None
        build = lambda: create_rl_dataset(files, data, model.tokenizer, model.processor, is_train=is_train)  # noqa: E731
        dataset = findings.check(_load_dataset, build, key)
        return None if dataset is None else len(dataset)

    train_rows = rows(train_files, True, "data.train_files")
    val_rows = rows(val_files, False, "data.val_files") if validating else None
    plan = _plan_run(findings, "grpo", config, train_rows, model_dir, 0, overwrite)
    findings.raise_if_any()
    validation = (
        f"every {trainer.test_freq} steps on {', '.join(val_files)} ({val_rows} rows)"
        if validating
        else f"off (trainer.test_freq={trainer.test_freq}, as the reference run); verl still builds its "
        f"validation dataset from {', '.join(val_files)} and never scores it"
    )
    return {
        "entry point": ENTRY_POINTS["grpo"],
        "model": arr.model.path,
        "attention": attention,
        "train files": f"{', '.join(train_files)} ({train_rows} rows)",
        "validation": validation,
        "GPUs": f"{trainer.n_gpus_per_node} per node x {trainer.nnodes} nodes = {n_gpus}",
        "batch": f"{data.train_batch_size} prompts x {arr.rollout.n} rollouts = "
        f"{int(data.train_batch_size) * int(arr.rollout.n)} responses per step",
        "mini-batch / micro-batch per GPU": f"{arr.actor.ppo_mini_batch_size} / {arr.actor.ppo_micro_batch_size_per_gpu}",
        "loss aggregation": describe_loss_aggregation(str(arr.actor.loss_agg_mode)),
        "actor lr": arr.actor.optim.lr,
        "KL loss": f"{arr.actor.use_kl_loss} coef {arr.actor.kl_loss_coef} type {arr.actor.kl_loss_type}",
        "rollout": f"{arr.rollout.name} temperature {arr.rollout.temperature} gpu_memory_utilization "
        f"{arr.rollout.gpu_memory_utilization} tp {arr.rollout.tensor_model_parallel_size}",
        "lengths": f"prompt {data.max_prompt_length} response {data.max_response_length}",
        "reward": f"{config.reward.custom_reward_function.path}:{config.reward.custom_reward_function.name}",
        "reward kwargs": reward_kwargs,
        "logger": list(as_list(trainer.logger)),
        **plan,
    }


def preflight_sft(config, overwrite: bool = False, export_target: str | None = None) -> dict[str, Any]:
    """Every check the SFT run would hit before its first step; returns the key resolved values."""
    from verl.trainer.sft_trainer import create_sft_dataset
    from verl.utils.device import auto_set_device

    findings = Findings()
    data, trainer = config.data, config.trainer
    if export_target:
        findings.check(check_export_target, str(trainer.default_local_dir), export_target, overwrite)
    n_gpus = int(trainer.n_gpus_per_node) * int(trainer.nnodes)
    model_dir = findings.check(check_model_dir, config.model.path, "BASE_MODEL")
    train_files = findings.check(check_files, as_list(data.train_files), "data.train_files (SFT_TRAIN_FILES)")
    val_files = as_list(data.val_files)
    if val_files:
        val_files = findings.check(check_files, val_files, "data.val_files (SFT_VAL_FILES)")
        if train_files and val_files:
            findings.check(check_held_out, train_files, val_files, "SFT_VAL_FILES")
    findings.check(check_sft_batches, int(data.train_batch_size), n_gpus)
    auto_set_device(config)
    attention = config.model.get("override_config", {}).get("attn_implementation", VERL_DEFAULT_ATTENTION)
    findings.check(check_attention, attention)
    findings.check(check_loggers, as_list(trainer.logger))
    model = findings.check(_convert, config.model, "model") if model_dir else None
    for section in ("engine", "optim", "checkpoint", "profiler"):
        findings.check(_convert, config[section], section)
    template_ok = model is not None and findings.check(check_chat_template, model.tokenizer)

    def dataset(files: list[str] | None, key: str) -> Any:
        if not template_ok or not files:  # verl's SFT dataset applies the chat template: it would fail the same way
            return None
        return findings.check(
            _load_dataset, lambda: create_sft_dataset(files, data, model.tokenizer, model.processor), key
        )

    train_dataset = dataset(train_files, "data.train_files")
    if train_dataset is not None:
        findings.check(check_sft_sample, train_dataset, model.tokenizer)
    val_dataset = dataset(val_files, "data.val_files")
    train_rows = None if train_dataset is None else len(train_dataset)
    lora_rank = int(config.model.get("lora_rank") or 0)
    plan = _plan_run(findings, "sft", config, train_rows, model_dir, lora_rank, overwrite)
    findings.raise_if_any()
    return {
        "entry point": ENTRY_POINTS["sft"],
        "model": config.model.path,
        "attention": attention,
        "LoRA": f"rank {config.model.lora_rank} alpha {config.model.lora_alpha} targets {config.model.target_modules}",
        "train files": f"{', '.join(train_files)} ({train_rows} rows)",
        "validation": f"{', '.join(val_files)} ({len(val_dataset)} rows), at the last step"
        if val_files
        else "none (SFT_VAL_FILES unset: every sample trains)",
        "GPUs": f"{trainer.n_gpus_per_node} per node x {trainer.nnodes} nodes = {n_gpus}",
        "batch / micro-batch per GPU": f"{data.train_batch_size} / {data.micro_batch_size_per_gpu}",
        "lr": config.optim.lr,
        "max length": data.max_length,
        "logger": list(as_list(trainer.logger)),
        **plan,
    }


def run_preflight(
    stage: str, overrides: Sequence[str], overwrite: bool = False, export_target: str | None = None
) -> dict[str, Any]:
    """Compose and check the configuration of one stage; raises PreflightError listing every problem found.

    `overwrite`: the launcher deletes the checkpoints already in the output folder first (OVERWRITE=1);
    `export_target`: where the SFT stage exports its merged model afterwards (SFT_MODEL).
    """
    if stage == "grpo":
        check_legacy_reward_overrides(overrides)
    config = compose_config(stage, overrides)
    if stage == "grpo":
        return preflight_grpo(config, overwrite)
    return preflight_sft(config, overwrite, export_target)


def check_overrides_only(stage: str, overrides: Sequence[str], overwrite: bool, export_target: str | None) -> None:
    """The cheap checks a run with SKIP_PREFLIGHT=1 still makes: legacy reward keys, the SFT export target."""
    findings = Findings()
    if stage == "grpo":
        findings.check(check_legacy_reward_overrides, overrides)
    checkpoints = override_value(overrides, "trainer.default_local_dir")
    if export_target and checkpoints:
        findings.check(check_export_target, checkpoints, export_target, overwrite)
    findings.raise_if_any()


def format_summary(stage: str, values: Mapping[str, Any]) -> str:
    """The resolved values as aligned `key: value` lines under one heading."""
    width = max(len(key) for key in values)
    checked = CHECKED[stage]
    lines = [f"pre-flight {stage}: configuration OK ({checked})"]
    lines += [f"  {key:<{width}}  {value}" for key, value in values.items()]
    return "\n".join(lines)


@contextlib.contextmanager
def quiet_verl(held: io.StringIO, verbose: bool) -> Iterator[None]:
    """Hold back what verl and its imports print while the checks run, so the verdict comes last.

    On a CPU login node verl warns about every missing accelerator and optional engine, and `datasets`
    draws progress bars; none of it is the verdict. Everything else lands in `held`, which the caller
    prints before the verdict (with `verbose` it streams as it comes). The root logger's handlers are
    restored afterwards.
    """
    if verbose:
        logging.basicConfig(level=logging.WARNING)
        yield
        return
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    handler = logging.StreamHandler(held)
    handler.addFilter(_not_platform_noise)
    root.handlers, root.level = [handler], logging.WARNING
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)
            with contextlib.redirect_stdout(held), contextlib.redirect_stderr(held):
                yield
    finally:
        root.handlers, root.level = saved


def _not_platform_noise(record: logging.LogRecord) -> bool:
    """Drop verl's "no accelerator detected" warnings: expected on the CPU node a dry run is made for."""
    return not (record.name.startswith("verl.plugin.platform") and record.levelno < logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the summary and exit 0, or one `pre-flight error:` line per problem and exit 2."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--stage", choices=STAGES, default="grpo")
    parser.add_argument(
        "--overrides-only",
        action="store_true",
        help="only refuse legacy reward keys (cheap; what a run with SKIP_PREFLIGHT=1 still checks)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="the launcher deletes the checkpoints already in the output folder (OVERWRITE=1)",
    )
    parser.add_argument(
        "--export_target", default=None, help="SFT: the folder the merged model is exported to afterwards (SFT_MODEL)"
    )
    parser.add_argument("--verbose", action="store_true", help="stream verl's own output instead of holding it back")
    parser.add_argument("overrides", nargs="*", help="verl Hydra overrides, as model_train.sh passes them")
    args = parser.parse_args(argv)
    held = io.StringIO()
    try:
        if args.overrides_only:
            check_overrides_only(args.stage, args.overrides, args.overwrite, args.export_target)
            return 0
        with quiet_verl(held, args.verbose):
            values = run_preflight(args.stage, args.overrides, args.overwrite, args.export_target)
    except PreflightError as error:
        sys.stderr.write(held.getvalue())
        for message in error.messages:
            print(f"pre-flight error: {message}", file=sys.stderr)  # noqa: T201
        if len(error.messages) > 1:
            print(f"pre-flight: {len(error.messages)} problems found, nothing started", file=sys.stderr)  # noqa: T201
        return 2
    sys.stderr.write(held.getvalue())
    print(format_summary(args.stage, values))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
