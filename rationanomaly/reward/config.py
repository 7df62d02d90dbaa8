"""Reward options as they arrive from verl's `reward_kwargs` (Hydra strings), parsed once and checked early."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.paths import REPO_ROOT
from rationanomaly.reward.components import ANSWER_SCHEMES, BLEU_TOKENS

DEFAULT_PPL_MODEL = "models/distilgpt2"  # reference: DistilGPT-2, here in the git-ignored models/ folder
# huggingface_hub >= 1.0 (what transformers 5 installs) replaced `huggingface-cli` with `hf`
FETCH_COMMAND = "hf download distilbert/distilgpt2 --local-dir models/distilgpt2"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16")
DEFAULT_BATCH_SIZE = 8  # ours: texts per pass; packed on 2 CPU cores, 8 to 32 ran within 4% of each other
DISABLED = ("none", "null", "off", "")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


class RewardConfigError(ValueError):
    """A reward option is unknown or has a bad value, or the perplexity model folder is incomplete."""


@dataclass(frozen=True)
class RewardConfig:
    """Parsed reward options; the defaults reproduce the reference implementation."""

    ppl_model: Path | None = Path(DEFAULT_PPL_MODEL)
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    answer_scheme: str = "reference"
    think_reward: bool = True
    bleu_tokens: str = "chars"


OPTIONS = tuple(RewardConfig.__dataclass_fields__)


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """A string option, case-insensitive, that must be one of `choices`."""
    text = str(value).strip().lower()
    if name == "device" and text.startswith("cuda:") and text[5:].isdigit():
        return text
    if text not in choices:
        raise RewardConfigError(f"reward option {name}={value!r} is not one of: {', '.join(choices)}")
    return text


def _boolean(name: str, value: object) -> bool:
    """Hydra passes `false`, `False`, False or 0: accept all of them, nothing else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RewardConfigError(f"reward option {name}={value!r} is not a boolean (true/false)")


def _positive_int(name: str, value: object) -> int:
    """An integer >= 1; strings like '16' are accepted because Hydra may pass them."""
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise RewardConfigError(f"reward option {name}={value!r} is not a positive integer")
    return number


def resolve_model_path(value: object, cwd: Path | None = None) -> Path | None:
    """None when disabled (`none`); an absolute path as given; a relative one from the launch cwd if it
    exists there, else from the repository root (training launches from the root, tests from anywhere)."""
    if value is None or str(value).strip().lower() in DISABLED:
        return None
    path = Path(os.path.expanduser(str(value).strip()))
    if path.is_absolute():
        return path
    here = (cwd or Path.cwd()) / path
    return here if here.exists() else REPO_ROOT / path


def parse_reward_kwargs(reward_kwargs: Mapping[str, object] | None) -> RewardConfig:
    """Turn verl's reward_kwargs into a RewardConfig; unknown names and bad values raise RewardConfigError."""
    kwargs = dict(reward_kwargs or {})
    unknown = sorted(set(kwargs) - set(OPTIONS))
    if unknown:
        raise RewardConfigError(f"unknown reward option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    default = RewardConfig()
    return RewardConfig(
        ppl_model=resolve_model_path(kwargs["ppl_model"]) if "ppl_model" in kwargs else default.ppl_model,
        device=_choice("device", kwargs.get("device", default.device), DEVICES),
        dtype=_choice("dtype", kwargs.get("dtype", default.dtype), DTYPES),
        batch_size=_positive_int("batch_size", kwargs.get("batch_size", default.batch_size)),
        answer_scheme=_choice("answer_scheme", kwargs.get("answer_scheme", default.answer_scheme), ANSWER_SCHEMES),
        think_reward=_boolean("think_reward", kwargs.get("think_reward", default.think_reward)),
        bleu_tokens=_choice("bleu_tokens", kwargs.get("bleu_tokens", default.bleu_tokens), BLEU_TOKENS),
    )


def missing_model_files(folder: Path) -> list[str]:
    """What a loadable perplexity model folder lacks: config.json, a tokenizer, weights (no loading)."""
    if not folder.is_dir():
        return ["the folder itself"]
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any(all((folder / name).is_file() for name in group) for group in TOKENIZER_FILES):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(f"weights ({' or '.join(WEIGHT_FILES[:2])})")
    return missing


def check_model_folder(folder: Path) -> None:
    """Raise RewardConfigError naming the folder, what is missing and how to fetch DistilGPT-2."""
    missing = missing_model_files(folder)
    if missing:
        raise RewardConfigError(
            f"perplexity model {folder} is missing {', '.join(missing)}: fetch DistilGPT-2 with "
            f"`{FETCH_COMMAND}`, or pass ppl_model=<folder>, or ppl_model=none to turn the term off"
        )


def check_reward_config(reward_kwargs: Mapping[str, object] | None) -> None:
    """Pre-flight for the training launcher: options valid and the perplexity model folder complete.

    Fast on purpose (no weights are loaded, no CUDA check): the dry run happens on a CPU login node.
    """
    config = parse_reward_kwargs(reward_kwargs)
    if config.ppl_model is not None and config.think_reward:
        check_model_folder(config.ppl_model)
