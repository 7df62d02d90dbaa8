"""Label rectification: matching, applying, reporting, the CLI, and the exact counts on the public data."""

from __future__ import annotations

import json
import re
import runpy
import shutil

import pandas as pd
import pytest

from rationanomaly.io import OutputError
from rationanomaly.loaders import DataFormatError, load_structured_log, load_template_sheet
from rationanomaly.patch import (
    EXACT,
    NORMALIZED,
    RECTIFIED_TAG,
    PatchEntry,
    match_entries,
    normalize_template,
    patch_file,
    patch_files,
    read_patch,
)
from rationanomaly.paths import REPO_ROOT, SAMPLE_DATA_DIR


def entry(template: str, rectified: str = "abnormal") -> PatchEntry:
    return PatchEntry(template, rectified, "normal" if rectified == "abnormal" else "abnormal")


def write_patch(path, entries):
    path.write_text(
        json.dumps(
            [{"instruction": "i", "input": e.input, "rectified": e.rectified, "label": e.label} for e in entries]
        ),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Error, getting info", "Error getting info", True),  # the public near-miss: a comma
        ("a  b\tc", "a b c", True),  # whitespace runs
        ("x=<*>, y", "x <*> y", True),  # punctuation around a placeholder
        ("core.<*>", "core <*>", True),
        ("<*> failed", "failed", False),  # the placeholder is a token, not punctuation
        ("Error getting", "error getting", False),  # case is kept
        ("job failed", "job succeeded", False),
    ],
)
def test_normalize_template_ignores_only_punctuation_and_whitespace(a, b, same):
    assert (normalize_template(a) == normalize_template(b)) is same


def test_match_entries_exact_misses_a_comma_that_normalized_recovers():
    templates = ["Error getting info, caught x", "ok"]
    entries = [entry("Error, getting info, caught x"), entry("ok", "normal")]
    exact = match_entries(templates, entries, EXACT)
    normalized = match_entries(templates, entries, NORMALIZED)
    assert [(m.template, m.how) for m in exact] == [(None, None), ("ok", EXACT)]
    assert [(m.template, m.how) for m in normalized] == [("Error getting info, caught x", NORMALIZED), ("ok", EXACT)]


def test_match_entries_prefers_exact_and_refuses_ambiguous_normalized_keys():
    templates = ["a, b", "a b", "c"]
    matches = match_entries(templates, [entry("a b"), entry("a;b"), entry("c.")], NORMALIZED)
    assert [(m.template, m.how) for m in matches] == [("a b", EXACT), (None, None), ("c", NORMALIZED)]
    assert matches[1].candidates == ("a, b", "a b")


def test_match_entries_rejects_unknown_mode():
    with pytest.raises(ValueError, match="match='fuzzy'"):
        match_entries(["a"], [entry("a")], "fuzzy")


