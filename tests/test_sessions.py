"""Session windows: window rules, chronological split, seeded anomaly-ratio sampling, template test sets, files,
CLI, real BGL 2k."""

from __future__ import annotations

import json
import logging
import runpy

import pytest

from rationanomaly.evaluate import evaluate, evaluate_files
from rationanomaly.labels import ABNORMAL, NORMAL
from rationanomaly.loaders import load_structured_log
from rationanomaly.paths import REPO_ROOT, SAMPLE_DATA_DIR
from rationanomaly.samples import Sample, read_samples
from rationanomaly.sessions import (
    DESC_FILE,
    FIXED,
    REFERENCE,
    TEST_FILE,
    TEST_TEMPLATES_FILE,
    TRAIN_FILE,
    TRAIN_TEMPLATES_FILE,
    Session,
    anomaly_count,
    build_session_dataset,
    build_sessions,
    read_sessions,
    sample_anomaly_ratio,
    session_template_samples,
    split_chronological,
    template_samples,
    window_bounds,
    write_sessions,
)


def session(index: int, abnormal: bool) -> Session:
    return Session(index, index * 10 + 1, ("t",) * 2, (0, int(abnormal)))


@pytest.mark.parametrize(
    ("ids", "window", "mode", "keep_partial", "expected"),
    [
        (range(1, 11), 5, FIXED, False, [(0, 5), (5, 10)]),  # exact multiple
        (range(1, 13), 5, FIXED, False, [(0, 5), (5, 10)]),  # short last window dropped
        (range(1, 13), 5, FIXED, True, [(0, 5), (5, 10), (10, 12)]),  # ... or kept
        (range(1, 13), 5, REFERENCE, False, [(0, 6), (6, 12)]),  # reference: window + 1 consecutive lines
        (range(1, 14), 5, REFERENCE, True, [(0, 6), (6, 12), (12, 13)]),
        ([1, 2, 9, 10, 11, 20], 5, REFERENCE, True, [(0, 2), (2, 5), (5, 6)]),  # reference follows LineId gaps
        ([], 5, FIXED, True, []),
    ],
)
def test_window_bounds(ids, window, mode, keep_partial, expected):
    assert window_bounds(list(ids), window, mode, keep_partial) == expected


@pytest.mark.parametrize(("window", "mode"), [(0, FIXED), (5, "sliding")])
def test_window_bounds_rejects_bad_parameters(window, mode):
    with pytest.raises(ValueError):
        window_bounds([1, 2], window, mode)


def test_build_sessions_is_abnormal_if_any_line_is():
    sessions = build_sessions([1, 2, 3, 4], ["a", "b", "c", "d"], [0, 0, 0, 1], window=2)
    assert [(s.session_id, s.first_line, s.templates, s.label) for s in sessions] == [
        (0, 1, ("a", "b"), NORMAL),
        (1, 3, ("c", "d"), ABNORMAL),
    ]


def test_build_sessions_rejects_unequal_columns():
    with pytest.raises(ValueError, match="equally long"):
        build_sessions([1, 2], ["a"], [0, 0])


@pytest.mark.parametrize(("n", "ratio", "train"), [(10, 0.8, 8), (7, 0.5, 3), (5, 0.0, 0), (5, 1.0, 5)])
def test_split_chronological_keeps_order_and_floors_the_cut(n, ratio, train):
    sessions = [session(i, False) for i in range(n)]
    first, second = split_chronological(sessions, ratio)
    assert len(first) == train and first + second == sessions


@pytest.mark.parametrize(
    ("abnormal", "normal", "ratio", "expected"),
    [
        (10, 20, 0.15, (4, 20)),  # too many anomalies: round(0.15 * 20 / 0.85) = 4 kept, every normal kept
        (2, 40, 0.15, (2, 11)),  # too few: every anomaly kept, round(2 * 0.85 / 0.15) = 11 normals
        (1, 100, 0.5, (1, 1)),
        (0, 5, 0.15, (0, 5)),  # one class only: unchanged
    ],
)
def test_sample_anomaly_ratio_subsamples_only_the_over_represented_class(abnormal, normal, ratio, expected):
    sessions = [session(i, i < abnormal) for i in range(abnormal + normal)]
    kept = sample_anomaly_ratio(sessions, ratio, seed=0)
    assert (anomaly_count(kept), len(kept) - anomaly_count(kept)) == expected
    assert [s.session_id for s in kept] == sorted(s.session_id for s in kept)


