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
import copy
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
LOGGER_PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard", "mlflow": "mlflow", "swanlab": "swanlab",
                   "clearml": "clearml", "trackio": "trackio", "file": "orjson"}

# What a passing pre-flight has proven, per stage (printed with the summary).
CHECKED = {
    "grpo": "verl composition, validate_config, worker dataclasses, datasets, reward file and options",
    "sft": "verl composition, engine dataclasses, chat template applies turn by turn, datasets, every message kept",
}

# verl loads the training model with this unless override_config.attn_implementation says otherwise.
VERL_DEFAULT_ATTENTION = "flash_attention_2"


class PreflightError(ValueError):
    """A configuration that would fail (or silently misbehave) on the GPU node; the message names the fix."""


def override_key(override: str) -> str:
    """The dotted key of a Hydra override (`+a.b=1` -> `a.b`, `~a.b` -> `a.b`)."""
    return override.split("=", 1)[0].lstrip("+~")


def check_legacy_reward_overrides(overrides: Iterable[str]) -> None:
    """Refuse top-level reward keys that compose in verl 0.9.1 but are ignored by main_ppo (notes §2)."""
    for override in overrides:
        key = override_key(override)
        top = key.split(".", 1)[0]
        if top in LEGACY_REWARD_KEYS:
            new_key = LEGACY_REWARD_KEYS[top] + key[len(top):]
            raise PreflightError(f"override {override!r} uses the legacy key {top}.*, which verl 0.9.1 main_ppo "
                                 f"silently ignores; write {new_key} instead")


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
        raise PreflightError(f"verl rejects the overrides: {_one_line(error)} (check the key against "
                             f"`python -m {ENTRY_POINTS[stage]} --cfg job`; new keys need a leading +)") from error
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
            raise PreflightError(f"{key}: {name} does not exist; build it with python datasets/parquet_builder.py "
                                 f"or point the knob at an existing parquet")
    return files


MODEL_FIXES = {
    "BASE_MODEL": "download the model there or set BASE_MODEL=<folder>",
    "GRPO_MODEL": "run STAGE=sft bash model_train.sh to create it (GRPO starts from the SFT model), "
                  "or set GRPO_MODEL=<folder>",
}


def check_model_dir(path: str, knob: str) -> None:
    """A local Hugging Face folder with config.json: no hub download happens on a training node."""
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        raise PreflightError(f"model folder {path} does not exist; {MODEL_FIXES[knob]}")
    if not (folder / "config.json").is_file():
        raise PreflightError(f"model folder {path} has no config.json; point {knob} at a Hugging Face model folder")


def check_attention(attention: str) -> None:
    """flash_attention_2 (verl's default) needs flash-attn, which verl[vllm] does not install (notes §0)."""
    if attention == VERL_DEFAULT_ATTENTION and importlib.util.find_spec("flash_attn") is None:
        raise PreflightError("attention flash_attention_2 needs flash-attn, which is not installed: "
                             "pip install flash-attn==2.8.3, or set ATTN_IMPL=sdpa")


def check_loggers(loggers: Iterable[str]) -> None:
    """Each trainer.logger backend must be importable; verl would fail at the first metric otherwise."""
    for name in loggers:
        package = LOGGER_PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise PreflightError(f"trainer.logger includes {name} but {package} is not installed: "
                                 f"pip install {package}, or drop it from trainer.logger")


def check_grpo_batches(train_batch_size: int, mini_batch_size: int, rollouts: int, n_gpus: int) -> None:
    """Batch arithmetic verl checks late (validate_config) or only inside GPU workers (notes §1)."""
    if mini_batch_size > train_batch_size:
        raise PreflightError(f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini_batch_size}) is larger than "
                             f"data.train_batch_size ({train_batch_size}): lower the mini-batch or raise the batch")
    if (train_batch_size * rollouts) % n_gpus:
        raise PreflightError(f"data.train_batch_size x rollout.n = {train_batch_size} x {rollouts} responses do not "
                             f"divide over {n_gpus} GPUs: choose a GPU count (N_GPUS_PER_NODE x NNODES) "
                             f"that divides it")
    if (mini_batch_size * rollouts) % n_gpus:
        raise PreflightError(f"ppo_mini_batch_size x rollout.n = {mini_batch_size} x {rollouts} does not divide over "
                             f"{n_gpus} GPUs: choose a GPU count or mini-batch so that it does")


def check_sft_batches(train_batch_size: int, n_gpus: int) -> None:
    """verl's SFT trainer gives each data-parallel rank train_batch_size // n_gpus samples."""
    if train_batch_size % n_gpus:
        raise PreflightError(f"data.train_batch_size ({train_batch_size}) does not divide over {n_gpus} GPUs: "
                             f"choose a GPU count (N_GPUS_PER_NODE x NNODES) that divides it")