def test_patch_sheet_csv_changes_labels_and_reports_counts(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("log,label\nlink down,0\nexited normally,1\nboot ok,0\nfan failed,1\n", encoding="utf-8")
    entries = [entry("link down"), entry("exited normally", "normal"), entry("fan failed"), entry("missing")]
    report = patch_file(src, tmp_path / "out.csv", entries)
    assert list(load_template_sheet(tmp_path / "out.csv").frame["label"]) == [1, 0, 0, 1]
    expected = {
        "templates": 4,
        "matched": 3,
        "changed": 2,
        "normal_to_abnormal": 1,
        "abnormal_to_normal": 1,
        "anomalies_before": 2,
        "anomalies_after": 2,
        "unmatched": ["missing"],
        "already_rectified": ["fan failed"],
        "format": "sheet",
    }
    assert {key: report[key] for key in expected} == expected


def test_patch_sheet_xlsx_in_gives_xlsx_out_with_same_columns(tmp_path):
    src = tmp_path / "in.xlsx"
    pd.DataFrame({"log": ["a <*>", "b"], "label": [0, 0], "note": ["x", "y"]}).to_excel(src, index=False)
    patch_file(src, tmp_path / "out.xlsx", [entry("b")])
    out = pd.read_excel(tmp_path / "out.xlsx")
    assert list(out.columns) == ["log", "label", "note"] and list(out["label"]) == [0, 1]


def test_patch_output_must_keep_the_input_format(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("log,label\na,0\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="keeps the input's format"):
        patch_file(src, tmp_path / "out.xlsx", [entry("a")])


def test_patch_structured_log_tags_rectified_lines_and_keeps_other_columns(tmp_path):
    src = tmp_path / "log.csv"
    src.write_text(
        "LineId,Label,Content,EventTemplate\n1,-,link 3 down,link <*> down\n2,KERNDTLB,tlb 1,tlb <*>\n"
        "3,-,link 4 down,link <*> down\n4,APPSEV,exit 0,exit <*>\n5,-,ok,ok\n",
        encoding="utf-8",
    )
    report = patch_file(
        src, tmp_path / "out.csv", [entry("link <*> down"), entry("exit <*>", "normal"), entry("tlb <*>")]
    )
    out = load_structured_log(tmp_path / "out.csv").frame
    assert list(out["Label"]) == [RECTIFIED_TAG, "KERNDTLB", RECTIFIED_TAG, "-", "-"]  # agreeing tag kept
    assert list(out["Content"]) == ["link 3 down", "tlb 1", "link 4 down", "exit 0", "ok"]
    assert (report["templates"], report["changed"], report["lines_changed"]) == (4, 2, 3)
    assert (report["abnormal_lines_before"], report["abnormal_lines_after"]) == (2, 3)


def test_patch_files_combines_reports_and_unmatched_means_no_file_matched(tmp_path):
    (tmp_path / "a.csv").write_text("log,label\nx,0\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("log,label\ny,0\n", encoding="utf-8")
    patch = write_patch(tmp_path / "p.json", [entry("x"), entry("y"), entry("z")])
    report = patch_files(
        [(tmp_path / "a.csv", tmp_path / "a2.csv"), (tmp_path / "b.csv", tmp_path / "b2.csv")],
        patch,
        tmp_path / "r.json",
    )
    assert (report["matched"], report["changed"], report["unmatched"]) == (2, 2, ["z"])
    assert [f["unmatched"] for f in report["files"]] == [["y", "z"], ["x", "z"]]
    assert json.loads((tmp_path / "r.json").read_text()) == report


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"input": "a", "rectified": "bad"}, "item 0 (input 'a')"),  # unknown label
        ({"input": " ", "rectified": "normal"}, "item 0 has an empty 'input'"),
    ],
)
def test_read_patch_rejects_bad_entries(tmp_path, record, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([record]), encoding="utf-8")
    with pytest.raises(DataFormatError, match=re.escape(message)):
        read_patch(path)


def run_cli(argv):
    return runpy.run_path(str(REPO_ROOT / "datasets" / "anomaly_patch.py"), run_name="cli")["main"](argv)


def test_cli_patches_the_sample_and_prints_a_summary(tmp_path, capsys):
    argv = [
        "--input",
        str(SAMPLE_DATA_DIR / "bgl_templates.csv"),
        "--output",
        str(tmp_path / "bgl.csv"),
        "--patch",
        str(SAMPLE_DATA_DIR / "anomaly_patch.json"),
        "--report",
        str(tmp_path / "report.json"),
        "--match",
        "normalized",
    ]
    assert run_cli(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["changed"], report["anomalies_before"], report["anomalies_after"]) == (5, 11, 14)
    assert "50 templates, 5 matched, 5 changed" in capsys.readouterr().out


def test_cli_report_defaults_to_the_output_folder(tmp_path):
    out = tmp_path / "patched"
    assert (
        run_cli(
            [
                "--input",
                str(SAMPLE_DATA_DIR / "bgl_templates.csv"),
                "--output",
                str(out / "bgl.csv"),
                "--patch",
                str(SAMPLE_DATA_DIR / "anomaly_patch.json"),
            ]
        )
        == 0
    )
    assert json.loads((out / "anomaly_patch_report.json").read_text())["files"][0]["output"] == str(out / "bgl.csv")


def test_cli_with_unpaired_output_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        run_cli(["--input", "a.csv"])


def test_cli_without_arguments_explains_the_reference_file_layout(capsys):
    # datasets/trainsets/ and datasets/anomaly_patch.json are user data, absent from the repository
    if (REPO_ROOT / "datasets" / "anomaly_patch.json").exists():
        pytest.skip("a real datasets/anomaly_patch.json is present")
    assert run_cli([]) == 2
    assert "datasets/trainsets/BGL.xlsx" in capsys.readouterr().err


