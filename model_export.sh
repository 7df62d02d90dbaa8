#!/usr/bin/env bash
# Export a verl checkpoint to a Hugging Face folder (verl's FSDP model merger, then a PEFT merge of any LoRA adapter).
#   bash model_export.sh                                   # latest GRPO step in targets/RationAnomaly -> models/RationAnomaly
#   STEP=150 bash model_export.sh                          # the reference run exported step 150
#   CHECKPOINTS=targets/RationAnomaly-SFT TARGET_DIR=models/RationAnomaly-SFT bash model_export.sh   # SFT (LoRA)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python}
CHECKPOINTS=${CHECKPOINTS:-targets/RationAnomaly}   # reference run: trainer.default_local_dir
STEP=${STEP:-latest}                                 # ours: latest = latest_checkpointed_iteration.txt
TARGET_DIR=${TARGET_DIR:-models/RationAnomaly}       # reference run
OVERWRITE=${OVERWRITE:-0}                            # ours: 1 replaces an existing TARGET_DIR

if [[ -e "$TARGET_DIR" && "$OVERWRITE" != 1 ]]; then
    echo "export error: $TARGET_DIR already exists; remove it, set OVERWRITE=1 or choose TARGET_DIR=<new folder>" >&2
    exit 2
fi

# global_step_N/actor for GRPO, global_step_N for SFT; fails with one line when there is no checkpoint
local_dir=$("$PYTHON" -m rationanomaly.train.export locate --checkpoints "$CHECKPOINTS" --step "$STEP")
# ours: build beside the target and swap at the end, so a failed merge never leaves a half-written model
# (nor deletes the one OVERWRITE=1 would replace)
staging="${TARGET_DIR%/}.partial.$$"
trap 'rm -rf -- "$staging"' EXIT
echo "exporting $local_dir -> $TARGET_DIR"
"$PYTHON" -m verl.model_merger merge --backend fsdp --local_dir "$local_dir" --target_dir "$staging"
"$PYTHON" -m rationanomaly.train.export merge-lora --model "$staging"
rm -rf -- "$TARGET_DIR"
mv -- "$staging" "$TARGET_DIR"
echo "exported -> $TARGET_DIR"
