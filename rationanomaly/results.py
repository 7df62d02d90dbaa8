"""Results tables: our evaluations beside the paper's Table 2 rows (F1 / precision / recall, abnormal class).

The paper's numbers are constants copied from DESIGN.md (arXiv 2509.14693, Table 2); `None` marks a
cell the paper leaves empty (`-`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DATASETS = ("BGL", "Spirit")
LEVELS = ("session", "template")
COLUMNS = tuple((d, lvl) for d in DATASETS for lvl in LEVELS)

Scores = tuple[float, float, float]  # (F1, precision, recall), the paper's cell order

# Paper, Table 2: {method: {(dataset, level): (F1, precision, recall) or None}}.
PAPER_TABLE2: dict[str, dict[tuple[str, str], Scores | None]] = {
    "DeepLog": {
        ("BGL", "session"): (0.869, 0.811, 0.935),
        ("BGL", "template"): None,
        ("Spirit", "session"): (0.905, 0.891, 0.919),
        ("Spirit", "template"): None,
    },
    "LogAnomaly": {
        ("BGL", "session"): (0.857, 0.770, 0.965),
        ("BGL", "template"): None,
        ("Spirit", "session"): (0.925, 0.880, 0.975),
        ("Spirit", "template"): None,
    },
    "LogRobust": {
        ("BGL", "session"): (0.811, 0.704, 0.956),
        ("BGL", "template"): None,
        ("Spirit", "session"): (0.921, 0.856, 0.996),
        ("Spirit", "template"): None,
    },
    "LogPrompt": {
        ("BGL", "session"): (0.834, 0.874, 0.811),
        ("BGL", "template"): (0.827, 0.724, 0.964),
        ("Spirit", "session"): (0.917, 0.859, 0.983),
        ("Spirit", "template"): (0.795, 0.834, 0.858),
    },
    "Llama-2-7B zero-shot": {
        ("BGL", "session"): (0.707, 0.741, 0.753),
        ("BGL", "template"): (0.686, 0.858, 0.633),
        ("Spirit", "session"): (0.800, 0.881, 0.861),
        ("Spirit", "template"): (0.655, 0.839, 0.598),
    },
    "RationAnomaly": {
        ("BGL", "session"): (0.909, 0.900, 0.919),
        ("BGL", "template"): (0.887, 0.898, 0.881),
        ("Spirit", "session"): (0.958, 0.959, 0.959),
        ("Spirit", "template"): (0.862, 0.899, 0.847),
    },
}
PAPER_SOURCE = "paper, Table 2"
# The paper's test sets (DESIGN.md: "test sets of 8,000 entries / sessions per dataset").
PAPER_TEST_SETS = {"template": "the paper's: 8,000 entries", "session": "the paper's: 8,000 sessions"}


@dataclass(frozen=True)
class ResultRow:
    """One method's scores for one dataset and level, and where they come from."""

    method: str
    scores: Scores
    source: str
    test_set: str = ""  # name and size of the test set behind the scores, e.g. "BGL_test.json: 354 (24 abnormal)"


def paper_rows(dataset: str, level: str) -> list[ResultRow]:
    """The paper's rows that report this dataset and level (empty cells left out)."""
    if (dataset, level) not in COLUMNS:
        raise ValueError(f"no Table 2 column for {dataset!r} / {level!r}; datasets {DATASETS}, levels {LEVELS}")
    return [
        ResultRow(m, cells[(dataset, level)], PAPER_SOURCE)
        for m, cells in PAPER_TABLE2.items()
        if cells[(dataset, level)] is not None
    ]


def evaluation_scores(evaluation: Mapping, level: str) -> Scores | None:
    """(F1, precision, recall) of one level of a model_evaluate.py JSON, None when that level is absent."""
    block = evaluation.get(level)
    return None if block is None else (block["f1"], block["precision"], block["recall"])


def read_evaluation_scores(path: str | Path, level: str) -> Scores | None:
    """evaluation_scores() of a JSON file written by model_evaluate.py --output-json."""
    return evaluation_scores(json.loads(Path(path).read_text(encoding="utf-8")), level)


def _cell(scores: Scores | None) -> str:
    """`.887/.898/.881` like the paper, `-` for an empty cell."""
    if scores is None:
        return "-"
    return "/".join(f"{v:.3f}".removeprefix("0") if v < 1 else f"{v:.2f}" for v in scores)


def comparison_table(dataset: str, level: str, ours: Sequence[ResultRow]) -> str:
    """Markdown: the paper's rows for one dataset and level, then ours, as F1, precision, recall columns.

    Every row names its test set: ours is rarely the paper's 8,000-entry set, so a line between the two
    groups says that the rows below were measured on another test set.
    """
    lines = [
        f"{dataset} {level} level (abnormal class)",
        "",
        "| method | F1 | precision | recall | test set | source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = [(row, PAPER_TEST_SETS[level]) for row in paper_rows(dataset, level)]
    for row, test_set in rows:
        f1, precision, recall = (f"{v:.3f}" for v in row.scores)
        lines.append(f"| {row.method} | {f1} | {precision} | {recall} | {test_set} | {row.source} |")
    if ours:
        lines.append("| *below: ours, on another test set (not comparable cell by cell)* | | | | | |")
    for row in ours:
        f1, precision, recall = (f"{v:.3f}" for v in row.scores)
        lines.append(f"| {row.method} | {f1} | {precision} | {recall} | {row.test_set or 'ours'} | {row.source} |")
    return "\n".join(lines) + "\n"


def table2(ours: Mapping[str, Mapping[tuple[str, str], Scores | None]] | None = None) -> str:
    """Markdown in the layout of the paper's Table 2 (F1/precision/recall per cell), our rows appended."""
    header = "| method | " + " | ".join(f"{d} {lvl}" for d, lvl in COLUMNS) + " |"
    lines = [header, "| --- " * (len(COLUMNS) + 1) + "|"]
    rows = [*PAPER_TABLE2.items(), *((f"{m} (ours)", c) for m, c in (ours or {}).items())]
    for method, cells in rows:
        lines.append(f"| {method} | " + " | ".join(_cell(cells.get(col)) for col in COLUMNS) + " |")
    return "\n".join(lines) + "\n"
