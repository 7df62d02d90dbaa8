"""Numbers about a run: smoothed reward, seconds per step, time left, stall, reward components, summary.

All functions are pure: a `Run` (or plain sequences) in, numbers or dicts out; the current time is
an argument. Metric names are verl 0.9.1's (notes/verl-0.9.1.md §6), plus the per-step training
reward components `reward_components/<name>/{mean,max,min}` our training run logs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

from rationanomaly.reward.components import THINK_WEIGHT
from rationanomaly.watch.parse import Run

SCORE_KEY = "critic/score/mean"  # the step's mean sequence reward (the reward function's `score`)
REWARD_KEYS = (SCORE_KEY, "critic/rewards/mean")  # the second is after in-reward KL, when the score is missing
RESPONSE_LENGTH_KEY = "response_length/mean"
KL_KEY = "actor/kl_loss"
ENTROPY_KEY = "actor/entropy"
STEP_TIME_KEYS = ("perf/time_per_step", "timing_s/step")
REWARD_TIME_KEY = "timing_s/reward"  # legacy trainer only; V1 scores inside generation
TIMING_PREFIX = "timing_s/"
# Reward first, so the highlighted stage sits on the axis; then the order a GRPO step runs in.
STAGE_ORDER = (
    "reward",
    "gen",
    "old_log_prob",
    "ref",
    "adv",
    "update_actor",
    "update_weights",
    "testing",
    "save_checkpoint",
)
DEFAULT_SIGMA = 5.0  # steps; the issue's default
DEFAULT_RECENT_STEPS = 10  # k in "median of the last k step durations"
REWARD_TIME_HIDDEN = "reward time not logged (hidden in timing_s/gen)"
# Order in which reward components are shown; others follow alphabetically (DESIGN.md: the reward).
COMPONENT_ORDER = ("score", "format", "answer", "think", "semantic", "length", "perplexity", "reward", "acc")
_VALIDATION_METRIC = re.compile(r"^val-(?:core|aux)/(?P<source>[^/]+)/(?P<name>[^/]+)/mean@(?P<n>\d+)$")
# Per-step training components, one series per statistic over the step's responses.
TRAIN_COMPONENT_PREFIX = "reward_components/"
COMPONENT_STATS = ("mean", "max", "min")
_TRAIN_COMPONENT = re.compile(r"^reward_components/(?P<name>.+)/(?P<stat>mean|max|min)$")
# The total is format + answer + THINK_WEIGHT * think per response, and a mean is linear, so the step's
# reward mean obeys the same sum. verl averages the score from float32 token-level scores while the
# components stay float64: they agree to ~1e-6; a wrong weight or a missing term is off by >= 0.05.
COMPONENT_SUM_TERMS = ("format", "answer", "think")
COMPONENT_SUM_TOLERANCE = 1e-3
DEFAULT_STALL_STEPS = 5.0  # a log idle for longer than this many (median) step times is stalled
RUNNING, STALLED, FINISHED, UNKNOWN = "running", "stalled", "finished", "unknown"
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
        rows = xs[start : start + _SMOOTH_CHUNK, None]
        weights = np.exp(-0.5 * ((rows - known_x[None, :]) / sigma) ** 2)
        out[start : start + _SMOOTH_CHUNK] = weights @ known_y / weights.sum(axis=1)
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
    """A POSIX timestamp as ISO 8601 UTC to the second, or None (also past year 9999: a corrupt step time)."""
    if timestamp is None or not math.isfinite(timestamp):
        return None
    try:
        return datetime.fromtimestamp(timestamp, tz=timezone.utc).replace(microsecond=0).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


def run_status(
    last_step: int | None,
    total_steps: int | None,
    per_step: float | None,
    idle: float | None,
    stall_steps: float = DEFAULT_STALL_STEPS,
) -> str:
    """`finished` (reached its total), `stalled` (the log idle for more than `stall_steps` step times),
    `running`, or `unknown` (no step time or no file time to judge by).

    Idle time is now minus the newest log file's modification time: verl writes a line per step, so a
    live run's log never stays untouched much longer than one step (a checkpoint or validation step
    takes a few step times at most, hence the default of 5).
    """
    if last_step is not None and total_steps is not None and last_step >= total_steps:
        return FINISHED
    if per_step is None or idle is None:
        return UNKNOWN
    return STALLED if idle > stall_steps * per_step else RUNNING


def timing_stages(run: Run) -> list[str]:
    """Additive per-step stages `timing_s/<stage>` (the total `timing_s/step` and nested keys excluded)."""
    stages = {key for key in run.keys() if key.startswith(TIMING_PREFIX) and key.count("/") == 1}
    stages.discard("timing_s/step")
    rank = {f"{TIMING_PREFIX}{name}": i for i, name in enumerate(STAGE_ORDER)}
    return sorted(stages, key=lambda key: (rank.get(key, len(rank)), key))


def reward_time_share(run: Run) -> float | None:
    """Sum of timing_s/reward over sum of timing_s/step on steps logging both; None when not logged (V1)."""
    pairs = [
        (m[REWARD_TIME_KEY], m["timing_s/step"])
        for m in run.steps.values()
        if REWARD_TIME_KEY in m and "timing_s/step" in m
    ]
    step_total = sum(step for _, step in pairs)
    if not pairs or step_total <= 0:
        return None
    return sum(reward for reward, _ in pairs) / step_total


def reward_components(run: Run) -> dict[str, tuple[list[int], list[float]]]:
    """Validation reward components (`val-core|val-aux/<source>/<name>/mean@N`) by name, largest N per name.

    verl 0.9.1 keeps the reward function's extra keys only in validation metrics, so these exist
    only at validation steps. With several data sources the name is `<source>/<name>`. `reward`
    (val-core) is dropped where `score` (val-aux) exists: they are the same series.
    """
    chosen: dict[tuple[str, str], tuple[int, str]] = {}
    for key in run.keys():
        match = _VALIDATION_METRIC.match(key)
        if match:
            ident, n = (match["source"], match["name"]), int(match["n"])
            if ident not in chosen or n > chosen[ident][0]:
                chosen[ident] = (n, key)
    for source, _ in list(chosen):
        # val-core's `reward` is the mean of the same per-response score as val-aux's `score`: one panel.
        if (source, "score") in chosen:
            chosen.pop((source, "reward"), None)
    several_sources = len({source for source, _ in chosen}) > 1
    named = {(f"{source}/{name}" if several_sources else name): key for (source, name), (_, key) in chosen.items()}
    return {name: run.series(named[name]) for name in order_components(named)}


def order_components(names: Sequence[str]) -> list[str]:
    """Reward parts in the reward's order (score, its terms, the think terms), then the rest alphabetically."""
    rank = {name: i for i, name in enumerate(COMPONENT_ORDER)}
    return sorted(names, key=lambda name: (rank.get(name.rsplit("/", 1)[-1], len(rank)), name))


