"""Inputs for a CPU dry run of model_train.sh, and a way to read the exact verl calls the launcher would make.

    python -m rationanomaly.train.tiny_run --output runs/train_dry_run

builds a tiny Llama-2-style model, a tiny GPT-2 for the perplexity term and the GRPO and SFT parquet files from
the embedded sample rationales (every sample trains, as in the default run), then prints the environment that
points model_train.sh at them:

    env $(python -m rationanomaly.train.tiny_run --output runs/train_dry_run) DRY_RUN=1 STAGE=all bash model_train.sh

`recorded_calls` runs the launcher with a stand-in interpreter that only records its arguments, so tests
read the overrides verl would receive without starting Python or verl.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from rationanomaly.labels import INSTRUCTION, normalize_label
from rationanomaly.parquet import build_parquet
from rationanomaly.paths import REPO_ROOT, SAMPLE_DATA_DIR
from rationanomaly.prompts import COT_SYSTEM_PROMPT
from rationanomaly.response import extract_answer, tags_in_order
from rationanomaly.samples import Sample, read_records

# Batch knobs a 2-"GPU" dry run divides cleanly (the reference's 32 x 16 on 8 GPUs needs >= 32 rows).
TINY_KNOBS = {
    "N_GPUS_PER_NODE": "2",
    "TRAIN_BATCH_SIZE": "4",
    "PPO_MINI_BATCH_SIZE": "2",
    "ROLLOUT_N": "2",
    "SFT_BATCH_SIZE": "4",
    "ATTN_IMPL": "sdpa",
}

# Prints a marker line per call: the arguments (tab-separated) and the environment verl would see.
RECORDER = """#!/usr/bin/env bash
{ printf 'CALL'; printf '\\t%s' "$@"; printf '\\n'
  printf 'ENV\\tVERL_FILE_LOGGER_PATH=%s\\tWANDB_MODE=%s\\n' "${VERL_FILE_LOGGER_PATH:-}" "${WANDB_MODE:-}"
} >> "$RECORD_FILE"
# like the model merger, leave the --target_dir folder behind so the launcher can move it into place
prev=""; for arg in "$@"; do [[ "$prev" == --target_dir ]] && mkdir -p "$arg"; prev=$arg; done
"""


def sample_training_set() -> list[Sample]:
    """The embedded rationales whose CoT is well formed and agrees with the label (the flawed ones are skipped)."""
    samples = []
    for record in read_records(SAMPLE_DATA_DIR / "rationales.json", ("input", "label")):
        reasoning = record.get("reasoning") or ""
        if tags_in_order(reasoning) and extract_answer(reasoning) == normalize_label(record["label"]):
            samples.append(Sample(record["input"], reasoning, record.get("instruction") or INSTRUCTION))
    return samples


def build_dry_run_inputs(folder: str | Path, seed: int = 0) -> dict[str, str]:
    """Tiny models and parquet files under `folder`; returns the model_train.sh knobs that use them."""
    from rationanomaly.tiny import build_tiny_gpt2, build_tiny_llama

    folder = Path(folder)
    build_tiny_llama(folder / "tiny-llama", seed=seed)
    build_tiny_gpt2(folder / "tiny-gpt2", seed=seed)
    files = {key: folder / f"{key}.parquet" for key in ("rl_train", "sft_train")}
    build_parquet(sample_training_set(), files, COT_SYSTEM_PROMPT, seed=seed)  # as the default run: all samples train
    return {
        "BASE_MODEL": str(folder / "tiny-llama"),
        "GRPO_MODEL": str(folder / "tiny-llama"),  # stands in for the SFT model, which STAGE=sft would export
        "SFT_MODEL": str(folder / "RationAnomaly-SFT"),
        "PPL_MODEL": str(folder / "tiny-gpt2"),
        "TRAIN_FILES": str(files["rl_train"]),
        "SFT_TRAIN_FILES": str(files["sft_train"]),
        # the launcher's defaults write under targets/ of the repository; a dry run's checks look there
        "OUTPUT_DIR": str(folder / "targets" / "RationAnomaly"),
        "SFT_OUTPUT_DIR": str(folder / "targets" / "RationAnomaly-SFT"),
        **TINY_KNOBS,
    }


# The turn-alternation check of Llama-2-chat's own template, which the tiny template leaves out.
ALTERNATION_CHECK = (
    "{% for message in messages %}{% if message['role'] != 'system' and ((message['role'] == 'user') != "
    "(loop.index0 % 2 == (1 if messages[0]['role'] == 'system' else 0))) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% endfor %}"
)


def strict_template_model(model: str | Path, folder: str | Path) -> str:
    """A copy of `model` whose chat template refuses non-alternating turns, as the real Llama-2-chat one does."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(model, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.chat_template = ALTERNATION_CHECK + tokenizer.chat_template
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def recorded_calls(
    knobs: dict[str, str],
    folder: str | Path,
    args: list[str] | None = None,
    script: str | Path = REPO_ROOT / "model_train.sh",
) -> tuple[subprocess.CompletedProcess, list]:
    """Run the launcher with a recording stand-in for Python; returns the result and [(argv, env), ...]."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recorder, record = folder / "python", folder / "calls.tsv"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    record.write_text("")
    env = {**os.environ, **knobs, "PYTHON": str(recorder), "RECORD_FILE": str(record)}
    env.pop("WANDB_MODE", None)
    result = subprocess.run(["bash", str(script), *(args or [])], env=env, capture_output=True, text=True)
    calls, argv = [], None
    for line in record.read_text().splitlines():
        kind, *fields = line.split("\t")
        if kind == "CALL":
            argv = fields
        else:
            calls.append((argv, dict(field.split("=", 1) for field in fields)))
    return result, calls


def module_of(argv: list[str]) -> str:
    """The last `-m` module of a recorded call (torchrun's own `-m torch.distributed.run` comes first)."""
    return argv[len(argv) - argv[::-1].index("-m")]


def overrides_of(argv: list[str]) -> list[str]:
    """The Hydra overrides of a recorded call (what follows the entry point or `--`)."""
    if "--" in argv:
        return argv[argv.index("--") + 1 :]
    last_module = len(argv) - 1 - argv[::-1].index("-m")
    return argv[last_module + 2 :]


def as_dict(overrides: list[str]) -> dict[str, str]:
    """`key=value` overrides as a dict keyed without the leading `+`."""
    return dict(item.lstrip("+").split("=", 1) for item in overrides)


def main(argv: list[str] | None = None) -> int:
    """CLI: build the inputs and print them as KEY=VALUE words for `env`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/train_dry_run", help="folder for the tiny models and parquet files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    knobs = build_dry_run_inputs(args.output, args.seed)
    print(" ".join(f"{key}={value}" for key, value in knobs.items()))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