PUBLIC_COUNTS = {  # (match) -> per-file (templates, matched, changed, n->a, a->n, before, after)
    EXACT: [(1766, 71, 71, 69, 2, 44, 111), (1297, 153, 152, 151, 1, 22, 172)],
    NORMALIZED: [(1766, 72, 72, 70, 2, 44, 112), (1297, 153, 152, 151, 1, 22, 172)],
}
COUNT_KEYS = (
    "templates",
    "matched",
    "changed",
    "normal_to_abnormal",
    "abnormal_to_normal",
    "anomalies_before",
    "anomalies_after",
)
COMMA_ENTRY = (
    "Error, getting detailed hw info for node, caught java.io.IOException: Problems with the chip, clear all resets"
)


@pytest.mark.realdata
@pytest.mark.parametrize("match", [EXACT, NORMALIZED])
def test_public_patch_on_both_sheets_has_the_known_counts(public_data, tmp_path, match):
    pairs = [
        (public_data / "logprompt" / "templates_bgl.xlsx", tmp_path / "bgl.xlsx"),
        (public_data / "logprompt" / "templates_spirit.xlsx", tmp_path / "spirit.xlsx"),
    ]
    report = patch_files(pairs, public_data / "rationanomaly" / "anomaly_patch.json", tmp_path / "r.json", match)
    assert [tuple(f[k] for k in COUNT_KEYS) for f in report["files"]] == PUBLIC_COUNTS[match]
    # 225 entries (221 normal->abnormal, 4 abnormal->normal): exact matches 224, one differs by a comma;
    # one abnormal->normal entry is already normal in the Spirit sheet.
    exact = match == EXACT
    assert (report["patch_entries"], report["matched"], report["matched_exact"]) == (225, 224 + (not exact), 224)
    assert report["unmatched"] == ([COMMA_ENTRY] if exact else [])
    assert [m["input"] for m in report["matched_normalized_only"]] == ([] if exact else [COMMA_ENTRY])
    assert report["already_rectified"] == ["without cmapeerd you #43# be"]
    assert (report["changed"], report["normal_to_abnormal"], report["abnormal_to_normal"]) == (
        (223, 220, 3) if exact else (224, 221, 3)
    )
    assert (report["anomalies_before"], report["anomalies_after"]) == (66, 283 if exact else 284)
    assert load_template_sheet(tmp_path / "bgl.xlsx").anomalies == (111 if exact else 112)


@pytest.mark.realdata
def test_public_patch_on_bgl_2k_structured_log(public_data, tmp_path):
    report = patch_file(
        public_data / "loghub" / "BGL_2k.log_structured.csv",
        tmp_path / "bgl2k.csv",
        read_patch(public_data / "rationanomaly" / "anomaly_patch.json"),
        NORMALIZED,
    )
    assert (report["templates"], report["matched_exact"], report["matched"], report["changed"]) == (120, 4, 7, 7)
    assert (report["abnormal_lines_before"], report["abnormal_lines_after"]) == (143, 306)


@pytest.mark.realdata
def test_cli_without_arguments_patches_the_reference_trainsets_layout(public_data, tmp_path):
    folder = tmp_path / "datasets"
    (folder / "trainsets").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "datasets" / "anomaly_patch.py", folder)
    shutil.copy(public_data / "logprompt" / "templates_bgl.xlsx", folder / "trainsets" / "BGL.xlsx")
    shutil.copy(public_data / "logprompt" / "templates_spirit.xlsx", folder / "trainsets" / "Spirit.xlsx")
    shutil.copy(public_data / "rationanomaly" / "anomaly_patch.json", folder)
    assert runpy.run_path(str(folder / "anomaly_patch.py"), run_name="cli")["main"]([]) == 0
    report = json.loads((folder / "trainsets" / "anomaly_patch_report.json").read_text())
    assert (report["matched"], report["anomalies_after"]) == (224, 283)
    assert load_template_sheet(folder / "trainsets" / "Spirit_rectified.xlsx").anomalies == 172


# ---- outputs that would lose data, and what the combined report counts ---------------------------------


