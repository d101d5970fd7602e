"""From logits to decisions: calibration, per-label thresholds and the item decision.

One implementation for evaluation at training time and for every serving path, so the numbers a
model card reports are the numbers users get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import LabelThresholds, Manifest, ReviewPath
from serving.contract.errors import DualscreenError
from serving.contract.text import count_words

Decision = Literal["flag", "review", "clear"]
INSUFFICIENT_DETAIL = "insufficient_detail"
TRUNCATED = "truncated"


def sigmoid(x: NDArray[np.floating]) -> NDArray[np.float64]:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def calibrate(logits: NDArray[np.floating], manifest: Manifest) -> NDArray[np.float64]:
    """Apply the manifest's per-label Platt scaling to raw logits (shape [n, labels])."""
    return sigmoid(calibrated_logits(logits, manifest))


@dataclass
class ItemDecision:
    """The decision for one item: overall, per label, and why."""

    decision: Decision
    risk: float
    probabilities: dict[str, float]
    label_decisions: dict[str, Decision]
    reasons: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Labels that were flagged or sent to review."""
        return [k for k, v in self.label_decisions.items() if v != "clear"]


def label_decisions(probs: NDArray[np.floating], manifest: Manifest) -> NDArray[np.int8]:
    """Per-label decision codes for a probability matrix: 2 flag, 1 review, 0 clear."""
    flag = np.array([manifest.thresholds[lb].flag for lb in manifest.labels])
    review = np.array([manifest.thresholds[lb].review for lb in manifest.labels])
    codes = np.zeros(np.shape(probs), dtype=np.int8)
    codes[probs >= review] = 1
    codes[probs >= flag] = 2
    return codes


def calibrated_logits(logits: NDArray[np.floating], manifest: Manifest) -> NDArray[np.float64]:
    """Per-label Platt-scaled logits: a * z + b (the argument of the sigmoid in `calibrate`)."""
    cal = manifest.calibration
    a = np.array([cal.a[label] for label in manifest.labels], dtype=np.float64)
    b = np.array([cal.b[label] for label in manifest.labels], dtype=np.float64)
    return np.asarray(logits, dtype=np.float64) * a + b


def unstable_decisions(
    logits: NDArray[np.floating], manifest: Manifest, margin: float
) -> NDArray[np.bool_]:
    """Items whose item decision could change if any calibrated logit moved by up to `margin`.

    Decisions only grow with the logits, so comparing the decision at every logit minus the margin
    with the one at every logit plus it covers every move within the margin. The insufficient-
    detail rule does not depend on the logits, so it cannot make a stable item unstable.
    """
    if len(logits) == 0 or margin <= 0:
        return np.zeros(len(logits), dtype=bool)
    z = calibrated_logits(logits, manifest)
    low = label_decisions(sigmoid(z - margin), manifest).max(axis=1)
    high = label_decisions(sigmoid(z + margin), manifest).max(axis=1)
    return np.asarray(low != high, dtype=bool)


def is_insufficient(text: str, min_words: int) -> bool:
    """True when a text has too few content words to judge."""
    return count_words(text) < min_words


def decide(
    probs: NDArray[np.floating],
    texts: list[str],
    manifest: Manifest,
    truncated: list[bool] | None = None,
) -> list[ItemDecision]:
    """Turn calibrated probabilities into item decisions.

    Args:
        probs: calibrated probabilities, shape [n, labels].
        texts: the built input texts (for the insufficient-detail rule).
        manifest: thresholds and rules.
        truncated: per item, whether its text was cut to the length cap.

    Returns:
        One ItemDecision per row.
    """
    codes = label_decisions(probs, manifest)
    names: dict[int, Decision] = {0: "clear", 1: "review", 2: "flag"}
    out: list[ItemDecision] = []
    for i, text in enumerate(texts):
        row = codes[i]
        reasons: list[str] = []
        top = int(row.max()) if row.size else 0
        decision: Decision = names[top]
        if is_insufficient(text, manifest.rules.min_words) and decision == "clear":
            decision = "review"
            reasons.append(INSUFFICIENT_DETAIL)
        if truncated is not None and truncated[i]:
            reasons.append(TRUNCATED)
        p = probs[i]
        out.append(
            ItemDecision(
                decision=decision,
                risk=float(p.max()) if p.size else 0.0,
                probabilities={lb: float(p[j]) for j, lb in enumerate(manifest.labels)},
                label_decisions={lb: names[int(row[j])] for j, lb in enumerate(manifest.labels)},
                reasons=reasons,
            )
        )
    return out


def decision_codes(
    probs: NDArray[np.floating], texts: list[str], manifest: Manifest
) -> NDArray[np.int8]:
    """Item-level decision codes (2 flag, 1 review, 0 clear) without building objects."""
    codes = label_decisions(probs, manifest).max(axis=1) if len(texts) else np.zeros(0, np.int8)
    vague = np.array([is_insufficient(t, manifest.rules.min_words) for t in texts], dtype=bool)
    codes = codes.astype(np.int8)
    codes[(codes == 0) & vague] = 1
    return codes


def _setting_number(text: str | float, what: str, expected: str) -> float:
    """A number from a setting's value, or DualscreenError naming the setting."""
    if isinstance(text, int | float):
        return float(text)
    try:
        return float(text.strip())
    except ValueError:
        raise DualscreenError(f"{what} {text!r}: expected {expected}") from None


