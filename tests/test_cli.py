"""The shared command-line edge (rationanomaly.cli) as every datasets/ and validation/ script uses it.

Each case builds valid inputs, breaks one thing about the output location or an input file, and checks:
exit code 2, exactly one `error:` line naming the file, no traceback, and not one byte (or mode) of the
inputs and of the earlier outputs changed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from rationanomaly.baselines import keyword_response
from rationanomaly.cli import (
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    UserError,
    fraction,
    non_empty,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
)
from rationanomaly.io import InputError
from rationanomaly.labels import cot_label
from rationanomaly.paths import REPO_ROOT, SAMPLE_DATA_DIR
from rationanomaly.samples import Sample, write_samples


def _inputs(folder: Path) -> dict[str, Path]:
    """Small valid inputs for every command, made from the embedded sample."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("sheet.csv", "structured.csv", "patch.json", "rationales.json")}
    for name, source in (
        ("sheet.csv", "bgl_templates.csv"),
        ("structured.csv", "bgl_structured.csv"),
        ("patch.json", "anomaly_patch.json"),
        ("rationales.json", "rationales.json"),
    ):
        paths[name].write_bytes((SAMPLE_DATA_DIR / source).read_bytes())
    testset = [
        Sample(
            f"event {i} failed on node <*>" if i % 3 == 0 else f"event {i} ok on <*>",
            "abnormal" if i % 3 == 0 else "normal",
        )
        for i in range(12)
    ]
    paths["test.json"] = write_samples(folder / "test.json", testset)
    paths["cot.json"] = write_samples(
        folder / "cot.json", [Sample(s.input, cot_label(f"Because {i}.", s.label)) for i, s in enumerate(testset)]
    )
    predictions = [
        {"instruction": s.instruction, "input": s.input, "output": keyword_response(s.input)} for s in testset
    ]
    paths["pred.json"] = folder / "pred.json"
    paths["pred.json"].write_text(json.dumps(predictions), encoding="utf-8")
    return paths


# script, argv for inputs `i` and output folder `o`, the input a bad encoding is tried on, one output file name
COMMANDS = {
    "anomaly_patch": (
        "datasets/anomaly_patch.py",
        lambda i, o: [
            "--input",
            i["sheet.csv"],
            "--output",
            o / "sheet.csv",
            "--patch",
            i["patch.json"],
            "--report",
            o / "report.json",
        ],
        "sheet.csv",
        "sheet.csv",
    ),
    "session_builder": (
        "datasets/session_builder.py",
        lambda i, o: ["--input", i["structured.csv"], "--output_dir", o],
        "structured.csv",
        "test_sessions.json",
    ),
    "template_split": (
        "datasets/template_split.py",
        lambda i, o: ["--input", i["sheet.csv"], "--name", "BGL", "--output_dir", o],
        "sheet.csv",
        "BGL_train.json",
    ),
    "cot_distill": (
        "datasets/cot_distill.py",
        lambda i, o: ["--input", i["sheet.csv"], "--rationales", i["rationales.json"], "--output_dir", o],
        "rationales.json",
        "train_cot.json",
    ),
    "parquet_builder": (
        "datasets/parquet_builder.py",
        lambda i, o: ["--input", i["cot.json"], "--output_dir", o],
        "cot.json",
        "bgl_train.parquet",
    ),
    "model_predict": (
        "validation/model_predict.py",
        lambda i, o: ["--backend", "rules", "--testset", i["test.json"], "--output", o / "pred.json"],
        "test.json",
        "pred.json",
    ),
    "model_evaluate": (
        "validation/model_evaluate.py",
        lambda i, o: [
            "--predictions",
            i["pred.json"],
            "--testset",
            i["test.json"],
            "--output_json",
            o / "metrics.json",
            "--labelled",
            o / "labelled.json",
            "--diff",
            o / "diff.json",
        ],
        "pred.json",
        "metrics.json",
    ),
}


def _argv(command: str, inputs: dict[str, Path], out: Path) -> list[str]:
    return [str(a) for a in COMMANDS[command][1](inputs, out)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_runs_on_valid_inputs_and_reruns_over_its_own_outputs(command, tmp_path, cli):
    inputs, out = _inputs(tmp_path / "in"), tmp_path / "out"
    script = COMMANDS[command][0]
    assert cli(script, _argv(command, inputs, out)).code == 0
    first = (out / COMMANDS[command][3]).read_bytes()
    assert cli(script, _argv(command, inputs, out)).code == 0  # a rerun replaces (or resumes) its own outputs
    assert (out / COMMANDS[command][3]).read_bytes() == first


def _break_output_folder(out: Path, inputs: dict, command: str, monkeypatch) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("a file where the output folder should be")
    return "is a file, not a folder"


def _output_is_a_folder(out: Path, inputs: dict, command: str, monkeypatch) -> str:
    (out / COMMANDS[command][3]).mkdir(parents=True)
    return "is a folder"


def _read_only_folder(out: Path, inputs: dict, command: str, monkeypatch) -> str:
    out.mkdir(parents=True)
    real_access = os.access
    # tests may run as root, who can write anywhere: refuse through the check the commands make
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == out else real_access(path, mode))
    return "is not writable (permission denied)"