def test_sample_anomaly_ratio_is_deterministic_for_a_seed_and_varies_with_it():
    sessions = [session(i, i % 2 == 0) for i in range(60)]
    picks = {seed: [s.session_id for s in sample_anomaly_ratio(sessions, 0.15, seed)] for seed in (0, 0, 1)}
    assert picks[0] == [s.session_id for s in sample_anomaly_ratio(sessions, 0.15, 0)]
    assert picks[0] != picks[1]


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5])
def test_sample_anomaly_ratio_rejects_ratios_outside_the_open_unit_interval(ratio):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        sample_anomaly_ratio([session(0, True)], ratio, 0)


@pytest.mark.parametrize(
    ("templates", "labels", "expected", "mixed"),
    [
        (["a", "b", "a", "c"], [0, 0, 1, 0], [("a", ABNORMAL), ("b", NORMAL), ("c", NORMAL)], ("a",)),  # one alert line
        (["b", "a", "b"], [0, 0, 0], [("b", NORMAL), ("a", NORMAL)], ()),  # first-occurrence order, not sorted
        (["x", "x"], [1, 1], [("x", ABNORMAL)], ()),  # every line abnormal: not mixed
        ([], [], [], ()),
    ],
)
def test_template_samples_is_abnormal_if_any_line_is_and_reports_mixed(templates, labels, expected, mixed):
    derived = template_samples(templates, labels)
    assert [(s.input, s.label) for s in derived.samples] == expected and derived.mixed == mixed
    assert derived.counts() == {
        "templates": len(expected),
        "abnormal": sum(v == ABNORMAL for _, v in expected),
        "mixed_labels": len(mixed),
    }


def test_template_samples_rejects_unequal_columns():
    with pytest.raises(ValueError, match=r"templates \(2\) and line_labels \(1\)"):
        template_samples(["a", "b"], [0])


def test_session_template_samples_reads_every_line_in_session_order():
    sessions = [Session(0, 1, ("b", "a"), (0, 0)), Session(1, 3, ("c", "a"), (0, 1))]
    derived = session_template_samples(sessions)
    assert derived.inputs == ("b", "a", "c") and derived.abnormal == 1 and derived.mixed == ("a",)


def test_session_file_round_trips(tmp_path):
    sessions = [session(0, False), session(1, True)]
    write_sessions(tmp_path / "s.json", sessions)
    assert read_sessions(tmp_path / "s.json") == sessions


def test_session_file_with_a_non_integer_field_names_the_session(tmp_path):
    from rationanomaly.samples import SampleFormatError

    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"session_id": "x1", "templates": ["a"], "line_labels": [0], "label": "normal"}]))
    with pytest.raises(SampleFormatError, match=r"s\.json: session 0 needs integer"):
        read_sessions(path)


def test_build_session_dataset_on_sample_writes_files_and_description(tmp_path):
    desc = build_session_dataset(SAMPLE_DATA_DIR / "bgl_structured.csv", tmp_path, seed=0)
    train, test = read_sessions(tmp_path / TRAIN_FILE), read_sessions(tmp_path / TEST_FILE)
    assert (desc["all"]["sessions"], desc["all"]["abnormal"]) == (15, 9)
    assert (desc["train_before_sampling"]["sessions"], desc["train_before_sampling"]["abnormal"]) == (12, 7)
    assert (len(train), anomaly_count(train), len(test), anomaly_count(test)) == (6, 1, 3, 2)
    assert all(len(s.templates) == 100 for s in train + test)
    assert json.loads((tmp_path / DESC_FILE).read_text()) == desc
    assert desc["seed"] == 0 and desc["parameters"]["train_anomaly_ratio"] == 0.15


