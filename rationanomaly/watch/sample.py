"""The shipped sample logs: synthetic verl 0.9.1 GRPO output, made deterministically from a seed.

Two runs, so the side-by-side plots have something to compare:
- `verl_grpo_rationanomaly_20260110.log` (V1 trainer, the default) with its file-logger JSONL
  `RationAnomaly/grpo_bgl.jsonl`: 150 steps planned; it crashed after step 57, resumed from the step-50
  checkpoint (so the JSONL, truncated on restart, starts at 51) and is writing step 121; validation every
  10 steps logs the reward components; every step logs the per-step training components
  `reward_components/<name>/{mean,max,min}`, whose means add up to `critic/score/mean` as the reward
  does (format + answer + 0.5 x think); no `timing_s/reward` (V1 scores inside generation).
- `verl_grpo_rationanomaly_20260112_legacy.log` (legacy trainer, `trainer.use_v1=false`): 40 steps that
  log `timing_s/reward`, about 65 % of the step as in the reference run's own log (DESIGN.md), and no
  per-step components (so the plots show a run that lacks them).
Both carry what a real console has: ANSI colours, Ray actor prefixes, tqdm bars, numpy reprs, noise,
a garbled line and (V1) an unterminated last line. Regenerate with `write_sample_logs(folder)`; a
test checks the committed files match.
"""

from __future__ import annotations

import json
import math
import pprint
from pathlib import Path

import numpy as np

from rationanomaly.io import write_text_atomic
from rationanomaly.paths import SAMPLE_DATA_DIR
from rationanomaly.reward.components import (
    ANSWER_MATCH,
    ANSWER_MISMATCH,
    COMPENSATION,
    FORMAT_INVALID,
    FORMAT_VALID,
    THINK_WEIGHT,
)

SAMPLE_DIR = SAMPLE_DATA_DIR / "watch"
V1_LOG = "verl_grpo_rationanomaly_20260110.log"
V1_JSONL = "RationAnomaly/grpo_bgl.jsonl"
LEGACY_LOG = "verl_grpo_rationanomaly_20260112_legacy.log"
SAMPLE_SEED = 6
SAMPLE_TOTAL_STEPS = 150
V1_CRASH_AFTER, V1_RESUME_FROM, V1_LAST_STEP = 57, 51, 120
LEGACY_LAST_STEP = 40
VALIDATION_STEPS = tuple(range(10, V1_LAST_STEP + 1, 10))  # trainer.test_freq=10
GARBLED_STEP = 33
DATA_SOURCE = "RationAnomaly"
_CYAN, _RESET = "\x1b[36m", "\x1b[0m"


def _console_line(pid_label: str, text: str) -> str:
    """A line as the Ray driver prints an actor's output: coloured prefix, then the text."""
    return f"{_CYAN}({pid_label}){_RESET} {text}\n"


def format_step_line(step: int, metrics: dict) -> str:
    """verl's console record: numbers only, each through pprint.pformat (so np.float64(...) shows)."""
    return " - ".join([f"step:{step}"] + [f"{k}:{pprint.pformat(v)}" for k, v in metrics.items()])


def _progress(step: int, total: int) -> str:
    done = int(10 * step / total)
    bar = "#" * done + " " * (10 - done)
    return f"\rTraining Progress: {100 * step // total:3d}%|{bar}| {step}/{total} [00:00<?, ?it/s]"


def _f(value: float, digits: int = 6) -> np.float64:
    return np.float64(round(float(value), digits))


def _training_components(
    rng: np.random.Generator, progress: float, score: float, score_max: float, score_min: float
) -> dict:
    """Per-step `reward_components/<name>/{mean,max,min}` whose means add up to the step's score mean.

    A response's think and its parts are all zero when think is not scored, so the think mean is the
    sum of the part means; the answer mean is what is left of the score (total = format + answer +
    THINK_WEIGHT x think, DESIGN.md).
    """
    parts = {
        "semantic": -0.42 + 0.05 * progress + rng.normal(0, 0.01),
        "length": -0.3 + 0.25 * progress + rng.normal(0, 0.03),
        "perplexity": 0.35 + 0.1 * progress + rng.normal(0, 0.01),
    }
    means = {name: float(_f(value)) for name, value in parts.items()}
    means["think"] = float(_f(sum(means.values())))
    means["format"] = float(_f(min(FORMAT_VALID, FORMAT_VALID - 0.5 * (1 - progress) + rng.normal(0, 0.02))))
    means["answer"] = float(_f(score - means["format"] - THINK_WEIGHT * means["think"]))
    means["score"] = score
    spread = {
        "score": (score_max, score_min),
        "format": (FORMAT_VALID, FORMAT_INVALID),
        "answer": (ANSWER_MATCH, ANSWER_MISMATCH / COMPENSATION),
        "think": (0.95, -1.4),
        "semantic": (-0.08, -0.5),
        "length": (0.9, -1.0),
        "perplexity": (0.74, -0.2),
    }
    metrics = {}
    for name in ("score", "format", "answer", "think", "semantic", "length", "perplexity"):
        high, low = spread[name]
        metrics |= {
            f"reward_components/{name}/mean": _f(means[name]),
            f"reward_components/{name}/max": _f(high),
            f"reward_components/{name}/min": _f(low),
        }
    return metrics


