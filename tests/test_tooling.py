"""The repository's own tooling: formatter and linter agree, runs leave git clean, the public data switch is strict."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys

import pytest

from rationanomaly.paths import PUBLIC_DATA_ENV, REPO_ROOT


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return [name for name in listed.decode().split("\0") if name]


def test_make_format_then_lint_agree_on_the_whole_tree(tmp_path):
    """What `make format` leaves behind passes `make lint` (a copy of the tree, so the checkout is untouched)."""
    for name in _tracked_files():
        if name.endswith((".py", ".ipynb", "pyproject.toml")) and (REPO_ROOT / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, tmp_path / name)
    ruff = [sys.executable, "-m", "ruff"]
    for step in (
        ["check", "--fix", "--quiet", "."],
        ["format", "--quiet", "."],
        ["check", "."],
        ["format", "--check", "."],
    ):
        done = subprocess.run([*ruff, *step], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, f"ruff {' '.join(step)}:\n{done.stdout}{done.stderr}"


def test_files_that_documented_commands_write_into_the_repository_are_ignored():
    _tracked_files()
    parquet = runpy.run_path(str(REPO_ROOT / "datasets" / "parquet_builder.py"), run_name="not_main")
    written = [f"datasets/{name}" for name in (*parquet["OUTPUT_NAMES"].values(), "parquet_meta.json")]
    written += [
        "runs/demo/summary.json",
        "models/RationAnomaly/config.json",
        "targets/RationAnomaly/x.log",
        "datasets/results/metrics/BGL_by_model.json",
        "datasets/testsets/BGL_test.json",
        "datasets/trainsets/BGL_rectified.xlsx",
        "datasets/trainsets/anomaly_patch_report.json",
    ]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *written], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert sorted(done.stdout.split()) == sorted(written)


def test_a_public_data_folder_that_does_not_exist_stops_the_test_run(tmp_path):
    missing = tmp_path / "no_such_folder"
    env = {**os.environ, PUBLIC_DATA_ENV: str(missing)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "tests/test_labels.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert f"{PUBLIC_DATA_ENV}={missing} is not a folder" in done.stdout + done.stderr