def training_components(run: Run) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """Per-step training reward components: name -> statistic (mean, max, min) -> (steps, values)."""
    found: dict[str, dict[str, str]] = {}
    for key in run.keys():
        match = _TRAIN_COMPONENT.match(key)
        if match:
            found.setdefault(match["name"], {})[match["stat"]] = key
    return {
        name: {stat: run.series(found[name][stat]) for stat in COMPONENT_STATS if stat in found[name]}
        for name in order_components(found)
    }


def component_sum_check(run: Run, tolerance: float = COMPONENT_SUM_TOLERANCE) -> dict | None:
    """Does the step's reward mean equal format + answer + THINK_WEIGHT * think means? None if not logged.

    Checked on every step that logs the reward mean and the three component means; `steps_off` lists
    the steps whose difference exceeds `tolerance`.
    """
    terms = [f"{TRAIN_COMPONENT_PREFIX}{name}/mean" for name in COMPONENT_SUM_TERMS]
    weights = dict(zip(terms, (1.0, 1.0, THINK_WEIGHT), strict=True))
    diffs = {
        step: metrics[SCORE_KEY] - sum(weights[key] * metrics[key] for key in terms)
        for step, metrics in run.steps.items()
        if SCORE_KEY in metrics and all(key in metrics for key in terms)
    }
    if not diffs:
        return None
    worst = max(diffs, key=lambda step: abs(diffs[step]))
    off = [step for step, diff in diffs.items() if abs(diff) > tolerance]
    return {
        "formula": f"{SCORE_KEY} = format + answer + {THINK_WEIGHT:g} * think (means of {TRAIN_COMPONENT_PREFIX}*)",
        "steps_checked": len(diffs),
        "steps_off": off,
        "max_abs_diff": abs(diffs[worst]),
        "worst_step": worst,
        "tolerance": tolerance,
        "ok": not off,
    }


def describe_sum_check(check: dict | None) -> str:
    """One line on the component sum check, for the console and the notebook."""
    if check is None:
        return "per-step reward components not logged"
    verdict = "components add up to the reward mean" if check["ok"] else "COMPONENTS DO NOT ADD UP to the reward mean"
    return (
        f"{verdict} at {check['steps_checked'] - len(check['steps_off'])}/{check['steps_checked']} steps "
        f"(max |diff| {check['max_abs_diff']:.2g} at step {check['worst_step']}, tolerance {check['tolerance']:g})"
    )


