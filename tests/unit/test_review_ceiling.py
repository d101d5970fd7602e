"""The review ceiling as a serving setting: training stores the search at several ceilings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from serving.contract.artifact import Manifest
from serving.contract.decide import (
    calibrate,
    label_decisions,
    parse_review_ceiling,
    review_ceilings,
    thresholds_for_budget,
    with_review_settings,
)
from serving.contract.errors import DualscreenError
from serving.settings import Settings
from tests.manifests import identity_manifest
from training.config import load_config
from training.pipeline import Split, _calibrate_and_decide
from training.thresholds import review_search

LABELS = ["a", "b", "c"]


def _validation(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping scores: the review band matters at every ceiling."""
    rng = np.random.default_rng(seed)
    y = (rng.random((600, len(LABELS))) < 0.25).astype(np.int64)
    logits = np.where(y == 1, rng.normal(1.0, 1.6, y.shape), rng.normal(-3.0, 1.6, y.shape))
    return logits.astype(np.float32), y


def _decided(root: Path, *overrides: str) -> Manifest:
    logits, y = _validation()
    val = Split(rows=[{}] * len(y), texts=["a listing of several words"] * len(y), y=y)
    cfg = load_config(root / "training/configs/smoke.toml", list(overrides))
    out, _ = _calibrate_and_decide(cfg, identity_manifest(LABELS), logits, val)
    return out


def test_parse_review_ceiling():
    assert parse_review_ceiling(None) is None
    assert parse_review_ceiling(" Default ") is None
    assert parse_review_ceiling("0.2") == 0.2
    assert parse_review_ceiling(1) == 1.0
    for bad in ("0", "-0.1", "1.5", "high", "nan"):
        with pytest.raises(DualscreenError, match="review ceiling"):
            parse_review_ceiling(bad)
    assert Settings(mode="development", review_ceiling="0.3").review_ceiling == "0.3"
    with pytest.raises(ValueError, match="review ceiling"):
        Settings(mode="development", review_ceiling="2")


def test_training_stores_the_search_at_every_ceiling(root: Path):
    m = _decided(root, "decide.review_floor=0.05", "decide.review_ceiling=0.2")
    assert m.review_path is not None and m.review_path.review_ceiling == 0.2
    assert review_ceilings(m) == [0.075, 0.15, 0.2, 0.3, 0.5, 1.0]
    # Each stored path is the search itself at that ceiling, on the same calibrated scores.
    logits, y = _validation()
    cal_p = calibrate(logits, m)
    for path in [m.review_path, *m.other_review_paths]:
        _, direct = review_search(
            cal_p, y, LABELS, 0.97, 0.9, review_floor=0.05, review_ceiling=path.review_ceiling
        )
        assert path == direct
    flag = {lb: m.thresholds[lb].flag for lb in LABELS}
    for path in m.other_review_paths:
        chosen = with_review_settings(m, ceiling=path.review_ceiling)
        assert chosen.review_path == path.model_copy(update={"budget": None})
        assert chosen.thresholds == thresholds_for_budget(flag, path)
        assert all(chosen.thresholds[lb].flag == flag[lb] for lb in LABELS)
        assert all(t.review <= path.review_ceiling for t in chosen.thresholds.values())
        # The other ceilings stay available from the chosen manifest, the original among them.
        assert review_ceilings(chosen) == review_ceilings(m)
        back = with_review_settings(chosen, ceiling=0.2)
        assert back.thresholds == m.thresholds
    assert with_review_settings(m) is m


def test_a_higher_ceiling_sends_fewer_items_to_review(root: Path):
    m = _decided(root, "decide.review_floor=0.05", "decide.review_ceiling=0.1")
    logits, _ = _validation(seed=8)  # fresh items from the same distribution
    counts = []
    for ceiling in review_ceilings(m):
        chosen = with_review_settings(m, ceiling=ceiling)
        probs = calibrate(logits, chosen)
        codes = label_decisions(probs, chosen).max(axis=1)
        counts.append(int((codes == 1).sum()))
    # The search is greedy from each ceiling, so neighbouring ceilings can swap (here 0.3 and
    # 0.5); the ends cannot.
    assert counts[0] > counts[-1], counts
    assert counts[0] > counts[2] > counts[-1], counts


def test_budget_and_ceiling_combine(root: Path):
    m = _decided(root, "decide.review_floor=0.01", "decide.review_ceiling=0.5")
    path = next(p for p in m.other_review_paths if p.review_ceiling == 0.3)
    assert path.steps, "the synthetic validation needs review steps at ceiling 0.3"
    flag = {lb: m.thresholds[lb].flag for lb in LABELS}
    cheapest = min(s.cost_per_gain for s in path.steps)
    budget = cheapest / 2 if cheapest > 0 else 1e-9
    both = with_review_settings(m, budget=budget, ceiling=0.3)
    assert both.thresholds == thresholds_for_budget(flag, path, budget)
    assert both.review_path is not None and both.review_path.budget == budget
    assert both.thresholds != with_review_settings(m, ceiling=0.3).thresholds
    # A trained budget stays when only the ceiling changes.
    trained = _decided(
        root,
        "decide.review_floor=0.01",
        "decide.review_ceiling=0.5",
        f"decide.review_budget={budget}",
    )
    kept = with_review_settings(trained, ceiling=0.3)
    assert kept.review_path is not None and kept.review_path.budget == budget
    assert kept.thresholds == thresholds_for_budget(flag, path, budget)
    lifted = with_review_settings(trained, budget=math.inf, ceiling=0.3)
    assert lifted.thresholds == thresholds_for_budget(flag, path)


def test_a_ceiling_the_model_does_not_store_is_refused(root: Path):
    m = _decided(root, "decide.review_floor=0.05", "decide.review_ceiling=0.2")
    with pytest.raises(
        DualscreenError, match=r"ceilings 0\.075, 0\.15, 0\.2, 0\.3, 0\.5, 1, not 0\.25"
    ):
        with_review_settings(m, ceiling=0.25)
    # Ceilings at or below the floor are not searched, and setting one is no error in training.
    high_floor = _decided(root, "decide.review_floor=0.16", "decide.review_ceiling=0.2")
    assert review_ceilings(high_floor) == [0.2, 0.3, 0.5, 1.0]
    # A model from before the field stores only its own ceiling.
    old = m.model_copy(update={"other_review_paths": []})
    assert review_ceilings(old) == [0.2]
    with pytest.raises(DualscreenError, match="stores review searches at ceilings 0.2,"):
        with_review_settings(old, ceiling=0.3)
    assert with_review_settings(old, ceiling=0.2).thresholds == m.thresholds
