"""Synthetic key sequences (seeded) for tests and quick runs: a made-up block life cycle and three ways to break it.

Nothing here comes from a real log. A normal session: allocate (1), r replicas received (2) and acknowledged (3)
with r in 1..3, an optional verification (4) between them, r deletions (5), close (6); a rare but normal
re-send (7) after the receipts in one session of ten. Abnormal sessions are normal ones with one of: an error key
(8) replacing a key, the session cut after its third key (a block that never finished), or a delete (5) moved
before the receipts (events out of order).
"""

from __future__ import annotations

import random
from pathlib import Path

from rationanomaly.nextkey.keys import KeySequence, write_sequences

ERROR_KEY = 8
BREAKS = ("error", "truncated", "order")


def normal_session(rng: random.Random) -> KeySequence:
    """One normal life cycle (module docstring)."""
    replicas = rng.randint(1, 3)
    keys = [1] + [2] * replicas
    if rng.random() < 0.1:
        keys.append(7)
    if rng.random() < 0.5:
        keys.append(4)
    return tuple(keys + [3] * replicas + [5] * replicas + [6])


def abnormal_session(rng: random.Random, kind: str | None = None) -> KeySequence:
    """A normal session broken one way (`kind` in BREAKS, random when None)."""
    keys = list(normal_session(rng))
    kind = kind or rng.choice(BREAKS)
    if kind == "error":
        keys[rng.randrange(1, len(keys))] = ERROR_KEY
    elif kind == "truncated":
        keys = keys[:3]
    elif kind == "order":
        keys.insert(1, 5)
    else:
        raise ValueError(f"kind={kind!r}; use one of {BREAKS}")
    return tuple(keys)


def synthetic_sequences(normal: int, abnormal: int, seed: int = 0) -> tuple[list[KeySequence], list[KeySequence]]:
    """`normal` and `abnormal` sessions drawn with one seeded generator."""
    rng = random.Random(seed)
    return [normal_session(rng) for _ in range(normal)], [abnormal_session(rng) for _ in range(abnormal)]


def write_synthetic(output_dir: str | Path, normal: int = 400, abnormal: int = 100, seed: int = 0) -> dict[str, Path]:
    """Write `normal` and `abnormal` DeepLog files into `output_dir`; returns their paths."""
    output_dir = Path(output_dir)
    normal_rows, abnormal_rows = synthetic_sequences(normal, abnormal, seed)
    return {
        "normal": write_sequences(output_dir / "normal", normal_rows),
        "abnormal": write_sequences(output_dir / "abnormal", abnormal_rows),
    }
