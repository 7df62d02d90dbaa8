"""Training next-key models on normal key sequences: cross-entropy pre-training, then RL fine-tuning.

    python -m rationanomaly.nextkey train --train runs/nextkey/synthetic/normal --method logneo \
        --output_dir runs/nextkey/synthetic/logneo --top_k 3 --pretrain_epochs 5 --lr 1e-3 --rl_episodes 2

Methods (`--method`):
- `pretrain`: next-key cross-entropy over every real token (LogGPT: AdamW lr 1e-4, batch 16, up to 100 epochs,
  the checkpoint with the lowest validation loss kept). Ours on top: stop after `patience` epochs without a new
  best (LogGPT always runs all 100).
- `loggpt`: what nokia/LogGPT's code does (its paper describes PPO): keep the first 20% of the real sequence, sample
  the rest from the model, recompute the logits on that generated context, and minimise
  -(sum_t log p(k_t | generated context)) * (sum_t r_t) with r_t = +1 if the real key k_t is in the top K there,
  else -1. A sequence return times a sequence log-likelihood: REINFORCE without a baseline, ratio or clipping;
  when misses outnumber hits it pushes the real (normal) keys *down*. Differences from the code: we batch
  sequences (its steps take one sequence), sample plainly (it beam-samples with 20 beams), score the same
  positions the detector checks (it skips the first key), and validate with the deterministic reward below
  (it reuses its sampled loss on the validation set).
- `logneo`: PPO with clipping on the position-aware, partial-credit reward of `reward.py`, plus a cross-entropy
  term on the same normal sequences. Contexts are the real sequences (teacher forcing, as the detector sees
  them), so every scored position is a one-step decision whose action does not change later contexts: no
  return-to-go, no value head. The action at a position is a ranked list of K keys drawn from the model by
  Gumbel-top-K (a Plackett-Luce sample); the reward reads the real key's place in that list (absent = miss).
  Each position draws `samples` lists and the advantage of one is its reward minus the mean of the others
  (leave-one-out, GRPO-like: an unbiased baseline per context; the notes' per-position-bucket mean mixed
  contexts of different difficulty). The advantages are then divided by one number, their standard deviation
  over the batch: a confident model's lists nearly all hit, its raw advantages are ~1e-3, and Adam (which
  normalises the *total* gradient) then leaves the step to the CE term, so the reward would steer nothing
  (measured on HDFS: policy loss 4e-5 beside CE 0.026). One scale for the whole batch keeps the position
  weights' relative sizes, which a per-position (GRPO per-group) normalisation would erase; `--raw_advantages`
  turns it off. Loss: -mean min(q A, clip(q, 1 +- eps) A) + beta_CE * CE
  (+ beta_KL * KL to the starting model, off by default), q = exp(log PL_new(list) - log PL_old(list)).
  With the reward parameters at zero (`--alpha 0 --beta 0 --kappa 0`) this is LogGPT as its paper describes it:
  PPO on the +-1 Top-K reward.

RL stopping (both methods, LogGPT's rule): after each episode, the validation loss is -(mean deterministic
reward), the reward read at the real key's rank under the model's logits over the normal validation sequences;
an episode that improves it by less than 1% on the previous one counts, and the 4th such episode stops the run.
The best episode is kept (episode 1 at least, as LogGPT). RL runs in eval mode (dropout off), so old and new
log-probabilities differ only through the update.

Distributed: launched by `torchrun --nproc_per_node N -m rationanomaly.nextkey train ...` each process takes every
N-th sequence of each global batch, DistributedDataParallel averages the gradients, and every loss is normalised by
the *global* batch's token (or position, or sequence) count, and LogNEO mode's advantage scale is the standard
deviation over the global batch (count, sum and sum of squares all-reduced), so N processes compute the same step as
one process on the whole batch, given the same drawn lists (each rank draws its own lists, from seeds that include
its rank, so an RL run on N processes is not bit-identical to one on a single process). Validation runs whole on
every rank (same numbers, same stop decision, no communication); rank 0 writes. Backend: nccl on GPUs, gloo on CPUs.

Outputs in --output_dir: the model (save_pretrained) and nextkey.json, metrics.jsonl (one
`{"step": N, "data": {...}}` line per epoch and episode, in verl's file-logger layout, so
`python -m rationanomaly.watch DIR --out DIR/watch` plots it) and, while running, resume.pt: a run that stops
resumes from its last finished epoch or episode when started again with the same arguments.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from rationanomaly.io import atomic_path
from rationanomaly.nextkey.detect import (
    candidate_mask,
    mask_logits,
    next_logits,
    pad_batch,
    relative_positions_tensor,
    scored_mask,
    target_ranks,
    unseen_rank,
)
from rationanomaly.nextkey.keys import (
    DATASET_TOP_K,
    EOS_ID,
    PAD_ID,
    SESSION,
    KeyVocabulary,
    build_vocabulary,
    default_top_k,
    read_sequences,
)
from rationanomaly.nextkey.models import (
    GPT2,
    META_FILE,
    TRANSFORMER,
    ModelFolderError,
    ModelShape,
    build_model,
    check_lengths,
    init_from_folder,
    model_positions,
    read_meta,
    save_model,
    set_cpu_threads,
    set_matmul_precision,
    vocabulary_of,
)
from rationanomaly.nextkey.reward import (
    LOGGPT_REWARD,
    RewardParams,
    gumbel_top_k,
    list_ranks,
    plackett_luce_log_prob,
    step_rewards,
)

logger = logging.getLogger(__name__)

PRETRAIN, LOGGPT, LOGNEO = "pretrain", "loggpt", "logneo"
METHODS = (PRETRAIN, LOGGPT, LOGNEO)
METRICS_FILE, RESUME_FILE = "metrics.jsonl", "resume.pt"
PRETRAIN_EPOCHS = 100  # LogGPT
VALIDATION_BATCH = 256
ADVANTAGE_FLOOR = 1e-3  # a batch whose advantages are all ~0 stays ~0 instead of blowing noise up


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (recorded in nextkey.json; resume checks it)."""

    method: str = PRETRAIN
    arch: str = GPT2
    shape: ModelShape = field(default_factory=ModelShape)
    framing: str = SESSION
    dataset: str = "hdfs"  # picks LogGPT's K when top_k is None
    top_k: int | None = None
    seed: int = 0
    validation_ratio: float = 0.1  # LogGPT: the last 10% of its training sequences validate
    pretrain_epochs: int | None = None  # None: 100 from scratch, 0 when --init is a next-key model and method is RL
    batch_size: int = 16  # LogGPT
    lr: float = 1e-4  # LogGPT (AdamW)
    patience: int = 5  # ours: epochs without a new best validation loss before pre-training stops (0 = never)
    rl_episodes: int = 20  # LogGPT
    rl_lr: float = 1e-5  # ours: LogGPT's 1e-6 is for one-sequence steps; batches of 64 take ~55x fewer steps
    rl_batch_size: int = 64  # ours (LogGPT: 1)
    prefix: float = 0.2  # loggpt: share of the sequence kept before sampling (LogGPT's cut)
    ppo_epochs: int = 2  # logneo: updates per collected batch (the second is where clipping acts)
    clip: float = 0.2  # PPO's epsilon
    ce_coef: float = 0.1  # beta_CE: the cross-entropy anchor
    kl_coef: float = 0.0  # beta_KL to the model RL started from
    samples: int = 4  # logneo: K-lists drawn per position (>= 2 for the leave-one-out baseline)
    advantage_scale: bool = True  # logneo: divide advantages by their batch standard deviation (see module doc)
    reward: RewardParams = field(default_factory=RewardParams)
    min_improvement: float = 0.01  # LogGPT: an episode improving the validation loss less than 1% counts
    stop_after: int = 4  # LogGPT: the 4th counted episode stops RL
    grad_clip: float = 1.0  # RL only (LogGPT clips nothing)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; use one of {METHODS}")
        if self.method == LOGNEO and self.samples < 2:
            raise ValueError(f"samples={self.samples}; the leave-one-out baseline needs at least 2 lists per position")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k}; K is at least 1 (or None for LogGPT's K of the dataset)")
        for name in ("batch_size", "rl_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; use 1 or more")
        if not 0.0 <= self.validation_ratio < 1.0:
            raise ValueError(f"validation_ratio={self.validation_ratio}; use a fraction in [0, 1)")

    def method_reward(self) -> RewardParams:
        """The reward this method optimises and validates with: +-1 for loggpt, the configured one otherwise."""
        return LOGGPT_REWARD if self.method == LOGGPT else self.reward


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Distributed:
    """Join the torchrun job named by the environment (WORLD_SIZE, RANK, LOCAL_RANK), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    target = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(target)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Distributed(rank, world, target)


def teardown_distributed() -> None:
    """Leave the process group (a no-op when running plainly)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def check_batch_sizes(config: TrainConfig, pretrain_epochs: int, world: int) -> None:
    """Refuse a batch smaller than the number of processes: every batch would be dropped and no update made."""
    used = [("batch_size", config.batch_size)] if pretrain_epochs > 0 else []
    used += [("rl_batch_size", config.rl_batch_size)] if config.method != PRETRAIN else []
    for name, size in used:
        if size < world:
            raise ValueError(
                f"--{name} {size} is smaller than the {world} processes: each batch must give every process a "
                f"sequence, so no update would be made; use --{name} {world} or more, or fewer processes"
            )


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from the run seed and a place in the run: the same place always draws the same numbers."""
    return random.Random("-".join(str(p) for p in parts)).getrandbits(63)


def split_validation(sequences: list, ratio: float, seed: int) -> tuple[list, list]:
    """Seeded shuffle, then the last `ratio` validate (at least one sequence each side when there are two):
    `sequences.split_normal` with the train size this ratio leaves."""
    from rationanomaly.nextkey.sequences import split_normal  # lazily: it brings pandas, which training never needs

    if ratio == 0 or len(sequences) < 2:
        return list(sequences), []
    return split_normal(sequences, min(len(sequences) - 1, max(1, round(len(sequences) * (1 - ratio)))), seed)


def global_batches(count: int, batch_size: int, world: int, seed: int, phase: str, epoch: int) -> list[list[int]]:
    """Shuffled batches of sequence indices for one epoch; batches too small to give every rank a row are dropped."""
    order = list(range(count))
    random.Random(derived_seed(seed, phase, epoch)).shuffle(order)
    batches = [order[start : start + batch_size] for start in range(0, count, batch_size)]
    return [batch for batch in batches if len(batch) >= world]


def mean_ce(model, encoded: Sequence[Sequence[int]], device: torch.device) -> float:
    """Mean next-token cross-entropy over every real target of `encoded` (no gradients)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), VALIDATION_BATCH):
            input_ids = pad_batch(encoded[start : start + VALIDATION_BATCH], device)
            logits = next_logits(model, input_ids)
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), ignore_index=PAD_ID, reduction="sum"
            ).item()
            count += int((input_ids[:, 1:] != PAD_ID).sum())
    return total / max(count, 1)


