"""Watch GRPO training: read verl logs, plot smoothed reward curves, estimate the time left.

    python -m rationanomaly.watch rationanomaly/sample_data/watch --out runs/watch

`watch()` is what the CLI and model_watch.ipynb call: it reads the logs (parse.py), writes the PNGs
(plots.py) and `summary.json` (analysis.py) into the output folder and returns the summary.

summary.json: `runs` is a list with one record per run (a console log merged with the JSONL it
announced, or a lone file), in the order the inputs were given (files of a folder sorted by path).
The first run's record is also spread at top level, so a single-run reader needs no index. A record:
`name`, `sources`, `steps` (count of logged steps), `first_step`, `last_step`, `total_steps`,
`reward_key`, `reward_mean_last`, `reward_mean_smoothed_last`, `seconds_per_step` (median of the last
`recent_steps` durations), `eta_seconds` and `eta` (null / "unknown" without a total), `last_update_utc`
(newest source file's modification time), `eta_utc` (that plus eta), `reward_time_share` (null when
timing_s/reward is not logged, as in verl's V1 trainer) with `reward_time_note`, `validation_last`
(last validation value of each reward component), `skipped_lines` (metric records that could not be
read), `other_lines` (other console output), `notes`. Top level also has `sigma`, `recent_steps`,
`plots` (file names written) and `ignored_inputs` (files without a single step).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rationanomaly.io import write_json_atomic
from rationanomaly.watch.analysis import DEFAULT_RECENT_STEPS, DEFAULT_SIGMA, build_summary, describe_run
from rationanomaly.watch.parse import Run, load_runs

LOG_ENV = "RATIONANOMALY_WATCH_LOG"  # the notebook reads its input from here (os.pathsep-separated)
OUT_ENV = "RATIONANOMALY_WATCH_OUT"  # and writes its plots and summary.json there

__all__ = ["LOG_ENV", "OUT_ENV", "NoStepsError", "Run", "describe_run", "load_runs", "watch"]


class NoStepsError(ValueError):
    """The inputs hold no verl training step: nothing to plot."""


def watch(inputs: Iterable[str | Path], out_dir: str | Path, sigma: float = DEFAULT_SIGMA,
          recent: int = DEFAULT_RECENT_STEPS, total_steps: int | None = None) -> dict:
    """Read the logs, write the plots and `summary.json` into `out_dir`, and return the summary."""
    from rationanomaly.watch.plots import plot_all  # matplotlib only when plotting

    if sigma < 0 or recent < 1:
        raise ValueError(f"sigma must be >= 0 (got {sigma}) and recent >= 1 (got {recent})")
    inputs = list(inputs)
    runs, empty = load_runs(inputs)
    if not runs:
        where = ", ".join(str(i) for i in inputs)
        detail = "; ".join(empty) if empty else f"no *.log or *.jsonl file found in {where}"
        raise NoStepsError(
            f"nothing to watch: {detail}. Expected verl console lines 'step:N - key:value - ...' or file-logger "
            "JSON lines {\"step\": N, \"data\": {...}}: has the run reached its first step, and does "
            "trainer.logger include console or file?")
    out = Path(out_dir)
    plots = plot_all(runs, out, sigma)
    summary = build_summary(runs, sigma, recent, total_steps, plots=[p.name for p in plots], ignored=empty)
    write_json_atomic(out / "summary.json", summary)
    return summary
