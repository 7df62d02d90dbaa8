"""The perplexity LM: loaded once per process, shared by threads, fed in padded micro-batches.

verl's reward workers call the reward one sample at a time from a thread pool. Loading DistilGPT-2 on
every call (the reference) and running one sequence per forward pass waste most of the time; here the
model is cached per (path, device, dtype), concurrent calls are merged into one forward pass, and the
output layer is evaluated in row chunks so full [batch, length, 50,257] logits never exist at once.

Every scored text starts with the same context line (PPL_PREFIX), so its key/value states, its summed
token loss and its last hidden state are computed once per loaded model; each batch then runs only the
think tokens through the blocks, attending to the cached prefix. A text whose token ids do not start with
the prefix's own ids (a BPE merge across the boundary) takes the full, uncached pass.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rationanomaly.reward.components import PPL_MAX_TOKENS, PPL_PREFIX
from rationanomaly.reward.config import DEFAULT_BATCH_SIZE, RewardConfigError, check_model_folder

logger = logging.getLogger(__name__)

HEAD_CHUNK_ROWS = 512  # ours: output-layer rows per chunk (512 x 50,257 fp32 logits = 103 MB); 256 was slower
MAX_LOG_PERPLEXITY = 700.0  # ours: math.exp overflows float64 just above 709

_MODELS: dict[tuple[str, str, str], PerplexityModel] = {}
_BATCHERS: dict[tuple[str, str, str, int], MicroBatcher] = {}
_CACHE_LOCK = threading.Lock()


def ray_worker_gpu(gpu_count: int) -> int | None:
    """The GPU for this process when it is verl's reward worker `reward_loop_worker_<i>` and several GPUs show.

    Those Ray actors request no GPU, so Ray (2.60 here) leaves CUDA_VISIBLE_DEVICES unset and all 8 of them
    would otherwise pile their model copies and CUDA contexts onto GPU 0; worker i takes GPU i % count.
    """
    ray = sys.modules.get("ray")  # never imported here: only a process that already runs Ray can be a worker
    if gpu_count < 2 or ray is None or not ray.is_initialized():
        return None
    match = re.fullmatch(r".*?(\d+)", ray.get_runtime_context().get_actor_name() or "")
    return None if match is None else int(match.group(1)) % gpu_count


def resolve_device(device: str) -> str:
    """`auto` means cuda when a GPU is visible (spread over GPUs in verl's reward workers), else cpu."""
    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        index = ray_worker_gpu(torch.cuda.device_count())
        return "cuda" if index is None else f"cuda:{index}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RewardConfigError(f"reward option device={device!r} but no CUDA device is visible; use device=cpu")
    return device


def resolve_dtype(dtype: str) -> str:
    """`auto` means float32: bf16's deviation was measured on random weights only (README), so it is opt-in."""
    return "float32" if dtype == "auto" else dtype


@dataclass(frozen=True)
class PrefixState:
    """The fixed prefix, run once: its ids, per-layer (key, value) states, last hidden state, summed loss."""

    ids: tuple[int, ...]
    layers: tuple[tuple[object, object], ...]
    last_hidden: object
    loss_sum: float


class PerplexityModel:
    """A causal LM and its tokenizer computing the reference's perplexity for many texts at once.

    `prefix` is the context line whose states are cached (None: every text takes the full pass).
    """

    def __init__(self, model, tokenizer, device: str, dtype: str, prefix: str | None = PPL_PREFIX):
        import torch

        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        model = model.to(device)  # first: in fp32 the (tied) output layer then shares the body's weights
        head = model.get_output_embeddings()
        weight = head.weight.detach().float()
        bias = None if getattr(head, "bias", None) is None else head.bias.detach().float()
        if dtype == "bfloat16":
            # Softmax is shift-invariant, so centring the output layer over the vocabulary leaves every
            # loss unchanged while shrinking logit magnitudes (GPT-2's sit near -100), which is what
            # bf16's 8-bit mantissa rounds; the target logit is then taken in fp32.
            weight = weight - weight.mean(dim=0, keepdim=True)
            bias = None if bias is None else bias - bias.mean()
            model = model.to(torch.bfloat16)
        self._body = model.base_model.eval()
        self._head_weight = weight
        self._head_bias = bias
        self._head_weight_low = self._head_weight.to(torch.bfloat16) if dtype == "bfloat16" else None
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.prefix = None if prefix is None else self._encode_prefix(prefix)

    def token_ids(self, text: str) -> list[int]:
        """Token ids as the reference builds them: no padding, truncated at PPL_MAX_TOKENS."""
        clean = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates would raise
        return self.tokenizer(clean, truncation=True, max_length=PPL_MAX_TOKENS)["input_ids"]

    def think_ids(self, ids: Sequence[int]) -> list[int] | None:
        """The ids after the cached prefix, or None when the text must take the full pass.

        Exact whenever `ids` starts with the prefix's ids: the blocks are causal, so the prefix positions
        see only the prefix. Not so when BPE merged across the boundary (e.g. the prefix's final newline
        with whitespace opening the think), or for a text that is the prefix alone or lacks it.
        """
        if self.prefix is None or len(ids) <= len(self.prefix.ids):
            return None
        if tuple(ids[: len(self.prefix.ids)]) != self.prefix.ids:
            return None
        return list(ids[len(self.prefix.ids) :])

    def perplexities(self, texts: Sequence[str], batch_size: int) -> list[float]:
        """exp(mean next-token loss) per text; sorted by length into batches so padding stays small."""
        with self._lock:  # the fast tokenizer is not safe to share between threads either
            ids = [self.token_ids(text) for text in texts]
            thinks = [self.think_ids(tokens) for tokens in ids]
            cached = [index for index, think in enumerate(thinks) if think is not None]
            full = [index for index, think in enumerate(thinks) if think is None]
            result = [math.nan] * len(ids)
            for group, rows, score in (
                (cached, thinks, self._cached_batch_perplexities),
                (full, ids, self._batch_perplexities),
            ):
                order = sorted(group, key=lambda index: len(rows[index]))
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size]
                    for index, value in zip(chunk, score([rows[i] for i in chunk]), strict=True):
                        result[index] = value
        return result

    def _encode_prefix(self, prefix: str) -> PrefixState | None:
        """Run the prefix alone once; its per-token losses never change, so only their sum is kept."""
        import torch

        ids = self.token_ids(prefix)
        if not ids:
            return None
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            output = self._body(input_ids=input_ids, use_cache=True)
            hidden = output.last_hidden_state[0]
            loss_sum = self._token_losses(hidden[:-1], input_ids[0, 1:]).double().sum().item()
            layers = tuple((layer.keys, layer.values) for layer in output.past_key_values.layers)
        return PrefixState(tuple(ids), layers, hidden[-1], loss_sum)

    def _padded(self, batch: list[list[int]]):
        """Right-padded ids and their 0/1 attention mask, on the model's device."""
        import torch

        width = max(len(tokens) for tokens in batch)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, tokens in enumerate(batch):
            input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _cached_batch_perplexities(self, batch: list[list[int]]) -> list[float]:
        """Think tokens only, attending to the cached prefix; the loss still averages over the full text.

        The first think token is predicted from the prefix's last hidden state; positions continue after
        the prefix; each text's mean is (prefix loss sum + its think losses) / (its full length - 1).
        """
        import torch
        from transformers import DynamicCache

        prefix, size = self.prefix, len(batch)
        start = len(prefix.ids)
        input_ids, mask = self._padded(batch)
        width = input_ids.shape[1]
        full_mask = torch.cat([torch.ones((size, start), dtype=torch.long, device=self.device), mask], dim=1)
        positions = torch.arange(start, start + width, device=self.device).unsqueeze(0).expand(size, -1)
        with torch.inference_mode():
            cache = DynamicCache(
                [(keys.expand(size, -1, -1, -1), values.expand(size, -1, -1, -1)) for keys, values in prefix.layers]
            )
            hidden = self._body(
                input_ids=input_ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache
            ).last_hidden_state
            hidden = torch.cat([prefix.last_hidden.expand(size, 1, -1), hidden[:, :-1]], dim=1)
            scored = mask.bool()
            rows = torch.arange(size, device=self.device).unsqueeze(1).expand(-1, width)[scored]
            losses = self._token_losses(hidden[scored], input_ids[scored])
            totals = torch.full((size,), prefix.loss_sum, dtype=torch.float64, device=self.device)
            totals.index_add_(0, rows, losses.double())
            counts = torch.bincount(rows, minlength=size) + (start - 1)
            mean_losses = (totals / counts).tolist()
        return [math.exp(min(loss, MAX_LOG_PERPLEXITY)) for loss in mean_losses]

    def _batch_perplexities(self, batch: list[list[int]]) -> list[float]:
        """One right-padded forward pass; the attention mask keeps padding out of every valid position."""
        import torch

        input_ids, mask = self._padded(batch)
        width = input_ids.shape[1]
        with torch.inference_mode():
            hidden = self._body(input_ids=input_ids, attention_mask=mask).last_hidden_state
            scored = mask[:, 1:].bool()
            rows = torch.arange(len(batch), device=self.device).unsqueeze(1).expand(-1, width - 1)[scored]
            losses = self._token_losses(hidden[:, :-1][scored], input_ids[:, 1:][scored])
            totals = torch.zeros(len(batch), dtype=torch.float64, device=self.device)
            totals.index_add_(0, rows, losses.double())
            counts = torch.bincount(rows, minlength=len(batch)).clamp(min=1)
            mean_losses = (totals / counts).tolist()
        return [
            math.exp(min(loss, MAX_LOG_PERPLEXITY)) if len(tokens) > 1 else math.nan
            for loss, tokens in zip(mean_losses, batch, strict=True)
        ]

    def _token_losses(self, hidden, labels):
        """Cross-entropy of each scored position, computed HEAD_CHUNK_ROWS rows of logits at a time."""
        import torch

        losses = torch.empty(len(labels), dtype=torch.float32, device=self.device)
        for start in range(0, len(labels), HEAD_CHUNK_ROWS):
            rows = hidden[start : start + HEAD_CHUNK_ROWS]
            targets = labels[start : start + HEAD_CHUNK_ROWS]
            exact = rows.float()
            target_logits = (exact * self._head_weight[targets]).sum(dim=-1)
            if self._head_bias is not None:
                target_logits = target_logits + self._head_bias[targets]
            if self._head_weight_low is None:
                logits = torch.nn.functional.linear(exact, self._head_weight)
            else:
                logits = torch.nn.functional.linear(rows, self._head_weight_low).float()
            if self._head_bias is not None:
                logits = logits + self._head_bias
            losses[start : start + len(targets)] = torch.logsumexp(logits, dim=-1) - target_logits
        return losses