def mean_reward(
    model,
    encoded: Sequence[Sequence[int]],
    vocab: KeyVocabulary,
    top_k: int,
    params: RewardParams,
    device: torch.device,
) -> float:
    """Mean reward per scored position when the rank is read off the logits (what detection sees)."""
    candidates, unseen = candidate_mask(vocab, device), unseen_rank(vocab)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), VALIDATION_BATCH):
            rows = encoded[start : start + VALIDATION_BATCH]
            input_ids = pad_batch(rows, device)
            lengths = torch.as_tensor([len(r) for r in rows], device=device)
            mask = scored_mask(input_ids, lengths, vocab.first_scored)
            logits = mask_logits(next_logits(model, input_ids), candidates)
            ranks = target_ranks(logits, input_ids[:, 1:], unseen)
            rewards = step_rewards(ranks, relative_positions_tensor(mask), top_k, params)
            total += float(rewards[mask].sum())
            count += int(mask.sum())
    return total / max(count, 1)


def batch_std(values: torch.Tensor, world: int = 1) -> torch.Tensor:
    """Standard deviation (unbiased, as `torch.std`) of `values` over the whole batch: with `world` > 1 each rank's
    count, sum and sum of squares are all-reduced, so every rank divides by the same number one process would."""
    flat = values.detach().to(torch.float64).reshape(-1)
    moments = torch.stack([flat.new_tensor(float(flat.numel())), flat.sum(), (flat * flat).sum()])
    if world > 1:
        torch.distributed.all_reduce(moments)
    count, total, squares = moments.unbind()
    variance = (squares - total * total / count.clamp_min(1)) / (count - 1).clamp_min(1)
    return variance.clamp_min(0).sqrt().to(values.dtype)