def _two_sheets(tmp_path):
    (tmp_path / "a.csv").write_text("log,label\nx,0\nw,0\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("log,label\ny,0\nx,0\n", encoding="utf-8")
    patch = write_patch(tmp_path / "p.json", [entry("x"), entry("y"), entry("z")])
    return tmp_path / "a.csv", tmp_path / "b.csv", patch


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (("same.csv", "same.csv"), "same.csv is named twice as an output"),  # the first file's result would be lost
        (("a.csv", "b2.csv"), "output {tmp}/a.csv is the input {tmp}/a.csv"),  # overwrites its own input
        (("b.csv", "b2.csv"), "output {tmp}/b.csv is the input {tmp}/b.csv"),  # overwrites the other input
        (("link.csv", "b2.csv"), "output {tmp}/link.csv is the input {tmp}/a.csv"),  # a symlink to an input
        (("a2.csv", "p.json"), "output {tmp}/p.json is the input {tmp}/p.json"),  # overwrites the patch
    ],
)
def test_cli_refuses_outputs_that_would_lose_data(tmp_path, cli, snapshot, outputs, message):
    a, b, patch = _two_sheets(tmp_path)
    (tmp_path / "link.csv").symlink_to(a)
    before = snapshot(tmp_path)
    result = cli(
        "datasets/anomaly_patch.py",
        [
            "--input",
            str(a),
            "--output",
            str(tmp_path / outputs[0]),
            "--input",
            str(b),
            "--output",
            str(tmp_path / outputs[1]),
            "--patch",
            str(patch),
        ],
    )
    assert result.code == 2 and len(result.errors) == 1
    assert message.format(tmp=tmp_path) in result.errors[0]
    assert snapshot(tmp_path) == before


def test_cli_in_place_patches_a_file_that_is_its_own_output(tmp_path, cli):
    a, _, patch = _two_sheets(tmp_path)
    result = cli(
        "datasets/anomaly_patch.py",
        [
            "--input",
            str(a),
            "--output",
            str(a),
            "--patch",
            str(patch),
            "--in_place",
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.code == 0
    assert a.read_text(encoding="utf-8") == "log,label\nx,1\nw,0\n"
    with pytest.raises(OutputError, match="is the input"):  # in place never means "over the patch"
        patch_files([(a, patch)], patch, tmp_path / "r2.json", in_place=True)


def test_combined_report_counts_entries_once_and_templates_per_file(tmp_path):
    a, b, patch = _two_sheets(tmp_path)
    report = patch_files([(a, tmp_path / "a2.csv"), (b, tmp_path / "b2.csv")], patch, tmp_path / "r.json")
    # entries: x hits both files, y one, z none -> 2 of 3 matched, both exactly (x counted once, not twice)
    assert (report["patch_entries"], report["matched"], report["matched_exact"], report["unmatched"]) == (
        3,
        2,
        2,
        ["z"],
    )
    # templates: summed over files (a: x changed; b: y and x changed)
    assert (report["templates"], report["changed"], report["normal_to_abnormal"], report["anomalies_after"]) == (
        4,
        3,
        3,
        3,
    )
    assert [f["matched_exact"] for f in report["files"]] == [1, 2]


def test_combined_report_normalized_only_lists_each_entry_once_with_its_file(tmp_path):
    (tmp_path / "a.csv").write_text('log,label\n"disk, full",0\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text("log,label\nother,0\n", encoding="utf-8")
    patch = write_patch(tmp_path / "p.json", [entry("disk full")])
    report = patch_files(
        [(tmp_path / "a.csv", tmp_path / "a2.csv"), (tmp_path / "b.csv", tmp_path / "b2.csv")],
        patch,
        tmp_path / "r.json",
        NORMALIZED,
    )
    assert (report["matched"], report["matched_exact"]) == (1, 0)
    assert report["matched_normalized_only"] == [
        {"input": "disk full", "template": "disk, full", "file": str(tmp_path / "a.csv")}
    ]


def test_empty_patch_is_refused(tmp_path, cli):
    a, _, _ = _two_sheets(tmp_path)
    (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
    result = cli(
        "datasets/anomaly_patch.py",
        ["--input", str(a), "--output", str(tmp_path / "o.csv"), "--patch", str(tmp_path / "empty.json")],
    )
    assert result.code == 2 and result.errors == [
        f"error: {tmp_path / 'empty.json'}: the list is empty; it needs at least one record"
    ]
    assert not (tmp_path / "o.csv").exists()
