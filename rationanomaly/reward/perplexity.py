"""The perplexity LM: loaded once per process, shared by threads, many texts per forward pass.

verl's reward workers call the reward one sample at a time from a thread pool. Loading DistilGPT-2 on
every call (the reference) and running one sequence per forward pass waste most of the time; here the
model is cached per (path, device, dtype), concurrent calls are scored together (MicroBatcher, used by
score.py), a CPU runs GPT-2 packed (packed.py: no padding), and the output layer is evaluated in
vocabulary blocks so full [tokens, 50,257] logits never exist at once.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rationanomaly.reward.components import PPL_MAX_TOKENS, PPL_PREFIX, perplexity_text
from rationanomaly.reward.config import DEFAULT_BATCH_SIZE, RewardConfigError, check_model_folder
from rationanomaly.reward.packed import packed_hidden_states, supports_packing

logger = logging.getLogger(__name__)

HEAD_CHUNK_ROWS = 512  # ours: scored positions per output-layer pass; 256 was slower (before VOCAB_BLOCK)
VOCAB_BLOCK = 4096  # ours: output columns per block (512 x 4,096 fp32 logits = 8 MB); 1,024-8,192 measured
MAX_PADDING_SHARE = 0.1  # ours: 0.05 made 5.4 passes per 8 random R-Log thinks, 0.1 made 4.2 (4% padded)
BF16_MAX_DEVIATION = 1e-2  # issue 3's bound on the perplexity term; dtype=auto keeps fp32 beyond it
CALIBRATION_TEXTS = 8  # ours: sample thinks dtype=auto compares bf16 with fp32 on (about 1 s once, 2 cores)
MAX_LOG_PERPLEXITY = 700.0  # ours: math.exp overflows float64 just above 709

_MODELS: dict[tuple[str, str, str], PerplexityModel] = {}
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


def length_batches(
    lengths: Mapping[int, int], batch_size: int, max_padding: float = MAX_PADDING_SHARE
) -> list[list[int]]:
    """The keys of `lengths` (index -> token count) sorted by length and cut into forward passes of at most
    `batch_size` texts whose padding is at most `max_padding` of the pass's tokens (1.0: no bound).

    Why: a padded position costs as much as a real one, and verl's concurrent calls arrive in random
    length order (8 random R-Log thinks pad about 40%); extra passes cost little, since matrix products
    stay efficient at a few hundred rows.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    real_tokens = 0
    for index in sorted(lengths, key=lengths.__getitem__):
        width, count = lengths[index], len(current) + 1
        if current and (count > batch_size or real_tokens + width < (1 - max_padding) * width * count):
            batches.append(current)
            current, real_tokens = [], 0
        current.append(index)
        real_tokens += width
    return batches + [current] if current else batches


def padding_bound(packed: bool, device: str) -> float:
    """The `max_padding` for `length_batches`: bounded only for a padded pass on a CPU, where a padded
    position costs as much as a real one; packing pads nothing, and a GPU pays more per extra pass
    (kernel launches) than for padding, so there the texts are only sorted and cut at batch_size."""
    return MAX_PADDING_SHARE if device == "cpu" and not packed else 1.0


def packs_by_default(body, device: str) -> bool:
    """Packed forward on a CPU for a model it mirrors; a GPU pads cheaply but would launch kernels per text."""
    return device == "cpu" and supports_packing(body)


def fuse_tanh_gelu(model) -> int:
    """Swap GPT-2's `gelu_new` modules for torch's fused tanh GELU in place; returns how many were swapped.

    Same formula, one kernel instead of five elementwise passes (scoring ran 11-13% faster in A/B runs on
    2 CPU cores); fp32 results move by rounding only, and bf16 ones round once instead of five times.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU flags list AVX-512 BF16 or AMX-BF16; elsewhere bf16 products are emulated, slower."""
    try:
        flags = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def dtype_candidates(dtype: str, device: str) -> tuple[str, ...]:
    """The dtypes `load_perplexity_model` may use, fastest first; `auto` tries bf16 only on a bf16 CPU.

    On a GPU DistilGPT-2 costs little even in fp32, so `auto` keeps the exact dtype there; on a CPU with
    native bf16 it halves the scoring time, and is kept only if calibration finds it close to fp32.
    """
    if dtype != "auto":
        return (dtype,)
    if device == "cpu" and cpu_has_native_bf16():
        return ("bfloat16", "float32")
    return ("float32",)


