"""Evaluation: binarisation rules, metrics equal to scikit-learn's, session mapping (also on real BGL windows)."""

from __future__ import annotations

import json
import runpy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rationanomaly.evaluate import (
    UNKNOWN,
    binarize,
    binary_metrics,
    class_report,
    confusion,
    evaluate,
    evaluate_files,
    format_table,
    session_outcomes,
)
from rationanomaly.labels import ABNORMAL, NORMAL
from rationanomaly.paths import REPO_ROOT
from rationanomaly.samples import Sample, SampleFormatError, write_samples
from rationanomaly.sessions import Session, build_sessions, write_sessions

A, N, U = ABNORMAL, NORMAL, UNKNOWN
BGL_WINDOW = 100  # paper: fixed windows of 100 consecutive lines


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("<think>The node failed.</think><answer>abnormal</answer>", A),  # the trained format
        ("<think>x</think><answer> Normal </answer>", N),  # upper case and spaces
        ("<answer>normal</answer> on reflection <answer>abnormal</answer>", A),  # the last answer decides
        ("I would say <em>abnormal</em>.", A),  # <em> when there is no <answer>
        ("**Verdict**: <b>normal</b>", N),  # <b> when there is neither
        ("<answer>normal</answer><em>abnormal</em>", N),  # <answer> outranks <em>
        ("<answer>abnormal.</answer>", A),  # punctuation around the word
        ("Abnormal\nThe node card reports a power fault.", A),  # first line of an untagged output
        ("normal, abnormal? Hard to say.\nThe log entry is not abnormal.", N),  # negated phrase
        ("Both normal and abnormal readings exist.\nIn the end it is classified as abnormal.", A),  # phrase rule
        ("Weighing normal against abnormal.\nClassification: normal", N),  # label after a keyword
        ("The kernel stopped.\nThis is an abnormal event for the system.", A),  # 'an abnormal event'
        ("Normal or abnormal?\nAt first the entry is normal, but the log entry is abnormal.", A),  # last phrase wins
        ("<answer></answer> so the answer is normal", N),  # empty answer falls back to the phrases
        ("normal and abnormal\nsomething abnormal but also normal", U),  # both words, no phrase
        ("The message reports a routine heartbeat.", U),  # no label at all
        ("", U),  # empty output
        ("<answer>not abnormal</answer>", N),  # a negated answer is the other label
        ("The log entry is not abnormal.\nIt reports a routine event.", N),  # negated first line (zero-shot style)
        ("I see nothing wrong; it is not an abnormal one", N),  # negation in the last-resort rule
        ("Abnormal? Not abnormal? Hard to tell.", U),  # mentions that disagree decide nothing
    ],
)
def test_binarize_follows_the_rule_order(output, expected):
    assert binarize(output) == expected


def test_binary_metrics_count_unknown_as_not_abnormal():
    truth = [A, A, A, N, N, N]
    predicted = [A, U, N, A, N, U]
    metrics = binary_metrics(truth, predicted)
    assert (metrics.tp, metrics.fn, metrics.fp, metrics.tn, metrics.unknown) == (1, 2, 1, 2, 2)
    assert (metrics.support, metrics.total) == (3, 6)
    assert metrics.precision == pytest.approx(0.5)
    assert metrics.recall == pytest.approx(1 / 3)
    assert metrics.f1 == pytest.approx(0.4)
    assert metrics.fpr == pytest.approx(1 / 3)  # 1 of the 3 normal items flagged; unknown counts as not flagged
    assert confusion(truth, predicted) == {N: {N: 1, A: 1, U: 1}, A: {N: 1, A: 1, U: 1}}


def test_binary_metrics_without_any_abnormal_prediction_score_zero():
    metrics = binary_metrics([A, N], [N, N])
    assert (metrics.precision, metrics.recall, metrics.f1) == (0.0, 0.0, 0.0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([N, A]), st.sampled_from([N, A, U])), min_size=1, max_size=40))
