#!/usr/bin/env bash
# RationAnomaly training on stock verl 0.9.1: GRPO (default, the reference run), CoT-SFT with LoRA, or both.
#   bash model_train.sh                              # GRPO from models/RationAnomaly-SFT on 8 GPUs (reference run)
#   STAGE=sft bash model_train.sh                    # CoT-SFT (LoRA), then merge the adapter -> models/RationAnomaly-SFT
#   STAGE=all bash model_train.sh                    # SFT -> merge -> GRPO from the merged model
#   DRY_RUN=1 bash model_train.sh                    # (or --dry-run) validate everything on a CPU, print commands, train nothing
#   RESUME=1 bash model_train.sh                     # continue the run whose checkpoints are in the output folder
#   bash model_train.sh trainer.total_epochs=1       # any verl override, appended last
#   DEVICE=cpu STAGE=all bash model_train.sh         # verl's real SFT and GRPO loops on a CPU (tiny models only)
#   bash model_train.sh --help                       # this text and every knob with its default
# A run starts fresh: the pre-flight refuses an output folder that already holds checkpoints unless RESUME=1
# (continue them) or OVERWRITE=1 (delete them first), and prints the steps, the checkpoint steps and their size.
# Ablations (paper): ABLATION=no_asymmetric | no_think_reward | no_sft (GRPO from BASE_MODEL);
# "without RL alignment" is models/RationAnomaly-SFT evaluated directly (ABLATION=no_rl explains).
set -euo pipefail
cd "$(dirname "$0")"

user_overrides=()
for arg in "$@"; do
    case "$arg" in
        --help|-h)  # the header above, then every knob with its default
            sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
            echo "Knobs (environment variables, default after :-):"
            grep -E '^[A-Z_]+=\$\{[A-Z_]+:-' "$0" | sed 's/^/  /'
            exit 0 ;;
        --dry-run) DRY_RUN=1 ;;
        *) user_overrides+=("$arg") ;;
    esac
done

STAGE=${STAGE:-grpo}                                  # grpo | sft | all
DEVICE=${DEVICE:-gpu}                                 # ours: gpu (the reference run) | cpu (tiny models, see below)
# >>> cpu-profile: DEVICE=cpu runs the same stages with verl's real trainers on the CPU (vLLM's CPU build, the
# platform module rationanomaly/train/cpu_platform.py loaded through verl's plugin hook). It only sets defaults a
# CPU can run and adds CPU overrides before the user's; nothing here runs for DEVICE=gpu.
CPU_MAX_PARAMS=${CPU_MAX_PARAMS:-100000000}           # ours: DEVICE=cpu refuses a bigger model (hours per step)
CPU_ALLOW_LARGE=${CPU_ALLOW_LARGE:-0}                 # ours: 1 trains a bigger model on the CPU anyway
if [[ "$DEVICE" == cpu ]]; then
    N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-1}             # one process: Ray is given one pretend GPU
    ATTN_IMPL=sdpa                                    # flash-attn needs CUDA
    RAY_NUM_CPUS=${RAY_NUM_CPUS:-16}                  # Ray CPU slots (not cores): verl's actors need more than 2
    export VERL_USE_EXTERNAL_MODULES=${VERL_USE_EXTERNAL_MODULES:-rationanomaly.train.cpu_platform}
    export VERL_PLATFORM=cpu                          # the platform that module registers
    export VERL_ENGINE_DEVICE=cuda VERL_ENGINE_VENDOR=nvidia  # verl registers its FSDP engines under cuda/nvidia
    export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}  # GiB of KV cache for vLLM's CPU build
    export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # Ray 2.60 would write ~/.ray/auth_token for a local cluster
    CPU_GRPO_OVERRIDES=(  # layered on the GPU overrides, before the user's (notes/verl-0.9.1-cpu.md)
        trainer.device=cpu
        actor_rollout_ref.actor.strategy=fsdp2             # verl's CPU-capable engine
        actor_rollout_ref.ref.strategy=fsdp2
        actor_rollout_ref.model.use_remove_padding=False   # packed sequences need flash-attn's varlen kernels
        actor_rollout_ref.rollout.enforce_eager=True       # no CUDA graphs
        +actor_rollout_ref.rollout.enable_sleep_mode=False # vLLM's CPU build has no sleep mode
        actor_rollout_ref.rollout.free_cache_engine=False
        actor_rollout_ref.rollout.agent.num_workers=1      # one of each helper actor: 2 cores, not 8 GPUs
        reward.num_workers=1
        transfer_queue.backend.SimpleStorage.num_data_storage_units=1
        +ray_kwargs.ray_init.num_gpus=1                    # the pretend GPU verl's resource pool counts
        data.dataloader_num_workers=0
        # float32 throughout: exact on any CPU (bf16 needs AVX-512 BF16), and the actor-vs-vLLM check
        # training/rollout_probs_diff_max then shows a weight-sync fault instead of bf16 noise (~1e-2)
        +actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32
        +actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype=fp32
        actor_rollout_ref.rollout.dtype=float32
    )
    CPU_SFT_OVERRIDES=(trainer.device=cpu +engine.mixed_precision.param_dtype=fp32 data.num_workers=0)
