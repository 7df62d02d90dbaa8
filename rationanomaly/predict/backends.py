"""Generation backends: vLLM (GPU), transformers (CPU or GPU) and any OpenAI-compatible endpoint.

Every backend turns a batch of `Request`s into one response text each, with the reference's
sampling (model_predict.py: temperature 0.1, top_p 0.7, 1,024 new tokens, model length 4,096).
Heavy libraries are imported only when their backend is built, so a missing one is a clear error
and the CPU test suite never needs vLLM.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rationanomaly.cli import UserError

logger = logging.getLogger(__name__)

# Reference validation/model_predict.py (DESIGN.md: "Inference for evaluation").
TEMPERATURE = 0.1
TOP_P = 0.7
MAX_NEW_TOKENS = 1024
MAX_MODEL_LEN = 4096

BACKENDS = ("auto", "vllm", "transformers", "openai", "rules")
# Items handed to one generate() call; outputs are saved between calls, so this also bounds lost work.
DEFAULT_BATCH_SIZE = {"vllm": 256, "transformers": 8, "openai": 8, "rules": 256}


class BackendUnavailable(UserError):
    """A backend whose library is not installed (the message says what to install)."""


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling shared by every backend; defaults are the reference's inference settings."""

    temperature: float = TEMPERATURE
    top_p: float = TOP_P
    max_new_tokens: int = MAX_NEW_TOKENS
    max_model_len: int = MAX_MODEL_LEN
    seed: int = 0


@dataclass(frozen=True)
class Request:
    """One item to answer: the raw log (for rule baselines), its chat messages and its own seed."""

    log: str
    messages: tuple[Mapping[str, str], ...]
    seed: int


class Backend(Protocol):
    """Anything that answers a batch of requests with one text each, in order."""

    name: str

    def generate(self, requests: Sequence[Request]) -> list[str]: ...