def test_metrics_equal_scikit_learn(pairs):
    metrics_module = pytest.importorskip("sklearn.metrics")
    truth, predicted = [t for t, _ in pairs], [p for _, p in pairs]
    binary = [A if p == A else N for p in predicted]
    precision, recall, f1, _ = metrics_module.precision_recall_fscore_support(
        truth, binary, labels=[A], average=None, zero_division=0
    )
    ours = binary_metrics(truth, predicted)
    assert (ours.precision, ours.recall, ours.f1) == pytest.approx((precision[0], recall[0], f1[0]), abs=1e-12)
    # FPR is the recall of the normal class read the other way round: 1 - recall(normal) = fp / (fp + tn).
    normal_recall = metrics_module.recall_score(truth, binary, labels=[N], average=None, zero_division=0)
    assert ours.fpr == pytest.approx(1 - normal_recall[0] if N in truth else 0.0, abs=1e-12)
    matrix = metrics_module.confusion_matrix(truth, predicted, labels=[N, A, U])
    assert [[confusion(truth, predicted)[t][p] for p in (N, A, U)] for t in (N, A)] == matrix[:2].tolist()
    labels = [N, A, U] if U in predicted else [N, A]
    expected = metrics_module.classification_report(truth, predicted, labels=labels, output_dict=True, zero_division=0)
    report = class_report(truth, predicted)
    assert set(report) == set(expected)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-12), key


def _samples(pairs):
    return [Sample(log, label) for log, label in pairs]


def _predictions(pairs):
    return [{"instruction": Sample(log, "normal").instruction, "input": log, "output": out} for log, out in pairs]


def test_evaluate_rejects_a_prediction_for_an_input_missing_from_the_test_set():
    with pytest.raises(SampleFormatError, match=r"item 0 \(input 'other'\) is not in the test set"):
        evaluate(_predictions([("other", "normal")]), _samples([("log", "normal")]))


def test_evaluate_partial_counts_test_items_without_a_prediction():
    testset = _samples([("a", "normal"), ("b", "abnormal")])
    result = evaluate(_predictions([("b", "<answer>abnormal</answer>")]), testset, partial=True)
    assert (result.unpredicted, result.template.total, result.template.tp) == (1, 1, 1)
    assert result.to_dict()["unpredicted"] == 1
    assert result.to_dict()["coverage"] == {"predicted": 1, "test_items": 2, "partial": True}
    assert "partial: 1 of 2 test items predicted (--partial)" in format_table(result)


def test_evaluate_rejects_a_test_set_with_conflicting_labels():
    with pytest.raises(SampleFormatError, match="both normal and abnormal"):
        evaluate([], _samples([("log", "normal"), ("log", "abnormal")]))


def _session(index, templates, labels):
    return Session(index, index * len(templates), tuple(templates), tuple(labels))


SESSIONS = [
    _session(0, ["a", "b"], [0, 1]),  # abnormal, found through template b
    _session(1, ["a", "c"], [0, 0]),  # normal, c has no prediction
    _session(2, ["a", "d"], [0, 1]),  # abnormal, d has no prediction
    _session(3, ["a", "e"], [0, 0]),  # normal, e is unknown
]
TEMPLATE_PREDICTIONS = {"a": N, "b": A, "e": U}


@pytest.mark.parametrize(
    ("missing", "truth", "predicted", "dropped", "unknown"),
    [
        ("drop", [A, N], [A, N], 2, 1),  # reference: sessions 1 and 2 dropped
        ("normal", [A, N, A, N], [A, N, N, N], 0, 1),  # kept, the missing lines read normal
    ],
)
def test_session_outcomes_drop_or_keep_sessions_with_unpredicted_templates(missing, truth, predicted, dropped, unknown):
    assert session_outcomes(SESSIONS, TEMPLATE_PREDICTIONS, missing) == (truth, predicted, dropped, unknown)


@pytest.mark.parametrize(
    ("match", "outcome"),
    [
        ("exact", ([], [], 1, 0)),  # the reference: a comma apart is another template, the session is dropped
        ("normalized", ([A], [A], 0, 0)),  # punctuation and spacing ignored
    ],
)
def test_session_outcomes_match_templates_exactly_or_normalised(match, outcome):
    sessions = [_session(0, ["Lustre mount FAILED : point <*>"], [1])]
    assert session_outcomes(sessions, {"Lustre mount FAILED: point <*>": A}, "drop", match) == outcome


