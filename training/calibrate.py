"""Per-label Platt scaling on the validation split, and expected calibration error.

Compromise: calibration and threshold choice use the same validation split that early stopping
watched; the test split and the real-world files are the honest check.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import Calibration
from serving.contract.decide import sigmoid


def fit_platt(logits: NDArray[np.floating], y: NDArray[np.integer]) -> tuple[float, float]:
    """Fit p = sigmoid(a * logit + b) to one label's validation logits.

    Args:
        logits: raw logits of one label, shape [n].
        y: 0/1 truth, shape [n].

    Returns:
        (a, b); (1, 0) when the label has only one class in the data or the fit is not increasing.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(int)
    if y.min() == y.max():
        return 1.0, 0.0
    model = LogisticRegression(C=100.0, solver="lbfgs", max_iter=1000)
    model.fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), y)
    a = float(model.coef_[0, 0])
    b = float(model.intercept_[0])
    if not np.isfinite(a) or a <= 0:
        return 1.0, 0.0
    return a, b


def fit_calibration(
    logits: NDArray[np.floating], y: NDArray[np.integer], labels: list[str]
) -> Calibration:
    """Fit Platt scaling for every label."""
    a: dict[str, float] = {}
    b: dict[str, float] = {}
    for j, label in enumerate(labels):
        a[label], b[label] = fit_platt(logits[:, j], y[:, j])
    return Calibration(method="platt", a=a, b=b)


def apply_calibration(
    logits: NDArray[np.floating], cal: Calibration, labels: list[str]
) -> NDArray[np.float64]:
    """Calibrated probabilities for a logit matrix."""
    a = np.array([cal.a[lb] for lb in labels])
    b = np.array([cal.b[lb] for lb in labels])
    return sigmoid(np.asarray(logits, dtype=np.float64) * a + b)


def expected_calibration_error(
    probs: NDArray[np.floating], y: NDArray[np.integer], bins: int = 15
) -> float:
    """ECE over every (item, label) probability pooled, with equal-width bins."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    if p.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for k in range(bins):
        mask = which == k
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - t[mask].mean())
    return float(ece)


def reliability_curve(
    probs: NDArray[np.floating], y: NDArray[np.integer], bins: int = 15
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Mean predicted probability, observed frequency and count per bin (for the plot)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, bins - 1)
    mean_p = np.zeros(bins)
    freq = np.zeros(bins)
    count = np.zeros(bins, dtype=np.int64)
    for k in range(bins):
        mask = which == k
        count[k] = int(mask.sum())
        if count[k]:
            mean_p[k] = p[mask].mean()
            freq[k] = t[mask].mean()
    return mean_p, freq, count