def test_build_session_dataset_writes_the_unique_templates_of_each_side(tmp_path):
    desc = build_session_dataset(SAMPLE_DATA_DIR / "bgl_structured.csv", tmp_path, seed=0)
    train, test = read_samples(tmp_path / TRAIN_TEMPLATES_FILE), read_samples(tmp_path / TEST_TEMPLATES_FILE)
    assert desc["templates"] == {
        "all": {"templates": 49, "abnormal": 10, "mixed_labels": 0},
        "train": {"templates": 46, "abnormal": 7, "mixed_labels": 0},
        "test": {"templates": 48, "abnormal": 9, "mixed_labels": 0},
        "test_in_train": 45,
    }
    assert [s.input for s in test] == list(session_template_samples(read_sessions(tmp_path / TEST_FILE)).inputs)
    assert (len(train), sum(s.label == ABNORMAL for s in train)) == (46, 7)
    assert desc["outputs"]["test_templates"] == str(tmp_path / TEST_TEMPLATES_FILE)


def test_test_templates_give_every_session_a_prediction(tmp_path):
    build_session_dataset(SAMPLE_DATA_DIR / "bgl_structured.csv", tmp_path, seed=0)
    testset = read_samples(tmp_path / TEST_TEMPLATES_FILE)
    oracle = [{"instruction": s.instruction, "input": s.input, "output": s.label} for s in testset]
    result = evaluate(oracle, testset, read_sessions(tmp_path / TEST_FILE))
    # no mixed-label template, so labels that are right per template are right per session too
    assert (result.sessions_total, result.sessions_dropped) == (3, 0)
    assert (result.session.tp, result.session.fp, result.session.fn, result.session.tn) == (2, 0, 0, 1)


def test_build_session_dataset_reports_mixed_label_templates(tmp_path, caplog):
    rows = [f"{i},{'KERNDTLB' if i == 3 else '-'},c,E1,{'a <*>' if i % 2 else 'b <*>'}" for i in range(1, 5)]
    path = tmp_path / "s.csv"
    path.write_text("LineId,Label,Content,EventId,EventTemplate\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rationanomaly.sessions"):
        desc = build_session_dataset(path, tmp_path / "out", window=2, train_ratio=0.5, train_anomaly_ratio=None)
    # lines 1, 3 are 'a <*>' (3 raised an alert), lines 2, 4 'b <*>'; windows [1, 2] train, [3, 4] test
    assert desc["templates"]["all"] == {"templates": 2, "abnormal": 1, "mixed_labels": 1}
    assert desc["templates"]["train"] == {"templates": 2, "abnormal": 0, "mixed_labels": 0}
    assert read_samples(tmp_path / "out" / TEST_TEMPLATES_FILE) == [Sample("a <*>", ABNORMAL), Sample("b <*>", NORMAL)]
    assert "1 of 2 templates have both normal and abnormal lines" in caplog.text


def test_build_session_dataset_is_byte_identical_for_the_same_seed(tmp_path):
    for folder in ("a", "b"):
        build_session_dataset(SAMPLE_DATA_DIR / "bgl_structured.csv", tmp_path / folder, seed=3)
    assert (tmp_path / "a" / TRAIN_FILE).read_bytes() == (tmp_path / "b" / TRAIN_FILE).read_bytes()


def test_session_builder_cli_runs_and_summarises(tmp_path, capsys):
    main = runpy.run_path(str(REPO_ROOT / "datasets" / "session_builder.py"), run_name="cli")["main"]
    argv = [
        "--input",
        str(SAMPLE_DATA_DIR / "bgl_structured.csv"),
        "--output-dir",
        str(tmp_path),
        "--mode",
        "reference",
        "--keep-partial",
        "--train-anomaly-ratio",
        "0",
    ]
    assert main(argv) == 0
    desc = json.loads((tmp_path / DESC_FILE).read_text())
    assert desc["all"]["sessions"] == 15 and desc["train"] == desc["train_before_sampling"]  # 14 x 101 + 86
    assert "1500 lines (116 abnormal)" in capsys.readouterr().out


def test_session_builder_cli_then_predict_and_evaluate_scores_every_session(tmp_path, capsys):
    def script(path: str):
        return runpy.run_path(str(REPO_ROOT / path), run_name="cli")["main"]

    sample = str(SAMPLE_DATA_DIR / "bgl_structured.csv")
    assert script("datasets/session_builder.py")(["--input", sample, "--output_dir", str(tmp_path)]) == 0
    assert "test templates:    48 templates,     9 abnormal (0 with both" in capsys.readouterr().out
    testset, rules = str(tmp_path / TEST_TEMPLATES_FILE), str(tmp_path / "rules.json")
    assert script("validation/model_predict.py")(["--backend", "rules", "--testset", testset, "--output", rules]) == 0
    result = evaluate_files(rules, testset, tmp_path / TEST_FILE)
    assert (result.sessions_total, result.sessions_dropped, result.session.tp, result.session.fp) == (3, 0, 2, 0)
    assert (result.template.tp, result.template.fp, result.template.fn) == (7, 4, 2)  # keyword rules


