"""Checkpoint planning for the pre-flight: which steps a run saves, how big they are, and what is already there.

verl 0.9.1 saves a checkpoint every `save_freq` steps and at the last step (trainer/ppo/v1/trainer_base.py;
the SFT trainer also saves its last step when `save_freq` is off), each one a full FSDP state: the weights in
float32 (engine `model_dtype: fp32`) plus Adam's two float32 moments for every trainable parameter. A 7B GRPO
checkpoint is therefore ~81 GB, and the reference's every-10-steps schedule fills a terabyte. The pre-flight
prints the plan and refuses a run whose checkpoints cannot fit on the disk it writes to.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TRACKER_FILE = "latest_checkpointed_iteration.txt"  # written by verl's checkpoint managers
STEP_DIR = re.compile(r"global_step_(\d+)")
WEIGHT_BYTES = 4  # verl's FSDP engine keeps (and saves) the training weights in float32
ADAM_BYTES = 8  # exp_avg + exp_avg_sq, float32, per trainable parameter
# Below this many steps the plan lists every checkpoint step; above it, the first and last few.
LISTED_STEPS = 8


@dataclass(frozen=True)
class CheckpointPlan:
    """The steps a run saves and what they cost on disk (`kept` = how many exist at once)."""

    folder: Path
    steps: tuple[int, ...]
    kept: int
    bytes_each: int
    free_bytes: int | None

    @property
    def bytes_needed(self) -> int:
        """Disk the kept checkpoints take at once (verl deletes old ones before writing a new one)."""
        return self.kept * self.bytes_each


def save_steps(total_steps: int, save_freq: int, save_last: bool) -> tuple[int, ...]:
    """The steps verl writes a checkpoint at: multiples of save_freq, plus the last step.

    GRPO (V1 trainer) saves nothing when save_freq <= 0; the SFT trainer still saves its last step
    (`save_last`).
    """
    if total_steps <= 0:
        return ()
    steps = set(range(save_freq, total_steps + 1, save_freq)) if save_freq > 0 else set()
    if save_freq > 0 or save_last:
        steps.add(total_steps)
    return tuple(sorted(steps))


def kept_checkpoints(count: int, max_to_keep: int | None) -> int:
    """How many checkpoints sit on disk at once with verl's keep-last setting (None or <= 0 keeps all)."""
    return count if not max_to_keep or max_to_keep <= 0 else min(count, max_to_keep)


def checkpoint_steps(folder: str | Path) -> list[int]:
    """The global_step_N folders already in a checkpoint folder, sorted (empty when there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if p.is_dir() and (m := STEP_DIR.fullmatch(p.name)))


def format_steps(steps: Sequence[int]) -> str:
    """`10, 20, 30` or, for long plans, `10, 20, 30, ..., 80, 90, 92`."""
    if len(steps) <= LISTED_STEPS:
        return ", ".join(str(step) for step in steps)
    return ", ".join([*(str(s) for s in steps[:3]), "...", *(str(s) for s in steps[-3:])])


def format_bytes(count: float) -> str:
    """Decimal units, as disks are sold and `df -H` prints them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def free_bytes(folder: str | Path) -> int:
    """Free space on the disk that `folder` (or its nearest existing parent) lives on."""
    path = Path(folder).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def model_parameters(model_dir: str | Path, lora_rank: int = 0) -> tuple[int, int]:
    """(all parameters, trainable parameters) of a Hugging Face model folder, without loading its weights.

    The model is built on PyTorch's meta device from config.json. With LoRA (`lora_rank` > 0, verl's
    `all-linear` targets: every nn.Linear except the output layer) only the adapters train, each adding
    rank x (in + out) parameters.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    if lora_rank <= 0:
        return total, total
    output = model.get_output_embeddings()
    lora = sum(
        lora_rank * (m.in_features + m.out_features)
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not output
    )
    return total + lora, lora


def checkpoint_bytes(parameters: int, trainable: int) -> int:
    """Bytes of one FSDP checkpoint: float32 weights for every parameter, Adam moments for the trainable ones."""
    return WEIGHT_BYTES * parameters + ADAM_BYTES * trainable
