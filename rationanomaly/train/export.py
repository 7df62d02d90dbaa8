"""Checkpoint export helpers for model_export.sh: check the target, find the checkpoint, merge a LoRA adapter.

    python -m rationanomaly.train.export check-target --checkpoints targets/RationAnomaly --target models/RationAnomaly
    python -m rationanomaly.train.export locate --checkpoints targets/RationAnomaly
    python -m rationanomaly.train.export merge-lora --model models/RationAnomaly-SFT

verl's own merger (`python -m verl.model_merger merge --backend fsdp`) turns FSDP shards into a Hugging
Face folder. For a LoRA checkpoint it writes the *base* weights plus the adapter in `lora_adapter/`
(notes/verl-0.9.1.md §5); `merge-lora` folds that adapter into the weights with PEFT so GRPO, vLLM and
evaluation load one plain model. Every exported folder gets a marker file (`mark`); OVERWRITE=1 replaces
only folders that carry it, so an export never deletes anything it did not write.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path

from rationanomaly.io import write_json_atomic
from rationanomaly.train.checkpoints import TRACKER_FILE, checkpoint_steps

EXPORT_MARKER = "rationanomaly_export.json"  # written into every folder model_export.sh produces
ADAPTER_DIR = "lora_adapter"  # where verl's merger puts a LoRA adapter
MERGED_ADAPTER_DIR = "lora_adapter_merged"  # kept for reference; renamed so a second merge-lora is a no-op
FSDP_CONFIG = "fsdp_config.json"


class ExportError(ValueError):
    """A checkpoint folder that cannot be exported; the message names the fix."""


def latest_step(checkpoints: Path) -> int:
    """The step verl recorded as latest, else the highest global_step_N folder."""
    tracker = checkpoints / TRACKER_FILE
    if tracker.is_file():
        text = tracker.read_text(encoding="utf-8").strip()
        if text.isdigit():
            return int(text)
        raise ExportError(f"{tracker} holds {text!r}, not a step number; pass STEP=N instead")
    steps = checkpoint_steps(checkpoints)
    if not steps:
        raise ExportError(
            f"no checkpoint under {checkpoints} (no {TRACKER_FILE}, no global_step_N folder): "
            f"train first (bash model_train.sh) or set CHECKPOINTS=<trainer.default_local_dir>"
        )
    return max(steps)


def checkpoint_dir(checkpoints: str | Path, step: int | None = None) -> Path:
    """The folder verl's merger reads: `global_step_N/actor` (GRPO) or `global_step_N` itself (SFT)."""
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        raise ExportError(
            f"checkpoint folder {checkpoints} does not exist; set CHECKPOINTS=<trainer.default_local_dir>"
        )
    step = latest_step(checkpoints) if step is None else step
    step_dir = checkpoints / f"global_step_{step}"
    for candidate in (step_dir / "actor", step_dir):
        if (candidate / FSDP_CONFIG).is_file():
            return candidate
    raise ExportError(
        f"{step_dir} holds no FSDP checkpoint ({FSDP_CONFIG} missing in it and in actor/); "
        f"pick another step with STEP=N"
    )


def check_target(checkpoints: str | Path, target: str | Path, overwrite: bool) -> str:
    """Refuse an export target that would destroy something; returns `new`, `empty` or `replace`.

    The target may not be, lie inside, or contain the checkpoint folder (replacing it would delete the
    checkpoints), and an existing non-empty folder is replaced only when an earlier export wrote it
    (it holds EXPORT_MARKER) and OVERWRITE=1 asks for it.
    """
    source, path = Path(checkpoints).resolve(), Path(target)
    resolved = path.resolve()
    if resolved == source or source in resolved.parents:
        raise ExportError(
            f"TARGET_DIR={target} is inside the checkpoint folder {checkpoints}; "
            f"choose a folder outside it, e.g. TARGET_DIR=models/<name>"
        )
    if resolved in source.parents:
        raise ExportError(
            f"TARGET_DIR={target} contains the checkpoint folder {checkpoints}, which replacing it would "
            f"delete; choose a folder beside it, e.g. TARGET_DIR=models/<name>"
        )
    if not path.exists() and not path.is_symlink():
        return "new"
    if not path.is_dir():
        raise ExportError(f"TARGET_DIR={target} exists and is not a folder; remove it or choose another TARGET_DIR")
    if not any(path.iterdir()):
        return "empty"
    if not (path / EXPORT_MARKER).is_file():
        raise ExportError(
            f"TARGET_DIR={target} holds files that model_export.sh did not write (no {EXPORT_MARKER}), "
            f"which even OVERWRITE=1 keeps; move them away or choose another TARGET_DIR"
        )
    if not overwrite:
        raise ExportError(
            f"TARGET_DIR={target} already holds an export; set OVERWRITE=1 to replace it, "
            f"or choose TARGET_DIR=<new folder>"
        )
    return "replace"