def test_session_outcomes_reject_an_unknown_policy():
    with pytest.raises(ValueError, match="missing='skip'"):
        session_outcomes(SESSIONS, TEMPLATE_PREDICTIONS, "skip")


def test_evaluate_files_writes_metrics_labelled_and_diff_files(tmp_path):
    write_samples(tmp_path / "test.json", _samples([("a", "normal"), ("b", "abnormal"), ("e", "normal")]))
    (tmp_path / "pred.json").write_text(
        json.dumps(
            _predictions([("a", "<answer>abnormal</answer>"), ("b", "<answer>abnormal</answer>"), ("e", "no idea")])
        )
    )
    write_sessions(tmp_path / "sessions.json", SESSIONS)
    result = evaluate_files(
        tmp_path / "pred.json",
        tmp_path / "test.json",
        tmp_path / "sessions.json",
        output_json=tmp_path / "m.json",
        labelled=tmp_path / "l.json",
        diff=tmp_path / "d.json",
    )
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["template"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "tp": 1,
        "fp": 1,
        "fn": 0,
        "tn": 1,
        "unknown": 1,
        "support": 1,
        "total": 3,
        "accuracy": 2 / 3,
        "fpr": 0.5,
    }
    # a predicted abnormal: every kept session (0 and 3) is predicted abnormal; 1 and 2 hold c / d (no prediction)
    assert {k: written["session"][k] for k in ("tp", "fp", "fn", "tn", "dropped", "sessions_total", "unknown")} == {
        "tp": 1,
        "fp": 1,
        "fn": 0,
        "tn": 0,
        "dropped": 2,
        "sessions_total": 4,
        "unknown": 1,
    }
    assert written["unknowns"] == [{"input": "e", "response": "no idea"}]
    labelled = json.loads((tmp_path / "l.json").read_text())
    assert [(x["input"], x["output"], x["label"]) for x in labelled] == [("a", A, N), ("b", A, A), ("e", U, N)]
    assert [x["input"] for x in json.loads((tmp_path / "d.json").read_text())] == ["a", "e"]
    assert result.session is not None and result.session.f1 == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def bgl_2k(public_data, tmp_path_factory):
    """Template test set (a template is abnormal if any of its lines is) and 100-line sessions of BGL 2k."""
    import pandas as pd

    frame = pd.read_csv(public_data / "loghub" / "BGL_2k.log_structured.csv")
    sessions = build_sessions(
        list(frame.LineId), list(frame.EventTemplate), [int(v != "-") for v in frame.Label], window=BGL_WINDOW
    )
    labels: dict[str, str] = {}
    for session in sessions:
        for template, line in zip(session.templates, session.line_labels, strict=True):
            labels[template] = A if line or labels.get(template) == A else N
    folder = tmp_path_factory.mktemp("bgl2k")
    write_samples(folder / "test.json", [Sample(t, label) for t, label in labels.items()])
    write_sessions(folder / "sessions.json", sessions)
    return folder, labels


LUSTRE = "Lustre mount FAILED : bglio<*> : point <*>"  # in windows 13 and 14, both abnormal


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("case", "missing", "counts"),
    [
        # case: which template predictions exist; counts: template (tp, fp, fn, tn), session (tp, fp, fn, tn, dropped)
        ("truth", "drop", ((15, 0, 0, 105), (12, 0, 0, 8, 0))),  # 20 windows, 12 abnormal; 120 templates, 15 abnormal
        ("all normal", "drop", ((0, 0, 15, 105), (0, 0, 12, 8, 0))),
        ("truth without Lustre", "drop", ((14, 0, 0, 105), (10, 0, 0, 8, 2))),  # windows 13, 14 dropped
        ("truth without Lustre", "normal", ((14, 0, 0, 105), (12, 0, 0, 8, 0))),  # other alerts keep them abnormal
    ],
)
def test_bgl_2k_sessions_map_template_predictions_exactly(bgl_2k, case, missing, counts):
    folder, labels = bgl_2k
    predicted = {t: (N if case == "all normal" else label) for t, label in labels.items()}
    if case == "truth without Lustre":
        del predicted[LUSTRE]
    (folder / "pred.json").write_text(
        json.dumps(_predictions([(t, f"<think>.</think><answer>{p}</answer>") for t, p in predicted.items()]))
    )
    result = evaluate_files(
        folder / "pred.json",
        folder / "test.json",
        folder / "sessions.json",
        missing,
        partial=case == "truth without Lustre",
    )
    template, session = result.template, result.session
    assert (template.tp, template.fp, template.fn, template.tn) == counts[0]
    assert (session.tp, session.fp, session.fn, session.tn, result.sessions_dropped) == counts[1]
    assert result.sessions_total == 20
    if case.startswith("truth"):
        assert (session.precision, session.recall, session.f1) == (1.0, 1.0, 1.0)