def parse_review_budget(text: str | float | None) -> float | None:
    """Read a review budget setting: "default" (or None) keeps the model's, "none" lifts it.

    A number is the most validation items without a label that one step of the review band may send
    to review per newly caught item with one; "none", "off" or "unlimited" widen the band until the
    model's recall target is met.
    """
    word = text.strip().lower() if isinstance(text, str) else None
    if text is None or word in ("", "default"):
        return None
    if word in ("none", "off", "unlimited", "inf"):
        return math.inf
    value = _setting_number(text, "review budget", "a positive number, 'default' or 'none'")
    if not value > 0:
        raise DualscreenError(f"review budget {text!r}: must be greater than 0")
    return value


def parse_review_ceiling(text: str | float | None) -> float | None:
    """Read a review ceiling setting: "default" (or None) keeps the model's, else a probability.

    The model must store the review search at that ceiling (`Manifest.other_review_paths`);
    `with_review_settings` checks that.
    """
    word = text.strip().lower() if isinstance(text, str) else None
    if text is None or word in ("", "default"):
        return None
    value = _setting_number(text, "review ceiling", "a probability such as 0.2, or 'default'")
    if not 0.0 < value <= 1.0:
        raise DualscreenError(f"review ceiling {text!r}: must be greater than 0 and at most 1")
    return value


def review_ceilings(manifest: Manifest) -> list[float]:
    """The review ceilings a model stores a review search for, in increasing order."""
    paths = [manifest.review_path] if manifest.review_path else []
    return sorted(p.review_ceiling for p in [*paths, *manifest.other_review_paths])


def with_review_settings(
    manifest: Manifest, budget: float | None = None, ceiling: float | None = None
) -> Manifest:
    """The manifest with review thresholds recomputed for a budget and ceiling, no retraining.

    `ceiling` picks the stored review search at that ceiling (None: the model's own); `budget`
    (see `parse_review_budget`) cuts that search (None: the model's own budget). The flag
    thresholds never change. Raises DualscreenError for a model without a review path (trained
    before it existed) or without a search at the ceiling asked for.
    """
    if budget is None and ceiling is None:
        return manifest
    path = manifest.review_path
    if path is None:
        raise DualscreenError(
            f"model {manifest.name} {manifest.version} stores no review path; retrain it to set "
            "a review budget or ceiling at serving time"
        )
    others = list(manifest.other_review_paths)
    if ceiling is not None and not math.isclose(ceiling, path.review_ceiling, abs_tol=1e-9):
        found = [p for p in others if math.isclose(ceiling, p.review_ceiling, abs_tol=1e-9)]
        if not found:
            stored = ", ".join(f"{c:g}" for c in review_ceilings(manifest))
            raise DualscreenError(
                f"model {manifest.name} {manifest.version} stores review searches at ceilings "
                f"{stored}, not {ceiling:g}; choose one of those, or retrain with "
                "decide.review_ceilings listing it"
            )
        others = [p for p in others if p is not found[0]] + [path]
        others.sort(key=lambda p: p.review_ceiling)
        path = found[0].model_copy(update={"budget": path.budget})
    if budget is None:
        budget = path.budget if path.budget is not None else math.inf
    flag = {lb: manifest.thresholds[lb].flag for lb in manifest.labels}
    thresholds = thresholds_for_budget(flag, path, budget)
    new_path = path.model_copy(update={"budget": None if math.isinf(budget) else budget})
    return manifest.model_copy(
        update={"thresholds": thresholds, "review_path": new_path, "other_review_paths": others}
    )


def thresholds_for_budget(
    flag: dict[str, float], path: ReviewPath, budget: float = math.inf
) -> dict[str, LabelThresholds]:
    """Thresholds after the path's steps up to the first one costing more than `budget`.

    The band starts at the path's review ceiling (a label at or above it is never cleared), so
    even the tightest budget keeps that rule.
    """
    review = {lb: min(f, path.review_ceiling) for lb, f in flag.items()}
    for step in path.steps:
        if step.cost_per_gain > budget:
            break
        review[step.label] = min(review[step.label], step.review)
    return {lb: LabelThresholds(flag=f, review=min(review[lb], f)) for lb, f in flag.items()}
