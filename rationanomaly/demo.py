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
import shutil
import subprocess
import sys
import tempfile
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


def run_steps(
    steps: Sequence[Step], log_dir: Path, on_done: Callable[[StepResult], None] | None = None
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


# The run `make demo` trains for real on the CPU (DEVICE=cpu STAGE=all bash model_train.sh): launcher defaults
# except these sizes, chosen so that CoT-SFT and GRPO take a few minutes on 2 cores. Ours, not the paper's.
CPU_TRAINING_KNOBS = {
    "DEVICE": "cpu",
    "SFT_BATCH_SIZE": "4",  # 58 sample rows -> 14 LoRA steps
    "SFT_EPOCHS": "1",
    "SFT_LR": "5e-3",  # reaches well-formed answers in one epoch on the pre-trained stand-in (tiny.PRETRAIN_STEPS)
    "LORA_RANK": "8",
    "LORA_ALPHA": "16",
    "SFT_MAX_LENGTH": "1024",
    "TRAIN_BATCH_SIZE": "8",
    "PPO_MINI_BATCH_SIZE": "4",
    "ROLLOUT_N": "4",
    "MAX_PROMPT_LENGTH": "512",
    "MAX_RESPONSE_LENGTH": "96",  # a sample rationale is ~60 tokens of the stand-in's vocabulary
    "ACTOR_LR": "5e-5",  # the reference's 4e-7 would not move a tiny model visibly in 4 steps
    "TOTAL_EPOCHS": "1",
    "SAVE_FREQ": "2",
    "OVERWRITE": "1",  # a rerun of the demo starts fresh in its own folder
}
GRPO_STEPS = 4
# console + JSON lines (what the watch tool reads); wandb would only add a service process and files
CPU_TRAINING_OVERRIDES = ["trainer.logger=[console,file]"]
VLLM_CPU_TESTSET = "BGL"  # the vLLM backend runs once (template level): its CPU start-up takes ~1 minute


def demo_steps(out: Path, ray_tmpdir: Path | None = None) -> list[Step]:
    """The pipeline on the embedded sample, as the commands a user would run."""
    sample = SAMPLE_DATA_DIR
    data, models, targets = out / "data", out / "models", out / "targets"
    split, sessions, cot, parquet = data / "split", data / "sessions", data / "cot", data / "parquet"
    base_model, ppl_model = models / "tiny-llama", models / "tiny-distilgpt2"
    sft_model, grpo_model = models / "RationAnomaly-SFT", models / "RationAnomaly"
    launcher_paths = {
        "PYTHON": PYTHON,
        "LOG_DIR": str(targets / "console"),
        "BASE_MODEL": str(base_model),
        "SFT_MODEL": str(sft_model),
        "PPL_MODEL": str(ppl_model),
        "TRAIN_FILES": str(parquet / "bgl_train.parquet"),
        "SFT_TRAIN_FILES": str(parquet / "sft_train.parquet"),
        "OUTPUT_DIR": str(targets / "RationAnomaly"),
        "SFT_OUTPUT_DIR": str(targets / "RationAnomaly-SFT"),
    }
    training_env = {
        **launcher_paths,
        **CPU_TRAINING_KNOBS,
        "HF_DATASETS_CACHE": str(out / "cache" / "hf_datasets"),  # not the home folder
        "RAY_TMPDIR": str(ray_tmpdir or Path("/tmp") / "ray_rationanomaly_demo"),  # short: Ray's socket paths
    }
    return [
        Step(
            "anomaly_patch",
            [
                PYTHON,
                "datasets/anomaly_patch.py",
                "--input",
                str(sample / "bgl_templates.csv"),
                "--output",
                str(data / "bgl_templates.csv"),
                "--input",
                str(sample / "spirit_templates.csv"),
                "--output",
                str(data / "spirit_templates.csv"),
                "--input",
                str(sample / "bgl_structured.csv"),
                "--output",
                str(data / "bgl_structured.csv"),
                "--patch",
                str(sample / "anomaly_patch.json"),
                "--report",
                str(data / "patch_report.json"),
                "--match",
                "normalized",
            ],
        ),
        Step(
            "session_builder",
            [
                PYTHON,
                "datasets/session_builder.py",
                "--input",
                str(data / "bgl_structured.csv"),
                "--output_dir",
                str(sessions),
                "--seed",
                "0",
            ],
        ),
        Step(
            "template_split_bgl",
            [
                PYTHON,
                "datasets/template_split.py",
                "--input",
                str(data / "bgl_templates.csv"),
                "--name",
                "BGL",
                "--output_dir",
                str(split),
                "--seed",
                "0",
            ],
        ),
        Step(
            "template_split_spirit",
            [
                PYTHON,
                "datasets/template_split.py",
                "--input",
                str(data / "spirit_templates.csv"),
                "--name",
                "Spirit",
                "--output_dir",
                str(split),
                "--seed",
                "0",
            ],
        ),
        Step(
            "cot_join",
            [
                PYTHON,
                "datasets/cot_distill.py",
                "--input",
                str(split / "BGL_train.json"),
                str(split / "Spirit_train.json"),
                "--rationales",
                str(sample / "rationales.json"),
                "--output_dir",
                str(cot),
            ],
        ),
        Step(
            "parquet_builder",
            [
                PYTHON,
                "datasets/parquet_builder.py",
                "--input",
                str(cot / "train_cot.json"),
                "--output_dir",
                str(parquet),
            ],
        ),
        Step("tiny_models", [PYTHON, "-m", "rationanomaly.tiny", "--llama", str(base_model), "--gpt2", str(ppl_model)]),
        Step(
            "train_sft_cpu", ["bash", "model_train.sh", *CPU_TRAINING_OVERRIDES], env={**training_env, "STAGE": "sft"}
        ),
        Step(
            "train_grpo_cpu",
            ["bash", "model_train.sh", *CPU_TRAINING_OVERRIDES, f"trainer.total_training_steps={GRPO_STEPS}"],
            env={**training_env, "STAGE": "grpo"},
        ),
        Step(
            "export_grpo",
            ["bash", "model_export.sh"],
            env={
                "PYTHON": PYTHON,
                "CHECKPOINTS": str(targets / "RationAnomaly"),
                "TARGET_DIR": str(grpo_model),
                "OVERWRITE": "1",
            },
        ),
        *prediction_steps(out, split / "BGL_test.json", sessions / "test_sessions.json", grpo_model),
        Step("watch", [PYTHON, "-m", "rationanomaly.watch", str(targets), "--out", str(out / "watch")]),
    ]


def prediction_steps(out: Path, testset: Path, sessions: Path, model: Path) -> list[Step]:
    """Predict with the trained model (transformers; vLLM's CPU build once) and the keyword baseline, then score.

    Template level uses the template test split; session level predicts the unique templates of the test
    windows (`test_templates.json` beside the sessions), so no window is dropped for a missing prediction.
    """
    predictions, evaluation = out / "predictions", out / "evaluation"
    trained = ["--model", str(model), "--mode", "cot", "--max_new_tokens", CPU_TRAINING_KNOBS["MAX_RESPONSE_LENGTH"]]
    methods = {
        "grpo": [*trained, "--backend", "transformers"],
        "grpo-vllm": [
            *trained,
            "--backend",
            "vllm",
            "--max_model_len",
            "1024",
            "--dtype",
            "float32",
            "--enforce_eager",
        ],
        "rules": ["--backend", "rules"],
    }
    levels = {
        "BGL": (testset, []),
        "BGL_sessions": (sessions.parent / "test_templates.json", ["--sessions", str(sessions)]),
    }
    steps = []
    for method, options in methods.items():
        for name, (items, extra) in levels.items():
            if method == "grpo-vllm" and name != VLLM_CPU_TESTSET:
                continue
            predicted = predictions / f"{name}_by_{method}.json"
            steps.append(
                Step(
                    f"predict_{name}_{method}",
                    [
                        PYTHON,
                        "validation/model_predict.py",
                        "--testset",
                        str(items),
                        *options,
                        "--output",
                        str(predicted),
                    ],
                )
            )
            steps.append(
                Step(
                    f"evaluate_{name}_{method}",
                    [
                        PYTHON,
                        "validation/model_evaluate.py",
                        "--predictions",
                        str(predicted),
                        "--testset",
                        str(items),
                        *extra,
                        "--dataset",
                        "BGL",
                        "--method",
                        method,
                        "--output_json",
                        str(evaluation / f"{name}_by_{method}.json"),
                        "--results_table",
                        str(evaluation / f"{name}_by_{method}.md"),
                    ],
                )
            )
    return steps


def read_json(path: Path) -> dict | None:
    """A JSON object from the run directory, or None when that step wrote nothing there."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def data_lines(out: Path) -> list[str]:
    """One line per data step: what the patch, the windows, the splits, the rationales and the parquet hold."""
    data = out / "data"
    lines = []
    patch = read_json(data / "patch_report.json")
    if patch:
        lines.append(
            f"patch       {patch['matched']}/{patch['patch_entries']} entries matched, "
            f"{patch['changed']} labels changed (+{patch['normal_to_abnormal']} abnormal, "
            f"-{patch['abnormal_to_normal']}); "
            f"anomalies {patch['anomalies_before']} -> {patch['anomalies_after']}"
        )
    desc = read_json(data / "sessions" / "data_desc.json")
    if desc:
        lines.append(
            f"sessions    {desc['all']['sessions']} windows of {desc['parameters']['window']} lines "
            f"({desc['all']['abnormal']} abnormal); train {desc['train']['sessions']}, "
            f"test {desc['test']['sessions']} ({desc['test']['abnormal']} abnormal)"
        )
    for name in ("BGL", "Spirit"):
        split = read_json(data / "split" / f"{name}_split.json")
        if split:
            lines.append(
                f"split       {name}: train {split['train']['entries']} "
                f"({split['train']['abnormal']} abnormal), "
                f"test {split['test']['entries']} ({split['test']['abnormal']} abnormal)"
            )
    cot = read_json(data / "cot" / "cot_report.json")
    if cot:
        lines.append(
            f"rationales  {cot['joined']} joined, {cot['issues']} rejected {cot['by_reason']}, "
            f"{cot['missing']} templates without one (-> cot_distill.py)"
        )
    meta = read_json(data / "parquet" / "parquet_meta.json")
    if meta:
        lines.append(f"parquet     GRPO and SFT rows: train {meta['train']}, validation {meta['validation']}")
    return lines


def metrics_table(out: Path) -> list[str]:
    """Template- and session-level scores of every evaluated method, as a small text table."""
    rows = ["method      level      precision  recall     F1    tp  fp  fn  tn  unknown"]
    for path in sorted((out / "evaluation").glob("*.json")):
        result = read_json(path) or {}
        method = path.stem.split("_by_", 1)[-1]
        level = "session" if "session" in result else "template"
        m = result.get(level)
        if m:
            rows.append(
                f"{method:<11} {level:<10} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} "
                f"{m['tp']:5d} {m['fp']:3d} {m['fn']:3d} {m['tn']:3d} {m['unknown']:8d}"
            )
    return rows


def _series(path: Path | None, key: str) -> dict[int, float]:
    """step -> value of one metric in a verl JSON-lines log (empty when the log or the metric is absent)."""
    if path is None:
        return {}
    from rationanomaly.watch.parse import parse_file

    return {step: metrics[key] for step, metrics in parse_file(path).steps.items() if key in metrics}


def newest(folder: Path, pattern: str) -> Path | None:
    """The newest file matching `pattern` in `folder` (verl's file logger names carry a time stamp)."""
    files = sorted(folder.glob(pattern), key=lambda path: path.stat().st_mtime)
    return files[-1] if files else None


GRPO_COLUMNS = (  # (heading, metric, format) of the per-step table
    ("reward", "critic/score/mean", "{:8.3f}"),
    ("format", "reward_components/format/mean", "{:7.3f}"),
    ("answer", "reward_components/answer/mean", "{:7.3f}"),
    ("think", "reward_components/think/mean", "{:7.3f}"),
    ("kl_loss", "actor/kl_loss", "{:9.2e}"),
    ("pg_loss", "actor/pg_loss", "{:9.2e}"),
    ("probs_diff", "training/rollout_probs_diff_max", "{:10.1e}"),
    ("step_s", "timing_s/step", "{:7.1f}"),
)


def training_lines(out: Path) -> list[str]:
    """What the real CPU training logged: the SFT loss, then GRPO's reward, components, KL and time per step."""
    targets = out / "targets"
    sft_log = newest(targets / "RationAnomaly-SFT", "*.jsonl")
    grpo_log = newest(targets / "RationAnomaly", "*.jsonl")
    lines = []
    sft_loss = _series(sft_log, "train/loss")
    if sft_loss:
        first, last = min(sft_loss), max(sft_loss)
        lines.append(
            f"CoT-SFT     verl sft_trainer, LoRA: {len(sft_loss)} steps, loss {sft_loss[first]:.3f} -> "
            f"{sft_loss[last]:.3f}; adapter merged into models/RationAnomaly-SFT"
        )
    columns = {heading: (_series(grpo_log, key), fmt) for heading, key, fmt in GRPO_COLUMNS}
    steps = sorted(columns["reward"][0])
    if steps:
        lines.append(
            f"GRPO        verl main_ppo, vLLM CPU rollout, reward with the perplexity term: {len(steps)} "
            "steps, checkpoint exported to models/RationAnomaly"
        )
        lines.append(
            "  step " + " ".join(f"{heading:>{len(fmt.format(0.0))}}" for heading, (_, fmt) in columns.items())
        )
        for step in steps:
            cells = []
            for series, fmt in columns.values():
                width = len(fmt.format(0.0))
                cells.append(fmt.format(series[step]) if step in series else f"{'-':>{width}}")
            lines.append(f"  {step:4d} " + " ".join(cells))
    return lines


def watch_lines(out: Path) -> list[str]:
    """The monitoring summary of the real training logs and where its plots are."""
    summary = read_json(out / "watch" / "summary.json")
    if not summary:
        return []
    lines = []
    for run in summary.get("runs", []):
        check = run.get("component_sum_check") or {}
        agreement = (
            "components add up to the reward at every step"
            if check.get("ok")
            else "no per-step components"
            if not check
            else f"components off at {check.get('steps_off')}"
        )
        lines.append(
            f"watch       {run['name']}: {run['status']}, step {run['last_step']}/{run['total_steps']}; {agreement}"
        )
    lines.append("plots       " + ", ".join(sorted(p.name for p in (out / "watch").glob("*.png"))))
    return lines


def summary_text(out: Path, results: Sequence[StepResult]) -> str:
    """The one-screen summary printed at the end of the demo and saved as summary.txt."""
    total = sum(r.seconds for r in results)
    seconds = {r.name: r.seconds for r in results}
    sections = [
        f"RationAnomaly demo: {len(results)} steps in {total:.0f} s, all ok. Run directory: {out}",
        "",
        *data_lines(out),
        "",
        f"training    real verl training on the CPU: SFT {seconds.get('train_sft_cpu', 0):.0f} s, GRPO "
        f"{seconds.get('train_grpo_cpu', 0):.0f} s (DEVICE=cpu STAGE=sft|grpo bash model_train.sh)",
        *training_lines(out),
        "            (the perplexity term comes from a random tiny GPT-2 standing in for DistilGPT-2)",
        "",
        *metrics_table(out),
        "(a tiny model trained for a few steps on the sample: these scores show the pipeline runs end to end, "
        "not what the method achieves)",
        "",
        *watch_lines(out),
        f"logs        {out / 'logs'}",
    ]
    return "\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the demo and print a one-screen summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "demo", help="run directory")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    def report(result: StepResult) -> None:
        status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
        print(f"  {result.name:<28} {status:<12} {result.seconds:6.1f} s", flush=True)  # noqa: T201

    print(f"RationAnomaly demo -> {out}", flush=True)  # noqa: T201
    ray_tmpdir = Path(tempfile.mkdtemp(prefix="ray_demo_", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        results = run_steps(demo_steps(out, ray_tmpdir), out / "logs", on_done=report)
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
    summary = {"out": str(out), "steps": [{"name": r.name, "seconds": round(r.seconds, 2)} for r in results]}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    text = summary_text(out, results)
    write_text_atomic(out / "summary.txt", text)
    print("\n" + text, end="")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
