"""Joining rationales to rectified templates: every check, the report, the embedded sample and the public data."""

from __future__ import annotations

import json

import pytest

from rationanomaly.labels import ABNORMAL, NORMAL, cot_label
from rationanomaly.paths import SAMPLE_DATA_DIR
from rationanomaly.rationales import (
    CONFLICT,
    DUPLICATE,
    EMPTY_THINK,
    MALFORMED_TAGS,
    NOT_A_LABEL,
    Rationale,
    check_rationale,
    issues_as_records,
    join_rationales,
    read_rationales,
    read_templates,
    rectify_templates,
    write_rationales,
)
from rationanomaly.samples import Sample, SampleFormatError


@pytest.mark.parametrize(
    ("reasoning", "label", "expected"),
    [
        ("<think>Routine.</think><answer>normal</answer>", NORMAL, None),
        ("<think>Fault.</think><answer> Abnormal\n</answer>", ABNORMAL, None),  # case and spaces tolerated
        ("Fault, so abnormal.<answer>abnormal</answer>", ABNORMAL, MALFORMED_TAGS),  # R-Log's two untagged thinks
        ("<think>a</think><think>b</think><answer>normal</answer>", NORMAL, MALFORMED_TAGS),  # duplicated think
        ("<answer>normal</answer><think>a</think>", NORMAL, MALFORMED_TAGS),  # out of order
        ("<think></think><answer>normal</answer>", NORMAL, EMPTY_THINK),  # R-Log has three of these
        ("<think> \n </think><answer>normal</answer>", NORMAL, EMPTY_THINK),  # whitespace only
        ("<think>Hmm.</think><answer>anomalous</answer>", ABNORMAL, NOT_A_LABEL),  # not a label word
        ("<think>Routine.</think><answer>normal</answer>", ABNORMAL, CONFLICT),  # rectified to abnormal
        ("<think>Fault.</think><answer>abnormal</answer>", "0", CONFLICT),  # sheet spelling of the label
    ],
)
def test_check_rationale_table(reasoning, label, expected):
    problem = check_rationale(reasoning, label)
    assert (problem and problem[0]) == expected


def rat(template: str, think: str, label: str) -> Rationale:
    return Rationale(template, cot_label(think, label), label)


TEMPLATES = [Sample("a <*>", NORMAL), Sample("b <*>", ABNORMAL), Sample("c <*>", NORMAL), Sample("d <*>", ABNORMAL)]


def test_join_excludes_conflicts_and_malformed_and_lists_the_rest_as_missing():
    rationales = [
        rat("a <*>", "Routine a.", NORMAL),
        rat("b <*>", "Looks fine.", NORMAL),  # conflict: b is rectified abnormal
        Rationale("c <*>", "no tags here", NORMAL),  # malformed
        rat("zzz", "Not a training template.", NORMAL),  # unused
    ]
    result = join_rationales(TEMPLATES, rationales)
    assert result.samples == [Sample("a <*>", cot_label("Routine a.", NORMAL))]
    assert [s.input for s in result.missing] == ["b <*>", "c <*>", "d <*>"]
    assert [s.label for s in result.missing] == [ABNORMAL, NORMAL, ABNORMAL]  # word labels for distillation
    assert result.unused == ["zzz"]
    report = result.report()
    assert {
        k: report[k]
        for k in (
            "templates",
            "rationales",
            "templates_with_rationale",
            "joined",
            "missing",
            "conflicts",
            "malformed",
            "kept_conflicts",
        )
    } == {
        "templates": 4,
        "rationales": 4,
        "templates_with_rationale": 3,
        "joined": 1,
        "missing": 3,
        "conflicts": 1,
        "malformed": 1,
        "kept_conflicts": 0,
    }
    records = issues_as_records(result.issues)
    assert [(r["input"], r["reason"], r["kept"]) for r in records] == [
        ("b <*>", CONFLICT, False),
        ("c <*>", MALFORMED_TAGS, False),
    ]


def test_join_keep_conflicts_rewrites_answer_to_rectified_label_and_flags_it():
    result = join_rationales(TEMPLATES, [rat("b <*>", "Looks fine.", NORMAL)], keep_conflicts=True)
    assert result.samples == [Sample("b <*>", cot_label("Looks fine.", ABNORMAL))]
    assert [(i.reason, i.kept) for i in result.issues] == [(CONFLICT, True)]
    assert (result.report()["kept_conflicts"], result.report()["joined_abnormal"]) == (1, 1)


def test_join_keep_conflicts_never_keeps_malformed():
    result = join_rationales(
        TEMPLATES, [Rationale("a <*>", "<think></think><answer>normal</answer>")], keep_conflicts=True
    )
    assert result.samples == [] and [i.reason for i in result.issues] == [EMPTY_THINK]


def test_join_first_accepted_rationale_wins_and_a_rejected_one_leaves_room():
    rationales = [
        rat("a <*>", "Wrong.", ABNORMAL),  # rejected conflict
        rat("a <*>", "Distilled later.", NORMAL),  # accepted in its place
        rat("a <*>", "Third.", NORMAL),  # duplicate
    ]
    result = join_rationales(TEMPLATES, rationales)
    assert result.samples == [Sample("a <*>", cot_label("Distilled later.", NORMAL))]
    assert [i.reason for i in result.issues] == [CONFLICT, DUPLICATE]


