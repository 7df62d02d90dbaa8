"""Raw logs to loghub structured CSVs: header fields split as loghub does, templates masked, sessions readable."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from rationanomaly.loaders import load_structured_log
from rationanomaly.parsing import mask_template, parse_line, structure_lines, structure_log
from rationanomaly.paths import REPO_ROOT, SAMPLE_DATA_DIR

HEADER_AND_CONTENT = {
    "bgl": [
        "LineId",
        "Label",
        "Timestamp",
        "Date",
        "Node",
        "Time",
        "NodeRepeat",
        "Type",
        "Component",
        "Level",
        "Content",
    ],
    "thunderbird": [
        "LineId",
        "Label",
        "Timestamp",
        "Date",
        "User",
        "Month",
        "Day",
        "Time",
        "Location",
        "Component",
        "PID",
        "Content",
    ],
}


@pytest.mark.parametrize(
    "content, expected",
    [
        ("instruction cache parity error corrected", "instruction cache parity error corrected"),  # no variable
        ("generating core.2275", "generating <*>"),  # a token with a digit
        ("CE sym 21, at 0x1b9f4bc0, mask 0x10", "CE sym <*> at <*> mask <*>"),  # the comma goes with its token
        ("  fan   module R01-M1  failed ", "fan module <*> failed"),  # whitespace normalised
    ],
)
def test_mask_template_replaces_every_token_holding_a_digit(content, expected):
    assert mask_template(content) == expected


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            "- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond(pam_unix)[2915]: session closed for user root",
            {"Component": "crond(pam_unix)", "PID": "2915", "Content": "session closed for user root"},
        ),
        (
            "- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 kernel: a: b",  # only the first ": " splits
            {"Component": "kernel", "PID": "", "Content": "a: b"},
        ),
        (
            "- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 - User ID: CentOS-4",  # loghub: spaces allowed
            {"Component": "- User ID", "PID": "", "Content": "CentOS-4"},
        ),
        (
            "- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 no program here",
            {"Component": "", "PID": "", "Content": "no program here"},
        ),
    ],
)
def test_thunderbird_layout_splits_component_and_pid_as_loghub(line, expected):
    row = parse_line(line, "thunderbird")
    assert {key: row[key] for key in expected} == expected
    assert (row["Label"], row["User"], row["Location"]) == ("-", "dn228", "dn228/dn228")


def test_short_line_keeps_its_fields_and_an_empty_message():
    row = parse_line("KERNDTLB 1117838570 2005.06.03", "bgl")
    assert (row["Label"], row["Date"], row["Level"], row["Content"]) == ("KERNDTLB", "2005.06.03", "", "")


def test_event_ids_number_templates_in_order_of_first_appearance_and_blank_lines_keep_line_numbers():
    lines = [
        "- 1 d n t n RAS KERNEL INFO boot 1",
        "",
        "- 2 d n t n RAS KERNEL INFO halt",
        "- 3 d n t n RAS KERNEL INFO boot 22",
    ]
    rows = list(structure_lines(lines, "bgl"))
    assert [(r["LineId"], r["EventId"], r["EventTemplate"]) for r in rows] == [
        ("1", "E1", "boot <*>"),
        ("3", "E2", "halt"),
        ("4", "E1", "boot <*>"),
    ]


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="unknown log layout 'hdfs'"):
        list(structure_lines(["x"], "hdfs"))


def compare_with_structured(raw, structured, layout, tmp_path):
    """Parse `raw` and return (our frame, the given structured frame)."""
    summary = structure_log(raw, tmp_path / "parsed.csv", layout)
    ours = pd.read_csv(summary.output, dtype=str, keep_default_na=False)
    given = pd.read_csv(structured, dtype=str, keep_default_na=False)
    return summary, ours, given


def test_sample_raw_log_parses_back_to_the_sample_structured_log(tmp_path):
    summary, ours, given = compare_with_structured(
        SAMPLE_DATA_DIR / "bgl_raw.log", SAMPLE_DATA_DIR / "bgl_structured.csv", "bgl", tmp_path
    )
    columns = HEADER_AND_CONTENT["bgl"]
    pd.testing.assert_frame_equal(ours[columns], given[columns])
    assert (summary.lines, summary.alerts, summary.templates) == (1500, 116, 49)
    log = load_structured_log(summary.output)  # what anomaly_patch.py and session_builder.py read
    assert len(log.frame) == 1500


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name, layout, templates, loghub_templates, alerts",
    [
        ("BGL", "bgl", 133, 120, 143),
        ("Thunderbird", "thunderbird", 196, 149, 0),
    ],
)
def test_loghub_samples_parse_to_loghubs_own_fields(
    public_data, tmp_path, name, layout, templates, loghub_templates, alerts
):
    summary, ours, given = compare_with_structured(
        public_data / "loghub" / f"{name}_2k.log",
        public_data / "loghub" / f"{name}_2k.log_structured.csv",
        layout,
        tmp_path,
    )
    columns = HEADER_AND_CONTENT[layout]
    pd.testing.assert_frame_equal(ours[columns], given[columns])  # every line, every field but the template
    assert (summary.lines, summary.alerts, summary.templates) == (2000, alerts, templates)
    assert given["EventTemplate"].nunique() == loghub_templates  # Drain merges more than masking does


def test_cli_writes_the_csv_and_refuses_a_missing_input_with_one_line(tmp_path):
    script = str(REPO_ROOT / "datasets" / "log_parser.py")
    done = subprocess.run(
        [
            sys.executable,
            script,
            "--input",
            str(SAMPLE_DATA_DIR / "bgl_raw.log"),
            "--output",
            str(tmp_path / "out.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"1500 lines (116 alerts), 49 templates -> {tmp_path / 'out.csv'}\n"
    missing = subprocess.run(
        [sys.executable, script, "--input", str(tmp_path / "BGL.log"), "--output", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "BGL.log does not exist" in missing.stderr.splitlines()[-1]
    assert not (tmp_path / "x.csv").exists()


def test_cli_refuses_to_write_the_csv_over_the_raw_log(tmp_path, cli, snapshot):
    raw = tmp_path / "BGL.log"
    raw.write_bytes((SAMPLE_DATA_DIR / "bgl_raw.log").read_bytes())
    before = snapshot(tmp_path)
    result = cli("datasets/log_parser.py", ["--input", str(raw), "--output", str(raw)])
    assert result.code == 2 and result.errors == [
        f"error: output {raw} is the input {raw}; writing it would replace the input: choose another output path"
    ]
    assert snapshot(tmp_path) == before  # the raw log is untouched
