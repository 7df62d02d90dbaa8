"""Numbers about a run: smoothed reward, seconds per step, time left, reward share of step time, summary.

All functions are pure: a `Run` (or plain sequences) in, numbers or dicts out. Metric names are
verl 0.9.1's (notes/verl-0.9.1.md §6).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

from rationanomaly.watch.parse import Run

REWARD_KEYS = ("critic/score/mean", "critic/rewards/mean")  # sequence reward; the second is after in-reward KL
RESPONSE_LENGTH_KEY = "response_length/mean"
KL_KEY = "actor/kl_loss"
ENTROPY_KEY = "actor/entropy"
STEP_TIME_KEYS = ("perf/time_per_step", "timing_s/step")
REWARD_TIME_KEY = "timing_s/reward"  # legacy trainer only; V1 scores inside generation
TIMING_PREFIX = "timing_s/"
# Reward first, so the highlighted stage sits on the axis; then the order a GRPO step runs in.
STAGE_ORDER = ("reward", "gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights", "testing",
               "save_checkpoint")
DEFAULT_SIGMA = 5.0  # steps; the issue's default
DEFAULT_RECENT_STEPS = 10  # k in "median of the last k step durations"
REWARD_TIME_HIDDEN = "reward time not logged (hidden in timing_s/gen)"
# Order in which reward components are shown; others follow alphabetically (DESIGN.md: the reward).
COMPONENT_ORDER = ("format", "answer", "think", "semantic", "length", "perplexity", "score", "reward", "acc")
_VALIDATION_METRIC = re.compile(r"^val-(?:core|aux)/(?P<source>[^/]+)/(?P<name>[^/]+)/mean@(?P<n>\d+)$")
_SMOOTH_CHUNK = 1024  # rows of the weight matrix built at once, so long runs stay within memory


def gaussian_smooth(x: Sequence[float], y: Sequence[float], sigma: float) -> np.ndarray:
    """Gaussian-weighted average of `y` at each `x`, with `sigma` in units of `x` (training steps).

    Weights are exp(-(x_i - x_j)^2 / (2 sigma^2)) over the finite points, divided by their sum at
    each point. That renormalisation is the edge handling: near the first and last step the kernel
    is cut off and the remaining weights still sum to one, so the curve neither sags towards zero
    (zero padding) nor repeats the edge value (reflection). Using step numbers rather than positions
    keeps gaps (a resume, a missing step) from squeezing the kernel. sigma <= 0 returns `y` unchanged;
    NaN inputs get the weighted average of their neighbours.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"gaussian_smooth needs two 1-D sequences of equal length, got {xs.shape} and {ys.shape}")
    if sigma <= 0 or ys.size == 0:
        return ys.copy()
    finite = np.isfinite(ys)
    out = np.full(ys.shape, np.nan)
    if not finite.any():
        return out
    known_x, known_y = xs[finite], ys[finite]
    for start in range(0, xs.size, _SMOOTH_CHUNK):
        rows = xs[start:start + _SMOOTH_CHUNK, None]
        weights = np.exp(-0.5 * ((rows - known_x[None, :]) / sigma) ** 2)
        out[start:start + _SMOOTH_CHUNK] = weights @ known_y / weights.sum(axis=1)
    return out


def reward_key(run: Run) -> str | None:
    """The metric holding the mean sequence reward in this run, or None if it logged none."""
    keys = run.keys()
    return next((key for key in REWARD_KEYS if key in keys), None)


def step_durations(run: Run) -> tuple[list[int], list[float]]:
    """Seconds per step as logged: perf/time_per_step, else timing_s/step (older trainers)."""
    keys = run.keys()
    key = next((k for k in STEP_TIME_KEYS if k in keys), None)
    return run.series(key) if key else ([], [])


def seconds_per_step(durations: Sequence[float], recent: int = DEFAULT_RECENT_STEPS) -> float | None:
    """Median of the last `recent` finite step durations: robust to checkpoint and validation steps."""
    values = [d for d in durations if math.isfinite(d) and d > 0]
    if not values or recent < 1:
        return None
    return float(np.median(values[-recent:]))


def eta_seconds(last_step: int | None, total_steps: int | None, per_step: float | None) -> float | None:
    """Seconds until `total_steps`: steps left times seconds per step; None when any input is unknown."""
    if last_step is None or total_steps is None or per_step is None:
        return None
    return max(total_steps - last_step, 0) * per_step


def format_duration(seconds: float | None) -> str:
    """`1d 02h03m`, `2h05m`, `4m10s`, or `unknown`: readable at a glance, exact to the minute."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def utc_iso(timestamp: float | None) -> str | None:
    """A POSIX timestamp as ISO 8601 UTC to the second, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).replace(microsecond=0).isoformat()


def timing_stages(run: Run) -> list[str]:
    """Additive per-step stages `timing_s/<stage>` (the total `timing_s/step` and nested keys excluded)."""
    stages = {key for key in run.keys() if key.startswith(TIMING_PREFIX) and key.count("/") == 1}
    stages.discard("timing_s/step")
    rank = {f"{TIMING_PREFIX}{name}": i for i, name in enumerate(STAGE_ORDER)}
    return sorted(stages, key=lambda key: (rank.get(key, len(rank)), key))