elif [[ "$DEVICE" != gpu ]]; then
    echo "unknown DEVICE=$DEVICE; choose gpu or cpu" >&2
    exit 2
fi
# <<< cpu-profile
DRY_RUN=${DRY_RUN:-0}                                 # 1 (true, yes): pre-flight only (CPU is enough)
SKIP_PREFLIGHT=${SKIP_PREFLIGHT:-0}                   # ours: 1 skips the pre-flight before a real run
RESUME=${RESUME:-0}                                   # ours: 1 continues the checkpoints in the output folder
ABLATION=${ABLATION:-none}                            # none | no_asymmetric | no_think_reward | no_sft | no_rl
PYTHON=${PYTHON:-python}
BASE_MODEL=${BASE_MODEL:-models/llama-2-7b-chat-hf}   # reference run: Llama-2-7B-chat
SFT_MODEL=${SFT_MODEL:-models/RationAnomaly-SFT}      # ours: the CoT-SFT model with its LoRA adapter merged
TRAIN_FILES=${TRAIN_FILES:-datasets/bgl_train.parquet}          # reference run
# reference run: no validation (TEST_FREQ=-1), so every training sample trains; verl still builds a validation
# dataset, which then gets the training file and never scores it. TEST_FREQ > 0 defaults to the held-out
# datasets/bgl_validation.parquet (python datasets/parquet_builder.py --validation_ratio 0.1 writes it).
VAL_FILES=${VAL_FILES:-}
SFT_TRAIN_FILES=${SFT_TRAIN_FILES:-datasets/sft_train.parquet}  # ours: messages format for verl's SFT trainer
SFT_VAL_FILES=${SFT_VAL_FILES:-}                                # ours: empty = no SFT validation, every sample trains
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}                 # reference run
NNODES=${NNODES:-1}                                   # reference run
PROJECT_NAME=${PROJECT_NAME:-RationAnomaly}           # reference run
PPL_MODEL=${PPL_MODEL:-models/distilgpt2}             # reference run: DistilGPT-2; none disables the perplexity term
ANSWER_SCHEME=${ANSWER_SCHEME:-reference}             # reference run; plain = without asymmetric compensation
THINK_REWARD=${THINK_REWARD:-true}                    # reference run; false = without thinking reward
RAY_NUM_CPUS=${RAY_NUM_CPUS:-}                        # ours: empty lets Ray count the node's CPUs
ATTN_IMPL=${ATTN_IMPL:-auto}                          # ours: auto = flash_attention_2 if flash-attn imports, else sdpa
OVERWRITE=${OVERWRITE:-0}                             # ours: 1 deletes earlier checkpoints in the output folder first
                                                      # and lets STAGE=sft replace an earlier export in SFT_MODEL
