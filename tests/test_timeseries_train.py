"""The training loop: split, presets, VAE inputs, determinism, resume, the report, and the CLI smoke run.

The smoke run (synthetic Yahoo-layout data, both modes) is what `make demo-timeseries` runs; it must beat
predict-all-normal on its own anomalies. Its settings are far shorter than the reference's (see README).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("gymnasium")

from rationanomaly.paths import REPO_ROOT  # noqa: E402
from rationanomaly.timeseries import __main__ as cli  # noqa: E402
from rationanomaly.timeseries import train as training  # noqa: E402
from rationanomaly.timeseries.data import Dataset, Series, read_dataset  # noqa: E402
from rationanomaly.timeseries.reward import A1_LAMBDA, SMD_REWARD, WADI_LAMBDA, lambda_trajectory  # noqa: E402
from rationanomaly.timeseries.synthetic import SynthSpec, write_synthetic  # noqa: E402
from rationanomaly.timeseries.train import (  # noqa: E402
    Settings,
    choose_actions,
    first_validation_index,
    prepare,
    preset,
    vae_training_windows,
)

# The smoke run of `make demo-timeseries`: 20 short series, 30 episodes of 40 updates at a 10x learning rate.
SMOKE_DATA = ["--series", "20", "--seed", "0", "--min_length", "300", "--max_length", "400", "--anomaly_rate", "0.03"]
SMOKE_TRAIN = ["--episodes", "30", "--updates_per_episode", "40", "--learning_rate", "0.003", "--batch_size", "64",
               "--al_budget", "30", "--lp_budget", "20", "--vae_epochs", "5", "--vae_batch_size", "256",
               "--replay_init", "200", "--seed", "0"]  # fmt: skip


@pytest.mark.parametrize(("count", "ratio", "first"), [
    (67, 0.9, 61),  # A1: 61 training series, 6 validate (as the reference)
    (100, 0.9, 90),  # A2: 90 / 10 (the reference had series 90 in both sets)
    (28, 0.8, 23),  # SMD: 23 / 5
    (5, 0.8, 4),  # WaDi: 4 attack slices train, 1 validates
])  # fmt: skip
def test_first_validation_index_splits_like_the_reference(count, ratio, first):
    assert first_validation_index(count, ratio) == first


@pytest.mark.parametrize(("count", "ratio"), [(1, 0.9), (10, 0.999)])
def test_a_split_without_training_or_validation_series_is_refused(count, ratio):
    with pytest.raises(ValueError, match="need at least one training and one validation series"):
        first_validation_index(count, ratio)


def test_presets_carry_each_scripts_constants():
    yahoo, smd, wadi = preset("yahoo"), preset("smd"), preset("wadi")
    assert (yahoo.episodes, yahoo.al_budget, yahoo.lp_budget, yahoo.gamma, yahoo.lam) == (300, 30, 100, 0.92, A1_LAMBDA)
    assert (smd.reward, smd.episodes, smd.channels, smd.batch_size) == (SMD_REWARD, 100, "first", 128)
    assert smd.lam.initial == 20
    assert (smd.validation_ratio, smd.vae.epochs, smd.warm_fit_points) == (0.8, 50, 10_000)
    assert (wadi.lam, wadi.hidden, wadi.gamma, wadi.epsilon, wadi.episodes) == (WADI_LAMBDA, 64, 0.5, "episodes", 20)
    assert preset("smd", "fixed").mode == "fixed"


def test_settings_errors_name_the_flag():
    with pytest.raises(ValueError, match="--mode 'greedy'"):
        training.check_settings(Settings(mode="greedy"))
    with pytest.raises(ValueError, match="--batch_size must be >= 1"):
        training.check_settings(Settings(batch_size=0))


def test_choose_actions_is_greedy_without_exploration_and_random_with_it():
    q = np.array([[0.0, 1.0], [2.0, 1.0]] * 50)
    rng = np.random.default_rng(0)
    assert choose_actions(q, 0.0, rng).tolist() == [1, 0] * 50
    explored = choose_actions(q, 1.0, rng)
    assert 30 < explored.sum() < 70  # uniform over both actions


def tiny_dataset() -> Dataset:
    """Three hand-made series of 40 points: anomalies at 30-31 in the first, none in the others."""
    rng = np.random.default_rng(0)
    series = []
    for index in range(3):
        labels = np.zeros(40, np.int8)
        if index == 0:
            labels[30:32] = 1
        series.append(Series(f"s{index}", rng.random((40, 1)).astype(np.float32), labels))
    return Dataset("yahoo", tuple(series))


def test_reference_vae_windows_splice_across_deleted_anomalies_and_are_standardised():
    dataset = tiny_dataset()
    settings = Settings(validation_ratio=0.6)  # two training series
    windows = vae_training_windows(dataset, prepare(dataset, settings), settings)
    assert windows.shape == ((38 - 25 + 1) + (40 - 25 + 1), 25)  # series 0 lost 2 rows, then spliced
    np.testing.assert_allclose(windows.mean(axis=0), 0.0, atol=1e-5)


def test_fixed_vae_windows_are_the_agents_windows_without_anomalies():
    dataset = tiny_dataset()
    settings = Settings(validation_ratio=0.6, mode="fixed")
    prepared = prepare(dataset, settings)
    windows = vae_training_windows(dataset, prepared, settings)
    # series 0: windows i hold points i+1..i+25; those holding point 30 or 31 (i = 5..6+...) are dropped
    clean_series_0 = [i for i in range(15) if not {30, 31} & set(range(i + 1, i + 26))]
    assert windows.shape == (len(clean_series_0) + 15, 25)
    np.testing.assert_array_equal(windows[0], prepared.scaled[0][1:26, 0])
    assert windows.min() >= 0.0 and windows.max() <= 1.0


def tiny_settings(mode: str, seed: int = 0, **changes) -> Settings:
    """A run of seconds: 3 episodes of 2 updates on the tiny synthetic set."""
    settings = replace(preset("yahoo", mode), seed=seed, episodes=3, updates_per_episode=2, batch_size=16,
                       replay_init=30, al_budget=5, lp_budget=5, hidden=16, checkpoint_every=2)  # fmt: skip
    return replace(settings, vae=replace(settings.vae, epochs=2, batch_size=256), **changes)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_yahoo")
    write_synthetic(folder, "yahoo", SynthSpec(series=10, min_length=90, max_length=110, dims=1, anomaly_rate=0.05), 1)
    return folder


@pytest.mark.parametrize("mode", ["reference", "fixed"])
def test_same_seed_gives_an_identical_report(tiny_data, tmp_path, mode):
    dataset = read_dataset(tiny_data, "yahoo")
    training.train(dataset, tiny_settings(mode), tmp_path / "a")
    training.train(dataset, tiny_settings(mode), tmp_path / "b")
    training.train(dataset, tiny_settings(mode, seed=1), tmp_path / "c")
    first = (tmp_path / "a" / "report.json").read_bytes()
    assert first == (tmp_path / "b" / "report.json").read_bytes()
    assert first != (tmp_path / "c" / "report.json").read_bytes()
    assert not (tmp_path / "a" / "checkpoint.pt").exists()  # removed once the report is written


def test_an_interrupted_run_resumes_to_the_same_report(tiny_data, tmp_path, monkeypatch):
    dataset = read_dataset(tiny_data, "yahoo")
    settings = tiny_settings("reference", episodes=5)
    training.train(dataset, settings, tmp_path / "whole")
    original = training.Trainer.episode

    def crash_at_the_fourth(self, number):
        if number == 3:
            raise KeyboardInterrupt
        return original(self, number)

    monkeypatch.setattr(training.Trainer, "episode", crash_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        training.train(dataset, settings, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()  # written after episode 2
    monkeypatch.setattr(training.Trainer, "episode", original)
    training.train(dataset, settings, tmp_path / "resumed")
    whole = (tmp_path / "whole" / "report.json").read_bytes()
    assert whole == (tmp_path / "resumed" / "report.json").read_bytes()
    monkeypatch.setattr(training.Trainer, "episode", crash_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        training.train(dataset, settings, tmp_path / "other")
    with pytest.raises(ValueError, match="written by a run with other settings"):
        training.train(dataset, replace(settings, lp_budget=6), tmp_path / "other")


def test_report_accounts_for_every_label_and_lambda(tiny_data, tmp_path):
    report = training.train(read_dataset(tiny_data, "yahoo"), tiny_settings("reference"), tmp_path)
    episodes, labels, warm = report["episodes"], report["labels"], report["warm_up"]
    assert labels["true"] == warm["true_labels"] + sum(e["active_labels"] for e in episodes)
    assert labels["pseudo"] == warm["pseudo_labels"] + sum(e["pseudo_labels"] for e in episodes)
    assert report["lambda"] == pytest.approx(lambda_trajectory(report["returns"], A1_LAMBDA))
    assert report["split"] == {"train": [f"real_{i}" for i in range(1, 10)], "validation": ["real_10"]}
    row = report["validation"]["series"][0]
    assert row["points"] == row["tp"] + row["fp"] + row["fn"] + row["tn"]
    assert report["validation"]["baselines"]["all_normal"]["f1"] == 0.0
    assert report["validation"]["au_pr_from"] == "predictions"
    assert report["updates"] == 6 and report["settings"]["episodes"] == 3
    assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "timing.json", "training.png", "validation.png"}


def test_cli_reports_bad_data_in_one_line(tmp_path, capsys):
    assert cli.main(["train", "--data", str(tmp_path), "--layout", "yahoo", "--output_dir", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "holds no *.csv files" in error and error.count("\n") == 1


def flag_values(tokens: list[str]) -> dict[str, str]:
    """{--flag: value} of a command line's flags, without the paths and the layout/mode it names."""
    pairs = {tokens[i]: tokens[i + 1] for i in range(len(tokens) - 1) if tokens[i].startswith("--")}
    return {k: v for k, v in pairs.items() if k not in ("--data", "--output_dir", "--layout", "--mode")}