def calibration_texts() -> list[str]:
    """The packaged sample thinks in the scored form: our own log-analysis prose, shipped with the package."""
    from rationanomaly.paths import SAMPLE_DATA_DIR
    from rationanomaly.rationales import read_rationales
    from rationanomaly.response import extract_think

    thinks = [extract_think(item.reasoning) for item in read_rationales(SAMPLE_DATA_DIR / "rationales.json")]
    return [perplexity_text(think) for think in thinks if think][:CALIBRATION_TEXTS]


def max_relative_deviation(values: Sequence[float], reference: Sequence[float]) -> float:
    """The largest |value - reference| / reference over pairs (inf when any value is not finite)."""
    deviations = [abs(value - want) / want for value, want in zip(values, reference, strict=True)]
    return max(deviations, default=0.0) if all(map(math.isfinite, deviations)) else math.inf


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
    `packed` scores a GPT-2 with the packed forward (packed.py; None: `packs_by_default`), otherwise texts
    are right-padded to a common width.
    """

    def __init__(
        self, model, tokenizer, device: str, dtype: str, prefix: str | None = PPL_PREFIX, packed: bool | None = None
    ):
        import torch

        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        fuse_tanh_gelu(model)
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
        self.packed = packs_by_default(self._body, device) if packed is None else packed
        self.padding_bound = padding_bound(self.packed, device)
        self._head_weight = weight
        self._head_bias = bias
        self._head_weight_low = self._head_weight.to(torch.bfloat16) if dtype == "bfloat16" else None
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.calibrated_deviation: float | None = None  # set when dtype=auto compared bf16 with fp32
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
        """exp(mean next-token loss) per text, batch_size texts per pass (padded: of similar lengths)."""
        with self._lock:  # the fast tokenizer is not safe to share between threads either
            ids = [self.token_ids(text) for text in texts]
            thinks = [self.think_ids(tokens) for tokens in ids]
            cached = [index for index, think in enumerate(thinks) if think is not None]
            # a text of fewer than 2 tokens predicts nothing: it stays nan, as in the reference's HF loss
            full = [index for index, think in enumerate(thinks) if think is None and len(ids[index]) > 1]
            result = [math.nan] * len(ids)
            for group, rows, score in (
                (cached, thinks, self._packed_cached_perplexities if self.packed else self._cached_batch_perplexities),
                (full, ids, self._packed_full_perplexities if self.packed else self._batch_perplexities),
            ):
                lengths = {index: len(rows[index]) for index in group}
                for chunk in length_batches(lengths, batch_size, self.padding_bound):
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
        """Think tokens only, right-padded, attending to the cached prefix; the loss averages over the full text.

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
            owners = torch.arange(size, device=self.device).unsqueeze(1).expand(-1, width)[scored]
            losses = self._token_losses(hidden[scored], input_ids[scored])
        return self._mean_perplexities(losses, owners, size, prefix.loss_sum, start - 1)

    def _batch_perplexities(self, batch: list[list[int]]) -> list[float]:
        """One right-padded forward pass; the attention mask keeps padding out of every valid position."""
        import torch

        input_ids, mask = self._padded(batch)
        width = input_ids.shape[1]
        with torch.inference_mode():
            hidden = self._body(input_ids=input_ids, attention_mask=mask).last_hidden_state
            scored = mask[:, 1:].bool()
            owners = torch.arange(len(batch), device=self.device).unsqueeze(1).expand(-1, width - 1)[scored]
            losses = self._token_losses(hidden[:, :-1][scored], input_ids[:, 1:][scored])
        return self._mean_perplexities(losses, owners, len(batch))

    def _packed_cached_perplexities(self, batch: list[list[int]]) -> list[float]:
        """_cached_batch_perplexities with the packed forward: the same numbers, no padding."""
        import torch

        prefix = self.prefix
        start = len(prefix.ids)
        with torch.inference_mode():
            hidden = packed_hidden_states(self._body, batch, start, prefix.layers)
            # row 0: the prefix's last state, predicting each text's first token; row r + 1: packed row r
            states = torch.cat([prefix.last_hidden.unsqueeze(0), hidden])
            sources, owners, offset = [], [], 0
            for owner, tokens in enumerate(batch):
                sources += [0, *range(offset + 1, offset + len(tokens))]
                owners += [owner] * len(tokens)
                offset += len(tokens)
            losses = self._token_losses(states[sources], self._flat(batch))
        return self._mean_perplexities(losses, self._flat([owners]), len(batch), prefix.loss_sum, start - 1)

    def _packed_full_perplexities(self, batch: list[list[int]]) -> list[float]:
        """_batch_perplexities with the packed forward: the same numbers, no padding."""
        import torch

        with torch.inference_mode():
            hidden = packed_hidden_states(self._body, batch, 0, ())
            sources, owners, offset = [], [], 0
            for owner, tokens in enumerate(batch):
                sources += range(offset, offset + len(tokens) - 1)
                owners += [owner] * (len(tokens) - 1)
                offset += len(tokens)
            losses = self._token_losses(hidden[sources], self._flat([tokens[1:] for tokens in batch]))
        return self._mean_perplexities(losses, self._flat([owners]), len(batch))

    def _flat(self, rows: Sequence[Sequence[int]]):
        """One long tensor of the rows' integers, on the model's device."""
        import torch

        return torch.tensor([value for row in rows for value in row], dtype=torch.long, device=self.device)

    def _mean_perplexities(self, losses, owners, count: int, base_sum: float = 0.0, base_count: int = 0):
        """exp(mean loss) per text from per-token losses and their owners (text numbers), in float64.

        `base_sum` and `base_count` add the cached prefix's losses to every text; a text with no
        predicted token at all gets nan.
        """
        import torch

        totals = torch.full((count,), base_sum, dtype=torch.float64, device=self.device)
        totals.index_add_(0, owners, losses.double())
        counts = torch.bincount(owners, minlength=count) + base_count
        means = (totals / counts.clamp(min=1)).tolist()
        return [
            math.exp(min(mean, MAX_LOG_PERPLEXITY)) if predicted else math.nan
            for mean, predicted in zip(means, counts.tolist(), strict=True)
        ]

    def _token_losses(self, hidden, labels):
        """Cross-entropy of each scored position, HEAD_CHUNK_ROWS rows at a time.

        The target logit is taken in fp32 from the fp32 output layer; only the normaliser sees bf16 logits.
        """
        import torch

        losses = torch.empty(len(labels), dtype=torch.float32, device=self.device)
        for start in range(0, len(labels), HEAD_CHUNK_ROWS):
            rows = hidden[start : start + HEAD_CHUNK_ROWS]
            targets = labels[start : start + HEAD_CHUNK_ROWS]
            target_logits = (rows.float() * self._head_weight[targets]).sum(dim=-1)
            if self._head_bias is not None:
                target_logits = target_logits + self._head_bias[targets]
            losses[start : start + len(targets)] = self._log_normalisers(rows) - target_logits
        return losses

    def _log_normalisers(self, rows):
        """log-sum-exp of each row's logits, VOCAB_BLOCK output columns at a time (running max, rescaled sum).

        Why blocks: one block's fp32 logits stay in cache while they are maxed, shifted, exponentiated and
        summed; over full [rows, 50,257] logits those four passes stream from memory and cost about two
        thirds as much as the output layer's matrix product itself.
        """
        import torch

        low = self._head_weight_low is not None
        weight, inputs = (self._head_weight_low, rows) if low else (self._head_weight, rows.float())
        running_max = torch.full((len(rows),), -math.inf, dtype=torch.float32, device=self.device)
        running_sum = torch.zeros(len(rows), dtype=torch.float32, device=self.device)
        for column in range(0, weight.shape[0], VOCAB_BLOCK):
            logits = torch.nn.functional.linear(inputs, weight[column : column + VOCAB_BLOCK]).float()
            if self._head_bias is not None:
                logits += self._head_bias[column : column + VOCAB_BLOCK]
            new_max = torch.maximum(running_max, logits.amax(dim=-1))
            logits -= new_max.unsqueeze(1)
            running_sum = running_sum * torch.exp(running_max - new_max) + logits.exp_().sum(dim=-1)
            running_max = new_max
        return running_max + running_sum.log()


