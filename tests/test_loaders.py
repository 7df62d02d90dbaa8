"""Loaders: template sheets, loghub structured logs and sample JSON, with clear errors and reported duplicates."""

from __future__ import annotations

import json
import logging
import re
import zipfile

import pandas as pd
import pytest

from rationanomaly.loaders import (
    REFUSE,
    SHEET,
    SORT,
    STRUCTURED,
    DataFormatError,
    detect_format,
    first_out_of_order,
    in_line_order,
    line_labels,
    load_samples,
    load_structured_log,
    load_template_sheet,
)
from rationanomaly.paths import SAMPLE_DATA_DIR

STRUCTURED_HEADER = "LineId,Label,Content,EventId,EventTemplate\n"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("log,label\na <*>,0\nb failed,1\n", [0, 1]),  # 0/1
        ("log,label\na <*>,normal\nb failed, Abnormal \n", [0, 1]),  # words, any case, spaces
        ("label,log,extra\n1,a,x\n", [1]),  # column order and extra columns do not matter
        ("log,label\na <*>,0.0\nb failed,1.0\n", [0, 1]),  # a float column saved to CSV
    ],
)
def test_template_sheet_labels_become_0_1(tmp_path, text, labels):
    sheet = load_template_sheet(write(tmp_path / "t.csv", text))
    assert list(sheet.frame["label"]) == labels and sheet.frame["label"].dtype == "int64"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log\na\n", "missing column(s) ['label']"),  # no label column
        ("template,label\na,0\n", "missing column(s) ['log']"),  # wrong template column name
        ("log,label\na,0\nb,2\n", "row 3 (template 'b')"),  # label outside {0,1,normal,abnormal}
        ("log,label\na,0\n,1\n", "row 3 has an empty 'log' template"),  # empty template
        ("log,label\na,0\n   ,1\n", "row 3 has an empty 'log' template"),  # blank template
        ("log,label\na,\n", "row 2"),  # empty label
    ],
)
def test_template_sheet_errors_name_file_row_and_problem(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataFormatError) as error:
        load_template_sheet(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_template_sheet_duplicates_are_reported_and_kept(tmp_path, caplog):
    path = write(tmp_path / "d.csv", "log,label\na,0\nb,1\na,1\nb,1\nc,0\n")
    with caplog.at_level(logging.WARNING, logger="rationanomaly.loaders"):
        sheet = load_template_sheet(path)
    assert len(sheet.frame) == 5  # nothing merged
    assert [(d.key, d.rows, d.conflicting) for d in sheet.duplicates] == [("a", (2, 4), True), ("b", (3, 5), False)]
    assert "2 templates occur more than once (1 with conflicting labels)" in caplog.text


def test_template_sheet_reads_xlsx_with_numeric_cells(tmp_path):
    path = tmp_path / "t.xlsx"
    pd.DataFrame({"log": ["x <*> y", 42], "label": [1.0, 0]}).to_excel(path, index=False)
    sheet = load_template_sheet(path)
    assert list(sheet.frame["log"]) == ["x <*> y", "42"] and list(sheet.frame["label"]) == [1, 0]


def test_template_sheet_keeps_exact_template_text(tmp_path):
    sheet = load_template_sheet(write(tmp_path / "t.csv", 'log,label\n"a,  b <*> ",0\n'))
    assert sheet.frame["log"][0] == "a,  b <*> "  # the patch matches exact strings


@pytest.mark.parametrize("name", ["t.json", "t.txt"])
def test_template_sheet_rejects_other_file_types(tmp_path, name):
    with pytest.raises(DataFormatError, match="use .csv or .xlsx"):
        load_template_sheet(write(tmp_path / name, "log,label\n"))


def test_missing_file_is_a_file_not_found_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_template_sheet(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["-", "KERNDTLB", " - ", "APPSEV"], [0, 1, 0, 1]),  # '-' is normal, any tag abnormal
        ([], []),
    ],
)
def test_line_labels_follow_loghub_convention(labels, expected):
    assert line_labels(labels) == expected


def test_structured_log_loads_as_text_with_line_labels(tmp_path):
    path = write(tmp_path / "s.csv", STRUCTURED_HEADER + "1,-,a 1,E1,a <*>\n2,KERNDTLB,b 007,E2,b <*>\n")
    log = load_structured_log(path)
    assert log.line_labels == [0, 1] and list(log.frame["Content"]) == ["a 1", "b 007"]  # text kept: 007
    assert log.duplicates == ()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("1,-,a,E1\n", "missing column(s) ['EventTemplate']"),  # wrong header below
        ("x,-,a,E1,a\n", "row 2 has LineId 'x'"),  # non-integer LineId
        ("1,,a,E1,a\n", "row 2 has an empty Label"),  # empty Label
        ("1,-,a,E1,\n", "row 2 has an empty EventTemplate"),  # unparsed line
    ],
)
def test_structured_log_errors_name_row_and_fix(tmp_path, rows, message):
    header = "LineId,Label,Content,EventId\n" if "missing" in message else STRUCTURED_HEADER
    with pytest.raises(DataFormatError, match=re.escape(message)):
        load_structured_log(write(tmp_path / "s.csv", header + rows))


