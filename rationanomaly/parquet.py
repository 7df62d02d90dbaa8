"""Parquet for verl 0.9.1: RL rows for GRPO (RLHFDataset) and `messages` rows for CoT-SFT.

Both are built from the same reference-layout training samples (label = CoT target) and the same
seeded train/validation split, so the SFT and GRPO stages see the same held-out templates. By default
nothing is held out (`validation_ratio` 0): the reference run never validates (`test_freq=-1`), so a
held-out split would only take training steps away; hold some out when validation is turned on.

RL row (verl's schema, notes/verl-0.9.1.md §3):
`{"data_source", "prompt": [system, user], "ability", "reward_model": {"style": "rule", "ground_truth"},
"extra_info": {"index", "split", "template", "label", "instruction"}}`.
SFT row (notes §4): `{"messages": [system, user, assistant], "extra_info"}`.

verl's SFT dataset templates each message on its own and checks that the concatenation equals the
whole conversation. A Llama-2 chat template folds the system prompt into the first `[INST]` block,
so a separate system turn renders as nothing: the check fails, and with `ignore_input_ids_mismatch`
the system prompt silently vanishes from training. SFT rows therefore fold the system prompt into the
user turn by default, exactly as the Llama-2 template would (`SFT_SYSTEM_LLAMA2`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import atomic_path
from rationanomaly.labels import ABILITY, ABNORMAL, DATA_SOURCE, LabelError, normalize_label
from rationanomaly.prompts import chat_messages
from rationanomaly.response import extract_answer, extract_think, tags_in_order
from rationanomaly.samples import Sample

logger = logging.getLogger(__name__)

TRAIN, VALIDATION = "train", "validation"
# How SFT rows carry the system prompt: folded into the user turn in Llama-2's own `<<SYS>>` block
# (token-identical to what the Llama-2 chat template renders for a system + user pair), as a separate
# system turn (for ChatML-style templates that render each turn on its own), or not at all.
SFT_SYSTEM_LLAMA2, SFT_SYSTEM_TURN, SFT_SYSTEM_NONE = "llama2", "turn", "none"
SFT_SYSTEM_MODES = (SFT_SYSTEM_LLAMA2, SFT_SYSTEM_TURN, SFT_SYSTEM_NONE)


class ParquetDataError(ValueError):
    """A training sample whose label is not a CoT target that the reward can read."""


@dataclass(frozen=True)
class Split:
    """A seeded train/validation split of the training samples (original indices kept)."""

    train: list[tuple[int, Sample]]
    validation: list[tuple[int, Sample]]
    seed: int
    validation_ratio: float


def check_ground_truth(sample: Sample, where: str) -> str:
    """Return the word label of a well-formed CoT target; raise naming the sample otherwise.

    The reward parses the ground truth with the same rules as a response; a bare label (the
    reference builder's bug) or a malformed target would crash or mis-score every rollout of it.
    """
    label = sample.label
    if not tags_in_order(label) or not extract_think(label):
        raise ParquetDataError(
            f"{where}: label {label[:80]!r} of template {sample.input[:80]!r} is not a CoT target "
            "<think>..</think><answer>normal|abnormal</answer> with a non-empty think; "
            "build training samples with datasets/cot_distill.py (which joins and checks rationales)"
        )
    try:
        return normalize_label(extract_answer(label) or "")
    except LabelError as error:
        raise ParquetDataError(
            f"{where}: the answer of template {sample.input[:80]!r} is not a label ({error})"
        ) from error


def split_samples(samples: Sequence[Sample], validation_ratio: float, seed: int) -> Split:
    """Hold out `validation_ratio` of each label (stratified, seeded) so validation keeps the anomaly rate.

    Each split keeps the input order. At least one row of a label goes to validation when the ratio is
    positive and the label has two or more rows, so a small set still validates on both classes.
    """
    if not 0 <= validation_ratio < 1:
        raise ValueError(f"validation ratio {validation_ratio} must be in [0, 1)")
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        by_label.setdefault(check_ground_truth(sample, f"sample {index}"), []).append(index)
    held_out: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        count = round(validation_ratio * len(indices))
        if validation_ratio > 0 and count == 0 and len(indices) >= 2:
            count = 1
        held_out.update(rng.sample(indices, count))
    train = [(i, s) for i, s in enumerate(samples) if i not in held_out]
    validation = [(i, s) for i, s in enumerate(samples) if i in held_out]
    return Split(train, validation, seed, validation_ratio)


def _extra_info(index: int, split: str, sample: Sample, label: str) -> dict:
    """Row metadata; verl turns `index` into the dataset index and passes the dict to the reward."""
    return {"index": index, "split": split, "template": sample.input, "label": label, "instruction": sample.instruction}


def rl_row(index: int, split: str, sample: Sample, system_prompt: str | None) -> dict:
    """One verl RL row; the ground truth is the full CoT target (the reward compares think texts too)."""
    label = check_ground_truth(sample, f"sample {index}")
    return {
        "data_source": DATA_SOURCE,
        "prompt": chat_messages(sample.input, system_prompt, sample.instruction),
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": sample.label},
        "extra_info": _extra_info(index, split, sample, label),
    }


def llama2_system_block(system_prompt: str) -> str:
    """The text Llama-2's chat template puts before the first user message when there is a system turn."""
    return f"<<SYS>>\n{system_prompt}\n<</SYS>>\n\n"


def sft_messages(sample: Sample, system_prompt: str | None, system_mode: str = SFT_SYSTEM_LLAMA2) -> list[dict]:
    """System (per `system_mode`), user and assistant turns; the assistant says the CoT target."""
    if system_mode not in SFT_SYSTEM_MODES:
        raise ValueError(f"unknown SFT system mode {system_mode!r}; choose one of {SFT_SYSTEM_MODES}")
    messages = chat_messages(
        sample.input, system_prompt if system_mode == SFT_SYSTEM_TURN else None, sample.instruction
    )
    if system_mode == SFT_SYSTEM_LLAMA2 and system_prompt is not None:
        messages[-1]["content"] = llama2_system_block(system_prompt) + messages[-1]["content"]
    return [*messages, {"role": "assistant", "content": sample.label}]


def sft_row(
    index: int, split: str, sample: Sample, system_prompt: str | None, system_mode: str = SFT_SYSTEM_LLAMA2
) -> dict:
    """One row for verl's multi-turn SFT dataset (`messages` column)."""
    label = check_ground_truth(sample, f"sample {index}")
    return {
        "messages": sft_messages(sample, system_prompt, system_mode),
        "extra_info": _extra_info(index, split, sample, label),
    }


def write_parquet(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write rows atomically as parquet (nested dicts and lists become structs and lists)."""
    import pandas as pd

    if not rows:
        raise ParquetDataError(f"no rows to write to {path}; check the input samples and the validation ratio")
    with atomic_path(path) as tmp:
        pd.DataFrame(list(rows)).to_parquet(tmp, index=False)
    return Path(path)


def build_parquet(
    samples: Sequence[Sample],
    outputs: dict[str, str | Path],
    system_prompt: str | None,
    validation_ratio: float = 0.0,
    seed: int = 0,
    sft_system: str = SFT_SYSTEM_LLAMA2,
) -> dict:
    """Check every sample, split them, and write the RL and SFT train/validation files.

    `outputs` maps any of `rl_train`, `rl_validation`, `sft_train`, `sft_validation` to a path (a missing
    key is not written; with `validation_ratio` 0 the validation keys are skipped, as there is nothing to
    hold out). Every sample is checked before anything is written, so a bad one leaves no partial output.
    Returns the metadata (counts, seed, ratio, written files) for the report.
    """
    split = split_samples(samples, validation_ratio, seed)  # checks every sample before anything is written
    parts = {TRAIN: split.train, VALIDATION: split.validation}
    builders = {
        "rl_train": (TRAIN, lambda i, s, name: rl_row(i, name, s, system_prompt)),
        "rl_validation": (VALIDATION, lambda i, s, name: rl_row(i, name, s, system_prompt)),
        "sft_train": (TRAIN, lambda i, s, name: sft_row(i, name, s, system_prompt, sft_system)),
        "sft_validation": (VALIDATION, lambda i, s, name: sft_row(i, name, s, system_prompt, sft_system)),
    }
    unknown = sorted(set(outputs) - set(builders))
    if unknown:
        raise ValueError(f"unknown parquet outputs {unknown}; use {sorted(builders)}")
    if validation_ratio == 0:
        outputs = {key: path for key, path in outputs.items() if builders[key][0] == TRAIN}
    tables = {key: [builders[key][1](i, s, builders[key][0]) for i, s in parts[builders[key][0]]] for key in outputs}
    empty = sorted(key for key, rows in tables.items() if not rows)
    if empty:
        raise ParquetDataError(
            f"no rows to write to {empty} ({len(samples)} samples, validation ratio "
            f"{validation_ratio}); give more samples or another ratio"
        )
    for key, path in outputs.items():
        write_parquet(path, tables[key])
        logger.info("wrote %d rows to %s", len(tables[key]), path)
    return {
        "samples": len(samples),
        "train": len(split.train),
        "validation": len(split.validation),
        "train_abnormal": sum(check_ground_truth(s, f"sample {i}") == ABNORMAL for i, s in split.train),
        "validation_abnormal": sum(check_ground_truth(s, f"sample {i}") == ABNORMAL for i, s in split.validation),
        "seed": seed,
        "validation_ratio": validation_ratio,
        "sft_system": sft_system,
        "system_prompt": system_prompt,
        "outputs": {key: str(path) for key, path in outputs.items()},
    }
