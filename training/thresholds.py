"""Choose per-label thresholds that give three decisions: flag, review, clear.

Flag threshold of a label: the lowest calibrated probability at which flags of that label reach
the target precision on validation (never below 0.5); a label that cannot reach it never flags,
and its positives can only reach people through the review band.

Review thresholds: a greedy search that starts at the flag thresholds and repeatedly lowers the
one label threshold that catches the most not-yet-caught items with a label per newly reviewed item
without one (ties: the larger gain), until the share of items with any label that are flagged or
sent to review reaches the target. Each step lowers a threshold to the next positive's score, so
the review band is only as wide as the target needs. Items sent to review for insufficient detail
count as caught from the start.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import ReviewPath, ReviewStep

NEVER = 1.0001


def choose_flag_threshold(
    p: NDArray[np.floating],
    y: NDArray[np.integer],
    precision: float,
    min_flags: int = 3,
    floor: float = 0.5,
) -> float:
    """Lowest threshold whose flags reach `precision` (at least `min_flags` flags), else NEVER."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y).astype(int)
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    ys = y[order]
    tp = np.cumsum(ys)
    n = np.arange(1, len(ps) + 1)
    prec = tp / n
    best = NEVER
    for k in range(len(ps)):
        if k + 1 < len(ps) and ps[k + 1] == ps[k]:
            continue  # ties: a threshold takes every item with the same score
        if n[k] >= min_flags and prec[k] >= precision and ps[k] >= floor:
            best = float(ps[k])
    return best


def recall_threshold(p: NDArray[np.floating], y: NDArray[np.integer], recall: float) -> float:
    """Highest threshold at which at least `recall` of the positives score at or above it."""
    pos = np.sort(np.asarray(p, dtype=np.float64)[np.asarray(y).astype(bool)])[::-1]
    if pos.size == 0:
        return NEVER
    k = max(1, math.ceil(recall * pos.size - 1e-9))
    return float(pos[k - 1])


def any_label_recall(
    p: NDArray[np.floating],
    y: NDArray[np.integer],
    review: NDArray[np.floating],
    caught_anyway: NDArray[np.bool_] | None = None,
) -> float:
    """Share of items with any label that have some label at or above its review threshold."""
    positive: NDArray[np.bool_] = np.asarray(np.asarray(y).any(axis=1), dtype=bool)
    if not positive.any():
        return 1.0
    caught: NDArray[np.bool_] = np.asarray((np.asarray(p) >= review).any(axis=1), dtype=bool)
    if caught_anyway is not None:
        caught |= caught_anyway
    return float(caught[positive].mean())


def review_search(
    p: NDArray[np.floating],
    y: NDArray[np.integer],
    labels: list[str],
    target_recall: float = 0.97,
    flag_precision: float | dict[str, float] = 0.90,
    caught_anyway: NDArray[np.bool_] | None = None,
    review_floor: float = 0.0,
    review_ceiling: float = 1.0,
) -> tuple[dict[str, float], ReviewPath]:
    """Flag thresholds and the whole greedy review-band search, with no budget.

    Args:
        p: calibrated probabilities, shape [n, labels].
        y: 0/1 truth, shape [n, labels].
        labels: label names in column order.
        target_recall: share of items with any label to flag or send to review.
        flag_precision: precision that flags of each label must reach; a dict gives it per label
            (labels it leaves out take the "*" entry, else 0.90).
        caught_anyway: items routed to review whatever their scores (insufficient detail).
        review_floor: no review threshold goes below this probability.
        review_ceiling: no review threshold stays above this probability: the band starts here
            for every label (a validation set the model separates well would otherwise leave a
            label's band empty, and clear real items at 30 or 40 %).

    Returns:
        (label -> flag threshold, the review path: every step with its cost per gain).
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y).astype(int)
    n = len(p)
    if isinstance(flag_precision, dict):
        precisions = [flag_precision.get(lb, flag_precision.get("*", 0.90)) for lb in labels]
    else:
        precisions = [flag_precision] * len(labels)
    flag = np.array(
        [choose_flag_threshold(p[:, j], y[:, j], precisions[j]) for j in range(len(labels))]
    )
    review = np.minimum(flag, review_ceiling)
    positive: NDArray[np.bool_] = np.asarray(y.any(axis=1), dtype=bool)
    caught: NDArray[np.bool_] = np.asarray((p >= review).any(axis=1), dtype=bool)
    if caught_anyway is not None:
        caught |= np.asarray(caught_anyway, dtype=bool)
    n_pos = int(positive.sum())

    def recall() -> float:
        return float(caught[positive].mean()) if n_pos else 1.0

    def rate() -> float:
        return float(caught.mean()) if n else 0.0

    path = ReviewPath(
        review_floor=review_floor,
        review_ceiling=review_ceiling,
        start_recall=recall(),
        start_review_rate=rate(),
    )
    while n_pos and recall() < target_recall:
        best: tuple[float, int, int, float] | None = None  # (cost per gain, -gain, label, t)
        for j in range(len(labels)):
            open_pos = (
                positive
                & ~caught
                & (y[:, j] == 1)
                & (p[:, j] < review[j])
                & (p[:, j] >= review_floor)
            )
            if not open_pos.any():
                continue
            t = float(p[open_pos, j].max())
            crossing = ~caught & (p[:, j] >= t)
            gain = int((crossing & positive).sum())
            cost = int((crossing & ~positive).sum())
            key = (cost / gain, -gain, j, t)
            if best is None or key < best:
                best = key
        if best is None:
            break
        cost_per_gain, _, j, t = best
        review[j] = t
        caught |= p[:, j] >= t
        path.steps.append(
            ReviewStep(
                label=labels[j],
                review=t,
                cost_per_gain=cost_per_gain,
                recall=recall(),
                review_rate=rate(),
            )
        )
    return {lb: float(flag[j]) for j, lb in enumerate(labels)}, path