def _latin1_input(out: Path, inputs: dict, command: str, monkeypatch) -> str:
    path = inputs[COMMANDS[command][2]]
    text = path.read_text(encoding="utf-8")
    path.write_bytes(text.replace("<*>", "caf\xe9 <*>", 1).encode("latin-1"))
    return f"{path.name}: not UTF-8 text"


BREAKAGES = {
    "output folder is a file": _break_output_folder,
    "output is a folder": _output_is_a_folder,
    "read-only output folder": _read_only_folder,
    "latin-1 input": _latin1_input,
}


@pytest.mark.parametrize("breakage", BREAKAGES)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_in_one_line_and_changes_nothing(command, breakage, tmp_path, cli, snapshot, monkeypatch):
    inputs, out = _inputs(tmp_path / "in"), tmp_path / "out"
    message = BREAKAGES[breakage](out, inputs, command, monkeypatch)
    before = snapshot(tmp_path)
    result = cli(COMMANDS[command][0], _argv(command, inputs, out))
    assert result.code == EXIT_REFUSED
    assert len(result.errors) == 1 and message in result.errors[0], result.errors
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_the_defaults(command, cli, capsys):
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO_ROOT / COMMANDS[command][0]), run_name="cli")["main"](["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--debug on an error, show the full traceback (default: False)" in text
    expected = {
        "anomaly_patch": "(default: exact)",
        "session_builder": "lines per window (paper: 100) (default: 100)",
        "template_split": "training anomaly rate (default: 0.15)",
        "cot_distill": "seconds per request (default: 120.0)",
        "parquet_builder": "seed of the validation split (default: 0)",
        "model_predict": "nucleus (reference) (default: 0.7)",
        "model_evaluate": "(default: drop)",
    }
    assert expected[command] in text


def test_debug_shows_the_traceback_instead_of_one_line(tmp_path):
    inputs = _inputs(tmp_path / "in")
    _latin1_input(tmp_path / "out", inputs, "anomaly_patch", None)
    main = runpy.run_path(str(REPO_ROOT / "datasets" / "anomaly_patch.py"), run_name="cli")["main"]
    with pytest.raises(InputError, match="not UTF-8 text"):
        main([*_argv("anomaly_patch", inputs, tmp_path / "out"), "--debug"])


@pytest.mark.parametrize("script", ["datasets/anomaly_patch.py", "validation/model_evaluate.py"])
def test_a_real_process_prints_one_line_and_exits_2(script, tmp_path):
    inputs = _inputs(tmp_path / "in")
    command = "anomaly_patch" if "patch" in script else "model_evaluate"
    _latin1_input(tmp_path / "out", inputs, command, None)
    done = subprocess.run(
        [sys.executable, script, *_argv(command, inputs, tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "not UTF-8 text" in done.stderr


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (KeyError("x"), EXIT_INCOMPLETE, "error: unexpected KeyError: 'x' (rerun with --debug for the traceback)"),
        (ValueError("bad\nvalue   here"), EXIT_REFUSED, "error: bad value here"),  # one line, whatever the message
        (
            PermissionError(13, "Permission denied", "/x/y"),
            EXIT_REFUSED,
            "error: /x/y: permission denied; fix its permissions or choose another path",
        ),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "error: interrupted; finished outputs are kept, rerun to continue"),
        (UserError("endpoint refused"), EXIT_REFUSED, "error: endpoint refused"),
        (  # a CUDA out-of-memory or a failed engine start is not the user's input: exit 1 and the --debug hint
            RuntimeError("CUDA out of memory"),
            EXIT_INCOMPLETE,
            "error: unexpected RuntimeError: CUDA out of memory (rerun with --debug for the traceback)",
        ),
    ],
)
def test_run_command_turns_any_error_into_one_line_and_an_exit_code(raised, code, line, capsys):
    def body() -> int:
        raise raised

    assert run_command(body) == code
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (positive_int, "3", 3),
        (positive_int, "0", "0 is not a positive integer"),  # 0 never silently means "the default"
        (positive_int, "-1", "-1 is not a positive integer"),
        (positive_int, "2.5", "'2.5' is not an integer"),
        (non_negative_int, "0", 0),  # no retries
        (non_negative_int, "-2", "-2 is negative"),
        (positive_float, "0.5", 0.5),
        (positive_float, "inf", "inf is not a positive number"),
        (fraction(), "0", 0.0),
        (fraction(), "1", 1.0),
        (fraction(low_open=True, high_open=True), "1", "1.0 is not a fraction in (0, 1)"),
        (fraction(low_open=True), "0", "0.0 is not a fraction in (0, 1]"),
        (fraction(), "nan", "nan is not a fraction in [0, 1]"),
        (non_empty, " teacher ", "teacher"),
        (non_empty, "  ", "is empty"),
    ],
)
def test_argument_types_accept_their_range_and_name_the_problem(parse, text, expected):
    if isinstance(expected, str) and expected != "teacher":
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(expected)):
            parse(text)
    else:
        assert parse(text) == expected