def _script(name: str):
    """A validation script's globals (its main), loaded by path as the README runs it."""
    return runpy.run_path(str(REPO_ROOT / "validation" / name), run_name="validation_script")


def test_model_evaluate_reference_form_reads_the_catalogue(tmp_path, capsys):
    write_samples(tmp_path / "BGL.json", _samples([("a", "normal"), ("b", "abnormal")]))
    write_sessions(tmp_path / "BGL_sessions.json", [SESSIONS[0]])
    results = tmp_path / "results"
    (results / "original_vllm_output").mkdir(parents=True)
    (results / "original_vllm_output" / "BGL_by_tiny.json").write_text(
        json.dumps(_predictions([("a", "<answer>normal</answer>"), ("b", "The log entry is abnormal.")]))
    )
    catalog = {
        "models": ["tiny"],
        "model_paths": {"tiny": "tiny"},
        "testsets": ["BGL"],
        "testset_paths": {"BGL": "BGL.json"},
        "session_paths": {"BGL": "BGL_sessions.json"},
        "results_dir": "results",
    }
    (tmp_path / "list.json").write_text(json.dumps(catalog))
    main = _script("model_evaluate.py")["main"]
    assert main(["-m", "0", "-t", "0", "-s", "b", "--catalog", str(tmp_path / "list.json")]) == 0
    metrics = json.loads((results / "metrics" / "BGL_by_tiny.json").read_text())
    assert (metrics["template"]["f1"], metrics["session"]["f1"], metrics["session"]["total"]) == (1.0, 1.0, 1)
    assert (results / "labelled_output" / "BGL_by_tiny.json").exists()
    assert json.loads((results / "diff" / "BGL_by_tiny.json").read_text()) == []
    shown = capsys.readouterr().out
    # the paper's BGL template row beside ours
    assert "| RationAnomaly | 0.887 | 0.898 | 0.881 | the paper's: 8,000 entries | paper, Table 2 |" in shown
    # our rows name the test set they were measured on, and its size
    assert "| ours | 1.000 | 1.000 | 1.000 | BGL.json: 2 entries (1 abnormal) | ours |" in shown
    assert "| ours | 1.000 | 1.000 | 1.000 | BGL_sessions.json: 1 sessions (1 abnormal) | ours |" in shown


def test_model_evaluate_explicit_form_without_predictions_says_what_to_pass(tmp_path, capsys):
    main = _script("model_evaluate.py")["main"]
    assert main(["--testset", str(tmp_path / "t.json")]) == 2
    assert "give --predictions FILE" in capsys.readouterr().err


# ---- a prediction file must cover the test set exactly --------------------------------------------------

TEN = _samples([(f"event {i} on <*>", "abnormal" if i < 3 else "normal") for i in range(10)])


def _coverage_files(tmp_path, predicted):
    write_samples(tmp_path / "test.json", TEN)
    (tmp_path / "pred.json").write_text(
        json.dumps(_predictions([(s.input, f"<answer>{s.label}</answer>") for s in predicted]))
    )
    return [
        "--predictions",
        str(tmp_path / "pred.json"),
        "--testset",
        str(tmp_path / "test.json"),
        "--output_json",
        str(tmp_path / "m.json"),
    ]


