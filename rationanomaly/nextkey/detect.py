"""Top-K next-key detection and its scores: a sequence is abnormal if any observed key falls outside the K keys
the model ranks highest at that position (LogGPT, DeepLog).

Each sequence is reduced to one number, its *worst rank*: the largest rank of a real key over its scored positions
(rank 1 = the most likely candidate; a key unseen in training gets `unseen_rank`, beyond every K). The sequence
is abnormal at K exactly when its worst rank exceeds K, so one pass scores every K, which gives the K sweep in
the evaluation JSON. Ranks count strictly better candidates (1 + #{v: logit_v > logit_key}), so a tie never
pushes the real key out of the top K. Precision, recall, F1 (and counts) come from
`rationanomaly.evaluate.binary_metrics`, the project's one implementation, with abnormal as the positive class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

from rationanomaly.evaluate import binary_metrics, flag_labels
from rationanomaly.io import write_json_atomic
from rationanomaly.nextkey.keys import PAD_ID, UNK_ID, KeyVocabulary, read_sequences
from rationanomaly.nextkey.models import (
    NGRAM,
    ModelFolderError,
    check_lengths,
    load_model,
    model_positions,
    read_meta,
    set_cpu_threads,
    set_matmul_precision,
    vocabulary_of,
)

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 256  # sequences per forward pass when scoring (no gradients: memory is small)
MAX_UNKNOWN_SHARE = 0.5  # normal data whose keys are mostly unknown to the model was made with another numbering
REPORTED = ("precision", "recall", "f1", "fpr", "tp", "fp", "fn", "tn", "accuracy", "support", "total")


def unseen_rank(vocab: KeyVocabulary) -> int:
    """The rank given to a key the model never saw: one past the last candidate, so it misses at every K."""
    return len(vocab.candidate_ids()) + 1


def pad_batch(token_lists: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> torch.Tensor:
    """Right-padded [B, T] token ids (causal attention never looks right, so padding needs no mask)."""
    width = max(len(tokens) for tokens in token_lists)
    batch = torch.full((len(token_lists), width), PAD_ID, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        batch[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
    return batch.to(device)


def scored_mask(input_ids: torch.Tensor, lengths: torch.Tensor, first_scored: int) -> torch.Tensor:
    """[B, T-1] bool: logits position j predicts token j+1, scored when first_scored <= j+1 < length."""
    target_positions = torch.arange(1, input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    return (target_positions >= first_scored) & (target_positions < lengths.unsqueeze(1))


def next_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, T-1, V] float logits, position j predicting token j+1. The all-ones attention mask is deliberate:
    padding sits right of every real token, where causal attention never looks."""
    return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[:, :-1].float()


def candidate_mask(vocab: KeyVocabulary, device: torch.device | str = "cpu") -> torch.Tensor:
    """[V] bool: the tokens a detector may predict (keys, and <eos> for sessions)."""
    mask = torch.zeros(vocab.size, dtype=torch.bool, device=device)
    mask[vocab.candidate_ids()] = True
    return mask


