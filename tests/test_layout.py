"""Guards on the repository layout: nothing may shadow the installed verl or datasets packages."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from rationanomaly.paths import REPO_ROOT

FORBIDDEN_INIT = [
    "verl/__init__.py",
    "verl/utils/__init__.py",
    "verl/utils/reward_score/__init__.py",
    "datasets/__init__.py",
    "validation/__init__.py",
]


@pytest.mark.parametrize("relative", FORBIDDEN_INIT)
def test_namespace_folders_have_no_init_file(relative):
    assert not (REPO_ROOT / relative).exists(), f"{relative} would shadow an installed package"


@pytest.mark.parametrize("package", ["verl", "datasets"])
def test_installed_package_wins_over_repo_folder_when_run_from_repo_root(package):
    code = f"import {package}, sys; print({package}.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "site-packages" in out.stdout, f"{package} resolved to {out.stdout.strip()} from the repo root"


@pytest.mark.parametrize("relative", ["README.md", "LICENSE", "requirements.txt", "model_train.sh",
                                      "model_export.sh", "model_watch.ipynb", "datasets", "validation",
                                      "verl/utils/reward_score/RationAnomaly", "models", "targets"])
def test_required_top_level_entry_exists(relative):
    assert (REPO_ROOT / relative).exists(), f"{relative} is part of the required layout"


def test_package_imports_without_side_effects():
    module = importlib.import_module("rationanomaly")
    assert module.__version__
