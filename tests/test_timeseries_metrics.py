"""rationanomaly.evaluate's time-series helpers: point adjustment and AU-PR, against hand values and scikit-learn."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rationanomaly.evaluate import average_precision, binary_metrics, flag_labels, point_adjust
from rationanomaly.labels import ABNORMAL, NORMAL


@pytest.mark.parametrize(
    ("truth", "predicted", "expected"),
    [
        ([0, 1, 1, 1, 0], [0, 0, 1, 0, 0], [0, 1, 1, 1, 0]),  # one hit credits the whole segment
        ([0, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1]),  # a missed segment stays missed
        ([1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]),  # a false alarm stays a false alarm
        ([0, 1, 1], [0, 0, 1], [0, 1, 1]),  # a segment running to the end
        ([0, 0], [0, 0], [0, 0]),  # no anomaly at all
    ],
)
def test_point_adjust_credits_whole_segments(truth, predicted, expected):
    assert point_adjust(truth, predicted) == expected


def test_point_adjust_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        point_adjust([0, 1], [0, 1, 1])


def test_flag_labels_score_like_text_labels():
    assert flag_labels([0, 1, True, False]) == [NORMAL, ABNORMAL, ABNORMAL, NORMAL]
    metrics = binary_metrics(flag_labels([1, 1, 0, 0]), flag_labels([1, 0, 1, 0]))
    assert (metrics.tp, metrics.fn, metrics.fp, metrics.tn) == (1, 1, 1, 1)


@pytest.mark.parametrize(
    ("truth", "scores", "expected"),
    [
        ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], (1 + 2 / 3) / 2),  # hand value: P 1 at R .5, P 2/3 at R 1
        ([0, 1], [0.5, 0.5], 0.5),  # a tie enters together: one threshold, P = 1/2 at R = 1
        ([1, 1, 0], [3.0, 2.0, 1.0], 1.0),  # perfect ranking
        ([0, 0, 0], [0.3, 0.2, 0.1], 0.0),  # no anomaly: defined as 0
    ],
)
def test_average_precision_hand_values(truth, scores, expected):
    assert average_precision(truth, scores) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)), min_size=2, max_size=40).filter(
        lambda pairs: any(t for t, _ in pairs)
    )
)
def test_average_precision_equals_scikit_learn(pairs):
    metrics = pytest.importorskip("sklearn.metrics")
    truth, scores = [t for t, _ in pairs], [float(s) for _, s in pairs]  # small integers: many ties
    assert average_precision(truth, scores) == pytest.approx(metrics.average_precision_score(truth, scores), abs=1e-12)
