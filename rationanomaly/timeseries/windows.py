"""Sliding-window states of the agent, as the reference builds them (env.py, A1 L120-134).

Window i classifies the point at cursor c = i + n_steps and holds values[c - n_steps + 1 .. c], so a
series of T points has T - n_steps windows and points 0..n_steps-1 are never classified. The state adds
one flag channel; on the newest point it encodes the branch "previous action" (1 = anomaly).
"""

from __future__ import annotations

import numpy as np

N_STEPS = 25  # A1 L52, SMD L55, WaDi L57 (README L48's "window_size = 50" is wrong)


def minmax_scale(values: np.ndarray) -> np.ndarray:
    """Per-channel MinMax to [0, 1] over the whole series (env.py L69-80); a constant channel becomes 0."""
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.clip((values - low) / span, 0.0, 1.0).astype(np.float32)


def window_count(length: int, n_steps: int = N_STEPS) -> int:
    """Number of classified points (windows) in a series of `length` points."""
    return max(length - n_steps, 0)


def state_windows(values: np.ndarray, n_steps: int = N_STEPS) -> np.ndarray:
    """[T - n, n, d] windows values[i+1 .. i+n] (the state of cursor c = i + n); a strided view, not a copy."""
    view = np.lib.stride_tricks.sliding_window_view(values, n_steps, axis=0)  # [T - n + 1, d, n]
    return view[1:].transpose(0, 2, 1)


def preceding_windows(values: np.ndarray, n_steps: int = N_STEPS) -> np.ndarray:
    """[T - n, n, d] windows values[i .. i+n-1]: what the reference feeds the VAE for cursor c (A1 L139).

    They stop one point short of c, the point being classified (notes bug 3).
    """
    view = np.lib.stride_tricks.sliding_window_view(values, n_steps, axis=0)
    return view[:-1].transpose(0, 2, 1)


def states_list_flags(count: int, n_steps: int = N_STEPS) -> np.ndarray:
    """[count, n] flags of the reference's `states_list` (env.py L153-169).

    The first state carries flag 1 on its newest point (A1 L126); every later state shifts the previous
    one and appends flag 0, so that 1 walks out of the window after n_steps states and all later flags are 0.
    """
    flags = np.zeros((count, n_steps), dtype=np.float32)
    for i in range(min(count, n_steps)):
        flags[i, n_steps - 1 - i] = 1.0
    return flags


def with_flags(windows: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """States [N, n, d + 1]: the value channels followed by the flag channel."""
    return np.concatenate([windows, flags[:, :, None]], axis=2).astype(np.float32)


def series_states(scaled: np.ndarray, n_steps: int = N_STEPS, action_flags: bool = True) -> np.ndarray:
    """States [T - n, n, d + 1] of a scaled series: the reference's `states_list` flag pattern, or all-zero flags.

    Zero flags (fixed mode) give the agent the same states in training and in the evaluation pass,
    where the reference's flags carry the agent's own previous actions instead (see env.SeriesEnv).
    """
    windows = state_windows(scaled, n_steps)
    flags = states_list_flags(len(windows), n_steps) if action_flags else np.zeros(windows.shape[:2], np.float32)
    return with_flags(windows, flags)


def shifted(state: np.ndarray, point: np.ndarray, flag: float) -> np.ndarray:
    """The state one step later: drop the oldest row, append (point, flag) (A1 L128-133, the branch states)."""
    return np.concatenate([state[1:], np.append(point, flag)[None, :].astype(np.float32)])


def chained_next_states(
    start: np.ndarray, scaled: np.ndarray, indices: np.ndarray, actions: np.ndarray, n_steps: int = N_STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """Next states of a run of steps as the reference's env builds them: from its *running* state.

    The reference jumps the cursor to each labelled window but builds the next state from the state the
    env was left in by the previous step (env.py L126-151), not from the window it classified: the
    older rows are those of earlier steps, only the newest point is right. Returns ([K, 2, n, d+1],
    the final running state). A window at the series end repeats the running state (env.py L126-151).
    """
    next_states = np.empty((len(indices), 2, *start.shape), dtype=np.float32)
    running = start
    last = len(scaled) - 1
    for k, (index, action) in enumerate(zip(indices, actions, strict=True)):
        cursor = int(index) + n_steps + 1
        if cursor > last:
            next_states[k] = running
            continue
        next_states[k, 0] = shifted(running, scaled[cursor], 0.0)
        next_states[k, 1] = shifted(running, scaled[cursor], 1.0)
        running = next_states[k, int(action)]
    return next_states, running


def true_next_states(states: np.ndarray, indices: np.ndarray, action_flags: bool = True) -> np.ndarray:
    """Next states of the windows themselves (fixed mode): window i + 1, with flag 0 / 1 on the newest point.

    The flags of the older rows are those of window i shifted by one, as in a sequential pass; without
    action flags both branches are the plain next window. The last window of a series repeats itself
    (the episode is done there).
    """
    indices = np.asarray(indices)
    following = np.minimum(indices + 1, len(states) - 1)
    base = states[following].copy()
    base[:, :-1, -1] = states[indices, 1:, -1]
    next_states = np.repeat(base[:, None], 2, axis=1)
    next_states[:, 0, -1, -1], next_states[:, 1, -1, -1] = 0.0, float(action_flags)
    done = indices + 1 >= len(states)
    next_states[done] = states[indices[done]][:, None]
    return next_states
