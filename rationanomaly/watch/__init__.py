"""Watch GRPO training: read verl logs, plot smoothed reward curves, estimate the time left.

    python -m rationanomaly.watch rationanomaly/sample_data/watch --out runs/watch

`watch()` is what the CLI and model_watch.ipynb call: it reads the logs (parse.py), writes the PNGs
(plots.py) and `summary.json` (analysis.py) into the output folder and returns the summary.

summary.json: `runs` is a list with one record per run (a console log merged with the JSONL it
announced, or a lone file), in the order the inputs were given (files of a folder sorted by path).
The first run's record is also spread at top level, so a single-run reader needs no index. A record:
`name`, `sources`, `status` (`running`, `stalled`: the log untouched for longer than `stall_steps`
step times, `finished`, or `unknown` without a step time), `steps` (count of logged steps),
`first_step`, `last_step`, `total_steps`, `reward_key`, `reward_mean_last`,
`reward_mean_smoothed_last`, `seconds_per_step` (median of the last `recent_steps` durations),
`work_left_seconds` (steps left x seconds per step), `eta_seconds` and `eta` (the same, but null /
"unknown" without a total and for a stalled run), `last_update_utc` (newest source file's
modification time), `idle_seconds` (now minus that), `stall_after_seconds`, `eta_utc` (last update
plus eta), `reward_time_share` (null when timing_s/reward is not logged, as in verl's V1 trainer)
with `reward_time_note`, `train_components_last` (last mean/max/min of each per-step training reward
component), `component_sum_check` (whether the step's reward mean equals format + answer + 0.5 x
think means; null when not logged), `validation_last` (last validation value of each reward
component), `skipped_lines` (metric records that could not be read: broken, or a step that is not an
integer in 0..10**9), `skipped_values` (NaN, infinite or boolean values left out of readable
records), `other_lines` (other console output), `notes`. Top level also has `sigma`,
`recent_steps`, `stall_steps`, `now_utc`, `plots` (file names written) and `ignored_inputs` (files
without a single step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

from rationanomaly.io import write_json_atomic
from rationanomaly.watch.analysis import (
    DEFAULT_RECENT_STEPS,
    DEFAULT_SIGMA,
    DEFAULT_STALL_STEPS,
    STALLED,
    build_summary,
    describe_run,
    describe_status,
)
from rationanomaly.watch.parse import MAX_STEP, Run, load_runs

LOG_ENV = "RATIONANOMALY_WATCH_LOG"  # the notebook reads its input from here (os.pathsep-separated)
OUT_ENV = "RATIONANOMALY_WATCH_OUT"  # and writes its plots and summary.json there

__all__ = [
    "LOG_ENV",
    "OUT_ENV",
    "NoStepsError",
    "Run",
    "check_settings",
    "describe_run",
    "explain_error",
    "load_runs",
    "run_label",
    "watch",
]


class NoStepsError(ValueError):
    """The inputs hold no verl training step: nothing to plot."""


def explain_error(error: Exception) -> tuple[str, int]:
    """The one line an error of `watch` is reported in, and the exit status a CLI gives it (1: nothing to
    watch or an unexpected error, 2: a bad setting, a missing input or an output that cannot be written)."""
    if isinstance(error, NoStepsError):
        return str(error), 1
    if isinstance(error, (FileNotFoundError, ValueError)):
        return str(error), 2  # watch's own messages: name the path or setting and what to do
    return f"{type(error).__name__}: {error} (rerun with --debug for the traceback)", 1


def check_settings(sigma: float, recent: int, total_steps: int | None, stall_steps: float) -> None:
    """Refuse settings no run can be watched with, naming the setting and what it takes."""
    problems = []
    if not (math.isfinite(sigma) and sigma >= 0):
        problems.append(f"sigma must be a number >= 0 (got {sigma})")
    if recent < 1:
        problems.append(f"recent steps must be >= 1 (got {recent})")
    if total_steps is not None and not 1 <= total_steps <= MAX_STEP:
        problems.append(f"total steps must be in 1..{MAX_STEP} (got {total_steps})")
    if not (math.isfinite(stall_steps) and stall_steps > 0):
        problems.append(f"stall steps must be a number > 0 (got {stall_steps})")
    if problems:
        raise ValueError("; ".join(problems))


def run_label(record: dict) -> str:
    """A run's name on the plots, with its state when it is stalled (a dead run must not look alive)."""
    return f"{record['name']} [{describe_status(record)}]" if record["status"] == STALLED else record["name"]


def watch(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    sigma: float = DEFAULT_SIGMA,
    recent: int = DEFAULT_RECENT_STEPS,
    total_steps: int | None = None,
    stall_steps: float = DEFAULT_STALL_STEPS,
    now: float | None = None,
) -> dict:
    """Read the logs, write the plots and `summary.json` into `out_dir`, and return the summary.

    `now` (POSIX seconds, default the current time) is when the stall is judged: a log untouched for more
    than `stall_steps` step times is a stalled run.
    """
    from rationanomaly.watch.plots import plot_all  # matplotlib only when plotting

    check_settings(sigma, recent, total_steps, stall_steps)
    inputs = list(inputs)
    try:
        runs, empty = load_runs(inputs)
    except OSError as error:
        if error.filename is None:  # find_log_files' own message
            raise
        raise ValueError(
            f"{error.filename}: cannot read it ({error.strerror or error}); check the path and its permissions"
        ) from error
    if not runs:
        where = ", ".join(str(i) for i in inputs)
        detail = "; ".join(empty) if empty else f"no *.log or *.jsonl file found in {where}"
        raise NoStepsError(
            f"nothing to watch: {detail}. Expected verl console lines 'step:N - key:value - ...' or file-logger "
            'JSON lines {"step": N, "data": {...}}: has the run reached its first step, and does '
            "trainer.logger include console or file?"
        )
    now = time.time() if now is None else now
    summary = build_summary(runs, sigma, recent, total_steps, ignored=empty, now=now, stall_steps=stall_steps)
    out = Path(out_dir)
    try:
        plots = plot_all(runs, out, sigma, [run_label(record) for record in summary["runs"]])
        summary["plots"] = [path.name for path in plots]
        write_json_atomic(out / "summary.json", summary)
    except OSError as error:
        raise ValueError(
            f"{out}: cannot write the plots and summary.json there ({error.filename}: "
            f"{error.strerror or error}); choose an output folder you can write to"
        ) from error
    return summary