def test_session_builder_cli_reports_a_missing_input(tmp_path, capsys):
    main = runpy.run_path(str(REPO_ROOT / "datasets" / "session_builder.py"), run_name="cli")["main"]
    assert main(["--input", str(tmp_path / "none.csv"), "--output-dir", str(tmp_path)]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("mode", "keep_partial", "sessions", "abnormal", "dropped"),
    [
        (FIXED, False, 20, 12, 0),  # 2000 lines -> 20 windows of 100, 12 hold an alert
        (REFERENCE, False, 19, 11, 81),  # 19 windows of 101 lines; the last 81 lines (one alert window) dropped
        (REFERENCE, True, 20, 12, 0),
    ],
)
def test_public_bgl_2k_windows(public_data, tmp_path, mode, keep_partial, sessions, abnormal, dropped):
    desc = build_session_dataset(
        public_data / "loghub" / "BGL_2k.log_structured.csv", tmp_path, mode=mode, keep_partial=keep_partial
    )
    assert (desc["lines"], desc["abnormal_lines"], desc["dropped_lines"]) == (2000, 143, dropped)
    assert (desc["all"]["sessions"], desc["all"]["abnormal"]) == (sessions, abnormal)
    assert (desc["test"]["sessions"], desc["test"]["abnormal"]) == (4, 2)


@pytest.mark.realdata
def test_public_bgl_2k_rectified_has_more_abnormal_windows(public_data, tmp_path):
    from rationanomaly.patch import NORMALIZED, patch_files

    patch_files(
        [(public_data / "loghub" / "BGL_2k.log_structured.csv", tmp_path / "bgl2k.csv")],
        public_data / "rationanomaly" / "anomaly_patch.json",
        tmp_path / "report.json",
        NORMALIZED,
    )
    desc = build_session_dataset(tmp_path / "bgl2k.csv", tmp_path / "sessions")
    assert (desc["abnormal_lines"], desc["all"]["sessions"], desc["all"]["abnormal"]) == (306, 20, 17)


@pytest.mark.realdata
def test_public_bgl_2k_templates_of_the_default_split(public_data, tmp_path):
    desc = build_session_dataset(public_data / "loghub" / "BGL_2k.log_structured.csv", tmp_path)
    # 120 templates, 15 of them on an alert line; no template has both normal and alert lines
    assert desc["templates"] == {
        "all": {"templates": 120, "abnormal": 15, "mixed_labels": 0},
        "train": {"templates": 43, "abnormal": 2, "mixed_labels": 0},
        "test": {"templates": 43, "abnormal": 7, "mixed_labels": 0},
        "test_in_train": 13,
    }


@pytest.mark.realdata
def test_public_bgl_2k_all_test_cli_covers_every_template_and_session(public_data, tmp_path):
    main = runpy.run_path(str(REPO_ROOT / "datasets" / "session_builder.py"), run_name="cli")["main"]
    source = public_data / "loghub" / "BGL_2k.log_structured.csv"
    assert main(["--input", str(source), "--output_dir", str(tmp_path), "--train_ratio", "0"]) == 0
    sessions, testset = read_sessions(tmp_path / TEST_FILE), read_samples(tmp_path / TEST_TEMPLATES_FILE)
    assert (len(sessions), anomaly_count(sessions)) == (20, 12)
    assert [len(s.templates) for s in sessions] == [100] * 20
    assert json.loads((tmp_path / TRAIN_TEMPLATES_FILE).read_text()) == []  # written, though no input may be empty
    assert [s.input for s in testset] == list(dict.fromkeys(load_structured_log(source).frame["EventTemplate"]))
    assert (len(testset), sum(s.label == ABNORMAL for s in testset)) == (120, 15)
    oracle = [{"instruction": s.instruction, "input": s.input, "output": s.label} for s in testset]
    result = evaluate(oracle, testset, sessions)
    assert (result.sessions_total, result.sessions_dropped, result.session.tp, result.session.fp) == (20, 0, 12, 0)