def test_make_demo_timeseries_runs_the_tested_smoke_settings():
    recipe = (REPO_ROOT / "Makefile").read_text().split("\ndemo-timeseries:", 1)[1].replace("\\\n", " ")
    synth, train = recipe.split(" synth ", 1)[1], recipe.split(" train ", 1)[1]
    assert flag_values(shlex.split(synth.splitlines()[0])) == flag_values(SMOKE_DATA)
    assert flag_values(shlex.split(train.split(";")[0])) == flag_values(SMOKE_TRAIN)


@pytest.mark.slow
def test_smoke_run_beats_predict_all_normal_in_both_modes(tmp_path, capsys):
    data = tmp_path / "data"
    assert cli.main(["synth", "--layout", "yahoo", "--output_dir", str(data), *SMOKE_DATA]) == 0
    for mode in ("reference", "fixed"):
        out = tmp_path / mode
        assert cli.main(["train", "--data", str(data), "--layout", "yahoo", "--mode", mode, "--output_dir", str(out),
                         *SMOKE_TRAIN]) == 0  # fmt: skip
        report = json.loads((out / "report.json").read_text())
        mean, baselines = report["validation"]["mean"], report["validation"]["baselines"]
        assert mean["f1"] > baselines["all_normal"]["f1"] == 0.0, mode
        assert mean["f1"] > 0.1, mode  # a clear margin, not one lucky point
        assert len(report["lambda"]) == len(report["returns"]) == 30
    summary = capsys.readouterr().out
    assert "reference on 2 validation series" in summary and "fixed on 2 validation series" in summary


