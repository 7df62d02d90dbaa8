"""Template-level split: training counts at a target rate, order, exclusion from session tests, sheet or
structured-log input, files, CLI."""

from __future__ import annotations

import json
import runpy

import pytest

from rationanomaly.labels import ABNORMAL, NORMAL
from rationanomaly.patch import NORMALIZED, patch_files
from rationanomaly.paths import REPO_ROOT, SAMPLE_DATA_DIR
from rationanomaly.samples import SampleFormatError, read_samples
from rationanomaly.sessions import Session, read_sessions, write_sessions
from rationanomaly.splits import (
    CHRONOLOGICAL,
    RANDOM,
    Template,
    build_template_split,
    exclude_training_templates,
    read_templates,
    split_templates,
    training_counts,
)


@pytest.mark.parametrize(
    ("abnormal", "normal", "size", "expected"),
    [
        (400, 3000, 2000, (300, 1700)),  # plenty: both targets met
        (90, 1323, 2000, (90, 510)),  # few anomalies: rate kept, size shrinks to 600
        (500, 100, 2000, (18, 100)),  # few normals: anomalies cut back to keep 15%
        (0, 50, 2000, (0, 50)),  # no anomaly: rate impossible, keep the normals
        (10, 0, 2000, (10, 0)),
        (1, 1, 2000, (1, 1)),  # never drop the only anomaly
        (300, 1700, 100, (15, 85)),  # size cap
    ],
)
def test_training_counts_keep_the_rate_first_then_the_size(abnormal, normal, size, expected):
    assert training_counts(abnormal, normal, size, 0.15) == expected


@pytest.mark.parametrize(("rate", "size"), [(0.0, 10), (1.0, 10), (0.15, 0)])
def test_training_counts_reject_impossible_targets(rate, size):
    with pytest.raises(ValueError):
        training_counts(1, 1, size, rate)


def templates(pattern: str) -> list[Template]:
    """'nnan' -> four templates t0..t3 labelled normal, normal, abnormal, normal."""
    return [Template(f"t{i}", ABNORMAL if c == "a" else NORMAL) for i, c in enumerate(pattern)]


def test_chronological_split_takes_earliest_templates_and_tests_on_the_rest():
    split = split_templates(templates("nnannnnnnnannaa"), train_ratio=0.6, train_size=100, anomaly_rate=0.25)
    # pool t0..t8 holds 1 anomaly -> 1 abnormal + round(1 * 0.75 / 0.25) = 3 normal, the earliest ones
    assert [t.text for t in split.train] == ["t0", "t1", "t2", "t3"]
    assert [t.text for t in split.unused] == ["t4", "t5", "t6", "t7", "t8"]
    assert [t.text for t in split.test] == [f"t{i}" for i in range(9, 15)]


def test_random_split_is_seeded():
    data = templates("an" * 30)
    first, again, other = (split_templates(data, 0.5, 100, 0.25, RANDOM, seed) for seed in (1, 1, 2))
    assert first == again and first != other
    assert sum(t.label == ABNORMAL for t in first.train) / len(first.train) == pytest.approx(0.25, abs=0.02)


def test_split_parts_cover_every_template_once():
    data = templates("nnannnnannaannnan")
    split = split_templates(data, 0.6, 5, 0.2, CHRONOLOGICAL)
    assert sorted(t.text for t in split.train + split.test + split.unused) == sorted(t.text for t in data)


@pytest.mark.parametrize(("match", "kept"), [("exact", [1]), (NORMALIZED, [])])
def test_exclude_training_templates_drops_sessions_containing_one(match, kept):
    sessions = [Session(0, 1, ("a <*>", "b"), (0, 0)), Session(1, 3, ("c, d", "e"), (0, 1))]
    remaining, dropped = exclude_training_templates(sessions, ["b", "c d"], match)
    assert [s.session_id for s in remaining] == kept
    assert len(remaining) + len(dropped) == 2