def test_structured_log_duplicate_line_ids_are_reported(tmp_path):
    log = load_structured_log(write(tmp_path / "s.csv", STRUCTURED_HEADER + "1,-,a,E1,a\n1,-,a,E1,a\n"))
    assert [(d.key, d.rows) for d in log.duplicates] == [("1", (2, 3))] and len(log.frame) == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("log,label\n", SHEET),
        (STRUCTURED_HEADER, STRUCTURED),
    ],
)
def test_detect_format_reads_the_header(tmp_path, header, expected):
    assert detect_format(write(tmp_path / "f.csv", header)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bgl_templates.csv", SHEET),
        ("spirit_templates.csv", SHEET),
        ("bgl_structured.csv", STRUCTURED),  # template_split.py reads it as lines, not templates
    ],
)
def test_detect_format_on_the_embedded_sample(name, expected):
    assert detect_format(SAMPLE_DATA_DIR / name) == expected


def test_detect_format_rejects_unknown_layout(tmp_path):
    with pytest.raises(DataFormatError, match="neither a template sheet"):
        detect_format(write(tmp_path / "f.csv", "a,b\n"))


def test_samples_accept_words_and_cot_labels_and_report_duplicates(tmp_path):
    records = [
        {"instruction": "i", "input": "a", "label": "normal"},
        {"input": "b", "label": "<think>x</think><answer>abnormal</answer>"},
        {"input": "a", "label": "abnormal"},
    ]
    loaded = load_samples(write(tmp_path / "s.json", json.dumps(records)))
    assert [s.input for s in loaded.samples] == ["a", "b", "a"]
    assert [(d.key, d.rows, d.conflicting) for d in loaded.duplicates] == [("a", (0, 2), True)]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"input": "a", "label": "anomalous"}, "item 0 (input 'a')"),  # not a label
        ({"input": "a", "label": "<think>x</think><answer>maybe</answer>"}, "item 0"),  # CoT with a bad answer
        ({"input": " ", "label": "normal"}, "item 0 has an empty 'input'"),
    ],
)
def test_samples_errors_name_the_item(tmp_path, record, message):
    with pytest.raises(DataFormatError, match=re.escape(message)):
        load_samples(write(tmp_path / "s.json", json.dumps([record])))


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "templates", "abnormal"),
    [
        ("templates_bgl.xlsx", 1766, 44),
        ("templates_spirit.xlsx", 1297, 22),
    ],
)
def test_public_template_sheets_load_with_known_counts(public_data, name, templates, abnormal):
    sheet = load_template_sheet(public_data / "logprompt" / name)
    assert (len(sheet.frame), sheet.anomalies, len(sheet.duplicates)) == (templates, abnormal, 0)


@pytest.mark.realdata
def test_public_bgl_2k_structured_log_has_143_alert_lines(public_data):
    log = load_structured_log(public_data / "loghub" / "BGL_2k.log_structured.csv")
    assert (len(log.frame), sum(log.line_labels), len(log.duplicates)) == (2000, 143, 0)


@pytest.mark.realdata
def test_public_rationale_file_loads_as_samples(public_data):
    loaded = load_samples(public_data / "rlog" / "AnomalyDetection_with_reason.json")
    assert len(loaded.samples) == 332
    assert sum(s.label == "abnormal" for s in loaded.samples) == 40