REWARD_COMPONENT_METRICS=${REWARD_COMPONENT_METRICS:-true}  # ours: log each reward part per training step
LOG_DIR=${LOG_DIR:-targets}                           # reference run: console logs under targets/
# GRPO
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-32}              # reference run
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-8}         # reference run
PPO_MICRO_BATCH_SIZE_PER_GPU=${PPO_MICRO_BATCH_SIZE_PER_GPU:-1}  # reference run
ACTOR_LR=${ACTOR_LR:-4e-7}                            # reference run
KL_COEF=${KL_COEF:-0.001}                             # reference run (actor KL loss, low_var_kl)
# reference run: its verl fork averaged the policy and KL loss over each response's own tokens, then over the
# responses (micro-batches of one sequence, accumulated), so every response weighs the same; verl 0.9.1's
# token-mean divides by the tokens of the whole mini-batch instead, so long responses weigh more. verl 0.9.1's
# seq-mean-token-mean reproduces the reference (tests/test_loss_aggregation.py); token-mean is verl's default.
LOSS_AGG_MODE=${LOSS_AGG_MODE:-seq-mean-token-mean}
ROLLOUT_N=${ROLLOUT_N:-16}                            # reference run
TEMPERATURE=${TEMPERATURE:-0.9}                       # reference run
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-2048}          # reference run
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-1024}      # reference run
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.8} # reference run
TENSOR_PARALLEL=${TENSOR_PARALLEL:-1}                 # reference run
TOTAL_EPOCHS=${TOTAL_EPOCHS:-2}                       # reference run
SAVE_FREQ=${SAVE_FREQ:-10}                            # reference run (~81 GB per 7B checkpoint: see the pre-flight)
TEST_FREQ=${TEST_FREQ:--1}                            # reference run (no validation); 10 also logs the reward components
# CoT-SFT (the paper gives no SFT hyperparameters; these are ours)
SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-32}                  # ours: 1,494 public-data samples -> 46 steps per epoch
SFT_MICRO_BATCH_SIZE_PER_GPU=${SFT_MICRO_BATCH_SIZE_PER_GPU:-1}  # ours
SFT_MAX_LENGTH=${SFT_MAX_LENGTH:-4096}                # ours: system + log + CoT stay far below this
LORA_RANK=${LORA_RANK:-32}                            # ours
LORA_ALPHA=${LORA_ALPHA:-16}                          # ours
SFT_LR=${SFT_LR:-1e-4}                                # ours: a common LoRA learning rate
SFT_EPOCHS=${SFT_EPOCHS:-3}                           # ours
# ours: verl templates each turn on its own and refuses a mismatch with the whole conversation; the SFT
# parquet folds the system prompt into the user turn (<<SYS>> block), so none arises. True only if a real
# tokenizer splits a turn boundary differently; the pre-flight then still checks that no message is lost.
SFT_IGNORE_MISMATCH=${SFT_IGNORE_MISMATCH:-False}
# ours: verl's SFT dataset templates [user, user] to find the per-turn prefix, which Llama-2-chat's own template
# refuses ("Conversation roles must alternate"); this file renders the same Llama-2 format without that check.
# A template file, or `model` for BASE_MODEL's own template.
SFT_CHAT_TEMPLATE=${SFT_CHAT_TEMPLATE:-rationanomaly/train/llama2_chat_template.jinja}