def test_build_template_split_on_patched_sample(tmp_path):
    patch_files(
        [(SAMPLE_DATA_DIR / "bgl_templates.csv", tmp_path / "bgl.csv")],
        SAMPLE_DATA_DIR / "anomaly_patch.json",
        tmp_path / "report.json",
        NORMALIZED,
    )
    sessions = [
        Session(0, 1, ("never seen",), (1,)),
        Session(1, 2, ("ciod: accepted connection from compute node <*> on port <*>",), (0,)),
    ]
    write_sessions(tmp_path / "sessions.json", sessions)
    meta = build_template_split(tmp_path / "bgl.csv", tmp_path / "out", "BGL", sessions_path=tmp_path / "sessions.json")
    train, test = read_samples(tmp_path / "out" / "BGL_train.json"), read_samples(tmp_path / "out" / "BGL_test.json")
    # pool = first 40 templates, 10 abnormal + 30 normal: too few normals for 15%, so every normal and
    # round(30 * 0.15 / 0.85) = 5 abnormal train; the other 5 abnormal are unused; the test set is the last 10
    assert (len(train), sum(s.label == ABNORMAL for s in train)) == (35, 5)
    assert (len(test), meta["test"]["abnormal"], meta["unused"]["entries"]) == (10, 4, 5)
    assert {s.label for s in train + test} == {NORMAL, ABNORMAL}
    assert meta["note"].startswith("target 2000 entries at 15% not achievable")
    assert (meta["sessions"]["kept"], meta["sessions"]["dropped"]) == (1, 1)
    assert [s.session_id for s in read_sessions(tmp_path / "out" / "BGL_test_sessions.json")] == [0]
    assert json.loads((tmp_path / "out" / "BGL_split.json").read_text()) == meta


def test_template_split_cli_runs_and_summarises(tmp_path, capsys):
    main = runpy.run_path(str(REPO_ROOT / "datasets" / "template_split.py"), run_name="cli")["main"]
    argv = [
        "--input",
        str(SAMPLE_DATA_DIR / "spirit_templates.csv"),
        "--output-dir",
        str(tmp_path),
        "--order",
        "random",
        "--seed",
        "3",
    ]
    assert main(argv) == 0
    meta = json.loads((tmp_path / "spirit_templates_split.json").read_text())
    assert meta["seed"] == 3 and meta["parameters"]["order"] == RANDOM
    assert "spirit_templates" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "count", "source"),
    [
        ("bgl_templates.csv", 50, {"format": "sheet", "duplicates": 0}),
        (
            "bgl_structured.csv",
            49,
            {"format": "structured", "lines": 1500, "abnormal_lines": 116, "duplicate_line_ids": 0, "mixed_labels": 0},
        ),  # 1500 lines, 49 distinct EventTemplates
    ],
)
def test_read_templates_detects_the_input_format(name, count, source):
    templates, found = read_templates(SAMPLE_DATA_DIR / name)
    assert (len(templates), found) == (count, source)


