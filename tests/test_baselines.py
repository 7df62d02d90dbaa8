"""Baselines: the keyword rule (table-driven and on real BGL templates) and the zero-shot prompt through predict."""

from __future__ import annotations

import json

import pytest

from rationanomaly.baselines import RuleBackend, keyword_label, keyword_response, predict_zero_shot
from rationanomaly.evaluate import binarize, binary_metrics
from rationanomaly.labels import ABNORMAL, NORMAL
from rationanomaly.predict import predict_samples
from rationanomaly.predict.runner import build_requests
from rationanomaly.prompts import LOG_SYSTEM_PROMPT
from rationanomaly.response import tags_in_order
from rationanomaly.samples import Sample, write_samples


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("kernel panic", ABNORMAL),  # failure word
        (
            "ciod: Error reading message prefix on CioStream socket to <*> Connection timed out",
            ABNORMAL,
        ),  # two-word phrase
        ("Lustre mount FAILED : bglio<*> : point <*>", ABNORMAL),  # upper case
        ("external input interrupt (unit=0x02 bit=0x00): uncorrectable torus error", ABNORMAL),  # not 'correctable'
        ("instruction cache parity error corrected", NORMAL),  # handled error
        ("<*> ddr errors(s) detected and corrected on rank <*>", NORMAL),  # handled error, plural
        ("generating core.<*>", NORMAL),  # no failure word
        ("non-fatal warning from failover daemon", NORMAL),  # 'fatal' and 'fail' only inside other words
        ("", NORMAL),  # empty template
    ],
)
def test_keyword_label_flags_failure_words_unless_handled(log, expected):
    assert keyword_label(log)[0] == expected


@pytest.mark.parametrize("log", ["kernel panic", "generating core.<*>", "parity error corrected"])
def test_keyword_response_is_a_well_formed_answer_that_binarises_to_the_rule(log):
    response = keyword_response(log)
    assert tags_in_order(response)
    assert binarize(response) == keyword_label(log)[0]


def test_rule_backend_predicts_through_the_harness(tmp_path):
    samples = [Sample("kernel panic", ABNORMAL), Sample("generating core.<*>", NORMAL)]
    predict_samples(samples, RuleBackend(), tmp_path / "p.json", LOG_SYSTEM_PROMPT)
    records = json.loads((tmp_path / "p.json").read_text())
    assert [binarize(r["output"]) for r in records] == [ABNORMAL, NORMAL]
    assert RuleBackend().generate(build_requests(samples, None, seed=3)) == [keyword_response(s.input) for s in samples]


def test_zero_shot_baseline_uses_the_rules_only_prompt(tmp_path):
    write_samples(tmp_path / "t.json", [Sample("kernel panic", ABNORMAL)])
    predict_zero_shot(tmp_path / "t.json", tmp_path / "p.json", model="any", backend="rules")
    meta = json.loads((tmp_path / "p.json.meta.json").read_text())
    assert (meta["mode"], meta["system_prompt"]) == ("log", LOG_SYSTEM_PROMPT)


@pytest.mark.realdata
def test_keyword_baseline_on_bgl_2k_templates(public_data):
    import pandas as pd

    frame = pd.read_csv(public_data / "loghub" / "BGL_2k.log_structured.csv")
    labels = frame.groupby("EventTemplate").Label.apply(lambda s: ABNORMAL if (s != "-").any() else NORMAL)
    metrics = binary_metrics(list(labels.values), [keyword_label(t)[0] for t in labels.index])
    # 120 templates, 15 abnormal: the rule finds 14 of them and raises 26 false alarms
    assert (metrics.tp, metrics.fp, metrics.fn, metrics.tn) == (14, 26, 1, 79)
    assert (metrics.precision, metrics.recall) == (pytest.approx(0.35), pytest.approx(14 / 15))
