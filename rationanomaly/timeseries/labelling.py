"""Who gets a label: margin-based active learning, label spreading with pseudo-labels, IsolationForest warm-up.

All selections sort stably, so ties go to the earlier window and a seed fixes every choice (the reference
used numpy's default, unstable sort). scikit-learn is imported inside the functions that need it.
"""

from __future__ import annotations

import numpy as np

from rationanomaly.timeseries.reward import UNLABELLED

RBF, KNN = "rbf", "knn"
KERNELS = (RBF, KNN)
KNN_NEIGHBORS = 7  # scikit-learn's LabelSpreading default for knn; ours for SMD scale (rbf: 63 s, 9.7 GB per machine)
WARM_CONTAMINATION = 0.01  # A1 L328-370 (warm-up): outliers_fraction = 0.01
WARM_PER_END = 5  # A1 L328-370: the 5 most normal and the 5 most anomalous scores of each visit


def margin_query(q_values: np.ndarray, labels: np.ndarray, budget: int) -> np.ndarray:
    """The `budget` unlabelled windows with the smallest |Q0 - Q1|: where the agent is least sure (A1 L250-259)."""
    margin = np.abs(q_values[:, 0] - q_values[:, 1])
    order = np.argsort(margin, kind="stable")
    return order[labels[order] == UNLABELLED][: max(budget, 0)]


def entropy(distributions: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row, 0 log 0 = 0: scipy.stats.entropy(label_distributions_.T) (A1 L328-370)."""
    p = np.asarray(distributions, dtype=np.float64)
    p = p / np.where(p.sum(axis=1, keepdims=True) > 0, p.sum(axis=1, keepdims=True), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=1)


def pseudo_label_selection(
    distributions: np.ndarray, transduction: np.ndarray, labels: np.ndarray, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of the `budget` unlabelled windows whose spread label is most certain (A1 L328-370, L376-460).

    Certainty = lowest entropy of the spread label distribution; the label is scikit-learn's transduction.
    """
    order = np.argsort(entropy(distributions), kind="stable")
    chosen = order[labels[order] == UNLABELLED][: max(budget, 0)]
    return chosen, np.asarray(transduction)[chosen].astype(np.int8)


def spread_labels(features: np.ndarray, labels: np.ndarray, kernel: str = RBF) -> tuple[np.ndarray, np.ndarray]:
    """Fit LabelSpreading on one series' windows; returns (label_distributions_, transduction_).

    rbf keeps scikit-learn's defaults as the reference does (gamma 20, alpha 0.2, max_iter 30); its dense
    N x N kernel is fine for Yahoo (N ~ 1,400) but not for an SMD machine (N ~ 28,000): use knn there.
    """
    from sklearn.semi_supervised import LabelSpreading

    if kernel not in KERNELS:
        raise ValueError(f"label spreading kernel {kernel!r} is unknown; choose one of {', '.join(KERNELS)}")
    model = LabelSpreading() if kernel == RBF else LabelSpreading(kernel=KNN, n_neighbors=KNN_NEIGHBORS)
    model.fit(np.asarray(features, dtype=np.float64).reshape(len(features), -1), np.asarray(labels, dtype=np.int64))
    return model.label_distributions_, model.transduction_


def fit_isolation_forest(points: np.ndarray, seed: int, contamination: float = WARM_CONTAMINATION):
    """IsolationForest on the newest point of every training window (A1 L328-370), seeded."""
    from sklearn.ensemble import IsolationForest

    return IsolationForest(contamination=contamination, random_state=seed).fit(points)


def warm_up_selection(decision: np.ndarray, per_end: int = WARM_PER_END) -> np.ndarray:
    """Windows to label in a warm-up visit: the `per_end` lowest and highest of -decision + 0.5 (A1 L328-370).

    decision_function is high for normal points, so the first block is the most normal windows and the
    second the most anomalous; a series shorter than 2 * per_end windows yields repeats, as in the reference.
    """
    score = -np.asarray(decision) + 0.5
    order = np.argsort(score, kind="stable")
    if per_end <= 0 or not len(order):
        return order[:0]
    return np.concatenate([order[:per_end], order[-per_end:]])
