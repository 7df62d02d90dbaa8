"""The whole pipeline on the embedded sample, on a CPU, in one run directory.

    python -m rationanomaly.demo --out runs/demo

Each step runs the same command a user would type (the scripts in datasets/, validation/, the
launchers), so the demo proves the README's commands. A failing step stops the run and shows the
tail of its log; every step's full output stays in `<out>/logs/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rationanomaly.io import write_text_atomic
from rationanomaly.paths import REPO_ROOT, SAMPLE_DATA_DIR

logger = logging.getLogger(__name__)

PYTHON = sys.executable
LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class Step:
    """One pipeline step: a shell-free command line run from the repository root."""

    name: str
    command: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    """What a step did: its exit code, wall time and where its output went."""

    name: str
    returncode: int
    seconds: float
    log: Path


class StepFailed(RuntimeError):
    """A demo step exited non-zero; the message carries the tail of its log."""


def run_step(step: Step, log_dir: Path, index: int) -> StepResult:
    """Run one step with its output captured to `log_dir/NN_name.log`."""
    log_path = log_dir / f"{index:02d}_{step.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", **step.env}
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(step.command) + "\n")
        handle.flush()
        completed = subprocess.run(
            list(step.command), cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    return StepResult(step.name, completed.returncode, time.perf_counter() - started, log_path)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log, for an error message."""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def run_steps(steps: Sequence[Step], log_dir: Path, on_done: Callable[[StepResult], None] | None = None
              ) -> list[StepResult]:
    """Run steps in order; raise StepFailed at the first non-zero exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for index, step in enumerate(steps, start=1):
        result = run_step(step, log_dir, index)
        results.append(result)
        if on_done is not None:
            on_done(result)
        if result.returncode != 0:
            raise StepFailed(
                f"step {index} '{step.name}' exited with {result.returncode}; full log: {result.log}\n"
                f"{log_tail(result.log)}"
            )
    return results


def demo_steps(out: Path) -> list[Step]:
    """The pipeline on the embedded sample, as the commands a user would run."""
    sample = SAMPLE_DATA_DIR
    data, models = out / "data", out / "models"
    split, sessions, cot, parquet = data / "split", data / "sessions", data / "cot", data / "parquet"
    base_model, ppl_model = models / "tiny-llama", models / "tiny-distilgpt2"
    return [
        Step("anomaly_patch", [
            PYTHON, "datasets/anomaly_patch.py",
            "--input", str(sample / "bgl_templates.csv"), "--output", str(data / "bgl_templates.csv"),
            "--input", str(sample / "spirit_templates.csv"), "--output", str(data / "spirit_templates.csv"),
            "--input", str(sample / "bgl_structured.csv"), "--output", str(data / "bgl_structured.csv"),
            "--patch", str(sample / "anomaly_patch.json"), "--report", str(data / "patch_report.json"),
            "--match", "normalized",
        ]),
        Step("session_builder", [
            PYTHON, "datasets/session_builder.py", "--input", str(data / "bgl_structured.csv"),
            "--output_dir", str(sessions), "--seed", "0",
        ]),
        Step("template_split_bgl", [
            PYTHON, "datasets/template_split.py", "--input", str(data / "bgl_templates.csv"), "--name", "BGL",
            "--output_dir", str(split), "--seed", "0",
        ]),
        Step("template_split_spirit", [
            PYTHON, "datasets/template_split.py", "--input", str(data / "spirit_templates.csv"), "--name", "Spirit",
            "--output_dir", str(split), "--seed", "0",
        ]),
        Step("cot_join", [
            PYTHON, "datasets/cot_distill.py",
            "--input", str(split / "BGL_train.json"), str(split / "Spirit_train.json"),
            "--rationales", str(sample / "rationales.json"), "--output_dir", str(cot),
        ]),
        Step("parquet_builder", [
            PYTHON, "datasets/parquet_builder.py", "--input", str(cot / "train_cot.json"), "--output_dir", str(parquet),
        ]),
        Step("tiny_models", [PYTHON, "-m", "rationanomaly.tiny", "--llama", str(base_model), "--gpt2", str(ppl_model)]),
        Step("train_dry_run", ["bash", "model_train.sh"], env={
            "DRY_RUN": "1", "STAGE": "all", "PYTHON": PYTHON, "LOG_DIR": str(out / "targets"),
            "BASE_MODEL": str(base_model), "SFT_MODEL": str(models / "RationAnomaly-SFT"), "PPL_MODEL": str(ppl_model),
            "TRAIN_FILES": str(parquet / "bgl_train.parquet"), "VAL_FILES": str(parquet / "bgl_validation.parquet"),
            "SFT_TRAIN_FILES": str(parquet / "sft_train.parquet"), "SFT_VAL_FILES": str(parquet / "sft_val.parquet"),
        }),
        *prediction_steps(out, split / "BGL_test.json", sessions / "test_sessions.json", base_model),
        Step("watch", [PYTHON, "-m", "rationanomaly.watch", str(sample / "watch"), "--out", str(out / "watch")]),
    ]


def prediction_steps(out: Path, testset: Path, sessions: Path, model: Path) -> list[Step]:
    """Predict the test set with the tiny model and the keyword baseline, then score both the same way."""
    predictions, evaluation = out / "predictions", out / "evaluation"
    methods = {
        "tiny": ["--model", str(model), "--mode", "cot", "--backend", "transformers", "--max_new_tokens", "32"],
        "rules": ["--backend", "rules"],
    }
    steps = []
    for method, options in methods.items():
        predicted = predictions / f"BGL_by_{method}.json"
        steps.append(Step(f"predict_{method}", [
            PYTHON, "validation/model_predict.py", "--testset", str(testset), *options, "--output", str(predicted),
        ]))
        steps.append(Step(f"evaluate_{method}", [
            PYTHON, "validation/model_evaluate.py", "--predictions", str(predicted), "--testset", str(testset),
            "--sessions", str(sessions), "--missing", "normal", "--dataset", "BGL", "--method", method,
            "--output_json", str(evaluation / f"BGL_by_{method}.json"),
            "--results_table", str(evaluation / f"BGL_by_{method}.md"),
        ]))
    return steps


def main(argv: list[str] | None = None) -> int:
    """Run the demo and print a one-screen summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "demo", help="run directory")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    def report(result: StepResult) -> None:
        status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
        print(f"  {result.name:<22} {status:<12} {result.seconds:6.1f} s", flush=True)  # noqa: T201

    print(f"RationAnomaly demo -> {out}", flush=True)  # noqa: T201
    try:
        results = run_steps(demo_steps(out), out / "logs", on_done=report)
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 1
    summary = {"out": str(out), "steps": [{"name": r.name, "seconds": round(r.seconds, 2)} for r in results]}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
