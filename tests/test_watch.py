"""rationanomaly.watch: parsing verl logs, smoothing, time left, summary.json, the CLI and the notebook."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rationanomaly.paths import REPO_ROOT
from rationanomaly.watch import LOG_ENV, OUT_ENV, NoStepsError, watch
from rationanomaly.watch.__main__ import main
from rationanomaly.watch.analysis import (
    REWARD_TIME_HIDDEN,
    eta_seconds,
    format_duration,
    gaussian_smooth,
    reward_components,
    reward_time_share,
    seconds_per_step,
    timing_stages,
)
from rationanomaly.watch.parse import (
    clean_console_line,
    find_log_files,
    load_runs,
    merge_logs,
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

NOTEBOOK = REPO_ROOT / "model_watch.ipynb"
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
        ("True", 1.0),  # bool is a numbers.Number, so verl prints it
        ("False", 0.0),
        (" 7 ", 7.0),
        ("np.float64(", None),  # cut while being written
        ("tensor(0.5)", None),  # not something verl's console prints
        ("abc", None),
        ("", None),
    ],
)
def test_parse_value_reads_console_numbers_and_rejects_the_rest(text, expected):
    assert parse_value(text) == expected


@pytest.mark.parametrize("text", ["nan", "np.float64(nan)"])
def test_parse_value_keeps_nan_as_nan(text):
    assert math.isnan(parse_value(text))


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
        ("step:7 - critic/score/mean:np.float64(-0.25) - response_length/mean:210.5",
         (7, {"critic/score/mean": -0.25, "response_length/mean": 210.5})),
        ("step:0", (0, {})),  # a step with no numeric metric
        ("step:3 - val-core/RationAnomaly/reward/mean@1:0.5", (3, {"val-core/RationAnomaly/reward/mean@1": 0.5})),
        ("step:8 - actor/pg_loss:-0.01 - actor/lr:4e-07", (8, {"actor/pg_loss": -0.01, "actor/lr": 4e-07})),
        ("step:9 - critic/score/mean:np.float64(-0.2", None),  # value cut off
        ("step:9 - critic/score/mean", None),  # no value
        ("step:x - a:1", None),
        ("global_step:9 - a:1", None),
    ],
)
def test_parse_step_line_returns_step_and_metrics_or_none(line, expected):
    assert parse_step_line(line) == expected


CONSOLE_TEXT = "".join([
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
])


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
    text = "\n".join([
        json.dumps({"step": 51, "data": {"critic/score/mean": -1.0, "note": "text", "x": None, "flag": True}}),
        "",  # blank line: not a record, not counted
        "{not json",
        json.dumps({"step": "52", "data": {}}),  # step must be an integer
        json.dumps({"step": 53, "data": [1, 2]}),  # data must be an object
        json.dumps([1, 2]),
        json.dumps({"step": 52, "data": {"critic/score/mean": 0.25}}),
        '{"step":53,"data":{"critic/sc',  # being written
    ])
    log = parse_jsonl_text(text)
    assert log.steps == {51: {"critic/score/mean": -1.0, "flag": 1.0}, 52: {"critic/score/mean": 0.25}}
    assert log.skipped_lines == 5


def test_merge_logs_prefers_jsonl_values_and_notes_truncation():
    console = parse_console_text(CONSOLE_TEXT)
    jsonl = parse_jsonl_text(json.dumps({"step": 2, "data": {"critic/score/mean": -0.4999, "extra": 1}}) + "\n",
                             Path("/copied/RationAnomaly/exp.jsonl"))
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
        ["console"], ["jsonl"]]


@pytest.mark.parametrize(
    ("x", "y", "sigma", "expected"),
    [
        ([0, 1, 2, 3], [2.0, 2.0, 2.0, 2.0], 5.0, [2.0, 2.0, 2.0, 2.0]),  # a constant stays put, edges included
        ([0, 1, 2], [1.0, 5.0, -3.0], 0.0, [1.0, 5.0, -3.0]),  # sigma 0 switches smoothing off
        # hand-computed: at x=0 weights 1, e^-1/2, e^-2 over values 0, 0, 3 (renormalised at the edge)
        ([0, 1, 2], [0.0, 0.0, 3.0], 1.0,
         [3 * math.exp(-2) / (1 + math.exp(-0.5) + math.exp(-2)),
          3 * math.exp(-0.5) / (1 + 2 * math.exp(-0.5)),
          3 / (1 + math.exp(-0.5) + math.exp(-2))]),
        ([0, 1, 1000], [1.0, 3.0, 7.0], 1.0,  # a gap of 999 steps: the far point gets no weight
         [(1 + 3 * math.exp(-0.5)) / (1 + math.exp(-0.5)), (math.exp(-0.5) + 3) / (1 + math.exp(-0.5)), 7.0]),
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
    [(0, "0m00s"), (59.6, "1m00s"), (250, "4m10s"), (7500, "2h05m"), (93780, "1d 02h03m"), (None, "unknown"),
     (float("nan"), "unknown")],
)
def test_format_duration_reads_at_a_glance(seconds, expected):
    assert format_duration(seconds) == expected


def _run_from_console(lines: list[str]):
    """A run made of these console records, each with the Ray prefix."""
    return merge_logs([parse_console_text("".join(PREFIX + line + "\n" for line in lines), Path("run.log"))])


def test_reward_time_share_uses_legacy_timing_and_is_none_on_v1():
    legacy = _run_from_console([
        "step:1 - timing_s/reward:400.0 - timing_s/gen:100.0 - timing_s/step:600.0",
        "step:2 - timing_s/reward:200.0 - timing_s/gen:100.0 - timing_s/step:400.0",
    ])
    v1 = _run_from_console(["step:1 - timing_s/gen:100.0 - timing_s/step:600.0"])
    assert reward_time_share(legacy) == pytest.approx(600.0 / 1000.0)
    assert reward_time_share(v1) is None


def test_timing_stages_put_reward_first_and_leave_out_totals_and_nested_keys():
    run = _run_from_console([
        "step:1 - timing_s/update_actor:1 - timing_s/gen:1 - timing_s/reward:1 - timing_s/step:3 - "
        "timing_s/agent_loop/compute_score/mean:0.1 - timing_s/zeta:1",
    ])
    assert timing_stages(run) == ["timing_s/reward", "timing_s/gen", "timing_s/update_actor", "timing_s/zeta"]


def test_reward_components_take_the_largest_n_and_order_reward_parts_first():
    run = _run_from_console([
        "step:10 - val-aux/RA/think/mean@1:0.1 - val-aux/RA/format/mean@1:0.2 - val-aux/RA/format/mean@4:0.3 - "
        "val-aux/RA/format/std@4:9 - val-core/RA/reward/mean@4:1.5 - val-aux/RA/zzz/mean@1:7",
        "step:20 - val-aux/RA/format/mean@4:0.4",
    ])
    components = reward_components(run)
    assert list(components) == ["format", "think", "reward", "zzz"]
    assert components["format"] == ([10, 20], [0.3, 0.4])


def test_reward_components_prefix_the_source_when_there_are_several():
    run = _run_from_console(["step:10 - val-aux/BGL/format/mean@1:0.1 - val-aux/Spirit/format/mean@1:0.2"])
    assert list(reward_components(run)) == ["BGL/format", "Spirit/format"]


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
    out = tmp_path / "out"
    assert main([str(sample_copy), "--out", str(out), "--sigma", "5", "--recent_steps", "10"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    v1, legacy = summary["runs"]
    records = _jsonl_records(sample_copy)
    expected_per_step = float(np.median([records[s]["perf/time_per_step"] for s in range(111, 121)]))

    assert v1["name"] == Path(V1_LOG).stem
    assert v1["steps"] == V1_LAST_STEP - 1  # step GARBLED_STEP was unreadable
    assert (v1["first_step"], v1["last_step"], v1["total_steps"]) == (1, V1_LAST_STEP, SAMPLE_TOTAL_STEPS)
    assert v1["reward_mean_last"] == records[V1_LAST_STEP]["critic/score/mean"]
    assert v1["seconds_per_step"] == pytest.approx(expected_per_step)
    assert v1["eta_seconds"] == pytest.approx((SAMPLE_TOTAL_STEPS - V1_LAST_STEP) * expected_per_step)
    assert v1["eta_utc"] == "2026-01-01T" + _clock(math.floor((SAMPLE_TOTAL_STEPS - V1_LAST_STEP) * expected_per_step))
    assert v1["last_update_utc"] == "2026-01-01T00:00:00+00:00"
    assert v1["reward_time_share"] is None and v1["reward_time_note"] == REWARD_TIME_HIDDEN
    assert v1["skipped_lines"] == 2  # the garbled line and the unterminated last line
    assert set(v1["validation_last"]) >= {"format", "answer", "think", "semantic", "length", "perplexity", "score"}
    assert any(f"starts at step {V1_RESUME_FROM}" in note for note in v1["notes"])

    assert legacy["name"] == Path(LEGACY_LOG).stem
    assert (legacy["steps"], legacy["last_step"], legacy["skipped_lines"]) == (LEGACY_LAST_STEP, LEGACY_LAST_STEP, 0)
    assert 0.55 < legacy["reward_time_share"] < 0.7  # the reference run's 65 %, with noise
    assert legacy["reward_time_note"] is None

    for key in ("steps", "last_step", "reward_mean_last", "reward_mean_smoothed_last", "seconds_per_step",
                "eta_seconds", "reward_time_share", "skipped_lines"):
        assert summary[key] == v1[key], key  # the first run is repeated at top level
    assert summary["plots"] == ["reward.png", "reward_components.png", "length_kl_entropy.png", "timing.png"]
    for name in summary["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert f"step {V1_LAST_STEP}/{SAMPLE_TOTAL_STEPS}" in printed and "reward 6" in printed


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}+00:00"


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
    assert summary["ignored_inputs"] == [f"{sample_copy / 'crashed_at_start.log'}: no training step found "
                                         "(0 unreadable, 1 other lines)"]


def test_committed_notebook_has_no_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, "model_watch.ipynb has no code cell"
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


def _execute_notebook(env: dict[str, str], monkeypatch) -> dict:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    return json.loads((Path(env[OUT_ENV]) / "summary.json").read_text())


def test_notebook_runs_top_to_bottom_on_the_sample(tmp_path, monkeypatch):
    monkeypatch.delenv(LOG_ENV, raising=False)
    summary = _execute_notebook({OUT_ENV: str(tmp_path / "out")}, monkeypatch)
    assert [run["name"] for run in summary["runs"]] == [Path(V1_LOG).stem, Path(LEGACY_LOG).stem]


def test_notebook_reads_the_log_named_by_the_environment(sample_copy, tmp_path, monkeypatch):
    env = {LOG_ENV: str(sample_copy / LEGACY_LOG), OUT_ENV: str(tmp_path / "out")}
    summary = _execute_notebook(env, monkeypatch)
    assert [run["name"] for run in summary["runs"]] == [Path(LEGACY_LOG).stem]
    assert summary["last_step"] == LEGACY_LAST_STEP


def test_timing_plot_draws_more_stages_than_it_has_colours(tmp_path):
    from rationanomaly.watch.plots import STAGE_COLOURS, plot_timing

    stages = " - ".join(f"timing_s/stage{i}:1.0" for i in range(3 * len(STAGE_COLOURS) + 1))
    run = _run_from_console([f"step:1 - {stages} - timing_s/step:40.0", f"step:2 - {stages} - timing_s/step:40.0"])
    assert plot_timing([run], tmp_path / "timing.png").stat().st_size > 0


def test_parse_file_streams_a_console_log_to_the_same_result_as_its_text(tmp_path):
    # a file is read line by line (a multi-day log is never held whole); \r screens and an unterminated last
    # line must read as they do from the text
    text = (PREFIX + "step:1 - critic/score/mean:0.5\r\n" + "Training Progress:  1%|   | 1/150\rTraining Progress:"
            "  1%|   | 2/150\n" + PREFIX + "step:2 - critic/score/mean:0.25\n" + PREFIX + "step:3 - critic/sc")
    path = tmp_path / "run.log"
    path.write_bytes(text.encode())
    from_file, from_text = parse_file(path), parse_console_text(text, path)
    assert from_file == from_text
    assert (list(from_file.steps), from_file.total_steps, from_file.skipped_lines) == ([1, 2], 150, 1)