def test_join_cot_label_drops_text_outside_the_tags():
    messy = Rationale("a <*>", "Sure! <think>\n Routine.\n</think>\n<answer>Normal</answer> Done.")
    assert join_rationales(TEMPLATES, [messy]).samples[0].label == "<think>Routine.</think><answer>normal</answer>"


def test_join_template_with_two_labels_is_a_data_error():
    with pytest.raises(SampleFormatError, match="'a <\\*>' .*both labels"):
        join_rationales([Sample("a <*>", NORMAL), Sample("a <*>", "1")], [])


def test_rationales_round_trip_in_rlog_layout(tmp_path):
    rationales = [rat("a <*>", "Routine.", NORMAL), rat("b <*>", "Fault.", ABNORMAL)]
    write_rationales(tmp_path / "r.json", rationales)
    assert list(json.loads((tmp_path / "r.json").read_text())[0]) == ["instruction", "input", "label", "reasoning"]
    assert read_rationales(tmp_path / "r.json") == rationales


def test_read_rationales_missing_reasoning_names_the_item(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"input": "a", "reasoning": "x"}, {"input": "b"}]))
    with pytest.raises(SampleFormatError, match="item 1 lacks the string field 'reasoning'"):
        read_rationales(tmp_path / "r.json")


def test_read_templates_sheet_and_sample_json_give_word_labels(tmp_path):
    (tmp_path / "t.csv").write_text("log,label\na <*>,0\nb <*>,1\n")
    (tmp_path / "t.json").write_text(
        json.dumps(
            [
                {"instruction": "i", "input": "c", "label": "Abnormal"},
                {"instruction": "i", "input": "d", "label": cot_label("x", NORMAL)},
            ]
        )
    )
    assert [(s.input, s.label) for s in read_templates(tmp_path / "t.csv")] == [("a <*>", NORMAL), ("b <*>", ABNORMAL)]
    assert [(s.input, s.label) for s in read_templates(tmp_path / "t.json")] == [("c", ABNORMAL), ("d", NORMAL)]


def rectified(sheet, patch) -> list[Sample]:
    """Templates of `sheet` with the patch applied by exact matching (as the reference did)."""
    return rectify_templates(read_templates(sheet), patch)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ("exact", [NORMAL, ABNORMAL, NORMAL]),  # "c, <*>" misses "c <*>" by a comma, as in the public patch
        ("normalized", [NORMAL, ABNORMAL, ABNORMAL]),
    ],
)
def test_rectify_templates_applies_patch_in_memory(tmp_path, match, expected):
    patch = tmp_path / "patch.json"
    patch.write_text(
        json.dumps(
            [
                {"input": "a <*>", "label": "abnormal", "rectified": "normal"},
                {"input": "b <*>", "label": "normal", "rectified": "abnormal"},
                {"input": "c, <*>", "label": "normal", "rectified": "abnormal"},
            ]
        )
    )
    templates = [Sample("a <*>", ABNORMAL), Sample("b <*>", NORMAL), Sample("c <*>", NORMAL)]
    assert [s.label for s in rectify_templates(templates, patch, match)] == expected


def test_embedded_sample_rationales_join_to_rectified_templates():
    templates = [
        s
        for name in ("bgl", "spirit")
        for s in rectified(SAMPLE_DATA_DIR / f"{name}_templates.csv", SAMPLE_DATA_DIR / "anomaly_patch.json")
    ]
    result = join_rationales(templates, read_rationales(SAMPLE_DATA_DIR / "rationales.json"))
    report = result.report()
    assert report["joined"] + report["missing"] == report["templates"] == len({s.input for s in templates})
    assert {k: report[k] for k in ("templates", "joined", "joined_abnormal", "missing", "conflicts", "malformed")} == {
        "templates": 92,
        "joined": 80,
        "joined_abnormal": 21,
        "missing": 12,
        "conflicts": 3,
        "malformed": 1,
    }
    labels = {s.input: s.label for s in templates}
    assert all(check_rationale(s.label, labels[s.input]) is None for s in result.samples)  # ends in the rectified label


@pytest.mark.realdata
def test_public_rlog_rationales_against_rectified_logprompt_labels(public_data):
    rationales = read_rationales(public_data / "rlog" / "AnomalyDetection_with_reason.json")
    patch = public_data / "rationanomaly" / "anomaly_patch.json"
    bgl = rectified(public_data / "logprompt" / "templates_bgl.xlsx", patch)
    spirit = rectified(public_data / "logprompt" / "templates_spirit.xlsx", patch)
    assert len(rationales) == 332
    assert sorted(r.label for r in rationales).count(ABNORMAL) == 40  # 292 normal / 40 abnormal as published
    assert [join_rationales(part, rationales).report()["templates_with_rationale"] for part in (bgl, spirit)] == [
        194,
        138,
    ]
    result = join_rationales(bgl + spirit, rationales)
    report = result.report()
    assert report["by_reason"] == {CONFLICT: 31, EMPTY_THINK: 3, MALFORMED_TAGS: 2}
    # 30 rationales argue normal for a template the experts rectified to abnormal, 1 the other way round
    assert (report["conflicts_normal_to_abnormal"], report["conflicts_abnormal_to_normal"]) == (30, 1)
    assert (report["joined"], report["joined_abnormal"], report["missing"], report["unused_rationales"]) == (
        296,
        37,
        3063 - 296,
        0,
    )
    kept = join_rationales(bgl + spirit, rationales, keep_conflicts=True).report()
    assert (kept["joined"], kept["joined_abnormal"], kept["kept_conflicts"]) == (327, 67, 31)
