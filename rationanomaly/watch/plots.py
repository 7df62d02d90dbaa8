"""PNG plots of one or more runs (matplotlib): each figure puts the runs side by side.

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot, so they render with the
Agg canvas whatever backend the caller (a notebook, a headless CI job) has selected, and leave no
global figure state behind; the `*_figure` builders return them for inspection, `plot_all` saves them.
Curves of different runs share axes (one colour per run, named in a legend, a stalled run marked in
its label), so rewards compare at a glance; the timing breakdown cannot be overlaid, so it gets one
panel per run. Every step axis has integer ticks, and a panel says on itself which runs did not log
its metric.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from rationanomaly.io import atomic_path
from rationanomaly.reward.components import THINK_WEIGHT
from rationanomaly.watch.analysis import (
    ENTROPY_KEY,
    KL_KEY,
    RESPONSE_LENGTH_KEY,
    REWARD_TIME_HIDDEN,
    REWARD_TIME_KEY,
    TIMING_PREFIX,
    gaussian_smooth,
    order_components,
    reward_components,
    reward_key,
    reward_time_share,
    timing_stages,
    training_components,
)
from rationanomaly.watch.parse import Run

RUN_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
STAGE_COLOURS = ("#4c72b0", "#8da0cb", "#55a868", "#a6d854", "#937860", "#e5c494", "#8172b2", "#b3b3b3", "#64b5cd")
REWARD_STAGE_COLOUR = "#d62728"  # the one stage the reference run was slow in (DESIGN.md)
NOTE_COLOUR = "dimgrey"
RAW_ALPHA = 0.3
DPI = 110
NOT_LOGGED = "not logged"
NOTE_WIDTH = 40  # characters per line of a note on a panel
# The parts of think share one scale: each is a score of the same kind (semantic in -0.5..0, length and
# perplexity in -1..1), so their panels compare directly. The terms of the total keep their own scales
# (answer spans -6.67..1, format -1..0.1): shared, the format and think curves would be flat lines.
SHARED_SCALE_GROUPS = (("semantic", "length", "perplexity"),)


def _colour(index: int) -> str:
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def _labels(runs: Sequence[Run], labels: Sequence[str] | None) -> list[str]:
    """Legend labels: the caller's (a run name with its state), else the run names."""
    if labels is None:
        return [run.name for run in runs]
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    return list(labels)


