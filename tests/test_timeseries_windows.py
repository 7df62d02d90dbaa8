"""Window states as the reference builds them: indices, the states_list flag pattern, both next-state rules."""

from __future__ import annotations

import numpy as np

from rationanomaly.timeseries.windows import (
    chained_next_states,
    minmax_scale,
    preceding_windows,
    series_states,
    state_windows,
    states_list_flags,
    true_next_states,
)

N = 3  # a short window keeps the hand-made cases readable


def ramp(length: int) -> np.ndarray:
    """values[t] = t, one channel: every window shows which points it holds."""
    return np.arange(length, dtype=np.float32)[:, None]


def test_state_window_i_holds_the_points_up_to_its_cursor():
    windows = state_windows(ramp(7), N)
    assert windows.shape == (4, 3, 1)  # T - n windows
    assert windows[0, :, 0].tolist() == [1, 2, 3]  # cursor 3 = n
    assert windows[-1, :, 0].tolist() == [4, 5, 6]  # cursor T - 1


def test_vae_windows_of_the_reference_stop_before_the_classified_point():
    windows = preceding_windows(ramp(7), N)
    assert windows[0, :, 0].tolist() == [0, 1, 2]  # cursor 3 is not in its own VAE window (notes bug 3)
    assert windows[-1, :, 0].tolist() == [3, 4, 5]


def test_states_list_flags_walk_the_first_flag_out_of_the_window():
    assert states_list_flags(5, N).tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_minmax_scales_each_channel_and_zeroes_constant_ones():
    scaled = minmax_scale(np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]], dtype=np.float32))
    np.testing.assert_allclose(scaled, [[0, 0], [1, 0], [0.5, 0]])


def test_chained_next_states_continue_the_running_state_not_the_window():
    scaled = ramp(8)
    states = series_states(scaled, N)
    start = states[0]  # what reset() leaves: points 1..3, flag 1 on the newest
    next_states, running = chained_next_states(start, scaled, np.array([3, 0]), np.array([1, 0]), N)
    # step 1 classifies window 3 (cursor 6): next point 7 appended to the running state, not to window 3
    assert next_states[0, 0].tolist() == [[2, 0], [3, 1], [7, 0]]
    assert next_states[0, 1].tolist() == [[2, 0], [3, 1], [7, 1]]
    # step 2 classifies window 0 (cursor 3): next point 4 appended to branch 1 of step 1
    assert next_states[1, 0].tolist() == [[3, 1], [7, 1], [4, 0]]
    assert running.tolist() == [[3, 1], [7, 1], [4, 0]]


def test_chained_next_state_at_the_series_end_repeats_the_running_state():
    scaled = ramp(6)
    start = series_states(scaled, N)[0]
    next_states, running = chained_next_states(start, scaled, np.array([2]), np.array([1]), N)  # cursor 5 = last
    assert next_states[0, 0].tolist() == start.tolist() == next_states[0, 1].tolist()
    assert running.tolist() == start.tolist()


def test_true_next_states_are_the_following_window_with_both_flags():
    states = series_states(ramp(8), N)
    next_states = true_next_states(states, np.array([0, 4]))
    assert next_states[0, 0].tolist() == [[2, 0], [3, 1], [4, 0]]  # window 1 with window 0's flags shifted
    assert next_states[0, 1].tolist() == [[2, 0], [3, 1], [4, 1]]
    assert next_states[1, 0].tolist() == states[4].tolist() == next_states[1, 1].tolist()  # last window: done