def test_template_sheet_csv_saved_by_excel_with_a_bom_loads(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufefflog,label\na,1\n".encode())
    assert detect_format(path) == SHEET and list(load_template_sheet(path).frame["log"]) == ["a"]


def test_template_sheet_samples_carry_word_labels_in_file_order(tmp_path):
    sheet = load_template_sheet(write(tmp_path / "s.csv", "log,label\nfan ok <*>,0\ndisk failed <*>,abnormal\n"))
    assert [(s.input, s.label) for s in sheet.samples] == [("fan ok <*>", "normal"), ("disk failed <*>", "abnormal")]


# ---- rows that do not fit the header, and files that are not what they claim --------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log,label\nfoo, bar,1\nbaz, qux,0\n", "line 2 has 3 fields but the header has 2"),  # every row ragged
        ("log,label\nfoo,1\nbaz, qux,0\n", "line 3 has 3 fields but the header has 2"),  # one row ragged
        ("log,label\nfoo,1\nbaz\n", "line 3 has 1 field but the header has 2"),  # a short row
        ("log,label\nfoo,1,\n", "line 2 has 3 fields"),  # a trailing comma is a field too
        ('log,label\nfoo,1\n"baz,0\n', "line 3: not valid CSV (unexpected end of data)"),  # unclosed quote
        ("", "the file is empty"),  # not even a header
        ("log,label\n", "no rows below the header"),  # header only (degenerate input: refused)
        ("log,label,\nfoo,1,x\n", "header column 3 has no name"),  # data under no header
        ("log,label,label\nfoo,1,0\n", "header names ['label'] more than once"),  # which label?
    ],
)
def test_template_sheet_csv_rows_must_match_the_header(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataFormatError) as error:
        load_template_sheet(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_csv_rows_may_quote_commas_and_blank_lines_are_skipped(tmp_path):
    sheet = load_template_sheet(write(tmp_path / "t.csv", 'log,label\n"foo, bar <*>",1\n\nbaz,0\n\n'))
    assert list(sheet.frame["log"]) == ["foo, bar <*>", "baz"] and list(sheet.frame["label"]) == [1, 0]


def test_ragged_structured_log_is_refused_naming_the_line(tmp_path):
    path = write(tmp_path / "s.csv", STRUCTURED_HEADER + "1,-,fan ok,E1,fan <*>\n2,-,disk, full,E2,disk <*>\n")
    with pytest.raises(DataFormatError, match="line 3 has 6 fields but the header has 5"):
        load_structured_log(path)


def test_latin1_csv_is_refused_with_the_byte_and_a_fix(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("log,label\ncaf\xe9 <*>,0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 0xe9 at offset 13\); save it as UTF-8"):
        load_template_sheet(path)


def test_truncated_xlsx_is_refused_in_one_line(tmp_path):
    whole = tmp_path / "whole.xlsx"
    pd.DataFrame({"log": ["a <*>", "b failed"], "label": [0, 1]}).to_excel(whole, index=False)
    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(whole.read_bytes()[:200])
    for loader in (load_template_sheet, detect_format):
        with pytest.raises(DataFormatError, match=r"cut.xlsx: not a readable .xlsx workbook \(File is not a zip"):
            loader(cut)
    hollow = tmp_path / "hollow.xlsx"  # a zip file, but no workbook inside
    with zipfile.ZipFile(hollow, "w") as archive:
        archive.writestr("readme.txt", "not a workbook")
    with pytest.raises(DataFormatError, match=r"hollow.xlsx: not a readable .xlsx workbook"):
        load_template_sheet(hollow)


def test_xlsx_values_under_no_header_are_refused_and_empty_unnamed_columns_dropped(tmp_path):
    frame = pd.DataFrame([["a <*>", 0, ""], ["b failed", 1, ""]], columns=["log", "label", ""])
    frame.to_excel(tmp_path / "empty_extra.xlsx", index=False)
    assert list(load_template_sheet(tmp_path / "empty_extra.xlsx").frame.columns) == ["log", "label"]
    frame.iloc[1, 2] = "stray"
    frame.to_excel(tmp_path / "stray.xlsx", index=False)
    with pytest.raises(DataFormatError, match="row 3 has a value in column 3, which has no header"):
        load_template_sheet(tmp_path / "stray.xlsx")


# ---- time order of a structured log -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line_ids", "expected"),
    [
        ([1, 2, 3], None),  # in order
        ([1, 2, 2, 3], None),  # a repeated LineId is a duplicate, not disorder
        ([3, 2, 1], 1),  # reversed
        ([1, 3, 2, 4], 2),  # one swap
        ([], None),
    ],
)
def test_first_out_of_order(line_ids, expected):
    assert first_out_of_order(line_ids) == expected


def test_structured_log_out_of_order_is_refused_or_sorted_on_request(tmp_path, caplog):
    rows = ["3,-,c,E1,c <*>", "1,-,a,E1,a <*>", "2,KERNDTLB,b,E2,b <*>"]
    log = load_structured_log(write(tmp_path / "s.csv", STRUCTURED_HEADER + "\n".join(rows) + "\n"))
    with pytest.raises(DataFormatError, match="row 3 has LineId 1 after LineId 3; .* pass --unsorted sort"):
        in_line_order(log, REFUSE)
    with caplog.at_level(logging.WARNING, logger="rationanomaly.loaders"):
        ordered = in_line_order(log, SORT)
    assert list(ordered.frame["LineId"]) == ["1", "2", "3"] and ordered.line_labels == [0, 1, 0]
    assert "LineIds go backwards at 1 place(s), first on row 3" in caplog.text
    assert in_line_order(ordered, REFUSE) is ordered  # an ordered log passes unchanged