def scored_count(encoded_rows: Sequence[Sequence[int]], first_scored: int) -> int:
    """How many positions of these sequences are scored (targets first_scored .. length-1)."""
    return sum(max(0, len(tokens) - first_scored) for tokens in encoded_rows)


def loggpt_cut(length: int, prefix: float, framing: str) -> int:
    """Tokens kept before sampling: floor(prefix * length), clamped as LogGPT clamps it (2..L-2 for sessions,
    1..L-1 for windows)."""
    low, high = (2, length - 2) if framing == SESSION else (1, length - 1)
    return max(low, min(math.floor(prefix * length), high))


@torch.no_grad()
def sample_contexts(
    model,
    input_ids: torch.Tensor,
    lengths: torch.Tensor,
    cuts: torch.Tensor,
    keys: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The real prefix up to each row's cut, then keys sampled from the model up to position length-2 (the last
    context any scored target needs); one token at a time with the key/value cache. `keys` [V] bool marks the
    tokens that may be sampled (keys only: LogGPT forbids an early end with min_length)."""
    contexts = input_ids.clone()
    past = None
    for position in range(1, input_ids.shape[1] - 1):
        seen = torch.ones_like(contexts[:, :position])  # causal; see next_logits on why padding needs no mask
        output = model(
            input_ids=contexts[:, position - 1 : position], attention_mask=seen, past_key_values=past, use_cache=True
        )
        past = output.past_key_values
        probabilities = torch.softmax(mask_logits(output.logits[:, -1].float(), keys), dim=-1)
        drawn = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        sampled = (position >= cuts) & (position <= lengths - 2)
        contexts[:, position] = torch.where(sampled, drawn, contexts[:, position])
    return contexts


def sequence_return_loss(log_probs: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LogGPT's loss, summed over sequences: -sum_i (sum_t log p_it) * (sum_t r_it) over the scored positions.

    A negative return (more misses than hits) turns the sign, so the step lowers the real keys' likelihood.
    """
    zeros = torch.zeros_like(log_probs)
    return -(torch.where(mask, log_probs, zeros).sum(-1) * torch.where(mask, rewards, zeros).sum(-1)).sum()