def check_enough_rows(rows: int, batch_size: int, key: str) -> int:
    """Steps per epoch = rows // batch (verl drops the last partial batch); zero steps trains nothing."""
    steps = rows // batch_size
    if steps == 0:
        raise PreflightError(f"{key} holds {rows} rows, fewer than data.train_batch_size ({batch_size}): "
                             f"lower the batch or build a larger training set")
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
        raise PreflightError("reward.custom_reward_function.path is not set, so verl would use its default scorer, "
                             "which does not know data_source RationAnomaly; set it to "
                             "verl/utils/reward_score/RationAnomaly/__init__.py")
    if not path.startswith("pkg://") and not Path(path).is_file():
        raise PreflightError(f"reward file {path} does not exist; set reward.custom_reward_function.path to "
                             f"verl/utils/reward_score/RationAnomaly/__init__.py")
    try:
        get_custom_reward_fn(config)
    except Exception as error:
        raise PreflightError(f"reward function {reward_fn.get('name')} in {path} does not load: {_one_line(error)} "
                             f"(run pip install -e . in the training environment)") from error
    kwargs = OmegaConf.to_container(reward_fn.get("reward_kwargs") or {}, resolve=True)
    check_reward_options(kwargs)
    return kwargs


def check_reward_options(reward_kwargs: Mapping[str, Any]) -> None:
    """Our reward's own option check (a missing perplexity model, an unknown answer scheme, ...)."""
    try:
        from rationanomaly.reward import check_reward_config
    except ImportError as error:
        raise PreflightError(f"rationanomaly.reward.check_reward_config is not importable ({error}); "
                             f"run pip install -e . in the training environment") from error
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
        raise PreflightError(f"verl cannot read {key}: {_one_line(error)} (rebuild it with "
                             f"python datasets/parquet_builder.py)") from error
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
        raise PreflightError(f"verl's SFT dataset drops the {', '.join(missing)} message(s) of each sample with this "
                             f"chat template (it templates messages one by one); put the system prompt inside the user "
                             f"turn when building datasets/sft_*.parquet")


def check_chat_template(tokenizer) -> None:
    """verl's SFT dataset templates [user] and [user, user] to find each turn's prefix (notes §4).

    Llama-2-chat's own template refuses two user turns in a row, so verl cannot even build the dataset.
    """
    from verl.utils.tokenizer.chat_template import extract_system_prompt_and_generation

    try:
        extract_system_prompt_and_generation(tokenizer)
    except Exception as error:
        raise PreflightError(f"the chat template of model.path cannot be applied turn by turn as verl's SFT dataset "
                             f"does ({_one_line(error)}): set SFT_CHAT_TEMPLATE=rationanomaly/train/"
                             f"llama2_chat_template.jinja (the launcher's default) or another template without "
                             f"that check") from error


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


def preflight_grpo(config) -> dict[str, Any]:
    """Every check the GRPO run would hit before its first rollout; returns the key resolved values."""
    from verl.trainer.ppo.utils import create_rl_dataset

    arr = config.actor_rollout_ref
    data = config.data
    n_gpus = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    check_model_dir(arr.model.path, "GRPO_MODEL")
    train_files = check_files(as_list(data.train_files), "data.train_files (TRAIN_FILES)")
    val_files = check_files(as_list(data.val_files), "data.val_files (VAL_FILES)")
    check_grpo_batches(int(data.train_batch_size), int(arr.actor.ppo_mini_batch_size), int(arr.rollout.n), n_gpus)
    _run_verl_validate(config)
    attention = arr.model.get("override_config", {}).get("attn_implementation", VERL_DEFAULT_ATTENTION)
    check_attention(attention)
    check_loggers(as_list(config.trainer.logger))
    model = _convert(arr.model, "actor_rollout_ref.model")
    _convert(arr.actor, "actor_rollout_ref.actor")
    _convert(_ref_as_actor(config), "actor_rollout_ref.ref")
    _convert(arr.rollout, "actor_rollout_ref.rollout")
    _convert(config.algorithm, "algorithm")
    reward_kwargs = check_reward(config)

    def rl_dataset(files: list[str], is_train: bool) -> Any:
        return create_rl_dataset(files, data, model.tokenizer, model.processor, is_train=is_train)

    train_rows = len(_load_dataset(lambda: rl_dataset(train_files, True), "data.train_files"))
    val_rows = len(_load_dataset(lambda: rl_dataset(val_files, False), "data.val_files"))
    steps = check_enough_rows(train_rows, int(data.train_batch_size), "data.train_files")
    epochs = int(config.trainer.total_epochs)
    total = config.trainer.total_training_steps or steps * epochs
    return {
        "entry point": ENTRY_POINTS["grpo"],
        "model": arr.model.path,
        "attention": attention,
        "train files": f"{', '.join(train_files)} ({train_rows} rows)",
        "val files": f"{', '.join(val_files)} ({val_rows} rows)",
        "GPUs": f"{config.trainer.n_gpus_per_node} per node x {config.trainer.nnodes} nodes = {n_gpus}",
        "batch": f"{data.train_batch_size} prompts x {arr.rollout.n} rollouts = "
                 f"{int(data.train_batch_size) * int(arr.rollout.n)} responses per step",
        "mini-batch / micro-batch per GPU":
            f"{arr.actor.ppo_mini_batch_size} / {arr.actor.ppo_micro_batch_size_per_gpu}",
        "steps": f"{steps} per epoch x {epochs} epochs = {total}",
        "actor lr": arr.actor.optim.lr,
        "KL loss": f"{arr.actor.use_kl_loss} coef {arr.actor.kl_loss_coef} type {arr.actor.kl_loss_type}",
        "rollout": f"{arr.rollout.name} temperature {arr.rollout.temperature} gpu_memory_utilization "
                   f"{arr.rollout.gpu_memory_utilization} tp {arr.rollout.tensor_model_parallel_size}",
        "lengths": f"prompt {data.max_prompt_length} response {data.max_response_length}",
        "reward": f"{config.reward.custom_reward_function.path}:{config.reward.custom_reward_function.name}",
        "reward kwargs": reward_kwargs,
        "logger": list(as_list(config.trainer.logger)),
        "checkpoints": f"{config.trainer.default_local_dir} every {config.trainer.save_freq} steps",
    }


