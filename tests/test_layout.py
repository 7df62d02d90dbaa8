"""Guards on the repository layout: nothing may shadow the installed verl or datasets packages."""

from __future__ import annotations

import importlib
import importlib.util
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


@pytest.mark.parametrize(
    "relative",
    [
        "README.md",
        "LICENSE",
        "requirements.txt",
        "model_train.sh",
        "model_export.sh",
        "model_watch.ipynb",
        "datasets",
        "validation",
        "verl/utils/reward_score/RationAnomaly",
        "models",
        "targets",
    ],
)
def test_required_top_level_entry_exists(relative):
    assert (REPO_ROOT / relative).exists(), f"{relative} is part of the required layout"


def test_package_imports_without_side_effects():
    module = importlib.import_module("rationanomaly")
    assert module.__version__


def _readme_commands() -> list[str]:
    """Scripts and modules that README.md tells users to run."""
    import re

    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    scripts = re.findall(r"(?:python|bash)\s+((?:datasets|validation|benchmarks)/[\w/]+\.py|[\w]+\.sh)", text)
    modules = re.findall(r"python -m (rationanomaly[\w.]*)", text)
    return sorted(set(scripts)) + sorted(set(modules))


def test_readme_names_its_scripts_and_modules():
    assert "datasets/anomaly_patch.py" in _readme_commands()
    assert "model_train.sh" in _readme_commands()


@pytest.mark.parametrize("command", _readme_commands() if (REPO_ROOT / "README.md").exists() else [])
def test_every_script_and_module_in_the_readme_exists(command):
    if command.startswith("rationanomaly"):
        assert importlib.util.find_spec(command) is not None, f"README runs python -m {command}, which is missing"
    else:
        assert (REPO_ROOT / command).is_file(), f"README runs {command}, which is missing"


def test_readme_starts_with_the_two_commands():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]
