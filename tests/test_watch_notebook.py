"""model_watch.ipynb as researchers use it: LOG in the first cell, the project's kernel, one line for a bad log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rationanomaly.paths import REPO_ROOT
from rationanomaly.watch import LOG_ENV, OUT_ENV
from rationanomaly.watch.notebook import log_inputs, plot_files, summary_table, watch_for_notebook
from rationanomaly.watch.sample import LEGACY_LOG, SAMPLE_DIR, V1_LOG

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = REPO_ROOT / "model_watch.ipynb"
MAKEFILE = REPO_ROOT / "Makefile"
LOG_ASSIGNMENT = re.compile(r"^LOG = .*$", re.M)


def _kernel_name() -> str:
    return json.loads(NOTEBOOK.read_text())["metadata"]["kernelspec"]["name"]


def test_committed_notebook_has_no_outputs_and_takes_the_log_in_its_first_cell():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    first = notebook["cells"][0]
    assert first["cell_type"] == "code" and LOG_ASSIGNMENT.search("".join(first["source"]))


def test_make_notebook_registers_the_notebooks_kernel_inside_the_venv_and_opens_jupyterlab():
    makefile = MAKEFILE.read_text()
    assert re.search(rf"^KERNEL_NAME := {_kernel_name()}$", makefile, re.M)
    kernel = re.search(r"^kernel: .*\n\t(.*)$", makefile, re.M).group(1)
    assert "-m ipykernel install --sys-prefix --name $(KERNEL_NAME)" in kernel  # into the venv, not ~/.local
    notebook = re.search(r"^notebook: kernel\n\t(.*)$", makefile, re.M).group(1)
    assert notebook.startswith("$(BIN)/jupyter lab ") and notebook.endswith(" model_watch.ipynb")
    # the front end `make install` puts into the environment (the test extra)
    assert (Path(sys.executable).parent / "jupyter-lab").is_file()


@pytest.fixture(scope="module")
def registered_kernel(tmp_path_factory) -> Path:
    """The notebook's kernel registered as `make kernel` does, under a temporary prefix instead of the venv."""
    prefix = tmp_path_factory.mktemp("kernel_prefix")
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", _kernel_name()],
        check=True,
        capture_output=True,
    )
    spec = json.loads((prefix / "share" / "jupyter" / "kernels" / _kernel_name() / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable  # the kernel is this environment's Python
    return prefix / "share" / "jupyter"


def _execute(monkeypatch, jupyter_path: Path, env: dict[str, str], log: str | None = None) -> list[list[dict]]:
    """Run the notebook (with the first cell's LOG replaced when given) in its own kernel; the outputs per cell."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # where the kernel spec above lies
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv(LOG_ENV, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    if log is not None:
        notebook.cells[0].source = LOG_ASSIGNMENT.sub(f"LOG = {log!r}", notebook.cells[0].source)
    nbclient.NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    assert notebook.metadata.kernelspec.name == _kernel_name()
    return [cell.get("outputs", []) for cell in notebook.cells]


def _message(cells: list[list[dict]]) -> str:
    """What the watch cell (the third) shows: its one result, as plain text."""
    (output,) = cells[2]
    assert output["output_type"] == "execute_result"
    return output["data"]["text/plain"]


def _kinds(cells: list[list[dict]]) -> list[str]:
    return [output["output_type"] for outputs in cells for output in outputs]


def test_notebook_runs_top_to_bottom_on_the_sample(registered_kernel, tmp_path, monkeypatch):
    cells = _execute(monkeypatch, registered_kernel, {OUT_ENV: str(tmp_path / "out")})
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [run["name"] for run in summary["runs"]] == [Path(V1_LOG).stem, Path(LEGACY_LOG).stem]
    assert "error" not in _kinds(cells) and "stream" not in _kinds(cells)  # no traceback, no stray warning
    lines = _message(cells).split("\n")
    assert [line.split(":")[0] for line in lines] == [Path(V1_LOG).stem, Path(LEGACY_LOG).stem]
    assert "components add up to the reward mean at 119/119 steps" in lines[0]
    (table,) = cells[3]
    assert "text/html" in table["data"]  # the summary table
    assert ["image/png" in output["data"] for output in cells[4]] == [True] * len(summary["plots"]) == [True] * 4


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_notebook_answers_a_missing_or_empty_log_with_one_line(registered_kernel, tmp_path, monkeypatch, case):
    log = tmp_path / "run.log"
    if case == "empty":
        log.write_text("")
    out = tmp_path / "out"
    # the missing log is named in the first cell, as a researcher does; the empty one through the environment
    cells = (
        _execute(monkeypatch, registered_kernel, {OUT_ENV: str(out)}, log=str(log))
        if case == "missing"
        else _execute(monkeypatch, registered_kernel, {OUT_ENV: str(out), LOG_ENV: str(log)})
    )
    assert _kinds(cells) == ["execute_result"]  # the one line; no table, plot, warning or traceback
    expected = {
        "missing": f"cannot watch {log}: {log}: no such file or directory; pass a verl console log",
        "empty": f"cannot watch {log}: nothing to watch: {log}: no training step found",
    }[case]
    assert _message(cells).startswith(expected) and "\n" not in _message(cells)
    assert not out.exists()


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ("targets", ["targets"]),
        ("a.log:b.jsonl", ["a.log", "b.jsonl"]),  # os.pathsep on POSIX
        ("a.log::", ["a.log"]),
        (["a.log", Path("b")], ["a.log", "b"]),
        ("", []),
    ],
)
def test_log_inputs_split_the_first_cells_log(log, expected):
    assert log_inputs(log) == expected


def test_watch_for_notebook_without_a_log_says_what_to_set(tmp_path):
    assert watch_for_notebook(" ", tmp_path, 5.0) == (
        None,
        "no log given: set LOG in the first cell to a verl console log, its JSONL or a folder (targets)",
    )
    assert summary_table(None) is None and plot_files(None, tmp_path) == []


def test_summary_table_has_a_row_per_run(tmp_path):
    summary, _ = watch_for_notebook(str(SAMPLE_DIR / LEGACY_LOG), tmp_path, 5.0)
    table = summary_table(summary)
    assert table["name"].tolist() == [Path(LEGACY_LOG).stem] and table["last_step"].tolist() == [40]
    assert [path.name for path in plot_files(summary, tmp_path)] == [
        "reward.png",
        "length_kl_entropy.png",
        "timing.png",
    ]
