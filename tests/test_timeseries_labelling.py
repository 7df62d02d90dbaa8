"""Margin queries, pseudo-label selection, label spreading and the warm-up choice on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from rationanomaly.timeseries.labelling import (
    entropy,
    fit_isolation_forest,
    margin_query,
    pseudo_label_selection,
    spread_labels,
    warm_up_selection,
)

U = -1  # unlabelled


def test_margin_query_picks_the_smallest_margins_among_unlabelled_windows():
    q = np.array([[0.0, 0.1], [1.0, 3.0], [2.0, 2.0], [5.0, 4.5], [0.0, 0.05], [1.0, 1.3]])
    labels = np.array([U, U, U, U, 0, U])  # window 4 has the second-smallest margin but is labelled
    assert margin_query(q, labels, 3).tolist() == [2, 0, 5]  # margins 0, 0.1, 0.3 (then 0.5, 2)


def test_margin_query_breaks_ties_by_window_order_and_respects_the_budget():
    q = np.array([[1.0, 1.5], [0.0, 0.5], [2.0, 2.5]])
    assert margin_query(q, np.array([U, U, U]), 2).tolist() == [0, 1]
    assert margin_query(q, np.array([U, U, U]), 0).tolist() == []
    assert margin_query(q, np.array([1, 0, 1]), 5).tolist() == []


def test_entropy_equals_scipy():
    stats = pytest.importorskip("scipy.stats")
    distributions = np.array([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1], [0.2, 0.8]])
    np.testing.assert_allclose(entropy(distributions), stats.entropy(distributions.T), rtol=1e-12)


def test_pseudo_labels_go_to_the_most_certain_unlabelled_windows():
    distributions = np.array([[0.5, 0.5], [1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [0.7, 0.3], [0.1, 0.9]])
    transduction = np.array([0, 0, 0, 1, 0, 1])
    labels = np.array([U, 0, U, U, U, U])  # window 1 (entropy 0) is already labelled
    chosen, pseudo = pseudo_label_selection(distributions, transduction, labels, 3)
    assert chosen.tolist() == [3, 2, 5]  # entropies 0, 0.056, 0.325 (then 0.611, 0.693)
    assert pseudo.tolist() == [1, 0, 1]


@pytest.mark.parametrize("kernel", ["rbf", "knn"])
def test_label_spreading_propagates_to_close_windows(kernel):
    rng = np.random.default_rng(0)
    low = rng.normal(0.1, 0.01, (10, 3))
    high = rng.normal(0.9, 0.01, (10, 3))
    features = np.concatenate([low, high])
    labels = np.full(20, U)
    labels[0], labels[10] = 0, 1
    distributions, transduction = spread_labels(features, labels, kernel)
    assert transduction.tolist() == [0] * 10 + [1] * 10
    assert distributions.shape == (20, 2)


def test_label_spreading_rejects_an_unknown_kernel():
    with pytest.raises(ValueError, match="kernel 'linear' is unknown"):
        spread_labels(np.zeros((3, 2)), np.array([0, U, U]), "linear")


def test_warm_up_selection_takes_five_most_normal_then_five_most_anomalous():
    decision = np.array([0.3, -0.2, 0.1, 0.25, -0.4, 0.05, 0.2, -0.1, 0.15, 0.0, 0.12, -0.3])
    chosen = warm_up_selection(decision, per_end=5)
    # score = -decision + 0.5: lowest score = highest decision (most normal) first
    assert chosen.tolist() == [0, 3, 6, 8, 10, 9, 7, 1, 11, 4]


def test_isolation_forest_is_seeded():
    points = np.random.default_rng(1).normal(size=(200, 1))
    first = fit_isolation_forest(points, seed=3).decision_function(points)
    second = fit_isolation_forest(points, seed=3).decision_function(points)
    np.testing.assert_array_equal(first, second)