def preflight_sft(config) -> dict[str, Any]:
    """Every check the SFT run would hit before its first step; returns the key resolved values."""
    from verl.trainer.sft_trainer import create_sft_dataset

    data = config.data
    n_gpus = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    check_model_dir(config.model.path, "BASE_MODEL")
    train_files = check_files(as_list(data.train_files), "data.train_files (SFT_TRAIN_FILES)")
    val_files = as_list(data.val_files)
    if val_files:
        check_files(val_files, "data.val_files (SFT_VAL_FILES)")
    check_sft_batches(int(data.train_batch_size), n_gpus)
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    attention = config.model.get("override_config", {}).get("attn_implementation", VERL_DEFAULT_ATTENTION)
    check_attention(attention)
    check_loggers(as_list(config.trainer.logger))
    model = _convert(config.model, "model")
    for section in ("engine", "optim", "checkpoint", "profiler"):
        _convert(config[section], section)
    check_chat_template(model.tokenizer)

    def sft_dataset(files: list[str]) -> Any:
        return create_sft_dataset(files, data, model.tokenizer, model.processor)

    train_dataset = _load_dataset(lambda: sft_dataset(train_files), "data.train_files")
    check_sft_sample(train_dataset, model.tokenizer)
    train_rows = len(train_dataset)
    val_rows = len(_load_dataset(lambda: sft_dataset(val_files), "data.val_files")) if val_files else 0
    steps = check_enough_rows(train_rows, int(data.train_batch_size), "data.train_files")
    epochs = int(config.trainer.total_epochs)
    return {
        "entry point": ENTRY_POINTS["sft"],
        "model": config.model.path,
        "attention": attention,
        "LoRA": f"rank {config.model.lora_rank} alpha {config.model.lora_alpha} targets {config.model.target_modules}",
        "train files": f"{', '.join(train_files)} ({train_rows} rows)",
        "val files": f"{', '.join(val_files)} ({val_rows} rows)" if val_files else "none",
        "GPUs": f"{config.trainer.n_gpus_per_node} per node x {config.trainer.nnodes} nodes = {n_gpus}",
        "batch / micro-batch per GPU": f"{data.train_batch_size} / {data.micro_batch_size_per_gpu}",
        "steps": f"{steps} per epoch x {epochs} epochs = {config.trainer.total_training_steps or steps * epochs}",
        "lr": config.optim.lr,
        "max length": data.max_length,
        "logger": list(as_list(config.trainer.logger)),
        "checkpoints": f"{config.trainer.default_local_dir} save_freq {config.trainer.save_freq}",
    }


def run_preflight(stage: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Compose and check the configuration of one stage; raises PreflightError on the first problem."""
    if stage == "grpo":
        check_legacy_reward_overrides(overrides)
    config = compose_config(stage, overrides)
    return preflight_grpo(config) if stage == "grpo" else preflight_sft(config)


def format_summary(stage: str, values: Mapping[str, Any]) -> str:
    """The resolved values as aligned `key: value` lines under one heading."""
    width = max(len(key) for key in values)
    checked = CHECKED[stage]
    lines = [f"pre-flight {stage}: configuration OK ({checked})"]
    lines += [f"  {key:<{width}}  {value}" for key, value in values.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the summary and exit 0, or print one `pre-flight error:` line and exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, default="grpo")
    parser.add_argument("--overrides-only", action="store_true",
                        help="only refuse legacy reward keys (cheap; what a run with SKIP_PREFLIGHT=1 still checks)")
    parser.add_argument("overrides", nargs="*", help="verl Hydra overrides, as model_train.sh passes them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        if args.overrides_only:
            check_legacy_reward_overrides(args.overrides)
            return 0
        values = run_preflight(args.stage, args.overrides)
    except PreflightError as error:
        print(f"pre-flight error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    print(format_summary(args.stage, values))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