def write_marker(model_dir: str | Path, checkpoint: str | Path) -> Path:
    """Record in an exported folder which checkpoint it came from (and that this project wrote it)."""
    record = {
        "written_by": "model_export.sh",
        "checkpoint": str(checkpoint),
        "exported_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return write_json_atomic(Path(model_dir) / EXPORT_MARKER, record)


def merge_lora_adapter(model_dir: str | Path) -> bool:
    """Fold `model_dir/lora_adapter` into the weights of `model_dir` in place; False when there is no adapter.

    The merge runs in float32 and the result is saved in the folder's own dtype (bf16 from verl's
    merger). The new folder is written beside the old one and swapped in, so a crash never leaves a
    half-merged model.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    adapter = model_dir / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        return False
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    saved_dtype = base.config.dtype or torch.bfloat16
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    staging = model_dir.with_name(f".{model_dir.name}.merging")
    shutil.rmtree(staging, ignore_errors=True)
    merged.to(saved_dtype).save_pretrained(str(staging))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(staging))
    shutil.copytree(adapter, staging / MERGED_ADAPTER_DIR)
    retired = model_dir.with_name(f".{model_dir.name}.unmerged")
    shutil.rmtree(retired, ignore_errors=True)
    model_dir.rename(retired)
    staging.rename(model_dir)
    shutil.rmtree(retired)
    return True


def main(argv: list[str] | None = None) -> int:
    """CLI for model_export.sh: `check-target`, `locate` (the merger's --local_dir), `merge-lora`, `mark`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    target = commands.add_parser("check-target", help="refuse a TARGET_DIR the export would damage")
    target.add_argument("--checkpoints", default="targets/RationAnomaly", help="trainer.default_local_dir")
    target.add_argument("--target", required=True, help="the folder the export would write")
    target.add_argument("--overwrite", action="store_true", help="OVERWRITE=1: replace an earlier export")
    mark = commands.add_parser("mark", help=f"write {EXPORT_MARKER} into an exported folder")
    mark.add_argument("--model", required=True, help="the exported folder")
    mark.add_argument("--checkpoint", required=True, help="the checkpoint folder it came from")
    locate = commands.add_parser("locate", help="print the checkpoint folder verl's merger should read")
    locate.add_argument("--checkpoints", default="targets/RationAnomaly", help="trainer.default_local_dir")
    locate.add_argument("--step", default="latest", help="a step number, or latest (from the tracker file)")
    merge = commands.add_parser("merge-lora", help="merge <model>/lora_adapter into the weights, in place")
    merge.add_argument("--model", required=True, help="a folder written by verl's model merger")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-target":
            check_target(args.checkpoints, args.target, args.overwrite)
        elif args.command == "mark":
            write_marker(args.model, args.checkpoint)
        elif args.command == "locate":
            if args.step != "latest" and not args.step.isdigit():
                raise ExportError(f"STEP={args.step!r} is not a step number; pass a number or latest")
            step = None if args.step == "latest" else int(args.step)
            print(checkpoint_dir(args.checkpoints, step))  # noqa: T201
        else:
            merged = merge_lora_adapter(args.model)
            print(
                f"{args.model}: "
                + (
                    "LoRA adapter merged into the weights"
                    if merged  # noqa: T201
                    else "no LoRA adapter, weights kept as exported"
                )
            )
    except ExportError as error:
        print(f"export error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
