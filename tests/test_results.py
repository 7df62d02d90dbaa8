"""Results tables: the paper's Table 2 constants and our rows beside them."""

from __future__ import annotations

import json
import re

import pytest

from rationanomaly.results import (
    COLUMNS,
    PAPER_TABLE2,
    ResultRow,
    comparison_table,
    paper_rows,
    read_evaluation_scores,
    table2,
)


@pytest.mark.parametrize(
    ("dataset", "level", "methods"),
    [
        ("BGL", "template", ["LogPrompt", "Llama-2-7B zero-shot", "RationAnomaly"]),  # template cells of 3 methods
        ("Spirit", "session", list(PAPER_TABLE2)),  # every method reports sessions
    ],
)
def test_paper_rows_leave_out_empty_cells(dataset, level, methods):
    assert [row.method for row in paper_rows(dataset, level)] == methods


def test_paper_rows_reject_an_unknown_column():
    with pytest.raises(ValueError, match="no Table 2 column for 'HDFS'"):
        paper_rows("HDFS", "session")


def test_comparison_table_puts_our_row_after_the_paper_and_names_each_test_set():
    ours = ResultRow("ours (GRPO)", (0.5, 0.25, 1.0), "metrics.json", "Spirit_test.json: 260 (36 abnormal)")
    lines = comparison_table("Spirit", "template", [ours]).splitlines()
    assert lines[2] == "| method | F1 | precision | recall | test set | source |"
    assert lines[-3] == "| RationAnomaly | 0.862 | 0.899 | 0.847 | the paper's: 8,000 entries | paper, Table 2 |"
    assert lines[-2] == "| *below: ours, on another test set (not comparable cell by cell)* | | | | | |"
    assert lines[-1] == "| ours (GRPO) | 0.500 | 0.250 | 1.000 | Spirit_test.json: 260 (36 abnormal) | metrics.json |"


def test_comparison_table_without_ours_has_no_separator():
    lines = comparison_table("BGL", "session", []).splitlines()
    assert lines[-1] == "| RationAnomaly | 0.909 | 0.900 | 0.919 | the paper's: 8,000 sessions | paper, Table 2 |"


def test_table2_renders_cells_like_the_paper_and_appends_ours():
    table = table2({"keyword rule": {("BGL", "template"): (1.0, 1.0, 1.0)}})
    lines = table.splitlines()
    assert len(lines) == 2 + len(PAPER_TABLE2) + 1
    assert lines[-2] == "| RationAnomaly | .909/.900/.919 | .887/.898/.881 | .958/.959/.959 | .862/.899/.847 |"
    assert lines[-1] == "| keyword rule (ours) | - | 1.00/1.00/1.00 | - | - |"


def test_read_evaluation_scores_picks_f1_precision_recall(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"template": {"f1": 0.4, "precision": 0.5, "recall": 1 / 3}}))
    assert read_evaluation_scores(tmp_path / "m.json", "template") == (0.4, 0.5, 1 / 3)
    assert read_evaluation_scores(tmp_path / "m.json", "session") is None


@pytest.mark.realdata
def test_paper_constants_equal_the_table_in_design_md(public_data):
    design = public_data.parent / "DESIGN.md"
    if not design.exists():
        pytest.skip(f"{design} not found beside the public data")
    rows = {}
    for line in design.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in PAPER_TABLE2:
            rows[cells[0]] = cells[1:]
    assert set(rows) == set(PAPER_TABLE2)
    for method, cells in rows.items():
        for column, cell in zip(COLUMNS, cells, strict=True):
            expected = None if cell == "-" else tuple(float(v) for v in re.findall(r"\.\d+", cell))
            assert PAPER_TABLE2[method][column] == expected, (method, column)