def _step_metrics(
    rng: np.random.Generator, step: int, legacy: bool, parts_rng: np.random.Generator | None = None
) -> dict:
    """Plausible per-step metrics: reward rises noisily, responses shorten, KL grows, entropy falls.

    With `parts_rng` the step also logs the training reward components, drawn from that generator so
    the other metrics stay what they were before the components existed.
    """
    progress = 1.0 - math.exp(-step / (25.0 if legacy else 45.0))
    reward = (-3.2 if legacy else -2.6) + (2.4 if legacy else 3.2) * progress + rng.normal(0, 0.35)
    length = 260 - 80 * progress + rng.normal(0, 8)
    gen = rng.normal(120 if legacy else 185, 6)
    times = {"gen": gen, "old_log_prob": rng.normal(21, 1), "ref": rng.normal(18, 1), "adv": rng.normal(0.12, 0.01)}
    if legacy:
        times["reward"] = rng.normal(402, 15)
    times |= {"update_actor": rng.normal(62 if legacy else 96, 3), "update_weights": rng.normal(6.5, 0.3)}
    if step % 10 == 0:
        times["save_checkpoint"] = rng.normal(42, 2)
    if not legacy and step in VALIDATION_STEPS:
        times["testing"] = rng.normal(75, 3)
    step_time = sum(times.values()) + abs(rng.normal(1.5, 0.3))
    metrics: dict = {"training/global_step": step, "training/epoch": (step - 1) // 75}
    metrics |= {
        "actor/entropy": _f(0.62 - 0.2 * progress + rng.normal(0, 0.01)),
        "actor/pg_loss": _f(rng.normal(0, 0.02)),
        "actor/kl_loss": _f(0.02 * progress + abs(rng.normal(0, 0.001))),
        "actor/kl_coef": 0.001,
        "actor/pg_clipfrac": _f(abs(rng.normal(0.002, 0.001))),
        "actor/grad_norm": _f(abs(rng.normal(0.35, 0.08))),
        "actor/lr": 4e-07,
        "critic/score/mean": _f(reward),
        "critic/score/max": _f(1.1 + abs(rng.normal(0, 0.1))),
        "critic/score/min": -7.666667,
        "critic/rewards/mean": _f(reward),
        "critic/advantages/mean": _f(rng.normal(0, 0.001)),
        "response_length/mean": _f(length, 2),
        "response_length/max": np.int64(1024 if step < 20 else 640),
        "response_length/clip_ratio": _f(max(0.0, 0.03 - 0.0005 * step)),
        "prompt_length/mean": _f(rng.normal(412, 4), 2),
    }
    if parts_rng is not None:
        metrics |= _training_components(
            parts_rng,
            progress,
            float(metrics["critic/score/mean"]),
            float(metrics["critic/score/max"]),
            float(metrics["critic/score/min"]),
        )
    metrics |= {f"timing_s/{name}": _f(value, 4) for name, value in times.items()}
    metrics["timing_s/step"] = _f(step_time, 4)
    metrics["perf/time_per_step"] = _f(step_time, 4)
    metrics["perf/throughput"] = _f(32 * 16 * (412 + length) / step_time / 8, 2)
    return metrics


def _validation_metrics(rng: np.random.Generator, step: int) -> dict:
    """The reward components verl logs at a validation step (n=1 sample per prompt, so `mean@1`)."""
    progress = 1.0 - math.exp(-step / 45.0)
    parts = {
        "format": 0.1 - 0.4 * (1 - progress) + rng.normal(0, 0.02),
        "answer": -1.5 + 2.0 * progress + rng.normal(0, 0.05),
        "semantic": -0.42 + 0.05 * progress,
        "length": -0.3 + 0.25 * progress,
        "perplexity": 0.35 + 0.1 * progress,
    }
    parts["think"] = parts["semantic"] + parts["length"] + parts["perplexity"]
    parts["score"] = parts["format"] + parts["answer"] + 0.5 * parts["think"]
    metrics = {f"val-core/{DATA_SOURCE}/reward/mean@1": _f(parts["score"])}
    metrics |= {f"val-aux/{DATA_SOURCE}/{name}/mean@1": _f(value) for name, value in parts.items()}
    return metrics


_RAY_START = [
    "2026-01-10 08:02:11,417\tINFO worker.py:1942 -- Started a local Ray instance. "
    "View the dashboard at 127.0.0.1:8265\n",
    "WARNING 01-10 08:02:40 [__init__.py:211] Platform plugin tpu function's return value is None\n",
]


def _v1_console_and_jsonl(rng: np.random.Generator, parts_rng: np.random.Generator) -> tuple[str, str]:
    """The V1 run: console text (two attempts) and the JSONL left by the second attempt."""
    jsonl_path = f"/home/researcher/RationAnomaly/targets/{V1_JSONL}"
    first, second = "TaskRunnerV1 pid=48213", "TaskRunnerV1 pid=51877"
    lines = list(_RAY_START)
    lines.append(_console_line(first, f"Creating file logger at {jsonl_path}"))
    lines.append(_console_line(first, _progress(0, SAMPLE_TOTAL_STEPS)))
    records: dict[int, dict] = {}
    for step in range(1, V1_LAST_STEP + 1):
        records[step] = _step_metrics(rng, step, legacy=False, parts_rng=parts_rng)
        if step in VALIDATION_STEPS:
            records[step] = _validation_metrics(rng, step) | records[step]
    for step in range(1, V1_CRASH_AFTER + 1):
        if step == GARBLED_STEP:
            # Two writers on one line: the record is cut by a warning and cannot be trusted.
            text = format_step_line(step, records[step])[:180] + "WARNING:2026-01-10 torch.distributed: stalled"
            lines.append(_console_line(first, text))
        else:
            lines.append(_console_line(first, format_step_line(step, records[step])))
        if step % 10 == 0:
            lines.append(_console_line(first, _progress(step, SAMPLE_TOTAL_STEPS)))
    lines += [
        _console_line(first, "Traceback (most recent call last):"),
        _console_line(first, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB"),
        "ray.exceptions.RayTaskError(OutOfMemoryError): ray::TaskRunnerV1.run()\n",
        "== resumed from targets/RationAnomaly/global_step_50 ==\n",
        *_RAY_START,
        _console_line(second, f"Creating file logger at {jsonl_path}"),
        _console_line(second, _progress(V1_RESUME_FROM - 1, SAMPLE_TOTAL_STEPS)),
    ]
    # The resumed attempt replays steps 51..57 with new samples.
    for step in range(V1_RESUME_FROM, V1_CRASH_AFTER + 1):
        records[step] = _step_metrics(rng, step, legacy=False, parts_rng=parts_rng)
    for step in range(V1_RESUME_FROM, V1_LAST_STEP + 1):
        lines.append(_console_line(second, format_step_line(step, records[step])))
        if step % 10 == 0:
            lines.append(_console_line(second, _progress(step, SAMPLE_TOTAL_STEPS)))
    partial = format_step_line(
        V1_LAST_STEP + 1, _step_metrics(rng, V1_LAST_STEP + 1, legacy=False, parts_rng=parts_rng)
    )
    lines.append(_console_line(second, partial[:150]).rstrip("\n"))
    jsonl = [
        json.dumps(
            {"step": s, "data": {k: v.item() if isinstance(v, np.generic) else v for k, v in records[s].items()}},
            separators=(",", ":"),
        )
        for s in range(V1_RESUME_FROM, V1_LAST_STEP + 1)
    ]
    return "".join(lines), "\n".join(jsonl) + "\n"


def _legacy_console(rng: np.random.Generator) -> str:
    """The legacy-trainer run: prints `Total training steps` and logs `timing_s/reward`."""
    actor = "TaskRunner pid=30117"
    lines = list(_RAY_START)
    lines.append(_console_line(actor, "Size of train dataloader: 75, Size of val dataloader: 1"))
    lines.append(_console_line(actor, f"Total training steps: {SAMPLE_TOTAL_STEPS}"))
    for step in range(1, LEGACY_LAST_STEP + 1):
        lines.append(_console_line(actor, format_step_line(step, _step_metrics(rng, step, legacy=True))))
    lines.append("\n")
    return "".join(lines)


def sample_texts(seed: int = SAMPLE_SEED) -> dict[str, str]:
    """File name (relative to the sample folder) -> content, the same for the same seed."""
    rng = np.random.default_rng(seed)
    v1_console, v1_jsonl = _v1_console_and_jsonl(rng, np.random.default_rng([seed, 1]))
    return {V1_LOG: v1_console, V1_JSONL: v1_jsonl, LEGACY_LOG: _legacy_console(rng)}


def write_sample_logs(folder: str | Path = SAMPLE_DIR, seed: int = SAMPLE_SEED) -> list[Path]:
    """Write the sample logs under `folder` (atomically) and return their paths."""
    return [write_text_atomic(Path(folder) / name, text) for name, text in sample_texts(seed).items()]