def import_optional(module: str, install_hint: str) -> Any:
    """Import `module` or raise BackendUnavailable naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendUnavailable(f"the {module!r} package is not installed ({error}); {install_hint}") from error


def vllm_runs_on_cpu() -> bool:
    """vLLM's own answer to "is this the CPU build on a CPU", not torch's CUDA check (an XPU or TPU node has no
    CUDA either). vLLM reads its environment variables when it builds an engine, so setting them after this
    import still takes effect."""
    return importlib.import_module("vllm.platforms").current_platform.is_cpu()


def cuda_available() -> bool:
    """True when torch sees a CUDA device (False when torch itself is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(name: str) -> str:
    """`auto` becomes vllm where vLLM and a GPU exist, else transformers; other names pass through checked."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    return "vllm" if importlib.util.find_spec("vllm") is not None and cuda_available() else "transformers"


def prompt_token_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of the chat-templated prompt, without a second BOS.

    Llama-2 templates already write `<s>`; tokenising their text with special tokens on (vLLM's and
    the tokenizer's default) would prepend another one, so the text is tokenised with them off.
    """
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_prompt_length(length: int, sampling: SamplingConfig) -> int:
    """New-token budget for a prompt of `length` tokens inside the model length (vLLM rejects longer prompts)."""
    room = sampling.max_model_len - length
    if room <= 0:
        raise ValueError(
            f"a prompt of {length} tokens does not fit the model length {sampling.max_model_len}; "
            "raise --max-model-len or shorten the system prompt"
        )
    return min(sampling.max_new_tokens, room)


class TransformersBackend:
    """Batched, left-padded sampling with `model.generate` (CPU or one GPU)."""

    name = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        sampling: SamplingConfig,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "auto",
    ):
        transformers = import_optional("transformers", "install it with `pip install transformers`")
        import torch

        self.torch = torch
        self.sampling = sampling
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_path))
        # Left padding keeps every prompt's last token next to the generated ones.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype)
        self.model.to(self.device).eval()

    def generate(self, requests: Sequence[Request]) -> list[str]:
        """Answer requests in sub-batches of `batch_size`; each sub-batch is seeded by its first request."""
        outputs: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            outputs.extend(self._generate_batch(requests[start : start + self.batch_size]))
        return outputs

    def _generate_batch(self, requests: Sequence[Request]) -> list[str]:
        """One padded `generate` call; the seed makes a rerun of the same batch give the same text."""
        ids = [prompt_token_ids(self.tokenizer, r.messages) for r in requests]
        longest = max(len(i) for i in ids)
        budget = check_prompt_length(longest, self.sampling)
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)
        self.torch.manual_seed(requests[0].seed)
        with self.torch.no_grad():
            generated = self.model.generate(
                **batch,
                do_sample=True,
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                top_k=0,  # vLLM's default applies no top-k; keep both backends on the same distribution
                max_new_tokens=budget,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class VLLMBackend:
    """vLLM offline engine with the reference's engine settings (tensor parallel size configurable)."""

    name = "vllm"

    def __init__(
        self,
        model_path: str | Path,
        sampling: SamplingConfig,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        enforce_eager: bool = False,
    ):
        # Reference: forked tensor-parallel workers break once CUDA is initialised in the parent; spawn is safe.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        vllm = import_optional(
            "vllm", "install the GPU stack with `pip install -r requirements.txt` or pick --backend transformers"
        )
        if vllm_runs_on_cpu():
            # vLLM's CPU build reserves gpu_memory_utilization x RAM (0.9 by default) and refuses to start when
            # that much is not free; a fixed KV cache (GiB) sidesteps the check and suits a small CPU model.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            # One CPU process, no GPU to keep busy: running the engine core in this process saves starting two
            # more Python processes (engine core and worker, each re-importing torch and vLLM: ~26 s on 2 cores).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.vllm = vllm
        self.sampling = sampling
        self.llm = vllm.LLM(
            model=str(model_path),
            tokenizer=str(model_path),
            max_model_len=sampling.max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            seed=sampling.seed,
            trust_remote_code=trust_remote_code,
            # No torch.compile warm-up and no CUDA graphs: the engine starts sooner and generates slower, the
            # better trade for a small test set (the CPU demo spends ~25 s compiling to answer 10 items in 0.3 s).
            enforce_eager=enforce_eager,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, requests: Sequence[Request]) -> list[str]:
        """One engine call for the whole batch; a per-request seed makes each answer independent of batching."""
        prompts = [{"prompt_token_ids": prompt_token_ids(self.tokenizer, r.messages)} for r in requests]
        params = [
            self.vllm.SamplingParams(
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                max_tokens=check_prompt_length(len(p["prompt_token_ids"]), self.sampling),
                seed=r.seed,
            )
            for p, r in zip(prompts, requests, strict=True)
        ]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        return [result.outputs[0].text for result in results]


def make_backend(name: str, model: str | Path, sampling: SamplingConfig, **options: Any) -> Backend:
    """Build a backend by name; `options` are that backend's keyword arguments (others are ignored)."""
    name = resolve_backend(name)
    if name == "transformers":
        return TransformersBackend(model, sampling, **_pick(options, ("batch_size", "device", "dtype")))
    if name == "vllm":
        keys = ("tensor_parallel_size", "gpu_memory_utilization", "dtype", "trust_remote_code", "enforce_eager")
        return VLLMBackend(model, sampling, **_pick(options, keys))
    if name == "openai":
        from rationanomaly.predict.openai_backend import OpenAIBackend

        return OpenAIBackend(str(model), sampling, **_pick(options, ("base_url", "api_key", "concurrency", "timeout")))
    from rationanomaly.baselines import RuleBackend

    return RuleBackend()


def _pick(options: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The options a backend accepts, leaving out unset (None) ones so its defaults apply."""
    return {k: options[k] for k in keys if options.get(k) is not None}