@pytest.mark.parametrize(
    ("predicted", "message"),
    [
        (TEN + TEN[:3], "item 10 (input 'event 0 on <*>') is predicted more often than the test set lists it"),  # 13/10
        (TEN[:3], "7 of 10 test items have no prediction (first 'event 3 on <*>'); finish the run"),  # partial file
        ([], "the list is empty; it needs at least one record"),  # empty list
    ],
)
def test_model_evaluate_refuses_predictions_that_do_not_cover_the_test_set(tmp_path, cli, predicted, message):
    result = cli("validation/model_evaluate.py", _coverage_files(tmp_path, predicted))
    assert result.code == 2 and len(result.errors) == 1 and message in result.errors[0]
    assert not (tmp_path / "m.json").exists()


def test_model_evaluate_partial_is_allowed_on_request_and_says_so(tmp_path, cli):
    result = cli("validation/model_evaluate.py", [*_coverage_files(tmp_path, TEN[:3]), "--partial"])
    assert result.code == 0 and "partial: 3 of 10 test items predicted (--partial)" in result.out
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["coverage"] == {"predicted": 3, "test_items": 10, "partial": True}
    assert (written["template"]["tp"], written["template"]["total"]) == (3, 3)


def test_model_evaluate_lists_the_results_table_only_when_it_wrote_one(tmp_path, cli):
    table = tmp_path / "table.md"
    result = cli("validation/model_evaluate.py", [*_coverage_files(tmp_path, TEN), "--results_table", str(table)])
    assert result.code == 0 and not table.exists()  # no --dataset: no paper row, no table
    assert "wrote: " in result.out and str(table) not in result.out
    result = cli("validation/model_evaluate.py", [*_coverage_files(tmp_path, TEN), "--results_table", str(table),
                                                  "--dataset", "BGL"])  # fmt: skip
    assert result.code == 0 and table.exists() and str(table) in result.out.split("wrote: ")[1]


def test_a_test_set_listing_an_item_twice_takes_two_predictions_of_it():
    testset = _samples([("a", "normal"), ("a", "normal"), ("b", "abnormal")])
    result = evaluate(_predictions([("a", "normal"), ("b", "abnormal"), ("a", "normal")]), testset)
    assert (result.template.total, result.unpredicted) == (3, 0)


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (["--output_json", "{tmp}/test.json"], "output {tmp}/test.json is the input {tmp}/test.json"),  # the test set
        (["--labelled", "{tmp}/pred.json"], "output {tmp}/pred.json is the input {tmp}/pred.json"),  # the predictions
        (["--output_json", "{tmp}/x.json", "--diff", "{tmp}/x.json"], "{tmp}/x.json is named twice as an output"),
    ],
)
def test_model_evaluate_refuses_outputs_that_would_lose_data(tmp_path, cli, snapshot, outputs, message):
    base = _coverage_files(tmp_path, TEN)[:4]
    before = snapshot(tmp_path)
    result = cli("validation/model_evaluate.py", [*base, *(o.format(tmp=tmp_path) for o in outputs)])
    assert result.code == 2 and message.format(tmp=tmp_path) in result.errors[0]
    assert snapshot(tmp_path) == before


def test_evaluation_json_records_the_method_model_and_backend(tmp_path, cli):
    write_samples(tmp_path / "test.json", TEN)
    predictions = tmp_path / "rules.json"
    assert (
        cli(
            "validation/model_predict.py",
            ["--backend", "rules", "--testset", str(tmp_path / "test.json"), "--output", str(predictions)],
        ).code
        == 0
    )
    assert (
        cli(
            "validation/model_evaluate.py",
            [
                "--predictions",
                str(predictions),
                "--testset",
                str(tmp_path / "test.json"),
                "--output_json",
                str(tmp_path / "m.json"),
                "--method",
                "keyword rules",
            ],
        ).code
        == 0
    )
    written = json.loads((tmp_path / "m.json").read_text())
    assert {k: written[k] for k in ("method", "model", "backend", "mode")} == {
        "method": "keyword rules",
        "model": None,
        "backend": "rules",
        "mode": "cot",
    }
    (tmp_path / "copy.json").write_bytes(predictions.read_bytes())  # a file from elsewhere: nothing is guessed
    evaluate_files(tmp_path / "copy.json", tmp_path / "test.json", output_json=tmp_path / "m2.json")
    assert json.loads((tmp_path / "m2.json").read_text())["backend"] is None