def mask_logits(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Logits with every non-candidate token at -inf (specials can neither be predicted nor take a top-K slot)."""
    return logits.masked_fill(~candidates, float("-inf"))


def target_ranks(logits: torch.Tensor, targets: torch.Tensor, unseen: int) -> torch.Tensor:
    """Rank of each target among the candidates: 1 + #{v: logit_v > logit_target}; `unseen` for <unk> targets.

    `logits` are already masked ([..., V]); `targets` [...]."""
    target_logit = logits.gather(-1, targets.unsqueeze(-1))
    ranks = 1 + (logits > target_logit).sum(-1)
    return torch.where(targets == UNK_ID, torch.full_like(ranks, unseen), ranks)


def relative_positions_tensor(mask: torch.Tensor) -> torch.Tensor:
    """u in [0, 1] for every scored position of each row: its index among the row's scored positions / (n - 1)."""
    index = mask.cumsum(-1) - 1
    count = mask.sum(-1, keepdim=True)
    return torch.where(
        mask, index.to(torch.float64) / (count - 1).clamp_min(1), torch.zeros_like(index, dtype=torch.float64)
    )


@torch.no_grad()
def model_worst_ranks(
    model,
    vocab: KeyVocabulary,
    sequences: Sequence[Sequence[int]],
    batch_size: int = DEFAULT_BATCH,
    progress: bool = False,
    source: str | Path = "sequences",
) -> list[int]:
    """Worst rank of every sequence under a causal LM (0 when a sequence has no scored position); a sequence too
    long for the model is refused before any forward pass, naming `source`."""
    from tqdm import tqdm

    check_lengths(sequences, vocab, model_positions(model), source)
    device = next(model.parameters()).device
    candidates, unseen = candidate_mask(vocab, device), unseen_rank(vocab)
    encoded = vocab.encode_all(sequences)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths together: less padding
    worst = [0] * len(encoded)
    model.eval()
    for start in tqdm(
        range(0, len(order), batch_size), desc="scoring", unit="batch", disable=not progress, leave=False
    ):
        rows = order[start : start + batch_size]
        input_ids = pad_batch([encoded[i] for i in rows], device)
        lengths = torch.as_tensor([len(encoded[i]) for i in rows], device=device)
        logits = mask_logits(next_logits(model, input_ids), candidates)
        ranks = target_ranks(logits, input_ids[:, 1:], unseen)
        ranks = torch.where(scored_mask(input_ids, lengths, vocab.first_scored), ranks, torch.zeros_like(ranks))
        for row, value in zip(rows, ranks.max(-1).values.tolist(), strict=True):
            worst[row] = int(value)
    return worst


def detection_metrics(normal_worst: Sequence[int], abnormal_worst: Sequence[int], top_k: int) -> dict:
    """P/R/F1 of the abnormal class, FPR and the confusion counts at one K (abnormal iff worst rank > K)."""
    truth = flag_labels([0] * len(normal_worst) + [1] * len(abnormal_worst))
    predicted = flag_labels(rank > top_k for rank in [*normal_worst, *abnormal_worst])
    metrics = asdict(binary_metrics(truth, predicted))
    return {**{key: metrics[key] for key in REPORTED}, "top_k": top_k}


def sweep_top_k(normal_worst: Sequence[int], abnormal_worst: Sequence[int], candidates: int) -> list[dict]:
    """`detection_metrics` at every K from 1 to the number of candidates (at most 200 values, spread evenly)."""
    step = max(1, candidates // 200)
    return [detection_metrics(normal_worst, abnormal_worst, k) for k in range(1, candidates + 1, step)]


def evaluate_worst_ranks(
    normal_worst: Sequence[int], abnormal_worst: Sequence[int], top_k: int, vocab: KeyVocabulary
) -> dict:
    """The evaluation record: metrics at K, the K sweep and how many sequences held an unseen key."""
    unseen = unseen_rank(vocab)
    return {
        **detection_metrics(normal_worst, abnormal_worst, top_k),
        "normal_sequences": len(normal_worst),
        "abnormal_sequences": len(abnormal_worst),
        "with_unseen_key": {
            "normal": sum(r == unseen for r in normal_worst),
            "abnormal": sum(r == unseen for r in abnormal_worst),
        },
        "sweep": sweep_top_k(normal_worst, abnormal_worst, len(vocab.candidate_ids())),
    }


WorstRanks = Callable[..., list[int]]  # (sequences, source=path naming them in errors) -> worst ranks


def load_detector(
    model_dir: str | Path, device: str = "auto", threads: int | None = None, progress: bool = True
) -> tuple[WorstRanks, KeyVocabulary, dict]:
    """(worst-rank function, vocabulary, nextkey.json) of a model folder: a transformer or an n-gram model."""
    meta = read_meta(model_dir)
    if meta.get("kind") == NGRAM:
        from rationanomaly.nextkey.ngram import ngram_from_meta

        model = ngram_from_meta(meta)
        return model.worst_ranks, model.vocab, meta
    model, meta, vocab = load_model(model_dir)
    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    set_cpu_threads(threads, "cuda" if cuda else "cpu")
    set_matmul_precision("cuda" if cuda else "cpu")
    return partial(model_worst_ranks, model.to("cuda" if cuda else "cpu"), vocab, progress=progress), vocab, meta


def check_vocabulary_fits(
    model_dir: str | Path, vocab: KeyVocabulary, path: str | Path, sequences: Sequence[Sequence[int]]
) -> None:
    """Refuse normal data whose keys the model mostly never saw: a model of another key numbering flags everything."""
    share = vocab.unknown_share(sequences)
    if share > MAX_UNKNOWN_SHARE:
        raise ModelFolderError(
            f"{model_dir}: {share:.0%} of the keys in {path} are unknown to this model, so it was "
            "made for another key vocabulary; evaluate it on data numbered like its training data "
            "(sequences --key_map its keys.json) or train on this data"
        )


def evaluate_detector(
    model_dir: str | Path,
    normal_path: str | Path,
    abnormal_path: str | Path,
    top_k: int | None = None,
    output_json: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Score a model folder on normal and abnormal DeepLog files; write and return the evaluation record."""
    normal, abnormal = read_sequences(normal_path), read_sequences(abnormal_path)
    check_vocabulary_fits(model_dir, vocabulary_of(read_meta(model_dir), model_dir), normal_path, normal)
    score, vocab, meta = load_detector(model_dir, device, threads, progress)
    candidates = len(vocab.candidate_ids())
    k = top_k if top_k is not None else meta.get("top_k")
    if not k or not 1 <= k < candidates:
        raise ValueError(
            f"top_k={k}; choose K between 1 and {candidates - 1} (the model predicts {candidates} "
            "candidates; at K = all of them only keys never seen in training are flagged)"
        )
    started = time.perf_counter()
    normal_worst, abnormal_worst = score(normal, source=normal_path), score(abnormal, source=abnormal_path)
    record = {
        **evaluate_worst_ranks(normal_worst, abnormal_worst, k, vocab),
        "model": str(model_dir),
        "method": meta.get("method", meta.get("kind")),
        "normal": str(normal_path),
        "abnormal": str(abnormal_path),
        "seconds": time.perf_counter() - started,
    }
    if output_json is not None:
        write_json_atomic(output_json, record)
    return record