def reward_time_share(run: Run) -> float | None:
    """Sum of timing_s/reward over sum of timing_s/step on steps logging both; None when not logged (V1)."""
    pairs = [(m[REWARD_TIME_KEY], m["timing_s/step"]) for m in run.steps.values()
             if REWARD_TIME_KEY in m and "timing_s/step" in m]
    step_total = sum(step for _, step in pairs)
    if not pairs or step_total <= 0:
        return None
    return sum(reward for reward, _ in pairs) / step_total


def reward_components(run: Run) -> dict[str, tuple[list[int], list[float]]]:
    """Validation reward components (`val-core|val-aux/<source>/<name>/mean@N`) by name, largest N per name.

    verl 0.9.1 keeps the reward function's extra keys only in validation metrics, so these exist
    only at validation steps. With several data sources the name is `<source>/<name>`.
    """
    chosen: dict[tuple[str, str], tuple[int, str]] = {}
    for key in run.keys():
        match = _VALIDATION_METRIC.match(key)
        if match:
            ident, n = (match["source"], match["name"]), int(match["n"])
            if ident not in chosen or n > chosen[ident][0]:
                chosen[ident] = (n, key)
    several_sources = len({source for source, _ in chosen}) > 1
    named = {(f"{source}/{name}" if several_sources else name): key for (source, name), (_, key) in chosen.items()}
    rank = {name: i for i, name in enumerate(COMPONENT_ORDER)}
    ordered = sorted(named, key=lambda name: (rank.get(name.rsplit("/", 1)[-1], len(rank)), name))
    return {name: run.series(named[name]) for name in ordered}


def _last(values: Sequence[float]) -> float | None:
    return float(values[-1]) if len(values) else None


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: report an unknown number as null."""
    return value if value is not None and math.isfinite(value) else None


def summarize_run(run: Run, sigma: float = DEFAULT_SIGMA, recent: int = DEFAULT_RECENT_STEPS,
                  total_steps: int | None = None) -> dict:
    """The summary.json record of one run; `total_steps` overrides what the log says."""
    steps = list(run.steps)
    key = reward_key(run)
    reward_steps, rewards = run.series(key) if key else ([], [])
    smoothed = gaussian_smooth(reward_steps, rewards, sigma) if rewards else []
    per_step = seconds_per_step(step_durations(run)[1], recent)
    total = total_steps if total_steps is not None else run.total_steps
    last_step = steps[-1] if steps else None
    eta = eta_seconds(last_step, total, per_step)
    share = reward_time_share(run)
    components = reward_components(run)
    return {
        "name": run.name,
        "sources": [str(path) for path in run.sources],
        "steps": len(steps),
        "first_step": steps[0] if steps else None,
        "last_step": last_step,
        "total_steps": total,
        "reward_key": key,
        "reward_mean_last": _finite_or_none(_last(rewards)),
        "reward_mean_smoothed_last": _finite_or_none(_last(smoothed)),
        "seconds_per_step": per_step,
        "eta_seconds": eta,
        "eta": format_duration(eta),
        "last_update_utc": utc_iso(run.last_update),
        "eta_utc": utc_iso(run.last_update + eta) if run.last_update is not None and eta is not None else None,
        "reward_time_share": share,
        "reward_time_note": None if share is not None else REWARD_TIME_HIDDEN,
        "validation_last": {name: _finite_or_none(_last(values)) for name, (_, values) in components.items()},
        "skipped_lines": run.skipped_lines,
        "other_lines": run.other_lines,
        "notes": list(run.notes),
    }


def build_summary(runs: Sequence[Run], sigma: float = DEFAULT_SIGMA, recent: int = DEFAULT_RECENT_STEPS,
                  total_steps: int | None = None, plots: Sequence[str] = (), ignored: Sequence[str] = ()) -> dict:
    """summary.json: the first run's fields at top level (one-run readers need no index), all runs in `runs`."""
    records = [summarize_run(run, sigma, recent, total_steps) for run in runs]
    return {
        **(records[0] if records else {}),
        "sigma": sigma,
        "recent_steps": recent,
        "runs": records,
        "plots": list(plots),
        "ignored_inputs": list(ignored),
    }


def describe_run(record: dict) -> str:
    """One line for the console: where the run is, its reward and the time left."""
    def number(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    total = record["total_steps"] if record["total_steps"] is not None else "?"
    share = record["reward_time_share"]
    share_text = f"reward {share:.0%} of step time" if share is not None else REWARD_TIME_HIDDEN
    finish = f" (~{record['eta_utc']})" if record["eta_utc"] else ""
    return (f"{record['name']}: step {record['last_step']}/{total}, reward {number(record['reward_mean_last'], '.3f')} "
            f"(smoothed {number(record['reward_mean_smoothed_last'], '.3f')}), "
            f"{number(record['seconds_per_step'], '.0f')} s/step, time left {record['eta']}{finish}, {share_text}, "
            f"{record['skipped_lines']} skipped lines")