def test_a1_benchmark_reuses_a_finished_run_only_when_data_and_budget_match(tmp_path):
    import argparse
    import runpy

    finished_as_asked = runpy.run_path(str(REPO_ROOT / "benchmarks" / "timeseries_a1.py"))["finished_as_asked"]
    report = tmp_path / "fixed_seed0" / "report.json"
    asked = argparse.Namespace(episodes=300, vae_epochs=20, vae_batch_size=256)
    assert not finished_as_asked(report, tmp_path / "data", asked)  # not run yet
    report.parent.mkdir()
    settings = {"episodes": 300, "vae": {"epochs": 20, "batch_size": 256}}
    report.write_text(json.dumps({"data": str(tmp_path / "data"), "settings": settings}))
    assert finished_as_asked(report, tmp_path / "data", asked)
    with pytest.raises(SystemExit, match=r"made with data .*synthetic.* \(asked .*A1Benchmark\)"):
        report.write_text(json.dumps({"data": str(tmp_path / "synthetic"), "settings": settings}))
        finished_as_asked(report, tmp_path / "A1Benchmark", asked)
    with pytest.raises(SystemExit, match=r"made with episodes 300 \(asked 10\); pass another --output_dir"):
        finished_as_asked(report, tmp_path / "synthetic", argparse.Namespace(episodes=10, vae_epochs=20,
                                                                             vae_batch_size=256))  # fmt: skip