def _save(figure: Figure, path: Path) -> Path:
    """Write the figure atomically (matplotlib needs the format, since the temp name ends in .tmp)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _step_axis(axes: Axes) -> None:
    """Steps are counts: integer ticks only (a short run would otherwise show 1.5, 2.5)."""
    axes.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)


def _note_missing(axes: Axes, missing: Sequence[str], none_logged: bool) -> None:
    """Say on the panel which runs did not log its metric: centred when no run did, in a corner otherwise.

    The note stays out of the layout and inside the panel, so long run names never squeeze the plots.
    """
    if not missing:
        return
    if none_logged:
        text = axes.text(0.5, 0.5, NOT_LOGGED, transform=axes.transAxes, ha="center", va="center", color=NOTE_COLOUR)
    else:
        note = textwrap.fill(f"{NOT_LOGGED}: " + ", ".join(missing), NOTE_WIDTH)
        text = axes.text(
            0.02,
            0.97,
            note,
            transform=axes.transAxes,
            ha="left",
            va="top",
            fontsize="x-small",
            color=NOTE_COLOUR,
            clip_on=True,
        )
    text.set_in_layout(False)


def _run_legend(figure: Figure, labels: Sequence[str]) -> None:
    """One legend entry per run, below the panels: every run is named, whether or not a panel has its curve."""
    handles = [Line2D([], [], color=_colour(i), linewidth=2, label=label) for i, label in enumerate(labels)]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize="small")


def _raw_and_smoothed(axes: Axes, steps: Sequence[int], values: Sequence[float], sigma: float, colour: str) -> bool:
    """Plot a series faintly as logged and boldly smoothed; False when there is nothing to plot."""
    if not steps:
        return False
    axes.plot(steps, values, color=colour, alpha=RAW_ALPHA, linewidth=1)
    axes.plot(steps, gaussian_smooth(steps, values, sigma), color=colour, linewidth=2)
    return True


def _metric_panel(
    axes: Axes, runs: Sequence[Run], labels: Sequence[str], key_of: Callable[[Run], str | None], sigma: float
) -> None:
    """One metric of every run (its key chosen per run), raw and smoothed; runs that lack it named on the panel."""
    missing = []
    for index, (run, label) in enumerate(zip(runs, labels, strict=True)):
        key = key_of(run)
        steps, values = run.series(key) if key else ([], [])
        if not _raw_and_smoothed(axes, steps, values, sigma, _colour(index)):
            missing.append(label)
    _step_axis(axes)
    _note_missing(axes, missing, len(missing) == len(runs))


def reward_figure(runs: Sequence[Run], sigma: float, labels: Sequence[str] | None = None) -> Figure:
    """Mean sequence reward per step: raw (faint) and Gaussian-smoothed (bold), one colour per run."""
    labels = _labels(runs, labels)
    figure = Figure(figsize=(9, 4.8), layout="constrained")
    axes = figure.subplots()
    _metric_panel(axes, runs, labels, reward_key, sigma)
    axes.set_ylabel("reward")
    axes.set_title(f"reward mean (critic/score/mean): raw and Gaussian-smoothed, sigma = {sigma:g} steps")
    _run_legend(figure, labels)
    return figure


def training_curves_figure(runs: Sequence[Run], sigma: float, labels: Sequence[str] | None = None) -> Figure:
    """Response length, KL loss and entropy, raw and smoothed, one panel each."""
    labels = _labels(runs, labels)
    panels = ((RESPONSE_LENGTH_KEY, "tokens"), (KL_KEY, "KL"), (ENTROPY_KEY, "nats / token"))
    figure = Figure(figsize=(15, 4.5), layout="constrained")
    grid = figure.subplots(1, len(panels))
    for axes, (key, unit) in zip(grid, panels, strict=True):
        _metric_panel(axes, runs, labels, lambda _run, key=key: key, sigma)
        axes.set_title(key)
        axes.set_ylabel(unit)
    figure.suptitle(f"raw (faint) and Gaussian-smoothed (bold), sigma = {sigma:g} steps")
    _run_legend(figure, labels)
    return figure


def _component_title(name: str) -> str:
    """The panel title; think carries its weight in the total, so the panels add up by eye."""
    return f"{name} (x{THINK_WEIGHT:g} in score)" if name.rsplit("/", 1)[-1] == "think" else name


def _share_scales(grid: np.ndarray, names: Sequence[str]) -> None:
    """One y scale per column (training and validation of a component) and per group of like parts."""
    anchors: dict[object, Axes] = {}
    for column, name in enumerate(names):
        base = name.rsplit("/", 1)[-1]
        group = next((g for g in SHARED_SCALE_GROUPS if base in g), name)
        for axes in grid[:, column]:
            if group in anchors:
                axes.sharey(anchors[group])
            else:
                anchors[group] = axes


def _absent(label: str, train: dict, validation: dict) -> str:
    """A run's legend label, saying which kind of components it logged none of."""
    lacking = [kind for kind, found in (("per-step", train), ("validation", validation)) if not found]
    return f"{label} (no {' or '.join(lacking)} components)" if lacking else label


