#!/usr/bin/env bash
# Export a verl checkpoint to a Hugging Face folder (verl's FSDP model merger, then a PEFT merge of any LoRA adapter).
#   bash model_export.sh                                   # latest GRPO step in targets/RationAnomaly -> models/RationAnomaly
#   STEP=90 bash model_export.sh                           # one saved step (the pre-flight lists them; `ls targets/RationAnomaly`)
#   CHECKPOINTS=targets/RationAnomaly-SFT TARGET_DIR=models/RationAnomaly-SFT bash model_export.sh   # SFT (LoRA)
#   bash model_export.sh --help                            # this text and the knobs
# The target may not be, lie inside or contain CHECKPOINTS; an existing folder is replaced only with OVERWRITE=1
# and only when an earlier export wrote it (it holds rationanomaly_export.json): nothing else is ever deleted.
set -euo pipefail
cd "$(dirname "$0")"

if [[ "${1:-}" == --help || "${1:-}" == -h ]]; then  # the header above, then every knob with its default
    sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    echo "Knobs (environment variables, default after :-):"
    grep -E '^[A-Z_]+=\$\{[A-Z_]+:-' "$0" | sed 's/^/  /'
    exit 0
fi

PYTHON=${PYTHON:-python}
CHECKPOINTS=${CHECKPOINTS:-targets/RationAnomaly}   # reference run: trainer.default_local_dir
STEP=${STEP:-latest}                                 # ours: latest = latest_checkpointed_iteration.txt
TARGET_DIR=${TARGET_DIR:-models/RationAnomaly}       # reference run
OVERWRITE=${OVERWRITE:-0}                            # ours: 1 (true, yes) replaces an earlier export in TARGET_DIR

case "${OVERWRITE,,}" in
    1|true|yes|on) OVERWRITE=1 ;;
    0|false|no|off|"") OVERWRITE=0 ;;
    *) echo "export error: OVERWRITE=$OVERWRITE is not a yes/no value; use 1, true or yes (or 0, false, no)" >&2; exit 2 ;;
esac
if [[ "$STEP" != latest && ! "$STEP" =~ ^[0-9]+$ ]]; then
    echo "export error: STEP=$STEP is not a step number; pass a number or latest" >&2
    exit 2
fi

overwrite_flag=()
if [[ "$OVERWRITE" == 1 ]]; then overwrite_flag=(--overwrite); fi
"$PYTHON" -m rationanomaly.train.export check-target --checkpoints "$CHECKPOINTS" --target "$TARGET_DIR" \
    ${overwrite_flag[@]+"${overwrite_flag[@]}"}
# global_step_N/actor for GRPO, global_step_N for SFT; fails with one line when there is no checkpoint
local_dir=$("$PYTHON" -m rationanomaly.train.export locate --checkpoints "$CHECKPOINTS" --step "$STEP")
# ours: build beside the target and swap at the end, so a failed merge never leaves a half-written model
# (nor deletes the one OVERWRITE=1 would replace)
staging="${TARGET_DIR%/}.partial.$$"
trap 'rm -rf -- "$staging"' EXIT
echo "exporting $local_dir -> $TARGET_DIR"
"$PYTHON" -m verl.model_merger merge --backend fsdp --local_dir "$local_dir" --target_dir "$staging"
"$PYTHON" -m rationanomaly.train.export merge-lora --model "$staging"
"$PYTHON" -m rationanomaly.train.export mark --model "$staging" --checkpoint "$local_dir"
rm -rf -- "$TARGET_DIR"  # check-target allowed only: nothing, an empty folder, or an earlier export
mv -- "$staging" "$TARGET_DIR"
echo "exported -> $TARGET_DIR"
