"""rationanomaly.watch.plots: the figures as objects — ticks, legends, panels, scales and what they say."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from rationanomaly.watch import plots as watch_plots
from rationanomaly.watch import watch
from rationanomaly.watch.parse import Run, load_runs, merge_logs, parse_console_text
from rationanomaly.watch.plots import (
    NOT_LOGGED,
    STAGE_COLOURS,
    components_figure,
    reward_figure,
    timing_figure,
    training_curves_figure,
)
from rationanomaly.watch.sample import LEGACY_LOG, SAMPLE_DIR, V1_LOG

SIGMA = 5.0
COMPONENT_TITLES = ["score", "format", "answer", "think (x0.5 in score)", "semantic", "length", "perplexity"]


@pytest.fixture(scope="module")
def sample_runs() -> list[Run]:
    """The two sample runs: V1 logs everything, the legacy run no reward components and no per-step ones."""
    runs, _ = load_runs([SAMPLE_DIR])
    assert [run.name for run in runs] == [Path(V1_LOG).stem, Path(LEGACY_LOG).stem]
    return runs


@pytest.fixture()
def sample_copy_mtime(tmp_path) -> Path:
    """The sample folder copied, every file last modified at the same second."""
    folder = tmp_path / "logs"
    shutil.copytree(SAMPLE_DIR, folder)
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (1_767_225_600, 1_767_225_600))
    return folder


def _console_run(name: str, lines: list[str]) -> Run:
    return merge_logs([parse_console_text("".join(line + "\n" for line in lines), Path(f"{name}.log"))])


def _short_run() -> Run:
    """Three steps: a default locator would put ticks at 1.25, 1.5, ..."""
    return _console_run(
        "short",
        [
            f"step:{step} - critic/score/mean:{step / 10} - response_length/mean:200 - actor/kl_loss:0.001 - "
            f"actor/entropy:0.5 - timing_s/gen:10 - timing_s/step:20 - reward_components/format/mean:0.1 - "
            f"reward_components/answer/mean:{step / 10 - 0.1}"
            for step in (1, 2, 3)
        ],
    )


def _figures(runs: list[Run]) -> dict[str, Figure]:
    figures = {
        "reward": reward_figure(runs, SIGMA),
        "components": components_figure(runs, SIGMA),
        "curves": training_curves_figure(runs, SIGMA),
        "timing": timing_figure(runs),
    }
    return {name: figure for name, figure in figures.items() if figure is not None}


def _texts(figure: Figure) -> list[str]:
    return [text.get_text() for axes in figure.axes for text in axes.texts]


def _legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


@pytest.mark.parametrize("which", ["sample", "short"])
def test_every_step_axis_has_integer_ticks(sample_runs, which):
    runs = sample_runs if which == "sample" else [_short_run()]
    figures = _figures(runs)
    assert set(figures) == {"reward", "components", "curves", "timing"}
    for name, figure in figures.items():
        for axes in figure.axes:
            ticks = axes.get_xticks()
            assert len(ticks) >= 2, name
            assert all(float(tick).is_integer() for tick in ticks), (name, axes.get_title(), list(ticks))


def test_every_curve_figure_names_every_run_in_one_legend(sample_runs):
    names = [run.name for run in sample_runs]
    for name, figure in _figures(sample_runs).items():
        if name == "timing":  # one panel per run, titled with its name
            assert [axes.get_title().split("\n")[0] for axes in figure.axes] == names
            continue
        assert len(figure.legends) == 1, name
        assert [text.split(" (no ")[0] for text in _legend_texts(figure)] == names, name


def test_legend_carries_the_labels_watch_gives_a_stalled_run(sample_copy_mtime, tmp_path, monkeypatch):
    seen = []
    original = watch_plots.reward_figure
    monkeypatch.setattr(
        watch_plots, "reward_figure", lambda runs, sigma, labels: seen.append(labels) or original(runs, sigma, labels)
    )
    watch(
        [sample_copy_mtime / LEGACY_LOG, sample_copy_mtime / V1_LOG],
        tmp_path / "out",
        now=sample_copy_mtime.stat().st_mtime + 86400,
    )
    assert seen == [
        [
            f"{Path(LEGACY_LOG).stem} [STALLED: no new step for 1d 00h00m]",
            f"{Path(V1_LOG).stem} [STALLED: no new step for 1d 00h00m]",
        ]
    ]


def test_components_figure_has_one_panel_per_component_and_a_zero_line_on_each(sample_runs):
    figure = components_figure(sample_runs, SIGMA)
    grid = figure.axes
    top, bottom = grid[: len(grid) // 2], grid[len(grid) // 2 :]
    # training and validation row; val-core's `reward` (the same series as `score`) has no panel of its own
    assert [axes.get_title() for axes in top] == COMPONENT_TITLES
    assert all(axes.get_title() == "" for axes in bottom)
    for axes in grid:
        zero = [line for line in axes.get_lines() if list(line.get_ydata()) == [0.0, 0.0]]
        assert len(zero) == 1, axes.get_title()
    assert [axes.get_ylabel() for axes in (top[0], bottom[0])] == ["training: mean per step", "validation: mean"]


def test_components_figure_shares_a_scale_where_units_agree(sample_runs):
    figure = components_figure(sample_runs, SIGMA)
    top, bottom = figure.axes[:7], figure.axes[7:]
    for upper, lower in zip(top, bottom, strict=True):  # training and validation of one component: one scale
        assert upper.get_ylim() == lower.get_ylim()
    semantic, length, perplexity = top[4:7]
    assert semantic.get_ylim() == length.get_ylim() == perplexity.get_ylim()  # the parts of think
    score, format_, answer = top[0:3]
    assert len({score.get_ylim(), format_.get_ylim(), answer.get_ylim()}) == 3  # the terms keep their own


def test_a_run_without_a_metric_is_named_on_the_figure(sample_runs):
    v1, legacy = sample_runs
    no_reward = _console_run("no_reward", ["step:1 - actor/entropy:0.5", "step:2 - actor/entropy:0.4"])
    assert f"{NOT_LOGGED}: no_reward" in _texts(reward_figure([v1, no_reward], SIGMA))
    assert _texts(reward_figure([no_reward], SIGMA)) == [NOT_LOGGED]  # no run has it: said in the middle
    curves = training_curves_figure([no_reward, legacy], SIGMA)
    assert _texts(curves).count(f"{NOT_LOGGED}: no_reward") == 2  # length and KL; both log entropy
    components = components_figure(sample_runs, SIGMA)
    assert _legend_texts(components) == [v1.name, f"{legacy.name} (no per-step or validation components)"]
    only_validation = components_figure([_console_run("val", ["step:10 - val-aux/RA/score/mean@1:0.5"])], SIGMA)
    assert _texts(only_validation) == [NOT_LOGGED]  # the per-step panel says the run logged none


def test_components_figure_is_none_when_no_run_logged_components():
    assert components_figure([_console_run("bare", ["step:1 - critic/score/mean:0.5"])], SIGMA) is None


def test_timing_figure_draws_more_stages_than_it_has_colours(tmp_path):
    stages = " - ".join(f"timing_s/stage{i}:1.0" for i in range(3 * len(STAGE_COLOURS) + 1))
    run = _console_run("many", [f"step:1 - {stages} - timing_s/step:40.0", f"step:2 - {stages} - timing_s/step:40.0"])
    (axes,) = timing_figure([run]).axes
    assert len(axes.collections) == 3 * len(STAGE_COLOURS) + 1  # one band per stage
    assert [line.get_label() for line in axes.get_lines()] == ["step (total)"]
    assert len(axes.get_legend().get_texts()) == 3 * len(STAGE_COLOURS) + 2  # every stage and the total