def load_perplexity_model(path: str | Path, device: str = "auto", dtype: str = "auto") -> PerplexityModel:
    """The process-wide model for (path, device, dtype), loaded on first use (thread-safe).

    `dtype=auto` takes bf16 on a CPU with native bf16 when it stays within BF16_MAX_DEVIATION of fp32 on
    the calibration texts (the measured deviation is logged and kept in `calibrated_deviation`), else fp32.
    """
    folder = Path(path)
    device = resolve_device(device)
    key = (str(folder.resolve()), device, dtype)
    with _CACHE_LOCK:
        if key not in _MODELS:
            check_model_folder(folder)
            candidates = dtype_candidates(dtype, device)
            _MODELS[key] = (
                _calibrated(folder, device, candidates)
                if len(candidates) > 1
                else _cached(folder, device, candidates[0])
            )
        return _MODELS[key]


def _cached(folder: Path, device: str, dtype: str, keep: bool = True) -> PerplexityModel:
    """The model for an explicit dtype from the process cache, else loaded (and cached when `keep`)."""
    key = (str(folder.resolve()), device, dtype)
    if key in _MODELS:
        return _MODELS[key]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("loading perplexity model %s on %s (%s)", folder, device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    weights = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32")
    model = PerplexityModel(weights, tokenizer, device, dtype)
    if keep:
        _MODELS[key] = model
    return model


def _calibrated(folder: Path, device: str, candidates: tuple[str, str]) -> PerplexityModel:
    """The fast candidate when its perplexities stay within BF16_MAX_DEVIATION of the exact one's."""
    fast_dtype, exact_dtype = candidates
    texts = calibration_texts()
    exact = _cached(folder, device, exact_dtype, keep=False)
    fast = _cached(folder, device, fast_dtype, keep=False)
    deviation = max_relative_deviation(
        fast.perplexities(texts, DEFAULT_BATCH_SIZE), exact.perplexities(texts, DEFAULT_BATCH_SIZE)
    )
    chosen = fast if deviation <= BF16_MAX_DEVIATION else exact
    logger.log(
        logging.INFO if chosen is fast else logging.WARNING,
        "perplexity dtype=auto: %s deviates %.2g from %s on %d calibration texts (bound %g); using %s",
        fast_dtype,
        deviation,
        exact_dtype,
        len(texts),
        BF16_MAX_DEVIATION,
        chosen.dtype,
    )
    chosen.calibrated_deviation = deviation
    _MODELS[(str(folder.resolve()), device, chosen.dtype)] = chosen
    return chosen


@dataclass
class _Request:
    item: object
    done: bool = False
    value: object = None
    error: BaseException | None = None


@dataclass
class MicroBatcher:
    """Merges concurrent single-item calls into shared batch calls, without timers.

    Each caller queues its item, then takes the run lock; whoever holds it runs `score_batch` on everything
    queued (up to batch_size) while later callers queue up behind it. Callers whose item was scored by
    another thread just collect the result. The reward batches whole reward computations this way, so the
    Python parts (BLEU, ROUGE) run in the thread that runs the forward pass: a Python-busy thread beside a
    CPU forward pass keeps the GIL in 5 ms slices the pass needs between its ops (measured 10x slower).
    """

    score_batch: Callable[[list], list]
    batch_size: int
    _pending: list[_Request] = field(default_factory=list)
    _pending_lock: threading.Lock = field(default_factory=threading.Lock)
    _run_lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, item: object) -> object:
        request = _Request(item)
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
        """Score up to batch_size queued items (called with the run lock held)."""
        with self._pending_lock:
            batch = self._pending[: self.batch_size]
            del self._pending[: self.batch_size]
        if not batch:
            return
        try:
            values = list(self.score_batch([request.item for request in batch]))
            if len(values) != len(batch):
                raise RuntimeError(f"batch scorer returned {len(values)} values for {len(batch)} items")
        except BaseException as error:  # handed to every caller of the batch, each re-raises it
            for request in batch:
                request.error, request.done = error, True
            return
        for request, value in zip(batch, values, strict=True):
            request.value, request.done = value, True