def _last(values: Sequence[float]) -> float | None:
    return float(values[-1]) if len(values) else None


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: report an unknown number as null."""
    return value if value is not None and math.isfinite(value) else None


def _component_last(components: dict[str, dict[str, tuple[list[int], list[float]]]]) -> dict[str, dict]:
    """Last logged value of each statistic of each training component."""
    return {
        name: {stat: _finite_or_none(_last(values)) for stat, (_, values) in stats.items()}
        for name, stats in components.items()
    }


def summarize_run(
    run: Run,
    sigma: float = DEFAULT_SIGMA,
    recent: int = DEFAULT_RECENT_STEPS,
    total_steps: int | None = None,
    now: float | None = None,
    stall_steps: float = DEFAULT_STALL_STEPS,
) -> dict:
    """The summary.json record of one run; `total_steps` overrides what the log says; `now` is the POSIX time
    the stall is judged at (None: no stall judgement)."""
    steps = list(run.steps)
    key = reward_key(run)
    reward_steps, rewards = run.series(key) if key else ([], [])
    smoothed = gaussian_smooth(reward_steps, rewards, sigma) if rewards else []
    per_step = seconds_per_step(step_durations(run)[1], recent)
    total = total_steps if total_steps is not None else run.total_steps
    last_step = steps[-1] if steps else None
    work_left = eta_seconds(last_step, total, per_step)
    idle = max(now - run.last_update, 0.0) if now is not None and run.last_update is not None else None
    status = run_status(last_step, total, per_step, idle, stall_steps)
    eta = None if status == STALLED else work_left  # a dead run has no time left, only work left
    share = reward_time_share(run)
    components = reward_components(run)
    return {
        "name": run.name,
        "sources": [str(path) for path in run.sources],
        "status": status,
        "steps": len(steps),
        "first_step": steps[0] if steps else None,
        "last_step": last_step,
        "total_steps": total,
        "reward_key": key,
        "reward_mean_last": _finite_or_none(_last(rewards)),
        "reward_mean_smoothed_last": _finite_or_none(_last(smoothed)),
        "seconds_per_step": _finite_or_none(per_step),
        "work_left_seconds": _finite_or_none(work_left),
        "eta_seconds": _finite_or_none(eta),
        "eta": format_duration(eta),
        "last_update_utc": utc_iso(run.last_update),
        "idle_seconds": idle,
        "stall_after_seconds": _finite_or_none(stall_steps * per_step) if per_step is not None else None,
        "eta_utc": utc_iso(run.last_update + eta) if run.last_update is not None and eta is not None else None,
        "reward_time_share": share,
        "reward_time_note": None if share is not None else REWARD_TIME_HIDDEN,
        "train_components_last": _component_last(training_components(run)),
        "component_sum_check": component_sum_check(run),
        "validation_last": {name: _finite_or_none(_last(values)) for name, (_, values) in components.items()},
        "skipped_lines": run.skipped_lines,
        "skipped_values": run.skipped_values,
        "other_lines": run.other_lines,
        "notes": list(run.notes),
    }


def build_summary(
    runs: Sequence[Run],
    sigma: float = DEFAULT_SIGMA,
    recent: int = DEFAULT_RECENT_STEPS,
    total_steps: int | None = None,
    plots: Sequence[str] = (),
    ignored: Sequence[str] = (),
    now: float | None = None,
    stall_steps: float = DEFAULT_STALL_STEPS,
) -> dict:
    """summary.json: the first run's fields at top level (one-run readers need no index), all runs in `runs`."""
    records = [summarize_run(run, sigma, recent, total_steps, now, stall_steps) for run in runs]
    return {
        **(records[0] if records else {}),
        "sigma": sigma,
        "recent_steps": recent,
        "stall_steps": stall_steps,
        "now_utc": utc_iso(now),
        "runs": records,
        "plots": list(plots),
        "ignored_inputs": list(ignored),
    }


def describe_status(record: dict) -> str:
    """The run's state in a few words: also what the plots add to the run's name."""
    if record["status"] == STALLED:
        return f"STALLED: no new step for {format_duration(record['idle_seconds'])}"
    return record["status"]


def describe_run(record: dict) -> str:
    """One line for the console: where the run is, its reward, its state and the time left."""

    def number(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    total = record["total_steps"] if record["total_steps"] is not None else "?"
    share = record["reward_time_share"]
    share_text = f"reward {share:.0%} of step time" if share is not None else REWARD_TIME_HIDDEN
    if record["status"] == STALLED:
        left = (
            f"{describe_status(record)} (> {format_duration(record['stall_after_seconds'])}), "
            f"{format_duration(record['work_left_seconds'])} of work left"
        )
    else:
        finish = f" (~{record['eta_utc']})" if record["eta_utc"] else ""
        left = f"{record['status']}, time left {record['eta']}{finish}"
    skipped = f"{record['skipped_lines']} skipped lines"
    if record["skipped_values"]:
        skipped += f", {record['skipped_values']} skipped values"
    return (
        f"{record['name']}: step {record['last_step']}/{total}, reward {number(record['reward_mean_last'], '.3f')} "
        f"(smoothed {number(record['reward_mean_smoothed_last'], '.3f')}), "
        f"{number(record['seconds_per_step'], '.0f')} s/step, {left}, {share_text}, {skipped}; "
        f"{describe_sum_check(record['component_sum_check'])}"
    )