# Knobs are checked before any shell arithmetic (an arithmetic context would execute a crafted value).
flag_knob() {  # $1: knob name; rewrites a yes/no value to 1 or 0
    local value=${!1}
    case "${value,,}" in
        1|true|yes|on) printf -v "$1" 1 ;;
        0|false|no|off|"") printf -v "$1" 0 ;;
        *) echo "$1=$value is not a yes/no value; use 1, true or yes (or 0, false, no)" >&2; exit 2 ;;
    esac
}
number_knob() {  # $1: knob name, $2: regex, $3: what it must be
    if [[ ! "${!1}" =~ $2 ]]; then echo "$1=${!1} is not $3; set a plain number" >&2; exit 2; fi
}
for knob in DRY_RUN SKIP_PREFLIGHT RESUME OVERWRITE REWARD_COMPONENT_METRICS; do flag_knob "$knob"; done
if [[ "$RESUME" == 1 && "$OVERWRITE" == 1 ]]; then
    echo "RESUME=1 continues the checkpoints that OVERWRITE=1 would delete; set one of them" >&2
    exit 2
fi
for knob in N_GPUS_PER_NODE NNODES TRAIN_BATCH_SIZE PPO_MINI_BATCH_SIZE PPO_MICRO_BATCH_SIZE_PER_GPU ROLLOUT_N \
            MAX_PROMPT_LENGTH MAX_RESPONSE_LENGTH TENSOR_PARALLEL TOTAL_EPOCHS SFT_BATCH_SIZE \
            SFT_MICRO_BATCH_SIZE_PER_GPU SFT_MAX_LENGTH LORA_RANK LORA_ALPHA SFT_EPOCHS; do
    number_knob "$knob" '^[1-9][0-9]*$' "a whole number >= 1"
done
for knob in SAVE_FREQ TEST_FREQ; do number_knob "$knob" '^(-1|[0-9]+)$' "a whole number (or -1 for off)"; done
for knob in ACTOR_LR KL_COEF TEMPERATURE GPU_MEMORY_UTILIZATION SFT_LR; do
    number_knob "$knob" '^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$' "a non-negative number"
done
if [[ -n "$RAY_NUM_CPUS" ]]; then number_knob RAY_NUM_CPUS '^[1-9][0-9]*$' "a whole number >= 1"; fi
if [[ "$DEVICE" == cpu ]]; then  # cpu-profile
    flag_knob CPU_ALLOW_LARGE; number_knob CPU_MAX_PARAMS '^[1-9][0-9]*$' "a whole number >= 1"  # cpu-profile
fi  # cpu-profile
if [[ -n "${NODE_RANK:-}" ]]; then number_knob NODE_RANK '^[0-9]+$' "a whole number"; fi
if [[ -n "${MASTER_PORT:-}" ]]; then number_knob MASTER_PORT '^[1-9][0-9]*$' "a port number"; fi
if [[ -z "$VAL_FILES" ]]; then
    if (( TEST_FREQ > 0 )); then VAL_FILES=datasets/bgl_validation.parquet; else VAL_FILES=$TRAIN_FILES; fi
fi
RESUME_MODE=$([[ "$RESUME" == 1 ]] && echo auto || echo disable)   # verl's default `auto` would reuse any old run

# Derived once. Ablations change the reward options, the GRPO start model and the output folder
# (a separate folder, or resume_mode=auto would continue the full run's checkpoints).
case "$ABLATION" in
    none) suffix="" ;;
    no_asymmetric) ANSWER_SCHEME=plain; suffix="-no_asymmetric" ;;
    no_think_reward) THINK_REWARD=false; suffix="-no_think_reward" ;;
    no_sft) suffix="-no_sft" ;;
    no_rl)
        echo "ABLATION=no_rl trains no GRPO: run STAGE=sft bash model_train.sh, then evaluate $SFT_MODEL with validation/model_predict.py" >&2
        exit 2 ;;
    *) echo "unknown ABLATION=$ABLATION; choose none, no_asymmetric, no_think_reward, no_sft or no_rl" >&2; exit 2 ;;
esac
if [[ "$ABLATION" == no_sft && "$STAGE" != grpo ]]; then
    echo "ABLATION=no_sft skips CoT-SFT: use STAGE=grpo" >&2
    exit 2
