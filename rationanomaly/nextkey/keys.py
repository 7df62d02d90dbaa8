"""Log-key sequences: the DeepLog file format, the key vocabulary, and how a sequence is framed for a model.

DeepLog format (what `../shared/data/deeplog/` and most next-key detectors use): one sequence a line, its log
keys as space-separated non-negative integers; a file holds one class (normal or abnormal), so it carries no
label. Blank lines are skipped.

Vocabulary: four special tokens, then one token per key seen in training. A key that training never saw maps
to `<unk>`; it can never be predicted (the detector masks specials out of the candidates), so it always falls
outside the top K and its sequence is flagged. LogGPT's code lets `<unk>` compete with the keys; the outcome
is the same in practice (training never shows it), the mask only makes it explicit.

Framing:
- `session` (HDFS blocks, DeepLog files): `<bos> k1 .. kn <eos>`; every key and the end are scored, so a session
  that stops early is caught at its `<eos>` (36% of DeepLog's abnormal HDFS sessions are 2-3 keys long).
  LogGPT's code scores from k2 on; we also score k1 (predicted from `<bos>` alone).
- `window` (BGL/Thunderbird time or line windows): `<bos> k1 .. kn`, scored from k2 on; a window starts and ends
  at an arbitrary time, so neither its first key nor its end says anything (LogGPT: no `<bos>`/`<eos>` there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rationanomaly.io import write_text_atomic

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIALS))
SESSION, WINDOW = "session", "window"
FRAMINGS = (SESSION, WINDOW)
# LogGPT's K per dataset (args/*_config.py in nokia/LogGPT); K = min(floor(0.95 * keys), this).
DATASET_TOP_K = {"hdfs": 7, "bgl": 80, "thunderbird": 690}
TOP_K_SHARE = 0.95  # LogGPT: K never exceeds 95% of the keys, or every key would be "predicted"
MAX_POSITIONS = 512  # LogGPT's n_positions: the context of a model built from scratch, special tokens included
FRAMING_TOKENS = {SESSION: 2, WINDOW: 1}  # <bos> and <eos> around a session's keys, <bos> before a window's


class SequenceFormatError(ValueError):
    """A key-sequence file that is not in the DeepLog format (or holds nothing)."""


KeySequence = tuple[int, ...]


def parse_sequence_line(line: str, path: str | Path = "<text>", line_number: int = 1) -> KeySequence:
    """One DeepLog line -> its keys; a key that is not a non-negative integer is an error naming file and line."""
    keys = []
    for token in line.split():
        if not token.isdigit():
            raise SequenceFormatError(
                f"{path}: line {line_number}: key {token!r} is not a non-negative integer; "
                "a DeepLog sequence file holds space-separated log-key numbers "
                "(make one with `python -m rationanomaly.nextkey sequences`)"
            )
        keys.append(int(token))
    return tuple(keys)


def read_sequences(path: str | Path) -> list[KeySequence]:
    """All sequences of a DeepLog file in file order; an error when the file is missing or holds none."""
    path = Path(path)
    if not path.is_file():
        raise SequenceFormatError(f"{path}: no such file; pass a DeepLog key-sequence file (one sequence a line)")
    sequences = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                sequences.append(parse_sequence_line(line, path, number))
    if not sequences:
        raise SequenceFormatError(
            f"{path}: holds no sequence; a DeepLog file has one line of space-separated log keys per session or window"
        )
    return sequences


def format_sequences(sequences: Iterable[Sequence[int]]) -> str:
    """DeepLog text: one line a sequence (an empty sequence would vanish, so it is refused)."""
    lines = []
    for index, sequence in enumerate(sequences):
        if not sequence:
            raise ValueError(f"sequence {index} is empty; a DeepLog line needs at least one key")
        lines.append(" ".join(str(int(key)) for key in sequence))
    return "".join(f"{line}\n" for line in lines)


def write_sequences(path: str | Path, sequences: Iterable[Sequence[int]]) -> Path:
    """Write sequences in the DeepLog format, atomically."""
    return write_text_atomic(path, format_sequences(sequences))


def max_keys(n_positions: int, framing: str) -> int:
    """The most keys one sequence may hold in a model of `n_positions` positions: the framing's tokens take the rest."""
    return n_positions - FRAMING_TOKENS[framing]


def default_top_k(key_count: int, limit: int) -> int:
    """LogGPT's K: min(floor(0.95 * keys), limit), and at least 1."""
    return max(1, min(int(TOP_K_SHARE * key_count), limit))


@dataclass(frozen=True)
class KeyVocabulary:
    """Token ids of the keys seen in training (after the four specials) and the framing the model was trained with."""

    keys: tuple[int, ...]
    framing: str = SESSION

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing={self.framing!r}; use one of {FRAMINGS}")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("vocabulary keys must be unique")

    @property
    def size(self) -> int:
        """Number of tokens: specials plus keys."""
        return len(SPECIALS) + len(self.keys)

    @property
    def first_scored(self) -> int:
        """Token position of the first scored target: 1 (k1 after `<bos>`) for sessions, 2 (k2) for windows."""
        return 1 if self.framing == SESSION else 2

    def token_ids(self) -> dict[int, int]:
        """Key -> token id."""
        return {key: len(SPECIALS) + index for index, key in enumerate(self.keys)}

    def candidate_ids(self) -> list[int]:
        """Tokens a detector may predict: every key, and `<eos>` when sessions end with it."""
        keys = list(range(len(SPECIALS), self.size))
        return ([EOS_ID] if self.framing == SESSION else []) + keys

    def encode(self, sequence: Sequence[int], ids: dict[int, int] | None = None) -> list[int]:
        """Token ids of one sequence, framed: `<bos>` first, `<eos>` last for sessions, unseen keys as `<unk>`."""
        ids = self.token_ids() if ids is None else ids
        tokens = [BOS_ID] + [ids.get(int(key), UNK_ID) for key in sequence]
        return tokens + [EOS_ID] if self.framing == SESSION else tokens

    def encode_all(self, sequences: Iterable[Sequence[int]]) -> list[list[int]]:
        """`encode` over many sequences (the key table is built once)."""
        ids = self.token_ids()
        return [self.encode(sequence, ids) for sequence in sequences]

    def unknown_share(self, sequences: Iterable[Sequence[int]]) -> float:
        """Share of key occurrences the vocabulary has never seen (0.0 for no keys)."""
        known = set(self.keys)
        total = unknown = 0
        for sequence in sequences:
            total += len(sequence)
            unknown += sum(int(key) not in known for key in sequence)
        return unknown / total if total else 0.0

    def to_dict(self) -> dict:
        """JSON form stored in a model folder's nextkey.json."""
        return {"specials": list(SPECIALS), "keys": list(self.keys), "framing": self.framing}

    @classmethod
    def from_dict(cls, data: dict) -> KeyVocabulary:
        """Inverse of `to_dict`; refuses a vocabulary written with other special tokens."""
        if list(data.get("specials", [])) != list(SPECIALS):
            raise ValueError(f"vocabulary has specials {data.get('specials')}; this version uses {list(SPECIALS)}")
        return cls(tuple(int(key) for key in data["keys"]), data.get("framing", SESSION))


def build_vocabulary(sequences: Iterable[Sequence[int]], framing: str = SESSION) -> KeyVocabulary:
    """The vocabulary of the keys occurring in `sequences`, in ascending key order (stable across runs)."""
    return KeyVocabulary(tuple(sorted({int(key) for sequence in sequences for key in sequence})), framing)
