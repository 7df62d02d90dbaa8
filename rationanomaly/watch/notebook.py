"""What model_watch.ipynb calls: the watch with one-line answers instead of tracebacks, a table, the plots.

    make notebook

A notebook is where a researcher points the watch at a log that may not exist yet (the run has not
started) or holds no step (it is still loading the model): those answer with one readable line and
an empty table, so every later cell still runs. Only errors in the watch itself raise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rationanomaly.watch import NoStepsError, describe_run, watch
from rationanomaly.watch.analysis import DEFAULT_STALL_STEPS

if TYPE_CHECKING:
    import pandas as pd

TABLE_COLUMNS = (
    "name",
    "status",
    "last_step",
    "total_steps",
    "reward_mean_last",
    "reward_mean_smoothed_last",
    "seconds_per_step",
    "eta",
    "eta_utc",
    "reward_time_share",
    "skipped_lines",
    "skipped_values",
)


def log_inputs(log: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The notebook's LOG as a list of paths: one path, several separated by os.pathsep, or a list."""
    if isinstance(log, (str, os.PathLike)):
        return [part for part in os.fspath(log).split(os.pathsep) if part.strip()]
    return [os.fspath(part) for part in log]


def watch_for_notebook(
    log: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | Path,
    sigma: float,
    total_steps: int | None = None,
    stall_steps: float = DEFAULT_STALL_STEPS,
) -> tuple[dict | None, str]:
    """(summary, text to print): the summary and a line per run, or None and one line saying what is wrong."""
    inputs = log_inputs(log)
    if not inputs:
        return None, "no log given: set LOG in the first cell to a verl console log, its JSONL or a folder (targets)"
    try:
        summary = watch(inputs, out, sigma=sigma, total_steps=total_steps, stall_steps=stall_steps)
    except (FileNotFoundError, NoStepsError, ValueError) as error:  # the log or a setting, never a traceback
        return None, f"cannot watch {os.pathsep.join(inputs)}: {error}"
    return summary, "\n".join(describe_run(record) for record in summary["runs"])


def summary_table(summary: dict | None) -> pd.DataFrame | None:
    """One row per run with the numbers a researcher checks first; None (an empty cell) without a summary."""
    if not summary:
        return None
    import pandas as pd

    return pd.DataFrame([{column: record.get(column) for column in TABLE_COLUMNS} for record in summary["runs"]])


def plot_files(summary: dict | None, out: str | Path) -> list[Path]:
    """The PNGs the watch wrote, in the order it wrote them; none without a summary."""
    return [Path(out) / name for name in summary["plots"]] if summary else []