fi
GRPO_MODEL=${GRPO_MODEL:-$([[ "$ABLATION" == no_sft ]] && echo "$BASE_MODEL" || echo "$SFT_MODEL")}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-rationanomaly_grpo${suffix}}
OUTPUT_DIR=${OUTPUT_DIR:-targets/RationAnomaly${suffix}}         # reference run: targets/RationAnomaly
SFT_OUTPUT_DIR=${SFT_OUTPUT_DIR:-targets/RationAnomaly-SFT}
STAMP=$(date +%Y%m%d_%H%M%S)
GRPO_METRICS=$OUTPUT_DIR/${EXPERIMENT_NAME}_$STAMP.jsonl   # verl's `file` logger (VERL_FILE_LOGGER_PATH)
if (( NNODES > 1 )) && [[ "$STAGE" == all ]]; then
    echo "STAGE=all does not chain over several nodes: run STAGE=sft on every node (NODE_RANK 0 exports), then STAGE=grpo once on the head node" >&2
    exit 2
fi
if [[ "$ATTN_IMPL" == auto ]]; then
    if "$PYTHON" -c 'import flash_attn' 2>/dev/null; then ATTN_IMPL=flash_attention_2; else ATTN_IMPL=sdpa; fi
fi
# verl's reward workers run in Ray actors; absolute paths keep them valid whatever their cwd
REWARD_FILE=$PWD/verl/utils/reward_score/RationAnomaly/__init__.py
if [[ "$PPL_MODEL" != none && "$PPL_MODEL" != /* ]]; then PPL_MODEL=$PWD/$PPL_MODEL; fi
export WANDB_MODE=${WANDB_MODE:-offline}              # reference run: wandb offline
export WANDB_DIR=${WANDB_DIR:-$LOG_DIR}
if [[ "$WANDB_DIR" != /* ]]; then WANDB_DIR=$PWD/$WANDB_DIR; fi
if [[ "$GRPO_METRICS" != /* ]]; then GRPO_METRICS=$PWD/$GRPO_METRICS; fi
if (( NNODES > 1 )); then  # Ray may place the TaskRunner and workers on any node, whatever its cwd
    for knob in TRAIN_FILES VAL_FILES GRPO_MODEL OUTPUT_DIR; do
        if [[ "${!knob}" != /* && "${!knob}" != \[* ]]; then printf -v "$knob" '%s' "$PWD/${!knob}"; fi
    done
fi
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
# ours: verl 0.9.1 logs the reward parts only at validation; this plugin (verl's register_trainer) adds
# reward_components/<part>/{mean,max,min} to every training step and otherwise runs verl's stock sync trainer
if [[ "$REWARD_COMPONENT_METRICS" == 1 && "$STAGE" != sft ]]; then
    VERL_USE_EXTERNAL_MODULES=${VERL_USE_EXTERNAL_MODULES:+$VERL_USE_EXTERNAL_MODULES,}rationanomaly.train.step_metrics
    export VERL_USE_EXTERNAL_MODULES
fi
if [[ "$SFT_CHAT_TEMPLATE" != model && "$STAGE" != grpo ]]; then
    if [[ ! -f "$SFT_CHAT_TEMPLATE" ]]; then
        echo "SFT_CHAT_TEMPLATE=$SFT_CHAT_TEMPLATE is not a file; point it at a Jinja chat template or set SFT_CHAT_TEMPLATE=model" >&2
        exit 2
    fi
    # read by verl's config through ${oc.env:...} on every torchrun rank (a template is no Hydra override value)
    RATIONANOMALY_SFT_CHAT_TEMPLATE=$(<"$SFT_CHAT_TEMPLATE")
    export RATIONANOMALY_SFT_CHAT_TEMPLATE
fi

grpo_overrides() {  # $1: the model GRPO starts from
    overrides=(
        algorithm.adv_estimator=grpo
        data.train_files="$TRAIN_FILES"
        data.val_files="$VAL_FILES"
        data.train_batch_size="$TRAIN_BATCH_SIZE"
        data.max_prompt_length="$MAX_PROMPT_LENGTH"
        data.max_response_length="$MAX_RESPONSE_LENGTH"
        data.truncation=left
        actor_rollout_ref.model.path="$1"
        actor_rollout_ref.model.use_remove_padding=True
        actor_rollout_ref.model.enable_gradient_checkpointing=True
        +actor_rollout_ref.model.override_config.attn_implementation="$ATTN_IMPL"
        actor_rollout_ref.actor.optim.lr="$ACTOR_LR"
        actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE"
        actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$PPO_MICRO_BATCH_SIZE_PER_GPU"
        actor_rollout_ref.actor.use_kl_loss=True
        actor_rollout_ref.actor.kl_loss_coef="$KL_COEF"
        actor_rollout_ref.actor.kl_loss_type=low_var_kl
        actor_rollout_ref.actor.loss_agg_mode="$LOSS_AGG_MODE"
        actor_rollout_ref.actor.fsdp_config.param_offload=True
        actor_rollout_ref.actor.fsdp_config.optimizer_offload=True
        actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4
        actor_rollout_ref.ref.fsdp_config.param_offload=True
        actor_rollout_ref.rollout.name=vllm
        actor_rollout_ref.rollout.n="$ROLLOUT_N"
        actor_rollout_ref.rollout.temperature="$TEMPERATURE"
        actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION"
        actor_rollout_ref.rollout.tensor_model_parallel_size="$TENSOR_PARALLEL"
        actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1
        algorithm.kl_ctrl.kl_coef="$KL_COEF"
        reward.custom_reward_function.path="$REWARD_FILE"
        reward.custom_reward_function.name=compute_score
        +reward.custom_reward_function.reward_kwargs.ppl_model="$PPL_MODEL"
        +reward.custom_reward_function.reward_kwargs.answer_scheme="$ANSWER_SCHEME"
        +reward.custom_reward_function.reward_kwargs.think_reward="$THINK_REWARD"
        trainer.critic_warmup=0
        "trainer.logger=[console,file,wandb]"
        trainer.project_name="$PROJECT_NAME"
        trainer.experiment_name="$EXPERIMENT_NAME"
        trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
        trainer.nnodes="$NNODES"
        trainer.default_local_dir="$OUTPUT_DIR"
        trainer.default_hdfs_dir=null
        trainer.resume_mode="$RESUME_MODE"
        trainer.save_freq="$SAVE_FREQ"
        trainer.test_freq="$TEST_FREQ"
        trainer.val_before_train=false
        trainer.total_epochs="$TOTAL_EPOCHS"
    )
    if [[ "$REWARD_COMPONENT_METRICS" == 1 ]]; then overrides+=(trainer.v1.trainer_mode=rationanomaly_sync); fi
    if [[ "$DEVICE" == cpu ]]; then overrides+=("${CPU_GRPO_OVERRIDES[@]}"); fi  # cpu-profile
    if [[ -n "$RAY_NUM_CPUS" ]]; then overrides+=(ray_kwargs.ray_init.num_cpus="$RAY_NUM_CPUS"); fi
    if (( NNODES > 1 )); then  # a cluster started by `ray start` does not see this shell's environment
        local name
        for name in WANDB_MODE WANDB_DIR TOKENIZERS_PARALLELISM VERL_USE_EXTERNAL_MODULES; do
            # a comma would make Hydra read a list: quote such a value (VERL_USE_EXTERNAL_MODULES=a,b)
            local value=${!name-}
            if [[ "$value" == *,* ]]; then value="'$value'"; fi
            if [[ -n "$value" ]]; then overrides+=("+ray_kwargs.ray_init.runtime_env.env_vars.$name=$value"); fi
        done
        overrides+=("+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$GRPO_METRICS")
    fi
    overrides+=(${user_overrides[@]+"${user_overrides[@]}"})
}

sft_overrides() {
    overrides=(
        data.train_files="$SFT_TRAIN_FILES"
        data.val_files="${SFT_VAL_FILES:-null}"
        data.messages_key=messages
        data.train_batch_size="$SFT_BATCH_SIZE"
        data.micro_batch_size_per_gpu="$SFT_MICRO_BATCH_SIZE_PER_GPU"
        data.max_length="$SFT_MAX_LENGTH"
        data.pad_mode=no_padding
        data.use_dynamic_bsz=False
        data.ignore_input_ids_mismatch="$SFT_IGNORE_MISMATCH"
        model.path="$BASE_MODEL"
        model.lora_rank="$LORA_RANK"
        model.lora_alpha="$LORA_ALPHA"
        model.target_modules=all-linear
        model.enable_gradient_checkpointing=True
        +model.override_config.attn_implementation="$ATTN_IMPL"
        optim.lr="$SFT_LR"
        engine.strategy=fsdp2
        "trainer.logger=[console,file,wandb]"
        trainer.project_name="$PROJECT_NAME-SFT"
        trainer.experiment_name=rationanomaly_cot_sft
        trainer.default_local_dir="$SFT_OUTPUT_DIR"
        trainer.resume_mode="$RESUME_MODE"
        trainer.total_epochs="$SFT_EPOCHS"
        trainer.save_freq=after_each_epoch
        trainer.n_gpus_per_node="$N_GPUS_PER_NODE"
        trainer.nnodes="$NNODES"
    )
    if [[ "$SFT_CHAT_TEMPLATE" != model ]]; then
        overrides+=("model.custom_chat_template=\${oc.env:RATIONANOMALY_SFT_CHAT_TEMPLATE,null}")
    fi
    if [[ "$DEVICE" == cpu ]]; then overrides+=("${CPU_SFT_OVERRIDES[@]}"); fi  # cpu-profile
    overrides+=(${user_overrides[@]+"${user_overrides[@]}"})
}

torchrun_args() {  # single node: standalone rendezvous; several: the usual torchrun environment
    if (( NNODES > 1 )); then
        launcher=(--nnodes="$NNODES" --node_rank="${NODE_RANK:?set NODE_RANK on each node}"
                  --master_addr="${MASTER_ADDR:?set MASTER_ADDR to the first node}" --master_port="${MASTER_PORT:-29500}")
    else
        launcher=(--standalone --nnodes=1)
    fi
}

show_command() {  # the program and its flags on one line, then one override per line, shell-quoted
    local head=() tail=() arg
    for arg in "$@"; do
        if (( ${#tail[@]} == 0 )) && [[ "$arg" != *=* || "$arg" == --* ]]; then head+=("$arg"); else tail+=("$arg"); fi
    done
    printf '  %s' "$(printf '%q ' "${head[@]}")"
    printf '\\\n    %q ' "${tail[@]}"
    printf '\n'
}

preflight() {  # $1: stage; the rest: the overrides verl will receive
    local stage=$1 options=()
    shift
    if [[ "$OVERWRITE" == 1 ]]; then options+=(--overwrite); fi
    if [[ "$stage" == sft ]]; then options+=(--export_target "$SFT_MODEL"); fi
    if [[ "$SKIP_PREFLIGHT" == 1 && "$DRY_RUN" != 1 ]]; then options+=(--overrides-only); fi
    "$PYTHON" -m rationanomaly.train.preflight --stage "$stage" ${options[@]+"${options[@]}"} -- "$@"
}

clear_checkpoints() {  # $1: a trainer.default_local_dir; OVERWRITE=1 deletes verl's checkpoints there, nothing else
    if [[ "$OVERWRITE" != 1 || ! -d "$1" ]]; then return; fi
    local step
    for step in "$1"/global_step_*; do
        if [[ -d "$step" && "$step" =~ /global_step_[0-9]+$ ]]; then echo "OVERWRITE=1: deleting $step"; rm -rf -- "$step"; fi
    done
    rm -f -- "$1/latest_checkpointed_iteration.txt"
}

# >>> cpu-profile
cpu_check() {  # $1: stage, $2: model; refuses what cannot train on a CPU, with one line each
    if [[ "$DEVICE" != cpu ]]; then return; fi
    "$PYTHON" -m rationanomaly.train.cpu_profile --stage "$1" --model "$2" --max_params "$CPU_MAX_PARAMS" \
        --allow_large "$CPU_ALLOW_LARGE"
}
# <<< cpu-profile

sft_check() {
    cpu_check sft "$BASE_MODEL"  # cpu-profile
    sft_overrides
    preflight sft "${overrides[@]}"
}

sft_run() {
    sft_overrides
    torchrun_args
    local cmd=("$PYTHON" -m torch.distributed.run "${launcher[@]}" --nproc_per_node="$N_GPUS_PER_NODE"
               -m verl.trainer.sft_trainer "${overrides[@]}")
    local metrics=$SFT_OUTPUT_DIR/rationanomaly_cot_sft_$STAMP.jsonl
    local log=$LOG_DIR/verl_sft_rationanomaly_$STAMP.log
    echo "SFT command (console log $log, metrics $metrics):"
    show_command "${cmd[@]}"
    echo "then: CHECKPOINTS=$SFT_OUTPUT_DIR TARGET_DIR=$SFT_MODEL bash model_export.sh   # verl merger + LoRA merge"
    if [[ "$DRY_RUN" == 1 ]]; then return; fi
    clear_checkpoints "$SFT_OUTPUT_DIR"
    mkdir -p "$LOG_DIR" "$SFT_OUTPUT_DIR"
    VERL_FILE_LOGGER_PATH=$metrics "${cmd[@]}" 2>&1 | tee "$log"
    if (( NNODES > 1 )) && [[ "$NODE_RANK" != 0 ]]; then
        echo "node $NODE_RANK done; node 0 exports $SFT_MODEL (SFT_OUTPUT_DIR must be on a shared filesystem)"
        return
    fi
    CHECKPOINTS=$SFT_OUTPUT_DIR TARGET_DIR=$SFT_MODEL OVERWRITE=$OVERWRITE PYTHON=$PYTHON bash model_export.sh
}

grpo_check() {  # $1: the model GRPO starts from (or a stand-in with the same tokenizer)
    cpu_check grpo "$1"  # cpu-profile
    grpo_overrides "$1"
    preflight grpo "${overrides[@]}"
}

grpo_run() {  # $1: the model GRPO starts from
    grpo_overrides "$1"
    local cmd=("$PYTHON" -m verl.trainer.main_ppo "${overrides[@]}")
    local log=$LOG_DIR/verl_grpo_rationanomaly_$STAMP.log   # reference run's console log name
    echo "GRPO command (console log $log, metrics $GRPO_METRICS):"
    show_command "${cmd[@]}"
    if [[ "$DRY_RUN" == 1 ]]; then return; fi
    clear_checkpoints "$OUTPUT_DIR"
    mkdir -p "$LOG_DIR" "$OUTPUT_DIR"
    VERL_FILE_LOGGER_PATH=$GRPO_METRICS "${cmd[@]}" 2>&1 | tee "$log"
}

# Every stage is checked before anything trains; for `all` the GRPO check stands the base model in for
# the SFT model (same tokenizer), which does not exist until the SFT stage has run.
case "$STAGE" in
    grpo) grpo_check "$GRPO_MODEL"; grpo_run "$GRPO_MODEL" ;;
    sft) sft_check; sft_run ;;
    all)
        sft_check
        echo "(GRPO pre-flight with $BASE_MODEL standing in for $SFT_MODEL, which the SFT stage writes)"
        grpo_check "$BASE_MODEL"
        sft_run
        grpo_run "$SFT_MODEL" ;;
    *) echo "unknown STAGE=$STAGE; choose grpo, sft or all" >&2; exit 2 ;;
esac
if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: configuration valid, nothing trained"; fi