def load_perplexity_model(path: str | Path, device: str = "auto", dtype: str = "auto") -> PerplexityModel:
    """The process-wide model for (path, device, dtype), loaded on first use (thread-safe)."""
    folder = Path(path)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    key = (str(folder.resolve()), device, dtype)
    with _CACHE_LOCK:
        if key not in _MODELS:
            check_model_folder(folder)
            from transformers import AutoModelForCausalLM, AutoTokenizer

            logger.info("loading perplexity model %s on %s (%s)", folder, device, dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32")
            _MODELS[key] = PerplexityModel(model, tokenizer, device, dtype)
        return _MODELS[key]


@dataclass
class _Request:
    text: str
    done: bool = False
    value: float = math.nan
    error: BaseException | None = None


@dataclass
class MicroBatcher:
    """Merges concurrent single-text calls into shared forward passes, without timers.

    Each caller queues its text, then takes the run lock; whoever holds it scores everything queued
    (up to batch_size) while later callers queue up behind it. Callers whose text was scored by another
    thread just collect the result. Results never depend on how texts were grouped (padding-aware).
    """

    score_batch: Callable[[list[str]], list[float]]
    batch_size: int
    _pending: list[_Request] = field(default_factory=list)
    _pending_lock: threading.Lock = field(default_factory=threading.Lock)
    _run_lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, text: str) -> float:
        request = _Request(text)
        with self._pending_lock:
            self._pending.append(request)
        while True:
            with self._run_lock:
                if not request.done:
                    self._run_once()
                if request.done:
                    break
        if request.error is not None:
            raise request.error
        return request.value

    def _run_once(self) -> None:
        """Score up to batch_size queued texts (called with the run lock held)."""
        with self._pending_lock:
            batch = self._pending[: self.batch_size]
            del self._pending[: self.batch_size]
        if not batch:
            return
        try:
            values = list(self.score_batch([request.text for request in batch]))
            if len(values) != len(batch):
                raise RuntimeError(f"perplexity scorer returned {len(values)} values for {len(batch)} texts")
        except BaseException as error:  # handed to every caller of the batch, each re-raises it
            for request in batch:
                request.error, request.done = error, True
            return
        for request, value in zip(batch, values, strict=True):
            request.value, request.done = value, True


def perplexity_scorer(
    path: str | Path, device: str = "auto", dtype: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE
) -> MicroBatcher:
    """A cached, thread-safe `text -> perplexity` callable that micro-batches concurrent calls."""
    model = load_perplexity_model(path, device, dtype)
    key = (str(Path(path).resolve()), model.device, model.dtype, batch_size)
    with _CACHE_LOCK:
        if key not in _BATCHERS:
            _BATCHERS[key] = MicroBatcher(lambda texts: model.perplexities(texts, batch_size), batch_size)
        return _BATCHERS[key]