def components_figure(runs: Sequence[Run], sigma: float, labels: Sequence[str] | None = None) -> Figure | None:
    """Reward components: per training step (top row) and at validation steps (bottom row); None when no run
    logged any.

    Each column is one component on one scale for both rows, with a zero line, so the sign of every part
    and the gap between training and validation read at a glance. A run that logged no components of a
    row says so in the legend; a panel names a run that logged others but not its component.
    """
    labels = _labels(runs, labels)
    train = [training_components(run) for run in runs]
    validation = [reward_components(run) for run in runs]
    names = order_components({name for per_run in (*train, *validation) for name in per_run})
    if not names:
        return None
    figure = Figure(figsize=(max(2.9 * len(names), 9), 6.4), layout="constrained")
    grid = figure.subplots(2, len(names), squeeze=False, sharex=True)
    _share_scales(grid, names)
    for column, name in enumerate(names):
        top, bottom = grid[0, column], grid[1, column]
        missing_train, missing_validation = [], []
        for index, label in enumerate(labels):
            steps, values = train[index].get(name, {}).get("mean", ([], []))
            if not _raw_and_smoothed(top, steps, values, sigma, _colour(index)) and train[index]:
                missing_train.append(label)
            if name in validation[index]:
                bottom.plot(*validation[index][name], marker="o", markersize=4, color=_colour(index))
            elif validation[index]:
                missing_validation.append(label)
        for axes, missing, per_run in ((top, missing_train, train), (bottom, missing_validation, validation)):
            axes.axhline(0.0, color="black", linewidth=0.8, zorder=1)
            _step_axis(axes)
            none_logged = not any(per_run)
            _note_missing(axes, labels if none_logged else missing, none_logged)
        top.set_title(_component_title(name))
        top.set_xlabel("")  # the rows share their steps: one axis label, at the bottom
    grid[0, 0].set_ylabel("training: mean per step")
    grid[1, 0].set_ylabel("validation: mean")
    figure.suptitle(
        f"reward components (reward_components/*/mean per step, raw and smoothed with sigma = {sigma:g}; "
        "val-aux/* at validation steps)"
    )
    _run_legend(figure, [_absent(label, t, v) for label, t, v in zip(labels, train, validation, strict=True)])
    return figure


def _timing_panel(axes: Axes, run: Run, label: str) -> None:
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
        axes.fill_between(
            steps,
            bottom,
            top,
            step="mid",
            linewidth=0,
            label=key.removeprefix(TIMING_PREFIX),
            color=REWARD_STAGE_COLOUR if reward else next(others),
        )
        bottom = top
    total_steps, totals = run.series("timing_s/step")
    if totals:
        axes.plot(total_steps, totals, color="black", linewidth=1, label="step (total)")
    share = reward_time_share(run)
    note = f"reward = {share:.0%} of step time" if share is not None else REWARD_TIME_HIDDEN
    axes.set_title(f"{label}\n{note}", color=REWARD_STAGE_COLOUR if share is not None else "black", fontsize=10)
    _step_axis(axes)
    axes.grid(False, axis="x")
    axes.set_ylabel("seconds")
    if stages:
        axes.legend(fontsize="x-small", ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    else:
        _note_missing(axes, [label], True)


def timing_figure(runs: Sequence[Run], labels: Sequence[str] | None = None) -> Figure:
    """Timing breakdown per step, one panel per run, with the reward share of step time in each title."""
    labels = _labels(runs, labels)
    figure = Figure(figsize=(7 * len(runs), 5), layout="constrained")
    grid = figure.subplots(1, len(runs), squeeze=False, sharey=True)
    for axes, run, label in zip(grid.flat, runs, labels, strict=True):
        _timing_panel(axes, run, label)
    figure.suptitle("timing breakdown per step (timing_s/*)")
    return figure


def plot_all(runs: Sequence[Run], out_dir: str | Path, sigma: float, labels: Sequence[str] | None = None) -> list[Path]:
    """Every plot for these runs into `out_dir`; the reward-component plot only when components were logged."""
    out = Path(out_dir)
    figures = {
        "reward.png": reward_figure(runs, sigma, labels),
        "reward_components.png": components_figure(runs, sigma, labels),
        "length_kl_entropy.png": training_curves_figure(runs, sigma, labels),
        "timing.png": timing_figure(runs, labels),
    }
    return [_save(figure, out / name) for name, figure in figures.items() if figure is not None]