# ---- time order, degenerate inputs and outputs written as one set ------------------------------------


def _shuffled_log(tmp_path):
    """The sample log with its lines reversed: the "chronological" test set would be the earliest lines."""
    lines = (SAMPLE_DATA_DIR / "bgl_structured.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path / "reversed.csv"
    path.write_text(lines[0] + "".join(reversed(lines[1:])), encoding="utf-8")
    return path


def test_session_builder_refuses_a_log_out_of_time_order(tmp_path, cli, snapshot):
    source = _shuffled_log(tmp_path)
    before = snapshot(tmp_path)
    result = cli("datasets/session_builder.py", ["--input", str(source), "--output_dir", str(tmp_path / "out")])
    assert result.code == 2
    assert result.errors == [
        f"error: {source}: row 3 has LineId 1499 after LineId 1500; a structured log must be in "
        "time (LineId) order: sort it, or pass --unsorted sort to sort it here"
    ]
    assert snapshot(tmp_path) == before


def test_session_builder_sorts_on_request_exactly_like_a_sorted_log(tmp_path, cli):
    source = _shuffled_log(tmp_path)
    argv = ["--train_anomaly_ratio", "0"]
    assert (
        cli(
            "datasets/session_builder.py",
            ["--input", str(source), "--output_dir", str(tmp_path / "sorted"), "--unsorted", "sort", *argv],
        ).code
        == 0
    )
    assert (
        cli(
            "datasets/session_builder.py",
            ["--input", str(SAMPLE_DATA_DIR / "bgl_structured.csv"), "--output_dir", str(tmp_path / "ordered"), *argv],
        ).code
        == 0
    )
    for name in (TRAIN_FILE, TEST_FILE, TEST_TEMPLATES_FILE):
        assert (tmp_path / "sorted" / name).read_bytes() == (tmp_path / "ordered" / name).read_bytes()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--window", "2000"], "1500 lines make no complete window of 2000"),  # nothing to split
        (["--window", "0"], None),  # argparse: not a positive integer
        (["--train_ratio", "1.5"], None),  # argparse: not a fraction
    ],
)
def test_session_builder_refuses_degenerate_settings(tmp_path, cli, capsys, argv, message):
    base = ["--input", str(SAMPLE_DATA_DIR / "bgl_structured.csv"), "--output_dir", str(tmp_path / "out")]
    if message is None:
        with pytest.raises(SystemExit) as stopped:
            cli("datasets/session_builder.py", [*base, *argv])
        assert stopped.value.code == 2 and "error: argument" in capsys.readouterr().err
    else:
        result = cli("datasets/session_builder.py", [*base, *argv])
        assert result.code == 2 and len(result.errors) == 1 and message in result.errors[0]
    assert not (tmp_path / "out").exists()


def test_session_outputs_are_one_set_a_failed_write_keeps_the_earlier_run(tmp_path, monkeypatch, snapshot):
    import rationanomaly.sessions as sessions

    build_session_dataset(SAMPLE_DATA_DIR / "bgl_structured.csv", tmp_path / "seed1", seed=1)
    build_session_dataset(SAMPLE_DATA_DIR / "bgl_structured.csv", tmp_path / "out", seed=0)
    seed1 = (tmp_path / "seed1" / TRAIN_FILE).read_bytes()
    assert seed1 != (tmp_path / "out" / TRAIN_FILE).read_bytes()  # so a half-swapped set would show
    before = snapshot(tmp_path)
    real = sessions.write_samples

    def fail_on_test_templates(path, samples):
        if path.name == TEST_TEMPLATES_FILE:
            raise OSError(28, "No space left on device")
        return real(path, samples)

    monkeypatch.setattr(sessions, "write_samples", fail_on_test_templates)
    with pytest.raises(OSError, match="No space left"):
        build_session_dataset(SAMPLE_DATA_DIR / "bgl_structured.csv", tmp_path / "out", seed=1)
    assert snapshot(tmp_path) == before  # train/test sessions of seed 1 were staged, never swapped in