def test_read_templates_labels_a_structured_template_abnormal_if_any_line_is(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(
        "LineId,Label,Content,EventId,EventTemplate\n1,-,x,E1,a <*>\n2,-,y,E2,b <*>\n3,KERNDTLB,z,E1,a <*>\n",
        encoding="utf-8",
    )
    templates, found = read_templates(path)
    assert templates == [Template("a <*>", ABNORMAL), Template("b <*>", NORMAL)]
    assert (found["lines"], found["abnormal_lines"], found["mixed_labels"]) == (3, 1, 1)


def test_template_split_cli_accepts_a_structured_log(tmp_path, capsys):
    main = runpy.run_path(str(REPO_ROOT / "datasets" / "template_split.py"), run_name="cli")["main"]
    assert main(["--input", str(SAMPLE_DATA_DIR / "bgl_structured.csv"), "--output_dir", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "bgl_structured_split.json").read_text())
    # pool = first 39 of 49 templates, all 10 anomalies among them: 5 abnormal + 29 normal at 15%, 5 unused
    assert (meta["templates"], meta["format"], meta["mixed_labels"]) == (49, "structured", 0)
    assert (meta["train"]["entries"], meta["train"]["abnormal"], meta["test"]["entries"]) == (34, 5, 10)
    assert len(read_samples(tmp_path / "bgl_structured_test.json")) == 10
    assert "from 1500 log lines (116 abnormal); 0 templates have both" in capsys.readouterr().out


@pytest.mark.realdata
def test_public_bgl_2k_structured_log_splits_as_templates(public_data, tmp_path):
    meta = build_template_split(public_data / "loghub" / "BGL_2k.log_structured.csv", tmp_path, "BGL2k")
    # 120 templates, 15 abnormal; the 96-template pool holds 10: 10 + round(10 * 0.85 / 0.15) = 67 entries
    assert (meta["templates"], meta["lines"], meta["abnormal_lines"], meta["mixed_labels"]) == (120, 2000, 143, 0)
    assert (meta["train"]["entries"], meta["train"]["abnormal"]) == (67, 10)
    assert (meta["test"]["entries"], meta["test"]["abnormal"], meta["unused"]["entries"]) == (24, 5, 29)


@pytest.mark.realdata
def test_public_bgl_split_reports_what_the_pool_allows(public_data, tmp_path):
    patch_files(
        [(public_data / "logprompt" / "templates_bgl.xlsx", tmp_path / "bgl.xlsx")],
        public_data / "rationanomaly" / "anomaly_patch.json",
        tmp_path / "r.json",
        NORMALIZED,
    )
    meta = build_template_split(tmp_path / "bgl.xlsx", tmp_path, "BGL")
    # 1412-template pool holds 88 of the 112 rectified anomalies: 88 + round(88 * 0.85 / 0.15) = 587 entries
    assert (meta["train"]["entries"], meta["train"]["abnormal"]) == (587, 88)
    assert (meta["test"]["entries"], meta["test"]["abnormal"]) == (354, 24)


# ---- names, degenerate inputs and numbers --------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped", "sub/BGL", ".hidden", ".."])
def test_template_split_name_cannot_leave_the_output_folder(tmp_path, cli, snapshot, name):
    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path)
    result = cli(
        "datasets/template_split.py",
        [
            "--input",
            str(SAMPLE_DATA_DIR / "bgl_templates.csv"),
            "--name",
            name,
            "--output_dir",
            str(tmp_path / "out" / "a" / "b"),
        ],
    )
    assert result.code == 2 and result.errors == [
        f"error: --name {name!r} is not a plain name (no '/', '\\', leading '.' or '-'); it names files inside the "
        "output folder: use e.g. BGL"
    ]
    assert snapshot(tmp_path) == before and not (tmp_path / "escaped_train.json").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log,label\n", "no rows below the header"),  # header only: no empty splits written
        ("log,label\nonly one <*>,1\n", "1 templates leave the training side empty"),  # nothing to train on
    ],
)
def test_template_split_refuses_degenerate_sheets(tmp_path, cli, text, message):
    (tmp_path / "sheet.csv").write_text(text, encoding="utf-8")
    result = cli(
        "datasets/template_split.py", ["--input", str(tmp_path / "sheet.csv"), "--output_dir", str(tmp_path / "out")]
    )
    assert result.code == 2 and len(result.errors) == 1 and message in result.errors[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--train_ratio", "0"],
        ["--train_ratio", "1"],
        ["--anomaly_rate", "1.5"],
        ["--train_size", "0"],
        ["--train_size", "-1"],
    ],
)
def test_template_split_refuses_numbers_outside_their_range(tmp_path, cli, capsys, argv):
    with pytest.raises(SystemExit) as stopped:
        cli(
            "datasets/template_split.py",
            ["--input", str(SAMPLE_DATA_DIR / "bgl_templates.csv"), "--output_dir", str(tmp_path), *argv],
        )
    assert stopped.value.code == 2 and f"error: argument {argv[0]}" in capsys.readouterr().err


def test_template_split_says_when_no_session_is_left_and_evaluation_refuses_that_file(tmp_path, cli):
    sessions = tmp_path / "sessions.json"
    write_sessions(sessions, [Session(0, 1, ("clock card <*> synchronised with reference <*>",), (0,))])
    sheet = SAMPLE_DATA_DIR / "bgl_templates.csv"
    result = cli(
        "datasets/template_split.py",
        [
            "--input",
            str(sheet),
            "--name",
            "B",
            "--output_dir",
            str(tmp_path / "out"),
            "--sessions",
            str(sessions),
            "--train_ratio",
            "0.99",
        ],
    )
    assert result.code == 0  # the main outputs are fine; the secondary one is empty, and said to be
    assert (
        "kept 0 (0 abnormal), dropped 1 that contain a training template; none left for session-level "
        "evaluation (try a smaller --train_ratio)" in result.out
    )
    assert json.loads((tmp_path / "out" / "B_test_sessions.json").read_text()) == []
    with pytest.raises(SampleFormatError, match="B_test_sessions.json: the list is empty"):
        read_sessions(tmp_path / "out" / "B_test_sessions.json")
