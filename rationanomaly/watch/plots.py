"""PNG plots of one or more runs (matplotlib): each figure puts the runs side by side.

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot, so they render with the
Agg canvas whatever backend the caller (a notebook, a headless CI job) has selected, and leave no
global figure state behind. Curves of different runs share axes (one colour per run), so rewards
compare at a glance; the timing breakdown cannot be overlaid, so it gets one panel per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rationanomaly.io import atomic_path
from rationanomaly.watch.analysis import (
    ENTROPY_KEY,
    KL_KEY,
    RESPONSE_LENGTH_KEY,
    REWARD_TIME_HIDDEN,
    REWARD_TIME_KEY,
    TIMING_PREFIX,
    gaussian_smooth,
    reward_components,
    reward_key,
    reward_time_share,
    timing_stages,
)
from rationanomaly.watch.parse import Run

RUN_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
STAGE_COLOURS = ("#4c72b0", "#8da0cb", "#55a868", "#a6d854", "#937860", "#e5c494", "#8172b2", "#b3b3b3", "#64b5cd")
REWARD_STAGE_COLOUR = "#d62728"  # the one stage the reference run was slow in (DESIGN.md)
RAW_ALPHA = 0.3
DPI = 110


def _colour(index: int) -> str:
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def _save(figure: Figure, path: Path) -> Path:
    """Write the figure atomically (matplotlib needs the format, since the temp name ends in .tmp)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _raw_and_smoothed(axes: Axes, run: Run, key: str | None, sigma: float, colour: str, label: str) -> bool:
    """Plot a metric faintly as logged and boldly smoothed; False when the run did not log it."""
    steps, values = run.series(key) if key else ([], [])
    if not steps:
        return False
    axes.plot(steps, values, color=colour, alpha=RAW_ALPHA, linewidth=1)
    axes.plot(steps, gaussian_smooth(steps, values, sigma), color=colour, linewidth=2, label=label)
    return True


def _finish(axes: Axes, title: str, ylabel: str, plotted: bool, legend: bool = True) -> None:
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if plotted and legend:
        axes.legend(fontsize="small")
    if not plotted:
        axes.text(0.5, 0.5, "not logged", transform=axes.transAxes, ha="center", va="center", color="grey")


def plot_reward(runs: Sequence[Run], path: Path, sigma: float) -> Path:
    """Mean sequence reward per step: raw (faint) and Gaussian-smoothed (bold), one colour per run."""
    figure = Figure(figsize=(9, 4.5))
    axes = figure.subplots()
    plotted = [_raw_and_smoothed(axes, run, reward_key(run), sigma, _colour(i), run.name) for i, run in enumerate(runs)]
    _finish(axes, f"reward mean (critic/score/mean): raw and Gaussian-smoothed, sigma = {sigma:g} steps",
            "reward", any(plotted))
    return _save(figure, path)


def plot_training_curves(runs: Sequence[Run], path: Path, sigma: float) -> Path:
    """Response length, KL loss and entropy, raw and smoothed, one panel each."""
    panels = ((RESPONSE_LENGTH_KEY, "tokens"), (KL_KEY, "KL"), (ENTROPY_KEY, "nats / token"))
    figure = Figure(figsize=(15, 4))
    grid = figure.subplots(1, len(panels))
    for index, (axes, (key, unit)) in enumerate(zip(grid, panels, strict=True)):
        plotted = [_raw_and_smoothed(axes, run, key, sigma, _colour(i), run.name) for i, run in enumerate(runs)]
        _finish(axes, key, unit, any(plotted), legend=index == 0)
    figure.suptitle(f"raw (faint) and Gaussian-smoothed (bold), sigma = {sigma:g} steps")
    figure.tight_layout()
    return _save(figure, path)


def plot_reward_components(runs: Sequence[Run], path: Path) -> Path | None:
    """Validation reward components (format, answer, think, ...) per name; None when no run logged any."""
    per_run = [reward_components(run) for run in runs]
    names = list(dict.fromkeys(name for components in per_run for name in components))
    if not names:
        return None
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4 * columns, 3.2 * rows))
    grid = figure.subplots(rows, columns, squeeze=False)
    for position, (axes, name) in enumerate(zip(grid.flat, names, strict=False)):
        for index, (run, components) in enumerate(zip(runs, per_run, strict=True)):
            if name in components:
                axes.plot(*components[name], marker="o", markersize=4, color=_colour(index), label=run.name)
        _finish(axes, name, "validation mean", True, legend=position == 0)
    for axes in list(grid.flat)[len(names):]:
        axes.set_visible(False)
    figure.suptitle("reward components at validation steps (verl logs them only there)")
    figure.tight_layout()
    return _save(figure, path)


def _timing_panel(axes: Axes, run: Run) -> None:
    """Stacked seconds per stage for each step, reward stage in red, step total as a line.

    Bands are step-wise filled areas rather than bars: one polygon per stage keeps a run of a few
    thousand steps as quick to draw as a short one.
    """
    stages = timing_stages(run)
    steps = list(run.steps)
    bottom = np.zeros(len(steps))
    others = cycle(STAGE_COLOURS)  # a run may log more stages than there are colours
    for key in stages:
        top = bottom + np.array([run.steps[step].get(key, 0.0) for step in steps])
        reward = key == REWARD_TIME_KEY
        axes.fill_between(steps, bottom, top, step="mid", linewidth=0, label=key.removeprefix(TIMING_PREFIX),
                          color=REWARD_STAGE_COLOUR if reward else next(others))
        bottom = top
    total_steps, totals = run.series("timing_s/step")
    if totals:
        axes.plot(total_steps, totals, color="black", linewidth=1, label="step (total)")
    share = reward_time_share(run)
    note = f"reward = {share:.0%} of step time" if share is not None else REWARD_TIME_HIDDEN
    axes.set_title(f"{run.name}\n{note}", color=REWARD_STAGE_COLOUR if share is not None else "black", fontsize=10)
    axes.set_xlabel("step")
    axes.set_ylabel("seconds")
    axes.grid(alpha=0.3, axis="y")
    if stages:
        axes.legend(fontsize="x-small", ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    else:
        axes.text(0.5, 0.5, "no timing_s/* logged", transform=axes.transAxes, ha="center", color="grey")


def plot_timing(runs: Sequence[Run], path: Path) -> Path:
    """Timing breakdown per step, one panel per run, with the reward share of step time in each title."""
    figure = Figure(figsize=(7 * len(runs), 4.5))
    grid = figure.subplots(1, len(runs), squeeze=False, sharey=True)
    for axes, run in zip(grid.flat, runs, strict=True):
        _timing_panel(axes, run)
    figure.suptitle("timing breakdown per step (timing_s/*)")
    figure.tight_layout()
    return _save(figure, path)


def plot_all(runs: Sequence[Run], out_dir: str | Path, sigma: float) -> list[Path]:
    """Every plot for these runs into `out_dir`; the reward-component plot only when components were logged."""
    out = Path(out_dir)
    written = [
        plot_reward(runs, out / "reward.png", sigma),
        plot_reward_components(runs, out / "reward_components.png"),
        plot_training_curves(runs, out / "length_kl_entropy.png", sigma),
        plot_timing(runs, out / "timing.png"),
    ]
    return [path for path in written if path is not None]
