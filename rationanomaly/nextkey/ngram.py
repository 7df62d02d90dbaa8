"""The floor every learned detector must beat: an n-gram model of normal key sequences with the same top-K rule.

Counting, no training: for every context of the last 1..n-1 tokens (the framing's `<bos>` included) the counts of
the token that followed. At a position, candidates are ranked by their count after the longest context, ties
broken by the next shorter context, down to plain key frequency (a lexicographic backoff, so a context seen in
training with fewer than K continuations still fills its K slots with the likeliest keys). The rank of the real
key under that order feeds the same worst-rank detection as the neural models.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rationanomaly.io import write_json_atomic
from rationanomaly.nextkey.keys import (
    DATASET_TOP_K,
    SESSION,
    KeyVocabulary,
    build_vocabulary,
    default_top_k,
    read_sequences,
)
from rationanomaly.nextkey.models import META_FILE, NGRAM

DEFAULT_ORDER = 3  # ours: two keys of context; DeepLog's HDFS windows are 10 keys, but counts thin out fast


@dataclass(frozen=True)
class NgramModel:
    """Continuation counts per context (a tuple of token ids, 0..order-1 long)."""

    order: int
    vocab: KeyVocabulary
    counts: dict[tuple[int, ...], dict[int, int]]
    _ranks: dict = field(default_factory=dict, compare=False, repr=False)  # context -> {token: rank}, filled lazily

    def contexts(self, history: Sequence[int]) -> list[tuple[int, ...]]:
        """The contexts consulted after `history`, longest first: its last n-1, n-2, .., 0 tokens."""
        return [tuple(history[-m:]) if m else () for m in range(self.order - 1, -1, -1)]

    def rank_table(self, history: Sequence[int]) -> dict[int, int]:
        """Candidate -> rank (1 + number of candidates strictly better under the backoff order)."""
        key = tuple(history[-(self.order - 1) :]) if self.order > 1 else ()
        table = self._ranks.get(key)
        if table is None:
            contexts = self.contexts(history)
            scores = {v: tuple(self.counts.get(c, {}).get(v, 0) for c in contexts) for v in self.vocab.candidate_ids()}
            ordered = sorted(scores.values(), reverse=True)
            table = {v: 1 + _count_greater(ordered, score) for v, score in scores.items()}
            self._ranks[key] = table
        return table

    def worst_ranks(self, sequences: Sequence[Sequence[int]], source: object = None) -> list[int]:
        """Worst rank of the real keys over the scored positions of each sequence (0 when none is scored).

        `source` is the transformer detector's (it names the file of a too-long sequence); counts take any length.
        """
        from rationanomaly.nextkey.detect import unseen_rank

        unseen = unseen_rank(self.vocab)
        worst = []
        for tokens in self.vocab.encode_all(sequences):
            ranks = [
                self.rank_table(tokens[:position]).get(tokens[position], unseen)
                for position in range(self.vocab.first_scored, len(tokens))
            ]
            worst.append(max(ranks, default=0))
        return worst

    def to_meta(self) -> dict:
        """nextkey.json of an n-gram model folder (counts included: the model is its counts)."""
        return {
            "kind": NGRAM,
            "order": self.order,
            "vocabulary": self.vocab.to_dict(),
            "counts": [
                [list(context), {str(t): n for t, n in sorted(nexts.items())}]
                for context, nexts in sorted(self.counts.items())
            ],
        }


def _count_greater(descending: list[tuple[int, ...]], score: tuple[int, ...]) -> int:
    """How many scores in the descending list are strictly greater than `score`."""
    low, high = 0, len(descending)
    while low < high:
        middle = (low + high) // 2
        if descending[middle] > score:
            low = middle + 1
        else:
            high = middle
    return low


def fit_ngram(sequences: Sequence[Sequence[int]], vocab: KeyVocabulary, order: int = DEFAULT_ORDER) -> NgramModel:
    """Count the continuations of every context of up to order-1 tokens over the framed training sequences."""
    if order < 1:
        raise ValueError(f"order={order}; an n-gram looks at n-1 >= 0 tokens of context")
    counts: dict[tuple[int, ...], dict[int, int]] = {}
    model = NgramModel(order, vocab, counts)
    for tokens in vocab.encode_all(sequences):
        for position in range(1, len(tokens)):
            for context in set(model.contexts(tokens[:position])):
                nexts = counts.setdefault(context, {})
                nexts[tokens[position]] = nexts.get(tokens[position], 0) + 1
    return model


def save_ngram(model: NgramModel, output_dir: str | Path, extra: dict | None = None) -> Path:
    """Write the n-gram model folder (just nextkey.json)."""
    output_dir = Path(output_dir)
    write_json_atomic(output_dir / META_FILE, {**model.to_meta(), **(extra or {})}, indent=None)
    return output_dir


def ngram_from_meta(meta: dict) -> NgramModel:
    """Inverse of `NgramModel.to_meta`."""
    counts = {tuple(context): {int(t): int(n) for t, n in nexts.items()} for context, nexts in meta["counts"]}
    return NgramModel(int(meta["order"]), KeyVocabulary.from_dict(meta["vocabulary"]), counts)


def train_ngram(
    train_path: str | Path,
    output_dir: str | Path,
    order: int = DEFAULT_ORDER,
    dataset: str = "hdfs",
    top_k: int | None = None,
    framing: str = SESSION,
) -> dict:
    """Fit the n-gram floor on a DeepLog file and save it with its K (LogGPT's rule unless given); returns its meta."""
    started = time.perf_counter()
    sequences = read_sequences(train_path)
    vocab = build_vocabulary(sequences, framing)
    model = fit_ngram(sequences, vocab, order)
    extra = {
        "method": NGRAM,
        "top_k": top_k if top_k is not None else default_top_k(len(vocab.keys), DATASET_TOP_K[dataset]),
        "train": str(train_path),
        "sequences": {"train": len(sequences)},
        "seconds": time.perf_counter() - started,
    }
    save_ngram(model, output_dir, extra)
    return {**extra, "kind": NGRAM, "order": order}