def pretrain_loss(model, rows: list[list[int]], global_tokens: int, world: int, device: torch.device) -> torch.Tensor:
    """Summed next-token cross-entropy of this rank's rows, scaled so DDP's gradient mean is the global token mean."""
    input_ids = pad_batch(rows, device)
    logits = next_logits(model, input_ids)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), ignore_index=PAD_ID, reduction="sum"
    )
    return total * world / global_tokens


@dataclass(frozen=True)
class Rollout:
    """One LogNEO-mode batch as collected: this rank's rows, the drawn lists and what the update needs."""

    input_ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T-1] scored positions
    lists: torch.Tensor  # [N, G, K] token ids, N scored positions, G lists each
    rewards: torch.Tensor  # [N, G]
    advantages: torch.Tensor  # [N, G] reward minus the mean of the position's other lists
    old_log_probs: torch.Tensor  # [N, G] log PL of each list under the collecting model
    ranks: torch.Tensor  # [N, G] place of the real key in each list, 0 = absent
    entropy: float  # mean entropy of the collecting model's next-key distribution
    reference: torch.Tensor | None  # [N, C] log-probabilities of the reference model (kl_coef > 0)
    global_positions: int  # scored positions in the whole (all-rank) batch
    global_tokens: int  # real targets in the whole batch (the cross-entropy's denominator)


@dataclass
class RunState:
    """What a resumed run needs: where it stopped and the best model so far (mutable on purpose: it is the loop's)."""

    phase: str = PRETRAIN
    epoch: int = 0
    best: float = math.inf
    best_epoch: int = 0
    best_state: dict | None = None
    bad_epochs: int = 0
    last: float | None = None
    start_loss: float | None = None  # RL: validation loss of the model RL starts from
    reference_state: dict | None = None  # RL with kl_coef > 0: the weights RL started from
    pretrain_best: float | None = None
    pretrain_best_epoch: int = 0
    step: int = 0
    seconds: dict = field(default_factory=dict)
    stopped_early: dict = field(default_factory=dict)
    epochs_run: dict = field(default_factory=dict)


