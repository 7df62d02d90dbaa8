"""The CPU platform plugin for verl (rationanomaly/train/cpu_platform.py) and the import hook it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from rationanomaly.train import cpu_platform
from rationanomaly.train.hooks import after_import


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (verl reads its plugin variables once, at import)."""
    environment = {**os.environ, **env}
    for name in ("VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES"):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environment, capture_output=True, text=True, timeout=300
    )


DEVICE_PROBE = """
    import json
    from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name, get_torch_device
    print(json.dumps({"device": get_device_name(), "backend": get_nccl_backend(), "resource": get_resource_name(),
                      "module": get_torch_device().__name__}))
"""


def last_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_verl_runs_on_the_cpu_platform_when_the_plugin_and_variable_select_it():
    probe = last_json(
        run_python(DEVICE_PROBE, VERL_USE_EXTERNAL_MODULES="rationanomaly.train.cpu_platform", VERL_PLATFORM="cpu")
    )
    assert probe == {"device": "cpu", "backend": "gloo", "resource": "GPU", "module": "rationanomaly_cpu_device"}


def test_device_module_answers_the_cuda_calls_verl_makes():
    import torch

    device = cpu_platform.build_device_module()
    state = device.get_rng_state()
    first = torch.rand(3)
    device.set_rng_state(state)
    assert torch.equal(torch.rand(3), first)  # verl's checkpoints restore the generator through these
    free, total = device.mem_get_info()
    assert 0 < free <= total
    assert (device.memory_allocated(), device.max_memory_reserved(), device.empty_cache()) == (0, 0, None)
    assert device.current_device() == "cpu" and device.is_available()


def test_loading_the_plugin_without_verl_platform_cpu_changes_nothing():
    stock = last_json(run_python(DEVICE_PROBE))
    with_plugin = last_json(run_python(DEVICE_PROBE, VERL_USE_EXTERNAL_MODULES="rationanomaly.train.cpu_platform"))
    assert with_plugin == stock
    assert stock["device"] == "cuda"  # stock verl falls back to NVIDIA without an accelerator


def test_no_patch_is_applied_without_verl_platform_cpu():
    result = run_python("""
        import torch.distributed
        import rationanomaly.train.cpu_platform
        print(getattr(torch.distributed.init_process_group, "__rationanomaly_patch__", False))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_a_one_process_gloo_group_starts_with_the_backend_verl_asks_for():
    result = run_python(
        """
        import os
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        import torch, torch.distributed as dist
        import verl
        from verl.utils.distributed import initialize_global_process_group
        print(initialize_global_process_group(timeout_second=60))
        tensor = torch.ones(3)
        dist.all_reduce(tensor)
        print(dist.get_backend(), tensor.tolist())
        dist.destroy_process_group()
    """,
        VERL_USE_EXTERNAL_MODULES="rationanomaly.train.cpu_platform",
        VERL_PLATFORM="cpu",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-2:] == ["(0, 0, 1)", "cpu:gloo [1.0, 1.0, 1.0]"]


def test_duplicate_backends_are_dropped_and_other_arguments_kept():
    calls = []
    patched = cpu_platform._single_backend_per_device(lambda *args, **kwargs: calls.append((args, kwargs)))
    patched(backend="cpu:gloo,cpu:gloo", timeout=5)
    patched(backend="cpu:gloo,cuda:nccl")
    patched("gloo")
    assert calls == [
        ((), {"backend": "cpu:gloo", "timeout": 5}),
        ((), {"backend": "cpu:gloo,cuda:nccl"}),
        (("gloo",), {}),
    ]


def test_offload_policy_is_built_unpinned_whatever_verl_asks():
    from torch.distributed.fsdp import CPUOffloadPolicy

    unpinned = cpu_platform._unpinned_offload_policy(CPUOffloadPolicy)
    policy = unpinned(pin_memory=True)
    assert isinstance(policy, CPUOffloadPolicy) and policy.pin_memory is False


def test_vllm_linear_layers_keep_their_weight_and_follow_its_updates():
    import torch

    layer = torch.nn.Linear(4, 3)
    original = cpu_platform._linear_keeping_weight(lambda layer, remove_weight: None)
    original(layer, remove_weight=True)
    x = torch.randn(2, 4)
    assert torch.equal(
        layer.cpu_linear(x, layer.weight, layer.bias), torch.nn.functional.linear(x, layer.weight, layer.bias)
    )
    assert layer.weight.shape == (3, 4)  # the original weight is still there for verl's weight sync
    with torch.no_grad():
        layer.weight.add_(1.0)  # what a weight sync does in place
    assert torch.equal(
        layer.cpu_linear(x, layer.weight, layer.bias), torch.nn.functional.linear(x, layer.weight, layer.bias)
    )


def test_patch_targets_match_the_versions_they_were_checked_against():
    """Fails loudly, naming the function, when an upgrade of verl, torch or vLLM rewrites a patched spot."""
    pytest.importorskip("vllm", reason="vLLM's CPU build is not installed (make install)")
    assert cpu_platform.check_patch_targets() == []


def test_a_rewritten_patch_target_is_reported_with_its_reason(monkeypatch):
    pytest.importorskip("vllm", reason="vLLM's CPU build is not installed (make install)")
    patch = cpu_platform.PATCHES[0]
    name, _ = patch.checked_sources[0]
    moved = cpu_platform.Patch(
        patch.module, patch.attribute, patch.reason, patch.package, patch.build, ((name, "0" * 64),)
    )
    monkeypatch.setattr(cpu_platform, "PATCHES", (moved,))
    problems = cpu_platform.check_patch_targets()
    assert len(problems) == 1 and problems[0].startswith(f"{name}: source changed since verl 0.9.1")


def test_callback_runs_right_after_a_later_import(tmp_path, monkeypatch):
    (tmp_path / "late_module_for_hook_test.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    after_import("late_module_for_hook_test", lambda module: seen.append(module.VALUE + 1))
    assert seen == []
    import late_module_for_hook_test  # noqa: F401

    assert seen == [42]


def test_callback_runs_at_once_for_an_imported_module():
    seen = []
    after_import("json", lambda module: seen.append(module.__name__))
    assert seen == ["json"]
