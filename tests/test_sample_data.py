"""The embedded sample: loads cleanly and has exactly the properties its README documents."""

from __future__ import annotations

import re
import runpy

import pytest

from rationanomaly.labels import ABNORMAL, TAGS
from rationanomaly.loaders import load_structured_log, load_template_sheet
from rationanomaly.patch import EXACT, NORMALIZED, patch_files
from rationanomaly.paths import SAMPLE_DATA_DIR
from rationanomaly.response import extract_answer, tags_in_order
from rationanomaly.samples import read_records

BGL, SPIRIT = SAMPLE_DATA_DIR / "bgl_templates.csv", SAMPLE_DATA_DIR / "spirit_templates.csv"
PATCH, RATIONALES = SAMPLE_DATA_DIR / "anomaly_patch.json", SAMPLE_DATA_DIR / "rationales.json"
STRUCTURED = SAMPLE_DATA_DIR / "bgl_structured.csv"


@pytest.mark.parametrize(
    ("path", "templates", "abnormal"),
    [
        (BGL, 50, 11),  # 22% abnormal
        (SPIRIT, 42, 8),  # 19% abnormal
    ],
)
def test_sample_sheet_loads_without_duplicates_and_with_documented_counts(path, templates, abnormal):
    sheet = load_template_sheet(path)
    assert (len(sheet.frame), sheet.anomalies, sheet.duplicates) == (templates, abnormal, ())
    assert 0.15 <= abnormal / templates <= 0.25


def test_sample_sheets_share_no_template():
    bgl, spirit = (set(load_template_sheet(p).frame["log"]) for p in (BGL, SPIRIT))
    assert bgl.isdisjoint(spirit)


@pytest.mark.parametrize(
    ("match", "matched", "changed", "to_abnormal", "to_normal", "unmatched"),
    [
        (EXACT, 8, 7, 5, 2, ["fan module <*> failed airflow below threshold <*>"]),  # the comma near-miss
        (NORMALIZED, 9, 8, 6, 2, []),
    ],
)
def test_sample_patch_has_documented_effect_on_both_sheets(
    tmp_path, match, matched, changed, to_abnormal, to_normal, unmatched
):
    pairs = [(BGL, tmp_path / "bgl.csv"), (SPIRIT, tmp_path / "spirit.csv")]
    report = patch_files(pairs, PATCH, tmp_path / "report.json", match)
    assert (report["patch_entries"], report["matched"], report["changed"]) == (9, matched, changed)
    assert (report["normal_to_abnormal"], report["abnormal_to_normal"]) == (to_abnormal, to_normal)
    assert report["unmatched"] == unmatched
    assert report["already_rectified"] == ["kernel: scsi <*>: retry <*> succeeded"]  # the no-op entry


def test_sample_rationales_cover_most_templates_and_carry_the_documented_flaws():
    records = read_records(RATIONALES, ("instruction", "input", "label", "reasoning"))
    templates = set(load_template_sheet(BGL).frame["log"]) | set(load_template_sheet(SPIRIT).frame["log"])
    inputs = [r["input"] for r in records]
    assert len(records) == 84 and len(set(inputs)) == 84 and set(inputs) <= templates
    assert len(records) / len(templates) >= 0.9
    untagged = [r["input"] for r in records if not tags_in_order(r["reasoning"])]
    assert untagged == ["kernel: Lustre: client <*> reconnected to OST <*>"]
    conflicts = sorted(
        r["input"] for r in records if tags_in_order(r["reasoning"]) and extract_answer(r["reasoning"]) != r["label"]
    )
    assert conflicts == ["link card <*> power supply fault detected", "program interrupt counter reset to <*>"]


def test_sample_rationale_labels_are_the_patched_labels(tmp_path):
    patch_files(
        [(BGL, tmp_path / "bgl.csv"), (SPIRIT, tmp_path / "spirit.csv")], PATCH, tmp_path / "r.json", NORMALIZED
    )
    patched = {}
    for name in ("bgl.csv", "spirit.csv"):
        frame = load_template_sheet(tmp_path / name).frame
        patched.update({t: ABNORMAL if v else "normal" for t, v in zip(frame["log"], frame["label"], strict=True)})
    records = read_records(RATIONALES, ("input", "label"))
    assert [r["input"] for r in records if patched[r["input"]] != r["label"]] == []


def test_sample_structured_log_has_consecutive_lines_and_clustered_alerts():
    log = load_structured_log(STRUCTURED)
    frame = log.frame
    assert list(frame["LineId"].astype(int)) == list(range(1, 1501))
    labels = log.line_labels
    assert sum(labels) == 116 and 0.05 <= sum(labels) / len(labels) <= 0.10
    # clustered: most alert lines have another alert line within 5 lines
    alerts = [i for i, v in enumerate(labels) if v]
    neighbours = sum(any(0 < abs(i - j) <= 5 for j in alerts) for i in alerts)
    assert neighbours / len(alerts) > 0.9
    assert set(frame["EventTemplate"]) <= set(load_template_sheet(BGL).frame["log"])


def test_sample_structured_log_content_fits_its_template():
    frame = load_structured_log(STRUCTURED).frame
    for content, template in zip(frame["Content"], frame["EventTemplate"], strict=True):
        pattern = ".+?".join(re.escape(part) for part in template.split("<*>"))
        assert re.fullmatch(pattern, content), (content, template)


def test_sample_structured_log_regenerates_byte_for_byte(tmp_path):
    script = runpy.run_path(str(SAMPLE_DATA_DIR / "generate_structured_log.py"), run_name="generator")
    assert script["main"](["--output", str(tmp_path / "log.csv")]) == 0
    assert (tmp_path / "log.csv").read_bytes() == STRUCTURED.read_bytes()


def test_sample_readme_says_the_data_is_synthetic():
    text = (SAMPLE_DATA_DIR / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in text.lower()
    for name in (
        "bgl_templates.csv",
        "spirit_templates.csv",
        "anomaly_patch.json",
        "rationales.json",
        "bgl_structured.csv",
    ):
        assert name in text


def test_sample_rationales_use_the_projects_tags():
    text = RATIONALES.read_text(encoding="utf-8")
    assert all(tag in text for tag in TAGS)


@pytest.mark.realdata
def test_sample_templates_are_not_copied_from_the_public_sheets(public_data):
    public = set(load_template_sheet(public_data / "logprompt" / "templates_bgl.xlsx").frame["log"])
    public |= set(load_template_sheet(public_data / "logprompt" / "templates_spirit.xlsx").frame["log"])
    ours = set(load_template_sheet(BGL).frame["log"]) | set(load_template_sheet(SPIRIT).frame["log"])
    assert ours.isdisjoint(public)