class Trainer:
    """One training run: data, model, optimiser and the loops of both phases."""

    def __init__(
        self,
        config: TrainConfig,
        train_path: Path,
        output_dir: Path,
        validation_path: Path | None = None,
        init: Path | None = None,
        device: str = "auto",
        progress: bool = True,
        threads: int | None = None,
    ):
        self.config, self.output_dir, self.init = config, output_dir, init
        self.train_path, self.validation_path = train_path, validation_path
        self.dist = setup_distributed(device)
        set_cpu_threads(threads, self.dist.device)
        set_matmul_precision(self.dist.device)
        self.progress = progress and self.dist.main
        train = read_sequences(train_path)
        files = [(train_path, train)]
        if validation_path is not None:
            validation = read_sequences(validation_path)
            files.append((validation_path, validation))
        else:
            train, validation = split_validation(train, config.validation_ratio, config.seed)
        if not validation:
            raise ValueError(
                f"{train_path}: {len(train)} sequence(s) leave nothing to validate on; pass "
                "--validation FILE or more sequences"
            )
        self.vocab, model, self.arch, init_meta = self._model(train + validation)
        for path, sequences in files:
            check_lengths(sequences, self.vocab, model_positions(model), path)
        from_nextkey = init_meta is not None
        self.top_k = (
            config.top_k
            if config.top_k is not None
            else (init_meta or {}).get("top_k") or default_top_k(len(self.vocab.keys), DATASET_TOP_K[config.dataset])
        )
        self.train, self.validation = self.vocab.encode_all(train), self.vocab.encode_all(validation)
        epochs = config.pretrain_epochs
        if epochs is None:
            epochs = 0 if from_nextkey and config.method != PRETRAIN else PRETRAIN_EPOCHS
        self.pretrain_epochs = epochs
        check_batch_sizes(config, epochs, self.dist.world)
        self.model = model.to(self.dist.device)
        self.candidates = candidate_mask(self.vocab, self.dist.device)
        self.candidate_ids = self.candidates.nonzero().squeeze(-1)
        self.state = RunState()
        self.optimizer: torch.optim.Optimizer | None = None
        self.reference = None

    def _model(self, sequences: list):
        """(vocabulary, model, arch, nextkey.json of --init or None): from --init or from scratch.

        A next-key model passed as --init brings its vocabulary, framing and K; the data may not hold keys it lacks.
        """
        config = self.config
        if self.init is None:
            vocab = build_vocabulary(sequences, config.framing)
            return vocab, build_model(config.arch, vocab, config.shape, config.seed), config.arch, None
        init_meta = read_meta(self.init) if (self.init / META_FILE).is_file() else None
        if init_meta is None:
            vocab = build_vocabulary(sequences, config.framing)
        else:
            vocab = vocabulary_of(init_meta, self.init)
            new = sorted({int(key) for sequence in sequences for key in sequence} - set(vocab.keys))
            if new:
                raise ModelFolderError(
                    f"{self.init}: made for another key vocabulary ({len(vocab.keys)} keys); the training data has "
                    f"{len(new)} key(s) it never saw (first {new[:5]}): train from scratch on this data or pass "
                    "--init the model trained on these keys"
                )
        model, arch, _ = init_from_folder(self.init, vocab, config.seed)
        return vocab, model, arch, init_meta

    def fingerprint(self) -> str:
        """Hash of the settings and inputs: resume.pt is used only by the run that wrote it."""
        payload = json.dumps(
            {
                "config": asdict(self.config),
                "train": str(self.train_path),
                "validation": str(self.validation_path),
                "init": str(self.init),
                "world": self.dist.world,
                "train_rows": len(self.train),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def ddp(self):
        """The model wrapped for gradient averaging when distributed, else the model itself."""
        if self.dist.world == 1:
            return self.model
        if not hasattr(self, "_ddp"):
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)
        return self._ddp

    def _optimizer(self, phase: str) -> torch.optim.Optimizer:
        if phase == PRETRAIN:
            return torch.optim.AdamW(self.model.parameters(), lr=self.config.lr)
        return torch.optim.Adam(self.model.parameters(), lr=self.config.rl_lr)  # LogGPT's RL optimiser

    def _save_resume(self) -> None:
        if not self.dist.main:
            return
        optimizer = None if self.optimizer is None else self.optimizer.state_dict()
        with atomic_path(self.output_dir / RESUME_FILE) as tmp:
            torch.save(
                {
                    "fingerprint": self.fingerprint(),
                    # asdict would deep-copy every tensor of the best and reference snapshots on each save
                    "state": {f.name: getattr(self.state, f.name) for f in fields(self.state)},
                    "model": self.model.state_dict(),
                    "optimizer": optimizer,
                },
                tmp,
            )

    def _load_resume(self) -> bool:
        path = self.output_dir / RESUME_FILE
        if not path.is_file():
            return False
        # Snapshots were saved on the CPU and stay there; load_state_dict copies the weights (and the optimiser its
        # state) onto the parameters' device, so nothing is put on the GPU twice.
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved["fingerprint"] != self.fingerprint():
            raise ValueError(
                f"{path}: left by a run with other settings or inputs; delete it to start over, or "
                "rerun with that run's arguments to resume it"
            )
        self.state = RunState(**saved["state"])
        self.model.load_state_dict(saved["model"])
        if saved["optimizer"] is not None:
            self.optimizer = self._optimizer(self.state.phase)
            self.optimizer.load_state_dict(saved["optimizer"])
        logger.info("%s: resuming %s at epoch %d", path, self.state.phase, self.state.epoch + 1)
        return True

    def _log_metrics(self, data: dict) -> None:
        """Append one verl-style record to metrics.jsonl (rank 0)."""
        self.state.step += 1
        if self.dist.main:
            with (self.output_dir / METRICS_FILE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": self.state.step, "data": data}) + "\n")

    def _snapshot(self) -> dict:
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in self.model.state_dict().items()}

    def run(self) -> dict:
        """Train both phases as configured, save the best model and return its nextkey.json."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if (self.output_dir / META_FILE).is_file() and not (self.output_dir / RESUME_FILE).is_file():
            raise ModelFolderError(
                f"{self.output_dir}: already holds a trained model; pass another --output_dir or delete this one"
            )
        resumed = self._load_resume()
        if not resumed and self.dist.main:
            (self.output_dir / METRICS_FILE).unlink(missing_ok=True)
        if self.state.phase == PRETRAIN:
            if self.pretrain_epochs > 0:
                self._pretrain()
            self._finish_pretrain()
        if self.config.method != PRETRAIN:
            self._reinforce()
        meta = self._meta()
        if self.dist.main:
            save_model(self.model, meta, self.output_dir)
            (self.output_dir / RESUME_FILE).unlink(missing_ok=True)
        teardown_distributed()
        return meta

    def _epochs(self, total: int, desc: str) -> Iterator[int]:
        from tqdm import tqdm

        bar = tqdm(
            range(total),
            desc=desc,
            unit="epoch" if desc == PRETRAIN else "episode",
            initial=self.state.epoch,
            disable=not self.progress,
        )
        with contextlib.closing(bar):
            for epoch in range(self.state.epoch, total):
                yield epoch
                bar.update(1)
                bar.set_postfix(best=f"{self.state.best:.4f}")

    def _batches(self, phase: str, epoch: int, batch_size: int) -> list[list[int]]:
        from tqdm import tqdm

        batches = global_batches(len(self.train), batch_size, self.dist.world, self.config.seed, phase, epoch)
        return tqdm(batches, desc=f"{phase} {epoch + 1}", leave=False, disable=not self.progress, unit="batch")

    def _pretrain(self) -> None:
        config, state = self.config, self.state
        if self.optimizer is None:
            self.optimizer = self._optimizer(PRETRAIN)
        for epoch in self._epochs(self.pretrain_epochs, PRETRAIN):
            started = time.perf_counter()
            torch.manual_seed(derived_seed(config.seed, PRETRAIN, epoch, self.dist.rank))  # dropout
            self.model.train()
            total = count = 0.0
            for batch in self._batches(PRETRAIN, epoch, config.batch_size):
                rows = [self.train[i] for i in batch[self.dist.rank :: self.dist.world]]
                global_tokens = sum(len(self.train[i]) - 1 for i in batch)
                loss = pretrain_loss(self.ddp, rows, global_tokens, self.dist.world, self.dist.device)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += loss.item() * global_tokens / self.dist.world  # this rank's summed cross-entropy
                count += sum(len(r) - 1 for r in rows)
            self.model.eval()
            validation = mean_ce(self.model, self.validation, self.dist.device)
            if validation < state.best:
                state.best, state.best_epoch, state.best_state, state.bad_epochs = (
                    validation,
                    epoch + 1,
                    self._snapshot(),
                    0,
                )
            else:
                state.bad_epochs += 1
            state.epoch = epoch + 1
            seconds = time.perf_counter() - started
            state.seconds[PRETRAIN] = state.seconds.get(PRETRAIN, 0.0) + seconds
            state.epochs_run[PRETRAIN] = epoch + 1
            stop = config.patience > 0 and state.bad_epochs >= config.patience
            state.stopped_early[PRETRAIN] = stop and epoch + 1 < self.pretrain_epochs
            self._log_metrics(
                {
                    "train/ce": total / max(count, 1),
                    "val-core/nextkey/ce/mean@1": validation,
                    "timing_s/step": seconds,
                    "timing_s/update_actor": seconds,
                }
            )
            self._save_resume()
            logger.info(
                "pretrain epoch %d: validation CE %.4f (best %.4f at %d)",
                epoch + 1,
                validation,
                state.best,
                state.best_epoch,
            )
            if stop:
                break

    def _finish_pretrain(self) -> None:
        """Load the best pre-training weights and move on to RL (saved, so a resume does not pre-train again)."""
        state = self.state
        if state.best_state is not None:
            self.model.load_state_dict(state.best_state)
        self.state = RunState(
            phase="rl",
            step=state.step,
            seconds=state.seconds,
            stopped_early=state.stopped_early,
            epochs_run=state.epochs_run,
            pretrain_best=None if state.best_state is None else state.best,
            pretrain_best_epoch=state.best_epoch,
        )
        self.optimizer = None
        if self.config.method != PRETRAIN:
            self._save_resume()

    def _validation_loss(self) -> float:
        return -mean_reward(
            self.model, self.validation, self.vocab, self.top_k, self.config.method_reward(), self.dist.device
        )

    def prepare_rl(self) -> None:
        """Dropout off, the RL optimiser, the starting validation loss and (with KL) the frozen reference model."""
        config, state = self.config, self.state
        self.model.eval()
        if self.optimizer is None:
            self.optimizer = self._optimizer(config.method)
        if state.start_loss is None:
            state.start_loss = state.last = self._validation_loss()
            if config.kl_coef > 0:
                state.reference_state = self._snapshot()
        if config.kl_coef > 0:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
            self.reference.load_state_dict(state.reference_state)

    def _reinforce(self) -> None:
        config, state = self.config, self.state
        self.prepare_rl()
        for episode in self._epochs(config.rl_episodes, config.method):
            started = time.perf_counter()
            stats = self._episode(episode)
            current = self._validation_loss()
            if current <= state.best or episode == 0:
                state.best, state.best_epoch, state.best_state = current, episode + 1, self._snapshot()
            relative = (state.last - current) / max(abs(current), 1e-7)
            state.bad_epochs += relative < config.min_improvement
            state.last, state.epoch = current, episode + 1
            seconds = time.perf_counter() - started
            state.seconds["rl"] = state.seconds.get("rl", 0.0) + seconds
            state.epochs_run["rl"] = episode + 1
            stop = state.bad_epochs >= config.stop_after
            state.stopped_early["rl"] = stop and episode + 1 < config.rl_episodes
            self._log_metrics({**stats, "val-core/nextkey/reward/mean@1": -current, "timing_s/step": seconds})
            self._save_resume()
            logger.info(
                "%s episode %d: validation reward %.4f (best %.4f at %d)",
                config.method,
                episode + 1,
                -current,
                -state.best,
                state.best_epoch,
            )
            if stop:
                break
        if state.best_state is not None:
            self.model.load_state_dict(state.best_state)

    def _episode(self, episode: int) -> dict:
        """One pass over the training sequences; returns the episode's mean statistics."""
        step = self.loggpt_step if self.config.method == LOGGPT else self.ppo_step
        sums: dict[str, float] = {}
        batches = self._batches(self.config.method, episode, self.config.rl_batch_size)
        for index, batch in enumerate(batches):
            generator = torch.Generator(device=self.dist.device)
            generator.manual_seed(derived_seed(self.config.seed, self.config.method, episode, index, self.dist.rank))
            for key, value in step(batch, generator).items():
                sums[key] = sums.get(key, 0.0) + value
        return {key: value / max(len(batches), 1) for key, value in sums.items()}

    def _update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()

    def _rows(self, batch: list[int]):
        rows = [self.train[i] for i in batch[self.dist.rank :: self.dist.world]]
        input_ids = pad_batch(rows, self.dist.device)
        lengths = torch.as_tensor([len(r) for r in rows], device=self.dist.device)
        return rows, input_ids, lengths, scored_mask(input_ids, lengths, self.vocab.first_scored)

    def loggpt_step(self, batch: list[int], generator: torch.Generator) -> dict:
        """LogGPT's update on one batch (module docstring): generated contexts, sequence return x log-likelihood."""
        rows, input_ids, lengths, mask = self._rows(batch)
        cuts = torch.as_tensor(
            [loggpt_cut(len(r), self.config.prefix, self.vocab.framing) for r in rows], device=self.dist.device
        )
        keys = self.candidates.clone()
        keys[EOS_ID] = False
        contexts = sample_contexts(self.model, input_ids, lengths, cuts, keys, generator)
        logits = mask_logits(next_logits(self.ddp, contexts), self.candidates)
        targets = input_ids[:, 1:]
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ranks = target_ranks(logits.detach(), targets, unseen_rank(self.vocab))
        rewards = step_rewards(ranks, relative_positions_tensor(mask), self.top_k, LOGGPT_REWARD)
        loss = sequence_return_loss(log_probs, rewards, mask) * self.dist.world / len(batch)
        self._update(loss)
        positions = max(int(mask.sum()), 1)
        return {
            "critic/score/mean": float(rewards[mask].sum()) / positions,
            "actor/pg_loss": loss.item(),
            "actor/hit_rate": float(((rewards > 0) & mask).sum()) / positions,
        }

    def collect(self, batch: list[int], generator: torch.Generator) -> Rollout:
        """LogNEO mode's rollout on one batch (this rank's rows): K-lists drawn from the current model at every
        scored position, their rewards, leave-one-out advantages and log-probabilities (no gradients)."""
        config, samples = self.config, self.config.samples
        _, input_ids, _, mask = self._rows(batch)
        with torch.no_grad():
            old = mask_logits(next_logits(self.model, input_ids), self.candidates)[mask]
            lists = gumbel_top_k(old, self.top_k, samples, generator)
            ranks = list_ranks(lists, input_ids[:, 1:][mask])
            u = relative_positions_tensor(mask)[mask].unsqueeze(-1).expand(-1, samples)
            rewards = step_rewards(ranks, u, self.top_k, config.reward)
            advantages = rewards - (rewards.sum(-1, keepdim=True) - rewards) / (samples - 1)
            if config.advantage_scale:
                advantages = advantages / batch_std(advantages, self.dist.world).clamp_min(ADVANTAGE_FLOOR)
            old_log_p = torch.log_softmax(old[:, self.candidate_ids], -1)
            reference = (
                None
                if self.reference is None
                else torch.log_softmax(next_logits(self.reference, input_ids)[mask][:, self.candidate_ids], -1)
            )
        global_batch = [self.train[i] for i in batch]
        return Rollout(
            input_ids,
            mask,
            lists,
            rewards,
            advantages,
            plackett_luce_log_prob(old, lists),
            ranks,
            -(old_log_p.exp() * old_log_p).sum(-1).mean().item(),
            reference,
            scored_count(global_batch, self.vocab.first_scored),
            sum(len(tokens) - 1 for tokens in global_batch),
        )

    def ppo_update(self, rollout: Rollout) -> dict:
        """`ppo_epochs` clipped-surrogate + cross-entropy updates on one rollout; returns the batch statistics."""
        config, world = self.config, self.dist.world
        global_lists = rollout.global_positions * config.samples
        stats = {
            "critic/score/mean": float(rollout.rewards.mean()),
            "actor/entropy": rollout.entropy,
            "actor/hit_rate": float((rollout.ranks > 0).float().mean()),
        }
        for _ in range(config.ppo_epochs):
            logits = next_logits(self.ddp, rollout.input_ids)
            ce = (
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    rollout.input_ids[:, 1:].reshape(-1),
                    ignore_index=PAD_ID,
                    reduction="sum",
                )
                * world
                / rollout.global_tokens
            )
            selected = mask_logits(logits, self.candidates)[rollout.mask]
            ratio = torch.exp(plackett_luce_log_prob(selected, rollout.lists) - rollout.old_log_probs)
            surrogate = torch.minimum(
                ratio * rollout.advantages, ratio.clamp(1 - config.clip, 1 + config.clip) * rollout.advantages
            )
            policy = -surrogate.sum() * world / global_lists
            loss = policy + config.ce_coef * ce
            if rollout.reference is not None:
                log_p = torch.log_softmax(selected[:, self.candidate_ids], -1)
                kl = (log_p.exp() * (log_p - rollout.reference)).sum()
                loss = loss + config.kl_coef * kl * world / rollout.global_positions
                stats["actor/kl_loss"] = (
                    stats.get("actor/kl_loss", 0.0) + kl.item() / max(len(selected), 1) / config.ppo_epochs
                )
            self._update(loss)
            stats["actor/pg_loss"] = stats.get("actor/pg_loss", 0.0) + policy.item() / config.ppo_epochs
            stats["actor/ce_loss"] = stats.get("actor/ce_loss", 0.0) + ce.item() / config.ppo_epochs
            stats["actor/pg_clipfrac"] = (
                stats.get("actor/pg_clipfrac", 0.0)
                + float(((ratio - 1).abs() > config.clip).float().mean()) / config.ppo_epochs
            )
        return stats

    def ppo_step(self, batch: list[int], generator: torch.Generator) -> dict:
        """LogNEO mode on one batch: collect, then update."""
        return self.ppo_update(self.collect(batch, generator))

    def _meta(self) -> dict:
        """nextkey.json: what the model is, how it was trained and how long it took."""
        import transformers

        state = self.state
        config = replace(self.config, pretrain_epochs=self.pretrain_epochs)
        rl = None
        if self.config.method != PRETRAIN:
            rl = {
                "episodes_run": state.epochs_run.get("rl", 0),
                "best_episode": state.best_epoch,
                "validation_loss_start": state.start_loss,
                "best_validation_loss": state.best,
                "stopped_early": state.stopped_early.get("rl", False),
                "seconds": state.seconds.get("rl", 0.0),
            }
        return {
            "kind": TRANSFORMER,
            "arch": self.arch,
            "method": self.config.method,
            "top_k": self.top_k,
            "vocabulary": self.vocab.to_dict(),
            "config": asdict(config),
            "seed": self.config.seed,
            "train": str(self.train_path),
            "validation": str(self.validation_path) if self.validation_path else "split from train",
            "init": str(self.init) if self.init else None,
            "sequences": {"train": len(self.train), "validation": len(self.validation)},
            "pretrain": {
                "epochs_run": state.epochs_run.get(PRETRAIN, 0),
                "best_epoch": state.pretrain_best_epoch,
                "best_validation_ce": state.pretrain_best,
                "stopped_early": state.stopped_early.get(PRETRAIN, False),
                "seconds": state.seconds.get(PRETRAIN, 0.0),
            },
            "rl": rl,
            "seconds": sum(state.seconds.values()),
            "world_size": self.dist.world,
            "device": str(self.dist.device),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }


def train(
    train_path: str | Path,
    output_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    validation_path: str | Path | None = None,
    init: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    threads: int | None = None,
) -> dict:
    """Train a next-key model (module docstring) and return the nextkey.json it wrote."""
    trainer = Trainer(
        config,
        Path(train_path),
        Path(output_dir),
        Path(validation_path) if validation_path else None,
        Path(init) if init else None,
        device,
        progress,
        threads,
    )
    return trainer.run()
