"""rationanomaly.watch: parsing verl logs, smoothing, time left, summary.json, the CLI and the notebook."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rationanomaly.reward.score import REWARD_KEYS
from rationanomaly.watch import NoStepsError, run_label, watch
from rationanomaly.watch.__main__ import main
from rationanomaly.watch.analysis import (
    COMPONENT_SUM_TOLERANCE,
    REWARD_TIME_HIDDEN,
    component_sum_check,
    describe_run,
    describe_sum_check,
    eta_seconds,
    format_duration,
    gaussian_smooth,
    reward_components,
    reward_time_share,
    run_status,
    seconds_per_step,
    summarize_run,
    timing_stages,
    training_components,
)
from rationanomaly.watch.parse import (
    MAX_ABS_VALUE,
    clean_console_line,
    find_log_files,
    load_runs,
    merge_logs,
    metric_value,
    pair_console_with_jsonl,
    parse_console_text,
    parse_file,
    parse_jsonl_text,
    parse_step_line,
    parse_value,
)
from rationanomaly.watch.sample import (
    GARBLED_STEP,
    LEGACY_LAST_STEP,
    LEGACY_LOG,
    SAMPLE_DIR,
    SAMPLE_TOTAL_STEPS,
    V1_JSONL,
    V1_LAST_STEP,
    V1_LOG,
    V1_RESUME_FROM,
    sample_texts,
)

PREFIX = "\x1b[36m(TaskRunnerV1 pid=1234)\x1b[0m "
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIXED_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5", 0.5),
        ("-3", -3.0),
        ("4e-07", 4e-07),
        ("np.float64(0.12)", 0.12),  # numpy 2 repr through pprint.pformat
        ("np.int64(1024)", 1024.0),
        ("np.float32(-1.5)", -1.5),
        ("True", True),  # a flag verl prints (bool is a numbers.Number); read, but no metric
        ("False", False),
        (" 7 ", 7.0),
        ("np.float64(", None),  # cut while being written
        ("tensor(0.5)", None),  # not something verl's console prints
        ("abc", None),
        ("", None),
    ],
)
def test_parse_value_reads_console_numbers_and_rejects_the_rest(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["nan", "np.float64(nan)"])
def test_parse_value_reads_nan_as_nan(text):
    assert math.isnan(parse_value(text))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0.5),
        (-3, -3.0),
        (MAX_ABS_VALUE, MAX_ABS_VALUE),  # the bound itself is a value
        (True, None),  # a flag is not a reward of 1.0
        (False, None),
        (float("nan"), None),
        (float("inf"), None),
        (-float("inf"), None),
        (1e308, None),  # beyond MAX_ABS_VALUE: corrupt, and unplottable
        (-2 * MAX_ABS_VALUE, None),
        (10**400, None),  # an int beyond float range
        (None, None),
        ("0.5", None),  # a string is not a number
    ],
)
def test_metric_value_keeps_finite_numbers_only(value, expected):
    assert metric_value(value) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (PREFIX + "step:1 - a:1", "step:1 - a:1"),
        ("(TaskRunner pid=12, ip=10.0.0.1) step:2 - a:1", "step:2 - a:1"),  # multi-node prefix
        ("\x1b[1m\x1b[36m(TaskRunnerV1 pid=9)\x1b[0m  step:3", "step:3"),  # two colour codes
        ("step:4 - a:1", "step:4 - a:1"),  # not run through Ray
        ("(note) step:5", "(note) step:5"),  # parentheses without pid are the printed text
    ],
)
def test_clean_console_line_strips_ansi_and_ray_prefix(line, expected):
    assert clean_console_line(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "step:7 - critic/score/mean:np.float64(-0.25) - response_length/mean:210.5",
            (7, {"critic/score/mean": -0.25, "response_length/mean": 210.5}, 0),
        ),
        ("step:0", (0, {}, 0)),  # a step with no numeric metric
        ("step:3 - val-core/RationAnomaly/reward/mean@1:0.5", (3, {"val-core/RationAnomaly/reward/mean@1": 0.5}, 0)),
        ("step:8 - actor/pg_loss:-0.01 - actor/lr:4e-07", (8, {"actor/pg_loss": -0.01, "actor/lr": 4e-07}, 0)),
        # values that read but are no metric are left out and counted; the record stays
        ("step:5 - critic/score/mean:True - a:nan - b:np.float64(inf) - c:1e999 - d:2.0", (5, {"d": 2.0}, 4)),
        (f"step:{10**9} - a:1", (10**9, {"a": 1.0}, 0)),  # MAX_STEP itself
        (f"step:{10**9 + 1} - a:1", None),  # beyond MAX_STEP: a corrupt record
        (f"step:{10**30} - a:1", None),  # crashed matplotlib before
        (f"step:{'9' * 5000} - a:1", None),  # more digits than Python converts to int
        ("step:9 - critic/score/mean:np.float64(-0.2", None),  # value cut off
        ("step:9 - critic/score/mean", None),  # no value
        ("step:x - a:1", None),
        ("global_step:9 - a:1", None),
    ],
)
def test_parse_step_line_returns_step_metrics_and_left_out_count_or_none(line, expected):
    assert parse_step_line(line) == expected


CONSOLE_TEXT = "".join(
    [
        "2026-01-10 08:02:11,417\tINFO worker.py:1942 -- Started a local Ray instance.\n",
        PREFIX + "Creating file logger at /abs/targets/RationAnomaly/exp.jsonl\n",
        PREFIX + "\rTraining Progress:   0%|          | 0/40 [00:00<?, ?it/s]\n",
        PREFIX + "step:1 - critic/score/mean:np.float64(-2.0) - perf/time_per_step:np.float64(100.0)\n",
        PREFIX + "step:2 - critic/score/mean:np.float64(-1.0) - perf/time_per_step:np.float64(110.0)\n",
        PREFIX + "step:3 - critic/score/mean:np.float64(-0.WARNING interleaved\n",  # garbled
        "Traceback (most recent call last):\n",
        PREFIX + "step:2 - critic/score/mean:np.float64(-0.5) - perf/time_per_step:np.float64(120.0)\n",  # resumed
        PREFIX + "\rTraining Progress:   5%|5         | 2/40 [00:00<?, ?it/s]\rTraining Progress: 8%|8   | 3/40\n",
        PREFIX + "step:3 - critic/score/mean:np.float64(0.0) - perf/time_per_step:np.float64(130.0)\n",
        PREFIX + "step:4 - critic/score/mean:np.float64(0.5)",  # still being written
    ]
)


def test_parse_console_text_counts_steps_skips_restarts_and_total():
    log = parse_console_text(CONSOLE_TEXT)
    assert log.steps == {
        1: {"critic/score/mean": -2.0, "perf/time_per_step": 100.0},
        2: {"critic/score/mean": -0.5, "perf/time_per_step": 120.0},  # the resumed attempt wins
        3: {"critic/score/mean": 0.0, "perf/time_per_step": 130.0},
    }
    assert log.skipped_lines == 2  # the garbled step 3 and the unterminated step 4
    assert log.other_lines == 2  # the Ray banner and the traceback
    assert log.total_steps == 40
    assert log.restarts == 1
    assert log.file_logger_path == "/abs/targets/RationAnomaly/exp.jsonl"


@pytest.mark.parametrize(
    ("lines", "expected_total"),
    [
        (["Total training steps: 150"], 150),  # legacy trainer's print
        (["\rTraining Progress:  34%|###4      | 51/150 [1:02:03<2:00:00, 72.7s/it]"], 150),  # tqdm bar
        (["Total training steps: 150", "\rTraining Progress: 0%| | 0/300"], 300),  # the latest wins
        (["step:1 - a:1"], None),
    ],
)
def test_parse_console_text_reads_total_steps_from_either_source(lines, expected_total):
    assert parse_console_text("".join(PREFIX + line + "\n" for line in lines)).total_steps == expected_total


def test_parse_jsonl_text_skips_bad_records_and_keeps_numbers_only():
    text = "\n".join(
        [
            json.dumps({"step": 51, "data": {"critic/score/mean": -1.0, "note": "text", "x": None, "flag": True}}),
            "",  # blank line: not a record, not counted
            "{not json",
            json.dumps({"step": "52", "data": {}}),  # step must be an integer
            json.dumps({"step": 53, "data": [1, 2]}),  # data must be an object
            json.dumps([1, 2]),
            json.dumps({"step": 52, "data": {"critic/score/mean": 0.25}}),
            '{"step":53,"data":{"critic/sc',  # being written
        ]
    )
    log = parse_jsonl_text(text)
    assert log.steps == {51: {"critic/score/mean": -1.0}, 52: {"critic/score/mean": 0.25}}
    assert log.skipped_lines == 5
    assert log.skipped_values == 2  # the null and the flag; a string is no number and not counted


BAD_JSONL_LINES = [
    json.dumps({"step": 10**30, "data": {"critic/score/mean": 9.0}}),  # absurd step: crashed the plots before
    json.dumps({"step": 10**9 + 1, "data": {"critic/score/mean": 9.0}}),  # just beyond MAX_STEP
    json.dumps({"step": -1, "data": {"critic/score/mean": 9.0}}),  # negative
    json.dumps({"step": 2.0, "data": {"critic/score/mean": 9.0}}),  # not an integer
    json.dumps({"step": True, "data": {"critic/score/mean": 9.0}}),  # a bool is no step
    '{"step": ' + "9" * 5000 + ', "data": {}}',  # Python refuses to convert more than 4,300 digits
    "[" * 100_000 + "]" * 100_000,  # nesting beyond the recursion limit
]


def test_parse_jsonl_text_skips_absurd_steps_and_counts_them():
    good = json.dumps({"step": 1, "data": {"critic/score/mean": 0.5}})
    log = parse_jsonl_text("\n".join([good, *BAD_JSONL_LINES]) + "\n")
    assert log.steps == {1: {"critic/score/mean": 0.5}}
    assert log.skipped_lines == len(BAD_JSONL_LINES)


def test_parse_jsonl_text_leaves_out_values_that_are_no_metric():
    data = {
        "critic/score/mean": True,
        "a": float("nan"),
        "b": float("inf"),
        "c": -1e308,
        "d": 10**400,
        "e": None,
        "actor/kl_loss": 0.01,
        "response_length/max": 1024,
    }
    log = parse_jsonl_text(json.dumps({"step": 3, "data": data}) + "\n")  # json writes NaN and Infinity
    assert log.steps == {3: {"actor/kl_loss": 0.01, "response_length/max": 1024.0}}
    assert (log.skipped_lines, log.skipped_values) == (0, 6)


def test_merge_logs_prefers_jsonl_values_and_notes_truncation():
    console = parse_console_text(CONSOLE_TEXT)
    jsonl = parse_jsonl_text(
        json.dumps({"step": 2, "data": {"critic/score/mean": -0.4999, "extra": 1}}) + "\n",
        Path("/copied/RationAnomaly/exp.jsonl"),
    )
    (group,) = pair_console_with_jsonl([console, jsonl])
    run = merge_logs(group)
    assert run.steps[2] == {"critic/score/mean": -0.4999, "perf/time_per_step": 120.0, "extra": 1.0}
    assert run.steps[1] == {"critic/score/mean": -2.0, "perf/time_per_step": 100.0}
    assert run.total_steps == 40
    assert run.skipped_lines == 2
    assert any("exp.jsonl starts at step 2" in note for note in run.notes)
    assert any("went back 1 time" in note for note in run.notes)


def test_pair_console_with_jsonl_keeps_an_unannounced_jsonl_as_its_own_run():
    console = parse_console_text(CONSOLE_TEXT)
    other = parse_jsonl_text(json.dumps({"step": 1, "data": {"a": 1}}) + "\n", Path("/x/Other/run.jsonl"))
    assert [[log.kind for log in group] for group in pair_console_with_jsonl([console, other])] == [
        ["console"],
        ["jsonl"],
    ]


@pytest.mark.parametrize(
    ("x", "y", "sigma", "expected"),
    [
        ([0, 1, 2, 3], [2.0, 2.0, 2.0, 2.0], 5.0, [2.0, 2.0, 2.0, 2.0]),  # a constant stays put, edges included
        ([0, 1, 2], [1.0, 5.0, -3.0], 0.0, [1.0, 5.0, -3.0]),  # sigma 0 switches smoothing off
        # hand-computed: at x=0 weights 1, e^-1/2, e^-2 over values 0, 0, 3 (renormalised at the edge)
        (
            [0, 1, 2],
            [0.0, 0.0, 3.0],
            1.0,
            [
                3 * math.exp(-2) / (1 + math.exp(-0.5) + math.exp(-2)),
                3 * math.exp(-0.5) / (1 + 2 * math.exp(-0.5)),
                3 / (1 + math.exp(-0.5) + math.exp(-2)),
            ],
        ),
        (
            [0, 1, 1000],
            [1.0, 3.0, 7.0],
            1.0,  # a gap of 999 steps: the far point gets no weight
            [(1 + 3 * math.exp(-0.5)) / (1 + math.exp(-0.5)), (math.exp(-0.5) + 3) / (1 + math.exp(-0.5)), 7.0],
        ),
        ([0, 1, 2], [4.0, float("nan"), 4.0], 1.0, [4.0, 4.0, 4.0]),  # a missing value takes its neighbours'
        ([], [], 5.0, []),
    ],
)
def test_gaussian_smooth_matches_hand_computed_values(x, y, sigma, expected):
    assert gaussian_smooth(x, y, sigma) == pytest.approx(expected, abs=1e-12)


def test_gaussian_smooth_keeps_a_line_in_the_interior_and_bends_it_at_the_edges():
    x = np.arange(200)
    smoothed = gaussian_smooth(x, 0.5 * x, 5.0)
    # A symmetric kernel reproduces a straight line wherever it is not cut off (> 8 sigma from an edge here).
    assert smoothed[40:160] == pytest.approx(0.5 * x[40:160], abs=1e-9)
    # At the edges the renormalised kernel only sees one side: pulled inwards, never towards zero.
    assert smoothed[0] > 0.0 and smoothed[-1] < 0.5 * 199


@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    sigma=st.floats(0.1, 50.0),
)
def test_gaussian_smooth_stays_within_the_range_of_its_input(values, sigma):
    # Renormalised weights make every output a convex combination of the inputs.
    smoothed = gaussian_smooth(range(len(values)), values, sigma)
    assert len(smoothed) == len(values)
    spread = 1e-9 * max(1.0, max(abs(v) for v in values))
    assert min(values) - spread <= smoothed.min() and smoothed.max() <= max(values) + spread


def test_gaussian_smooth_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equal length"):
        gaussian_smooth([0, 1], [1.0], 5.0)


@pytest.mark.parametrize(
    ("durations", "recent", "expected"),
    [
        ([100, 200, 300, 400, 500], 3, 400.0),  # median of the last three
        ([100, 200, 900, 400], 4, 300.0),  # even count: mean of the middle two
        ([300, 310, 2000, 305], 10, 307.5),  # fewer than k: all; the checkpoint outlier does not move it
        ([300, float("nan"), 0, 310], 2, 305.0),  # NaN and zero durations are not steps
        ([], 10, None),
    ],
)
def test_seconds_per_step_is_the_median_of_recent_durations(durations, recent, expected):
    assert seconds_per_step(durations, recent) == expected


@pytest.mark.parametrize(
    ("last_step", "total", "per_step", "expected"),
    [
        (120, 150, 300.0, 9000.0),
        (150, 150, 300.0, 0.0),  # done
        (160, 150, 300.0, 0.0),  # ran past the plan: never negative
        (120, None, 300.0, None),  # total unknown
        (120, 150, None, None),  # no step time logged
        (None, 150, 300.0, None),
    ],
)
def test_eta_seconds_is_steps_left_times_seconds_per_step(last_step, total, per_step, expected):
    assert eta_seconds(last_step, total, per_step) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0m00s"),
        (59.6, "1m00s"),
        (250, "4m10s"),
        (7500, "2h05m"),
        (93780, "1d 02h03m"),
        (None, "unknown"),
        (float("nan"), "unknown"),
    ],
)
def test_format_duration_reads_at_a_glance(seconds, expected):
    assert format_duration(seconds) == expected


def _run_from_console(lines: list[str]):
    """A run made of these console records, each with the Ray prefix."""
    return merge_logs([parse_console_text("".join(PREFIX + line + "\n" for line in lines), Path("run.log"))])


def test_reward_time_share_uses_legacy_timing_and_is_none_on_v1():
    legacy = _run_from_console(
        [
            "step:1 - timing_s/reward:400.0 - timing_s/gen:100.0 - timing_s/step:600.0",
            "step:2 - timing_s/reward:200.0 - timing_s/gen:100.0 - timing_s/step:400.0",
        ]
    )
    v1 = _run_from_console(["step:1 - timing_s/gen:100.0 - timing_s/step:600.0"])
    assert reward_time_share(legacy) == pytest.approx(600.0 / 1000.0)
    assert reward_time_share(v1) is None


def test_timing_stages_put_reward_first_and_leave_out_totals_and_nested_keys():
    run = _run_from_console(
        [
            "step:1 - timing_s/update_actor:1 - timing_s/gen:1 - timing_s/reward:1 - timing_s/step:3 - "
            "timing_s/agent_loop/compute_score/mean:0.1 - timing_s/zeta:1",
        ]
    )
    assert timing_stages(run) == ["timing_s/reward", "timing_s/gen", "timing_s/update_actor", "timing_s/zeta"]


def test_reward_components_take_the_largest_n_and_order_reward_parts_first():
    run = _run_from_console(
        [
            "step:10 - val-aux/RA/think/mean@1:0.1 - val-aux/RA/format/mean@1:0.2 - val-aux/RA/format/mean@4:0.3 - "
            "val-aux/RA/format/std@4:9 - val-core/RA/reward/mean@4:1.5 - val-aux/RA/zzz/mean@1:7",
            "step:20 - val-aux/RA/format/mean@4:0.4",
        ]
    )
    components = reward_components(run)
    assert list(components) == ["format", "think", "reward", "zzz"]
    assert components["format"] == ([10, 20], [0.3, 0.4])


def test_reward_components_prefix_the_source_when_there_are_several():
    run = _run_from_console(["step:10 - val-aux/BGL/format/mean@1:0.1 - val-aux/Spirit/format/mean@1:0.2"])
    assert list(reward_components(run)) == ["BGL/format", "Spirit/format"]


def test_reward_components_drop_val_core_reward_where_score_is_logged():
    # val-core/<source>/reward is the mean of the per-response score, the same series as val-aux's score
    run = _run_from_console(
        ["step:10 - val-core/RA/reward/mean@1:0.5 - val-aux/RA/score/mean@1:0.5 - val-aux/RA/format/mean@1:0.1"]
    )
    assert list(reward_components(run)) == ["score", "format"]


def _component_line(step: int, score: float, parts: dict[str, float]) -> str:
    fields = [f"critic/score/mean:{score}"]
    fields += [f"reward_components/{name}/mean:{value}" for name, value in parts.items()]
    return f"step:{step} - " + " - ".join(fields)


def test_training_components_group_statistics_by_name_in_reward_order():
    run = _run_from_console(
        [
            "step:1 - reward_components/think/mean:-0.5 - reward_components/format/max:0.1 - "
            "reward_components/format/mean:-0.2 - reward_components/format/min:-1.0 - reward_components/zzz/mean:3",
            "step:2 - reward_components/format/mean:0.05 - reward_components/format/std:9",  # std: not read
        ]
    )
    components = training_components(run)
    assert list(components) == ["format", "think", "zzz"]
    assert components["format"] == {"mean": ([1, 2], [-0.2, 0.05]), "max": ([1], [0.1]), "min": ([1], [-1.0])}
    assert components["think"] == {"mean": ([1], [-0.5])}


def test_component_sum_check_finds_the_steps_whose_parts_do_not_add_up():
    run = _run_from_console(
        [
            _component_line(1, 0.35, {"format": 0.1, "answer": 1.0, "think": -1.5}),  # 0.1 + 1 - 0.75: exact
            _component_line(2, -6.566667, {"format": 0.1, "answer": -6.666667, "think": 0.0}),  # a missed anomaly
            _component_line(3, 0.9, {"format": 0.1, "answer": 1.0, "think": -0.2}),  # think weighed 1, not 0.5: off
            _component_line(4, 1.0005, {"format": 0.1, "answer": 1.0, "think": -0.2}),  # 5e-4 off: float noise
            _component_line(5, 7.0, {"format": 0.1, "answer": 1.0}),  # no think mean: not checked
        ]
    )
    check = component_sum_check(run)
    assert (check["steps_checked"], check["steps_off"], check["worst_step"], check["ok"]) == (4, [3], 3, False)
    assert check["max_abs_diff"] == pytest.approx(0.1, abs=1e-12)  # |0.9 - (0.1 + 1.0 + 0.5 x -0.2)|
    assert check["tolerance"] == COMPONENT_SUM_TOLERANCE
    assert describe_sum_check(check).startswith("COMPONENTS DO NOT ADD UP to the reward mean at 3/4 steps")
    assert component_sum_check(_run_from_console(["step:1 - critic/score/mean:0.5"])) is None
    assert describe_sum_check(None) == "per-step reward components not logged"


@pytest.mark.parametrize(
    ("last_step", "total", "per_step", "idle", "expected"),
    [
        (120, 150, 300.0, 60.0, "running"),
        (120, 150, 300.0, 5 * 300.0, "running"),  # exactly 5 step times: not yet
        (120, 150, 300.0, 5 * 300.0 + 1, "stalled"),
        (120, None, 300.0, 86400.0, "stalled"),  # a total is not needed to see a dead log
        (150, 150, 300.0, 86400.0, "finished"),  # done, however long ago
        (120, 150, None, 86400.0, "unknown"),  # no step time to judge by
        (120, 150, 300.0, None, "unknown"),  # no file time
    ],
)
def test_run_status_is_stalled_when_the_log_idles_longer_than_n_step_times(last_step, total, per_step, idle, expected):
    assert run_status(last_step, total, per_step, idle, stall_steps=5.0) == expected


def test_stalled_run_has_work_left_but_no_time_left(sample_copy, tmp_path):
    now = FIXED_MTIME + 3 * 86400  # three days after the logs last changed
    summary = watch([sample_copy / V1_LOG, sample_copy / V1_JSONL], tmp_path / "out", stall_steps=5.0, now=now)
    per_step = summary["seconds_per_step"]
    assert summary["status"] == "stalled"
    assert (summary["eta_seconds"], summary["eta"], summary["eta_utc"]) == (None, "unknown", None)
    assert summary["work_left_seconds"] == pytest.approx((SAMPLE_TOTAL_STEPS - V1_LAST_STEP) * per_step)
    assert summary["idle_seconds"] == 3 * 86400 and summary["stall_after_seconds"] == pytest.approx(5 * per_step)
    assert summary["now_utc"] == "2026-01-04T00:00:00+00:00"
    line = describe_run(summary)
    assert "STALLED: no new step for 3d 00h00m" in line and "time left" not in line
    assert run_label(summary) == f"{Path(V1_LOG).stem} [STALLED: no new step for 3d 00h00m]"
    # a minute after the last write the same run is running, with its time left
    (run,), _ = load_runs([sample_copy / V1_LOG, sample_copy / V1_JSONL])
    live = summarize_run(run, now=FIXED_MTIME + 60, stall_steps=5.0)
    assert live["status"] == "running" and live["eta_seconds"] == pytest.approx(summary["work_left_seconds"])


def test_find_log_files_searches_folders_for_log_and_jsonl_only(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/run.log", "a/run.jsonl", "a/notes.txt", "b.log"):
        (tmp_path / name).write_text("")
    found = find_log_files([tmp_path / "a", tmp_path / "b.log", tmp_path / "a" / "run.log"])
    # sorted by path within a folder, then in the order given; a file named twice counts once
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/run.jsonl", "a/run.log", "b.log"]


def test_find_log_files_skips_wandb_copies_of_the_console(tmp_path):
    # model_train.sh sets WANDB_DIR=targets; wandb keeps files/output.log, a second copy of the console
    for name in ("run.log", "wandb/offline-run-1/files/output.log", "wandb/offline-run-1/logs/debug.log"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert [p.name for p in find_log_files([tmp_path])] == ["run.log"]
    named = tmp_path / "wandb" / "offline-run-1" / "files" / "output.log"
    assert find_log_files([named]) == [named]  # a file named directly is read


def test_load_runs_tells_apart_runs_whose_files_share_a_name(tmp_path):
    for folder in ("grpo_a", "grpo_b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.log").write_text("step:1 - critic/score/mean:0.5\n")
    runs, empty = load_runs([tmp_path])
    assert [run.name for run in runs] == ["grpo_a/train", "grpo_b/train"] and empty == []


def test_find_log_files_names_a_missing_path():
    with pytest.raises(FileNotFoundError, match="no-such-run.log: no such file or directory"):
        find_log_files(["no-such-run.log"])


def test_committed_sample_logs_match_the_generator():
    for name, text in sample_texts().items():
        # bytes, not read_text: universal newlines would turn tqdm's carriage returns into line breaks
        assert (SAMPLE_DIR / name).read_bytes() == text.encode(), f"regenerate with write_sample_logs(): {name}"


@pytest.fixture()
def sample_copy(tmp_path) -> Path:
    """The sample folder copied with a fixed modification time, so the wall-clock estimate is exact."""
    folder = tmp_path / "logs"
    shutil.copytree(SAMPLE_DIR, folder)
    for path in folder.rglob("*.*"):
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return folder


def _jsonl_records(folder: Path) -> dict[int, dict]:
    lines = (folder / V1_JSONL).read_text().splitlines()
    return {record["step"]: record["data"] for record in map(json.loads, lines)}


def test_cli_on_the_sample_writes_summary_with_exact_numbers(sample_copy, tmp_path, capsys):
    recent = int(time.time()) - 60  # a live run: its log changed a minute ago
    for path in sample_copy.rglob("*.*"):
        os.utime(path, (recent, recent))
    out = tmp_path / "out"
    assert main([str(sample_copy), "--out", str(out), "--sigma", "5", "--recent_steps", "10"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    v1, legacy = summary["runs"]
    records = _jsonl_records(sample_copy)
    expected_per_step = float(np.median([records[s]["perf/time_per_step"] for s in range(111, 121)]))
    expected_eta = (SAMPLE_TOTAL_STEPS - V1_LAST_STEP) * expected_per_step

    assert v1["name"] == Path(V1_LOG).stem
    assert v1["status"] == "running"
    assert v1["steps"] == V1_LAST_STEP - 1  # step GARBLED_STEP was unreadable
    assert (v1["first_step"], v1["last_step"], v1["total_steps"]) == (1, V1_LAST_STEP, SAMPLE_TOTAL_STEPS)
    assert v1["reward_mean_last"] == records[V1_LAST_STEP]["critic/score/mean"]
    assert v1["seconds_per_step"] == pytest.approx(expected_per_step)
    assert v1["eta_seconds"] == pytest.approx(expected_eta) and v1["work_left_seconds"] == v1["eta_seconds"]
    assert v1["eta_utc"] == datetime.fromtimestamp(recent + math.floor(expected_eta), timezone.utc).isoformat()
    assert v1["last_update_utc"] == datetime.fromtimestamp(recent, timezone.utc).isoformat()
    assert v1["reward_time_share"] is None and v1["reward_time_note"] == REWARD_TIME_HIDDEN
    assert v1["skipped_lines"] == 2  # the garbled line and the unterminated last line
    assert set(v1["validation_last"]) == set(REWARD_KEYS)  # val-core's `reward` is the same series as `score`
    assert v1["train_components_last"] == {
        name: {stat: records[V1_LAST_STEP][f"reward_components/{name}/{stat}"] for stat in ("mean", "max", "min")}
        for name in REWARD_KEYS
    }
    check = v1["component_sum_check"]
    assert (check["ok"], check["steps_checked"], check["steps_off"]) == (True, V1_LAST_STEP - 1, [])
    assert check["max_abs_diff"] < 2e-6  # the sample rounds each mean to 6 decimals
    assert any(f"starts at step {V1_RESUME_FROM}" in note for note in v1["notes"])

    assert legacy["name"] == Path(LEGACY_LOG).stem
    assert (legacy["steps"], legacy["last_step"], legacy["skipped_lines"]) == (LEGACY_LAST_STEP, LEGACY_LAST_STEP, 0)
    assert 0.55 < legacy["reward_time_share"] < 0.7  # the reference run's 65 %, with noise
    assert legacy["reward_time_note"] is None
    assert legacy["train_components_last"] == {} and legacy["component_sum_check"] is None

    for key in (
        "steps",
        "last_step",
        "reward_mean_last",
        "reward_mean_smoothed_last",
        "seconds_per_step",
        "eta_seconds",
        "reward_time_share",
        "skipped_lines",
        "status",
    ):
        assert summary[key] == v1[key], key  # the first run is repeated at top level
    assert summary["plots"] == ["reward.png", "reward_components.png", "length_kl_entropy.png", "timing.png"]
    for name in summary["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert f"step {V1_LAST_STEP}/{SAMPLE_TOTAL_STEPS}" in printed and "reward 6" in printed
    assert f"components add up to the reward mean at {V1_LAST_STEP - 1}/{V1_LAST_STEP - 1} steps" in printed


def test_smoothed_reward_in_summary_is_the_gaussian_of_the_logged_series(sample_copy, tmp_path):
    summary = watch([sample_copy / V1_LOG, sample_copy / V1_JSONL], tmp_path / "out", sigma=3.0)
    (run,), _ = load_runs([sample_copy / V1_LOG, sample_copy / V1_JSONL])
    steps, rewards = run.series("critic/score/mean")
    assert GARBLED_STEP not in steps
    assert summary["reward_mean_smoothed_last"] == pytest.approx(gaussian_smooth(steps, rewards, 3.0)[-1])


@pytest.mark.parametrize(
    ("argv_extra", "expected_eta"),
    [([], None), (["--total_steps", "10"], 7 * 300.0)],  # total unknown unless given
)
def test_cli_total_steps_flag_gives_the_eta_a_log_cannot(tmp_path, argv_extra, expected_eta):
    log = tmp_path / "run.log"
    log.write_text("".join(f"step:{s} - critic/score/mean:0.{s} - timing_s/step:300.0\n" for s in (1, 2, 3)))
    assert main([str(log), "--out", str(tmp_path / "out"), *argv_extra]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["eta_seconds"] == expected_eta
    assert summary["plots"] == ["reward.png", "length_kl_entropy.png", "timing.png"]  # no components logged


@pytest.mark.parametrize(
    "content",
    ["", "Ray started\nno steps here\n", "step:1 - critic/score/mean:np.float64("],  # last: only a partial line
)
def test_cli_exits_1_with_a_clear_message_when_no_step_is_logged(tmp_path, capsys, content):
    log = tmp_path / "empty.log"
    log.write_text(content)
    assert main([str(log), "--out", str(tmp_path / "out")]) == 1
    assert "no training step found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_watch_raises_no_steps_error_for_an_empty_folder(tmp_path):
    with pytest.raises(NoStepsError, match=r"no \*\.log or \*\.jsonl file found"):
        watch([tmp_path], tmp_path / "out")


def test_cli_exits_2_on_a_missing_path(tmp_path, capsys):
    assert main([str(tmp_path / "missing.log"), "--out", str(tmp_path / "out")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_empty_file_beside_a_real_run_is_listed_as_ignored(sample_copy, tmp_path):
    (sample_copy / "crashed_at_start.log").write_text("Ray started\n")
    summary = watch([sample_copy], tmp_path / "out")
    assert len(summary["runs"]) == 2
    assert summary["ignored_inputs"] == [
        f"{sample_copy / 'crashed_at_start.log'}: no training step found (0 unreadable, 1 other lines)"
    ]


def test_parse_file_streams_a_console_log_to_the_same_result_as_its_text(tmp_path):
    # a file is read line by line (a multi-day log is never held whole); \r screens and an unterminated last
    # line must read as they do from the text
    text = (
        PREFIX + "step:1 - critic/score/mean:0.5\r\n" + "Training Progress:  1%|   | 1/150\rTraining Progress:"
        "  1%|   | 2/150\n" + PREFIX + "step:2 - critic/score/mean:0.25\n" + PREFIX + "step:3 - critic/sc"
    )
    path = tmp_path / "run.log"
    path.write_bytes(text.encode())
    from_file, from_text = parse_file(path), parse_console_text(text, path)
    assert from_file == from_text
    assert (list(from_file.steps), from_file.total_steps, from_file.skipped_lines) == ([1, 2], 150, 1)


def test_watch_skips_absurd_records_and_still_writes_summary_and_plots(tmp_path, capsys):
    good = [
        json.dumps(
            {
                "step": step,
                "data": {"critic/score/mean": step / 10, "timing_s/step": 300.0, "actor/kl_loss": 0.001, "flag": True},
            }
        )
        for step in (1, 2, 3)
    ]
    values = json.dumps({"step": 4, "data": {"critic/score/mean": float("nan"), "actor/kl_loss": 1e308}})
    (tmp_path / "run.jsonl").write_text("\n".join([*good, *BAD_JSONL_LINES, values]) + "\n")
    assert main([str(tmp_path / "run.jsonl"), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["steps"], summary["last_step"], summary["reward_mean_last"]) == (4, 4, 0.3)
    assert summary["skipped_lines"] == len(BAD_JSONL_LINES)
    assert summary["skipped_values"] == 3 + 2  # a flag per good step; the NaN and the 1e308
    assert summary["plots"] == ["reward.png", "length_kl_entropy.png", "timing.png"]
    assert f"{len(BAD_JSONL_LINES)} skipped lines, 5 skipped values" in capsys.readouterr().out


def test_cli_help_shows_every_default():
    from rationanomaly.watch.__main__ import build_parser

    options = [action for action in build_parser()._actions if action.option_strings and action.dest != "help"]
    assert {action.dest for action in options} == {
        "out",
        "sigma",
        "recent_steps",
        "total_steps",
        "stall_steps",
        "debug",
    }
    for action in options:
        assert "(default" in action.help or action.required, action.dest


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--sigma", "-1"], 2, "argument --sigma: -1 is out of range (must be >= 0)"),
        (["--sigma", "abc"], 2, "argument --sigma: 'abc' is not a number"),
        (["--recent_steps", "0"], 2, "argument --recent_steps: 0 is out of range (must be >= 1)"),
        (["--total_steps", "1e40"], 2, "argument --total_steps: '1e40' is not an integer"),
        (["--stall_steps", "0"], 2, "argument --stall_steps: 0 is out of range (must be > 0)"),
        (["--stall_steps", "nan"], 2, "argument --stall_steps: nan is out of range"),
    ],
)
def test_cli_refuses_a_bad_setting_in_one_line(tmp_path, capsys, argv, status, message):
    log = tmp_path / "run.log"
    log.write_text("step:1 - critic/score/mean:0.5\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(log), "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == status
    assert err.startswith(f"error: {message}") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_names_an_output_it_cannot_write_in_one_line_and_shows_the_traceback_with_debug(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text("step:1 - critic/score/mean:0.5\n")
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the output folder should be\n")
    assert main([str(log), "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    # the shared atomic writer (rationanomaly.io) names the file in the way and the fix
    assert err.startswith(f"error: cannot write {blocker / 'out'}") and f"{blocker} is a file, not a folder" in err
    assert err.count("\n") == 1 and "choose another output folder" in err
    assert blocker.read_text() == "a file where the output folder should be\n"
    with pytest.raises((OSError, ValueError), match="not a folder"):
        main([str(log), "--out", str(blocker / "out"), "--debug"])
