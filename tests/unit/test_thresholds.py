import math

import numpy as np
import pytest

from serving.contract.decide import thresholds_for_budget
from training.thresholds import (
    NEVER,
    any_label_recall,
    choose_flag_threshold,
    recall_threshold,
    review_search,
)


def choose_thresholds(p, y, labels, target_recall, flag_precision, max_cost_per_gain=math.inf):
    """The pipeline's two steps: the whole search, then the prefix the budget allows."""
    flag, path = review_search(p, y, labels, target_recall, flag_precision)
    return thresholds_for_budget(flag, path, max_cost_per_gain)


def test_flag_threshold_known_answer():
    p = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.3])
    y = np.array([1, 1, 1, 0, 1, 0, 0])
    # top 3 all positive (precision 1.0), top 5: 4/5 = 0.8, top 4: 3/4 = 0.75
    assert choose_flag_threshold(p, y, precision=0.9) == 0.85
    assert choose_flag_threshold(p, y, precision=0.8) == 0.7
    assert choose_flag_threshold(p, y, precision=0.99, min_flags=4) == NEVER


def test_flag_threshold_respects_ties_and_floor():
    p = np.array([0.9, 0.9, 0.4, 0.4])
    y = np.array([1, 0, 1, 1])
    assert choose_flag_threshold(p, y, precision=0.6, min_flags=1) == NEVER  # 0.9 tie: 1/2
    assert choose_flag_threshold(p, y, precision=0.5, min_flags=1) == 0.9


def test_recall_threshold_known_answer():
    p = np.array([0.9, 0.8, 0.2, 0.1, 0.05])
    y = np.array([1, 1, 1, 1, 0])
    assert recall_threshold(p, y, 0.5) == 0.8
    assert recall_threshold(p, y, 0.75) == 0.2
    assert recall_threshold(p, y, 1.0) == 0.1
    assert recall_threshold(p, np.zeros(5), 0.5) == NEVER


def test_choose_thresholds_reaches_target_with_narrowest_band():
    # label 0 separable; label 1 has one hard positive at 0.15.
    p = np.array([[0.95, 0.01], [0.9, 0.02], [0.05, 0.9], [0.02, 0.15], [0.1, 0.1], [0.03, 0.2]])
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]])
    t = choose_thresholds(p, y, ["a", "b"], target_recall=0.75, flag_precision=0.9)
    assert any_label_recall(p, y, np.array([t["a"].review, t["b"].review])) >= 0.75
    assert t["b"].review == pytest.approx(0.9)  # 3 of 4 positives caught without the hard one
    t_all = choose_thresholds(p, y, ["a", "b"], target_recall=1.0, flag_precision=0.9)
    assert t_all["b"].review == pytest.approx(0.15)
    assert t_all["a"].review <= t_all["a"].flag


def test_caught_anyway_counts_toward_recall():
    p = np.array([[0.9], [0.1]])
    y = np.array([[1], [1]])
    assert any_label_recall(p, y, np.array([0.5])) == 0.5
    assert any_label_recall(p, y, np.array([0.5]), np.array([False, True])) == 1.0


def test_review_budget_stops_before_an_expensive_step():
    # Catching the hard positive of label b (0.15) also sends two items without a label (0.2 and
    # 0.17) to review: a cost of 2 per gain. A budget of 1 stops before it; a budget of 2 allows it.
    p = np.array([[0.95, 0.01], [0.9, 0.02], [0.05, 0.9], [0.02, 0.15], [0.1, 0.17], [0.03, 0.2]])
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]])
    tight = choose_thresholds(p, y, ["a", "b"], 1.0, 0.9, max_cost_per_gain=1.0)
    assert tight["b"].review == pytest.approx(0.9)
    loose = choose_thresholds(p, y, ["a", "b"], 1.0, 0.9, max_cost_per_gain=2.0)
    assert loose["b"].review == pytest.approx(0.15)


# The same case as above: label b's hard positive (0.15) costs two items without a label.
_P = np.array([[0.95, 0.01], [0.9, 0.02], [0.05, 0.9], [0.02, 0.15], [0.1, 0.17], [0.03, 0.2]])
_Y = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]])


def test_review_path_records_every_step_with_its_cost():
    # No label reaches 3 flags at precision 0.9, so both flag thresholds are NEVER and the search
    # starts from nothing caught: four steps, the last one (b's hard positive) at a cost of 2.
    flag, path = review_search(_P, _Y, ["a", "b"], target_recall=1.0, flag_precision=0.9)
    assert flag == {"a": NEVER, "b": NEVER}
    assert [(s.label, s.review, s.cost_per_gain) for s in path.steps] == [
        ("a", 0.95, 0.0),
        ("a", 0.9, 0.0),
        ("b", 0.9, 0.0),
        ("b", 0.15, 2.0),
    ]
    assert [s.recall for s in path.steps] == [0.25, 0.5, 0.75, 1.0]
    assert [s.review_rate for s in path.steps] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 1.0])
    assert path.start_recall == 0.0


def test_budget_takes_a_prefix_of_the_path():
    flag, path = review_search(_P, _Y, ["a", "b"], 1.0, 0.9)
    for budget, b_review in ((0.5, 0.9), (1.9, 0.9), (2.0, 0.15), (math.inf, 0.15)):
        t = thresholds_for_budget(flag, path, budget)
        assert t["b"].review == pytest.approx(b_review)


def test_review_floor_keeps_thresholds_above_it():
    _, path = review_search(_P, _Y, ["a", "b"], 1.0, 0.9, review_floor=0.2)
    assert [s.review for s in path.steps] == [0.95, 0.9, 0.9]  # b's 0.15 is under the floor
    assert path.steps[-1].recall == 0.75


def test_flag_precision_per_label():
    col = np.array([0.95, 0.9, 0.85, 0.8, 0.1])
    truth = np.array([1, 1, 1, 0, 0])
    p = np.stack([col, col], axis=1)
    y = np.stack([truth, truth], axis=1)
    flag, _ = review_search(p, y, ["a", "b"], 1.0, {"*": 0.9, "b": 0.7})
    assert flag == {"a": 0.85, "b": 0.8}  # b accepts 3 of 4 flags right


def test_review_ceiling_starts_every_band_there() -> None:
    # Too few items to flag at 90 % precision; without a ceiling, the item at 0.4 for a is cleared
    # once the recall target is met.
    p = np.array([[0.97, 0.0], [0.4, 0.0], [0.3, 0.0], [0.1, 0.0]])
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 0]])
    flag, path = review_search(p, y, ["a", "b"], 0.97, 0.9)
    assert thresholds_for_budget(flag, path)["a"].review == pytest.approx(0.97)
    flag, path = review_search(p, y, ["a", "b"], 0.97, 0.9, review_ceiling=0.35)
    assert path.review_ceiling == 0.35 and path.start_review_rate == 0.5
    t = thresholds_for_budget(flag, path)
    assert t["a"].review == 0.35 and t["a"].flag == flag["a"]
    # Any budget, even the tightest, keeps the ceiling; a high ceiling changes nothing here.
    assert thresholds_for_budget(flag, path, 0.0)["a"].review == 0.35
    assert thresholds_for_budget(flag, path, 0.0)["b"].review == min(flag["b"], 0.35)
    flag, path = review_search(p, y, ["a", "b"], 0.97, 0.9, review_ceiling=0.99)
    assert thresholds_for_budget(flag, path)["a"].review == pytest.approx(0.97)


def test_review_ceiling_counts_in_the_search() -> None:
    # With the ceiling, items above it are caught from the start, so the search needs no step
    # for them and starts from their recall.
    _, plain = review_search(_P, _Y, ["a", "b"], 1.0, 0.9)
    _, capped = review_search(_P, _Y, ["a", "b"], 1.0, 0.9, review_ceiling=0.5)
    assert capped.start_recall >= plain.start_recall
    assert all(s.review < 0.5 for s in capped.steps)
    assert capped.steps[-1].recall == plain.steps[-1].recall


def test_old_review_paths_have_no_ceiling() -> None:
    from serving.contract.artifact import ReviewPath

    path = ReviewPath.model_validate({"steps": [], "budget": None, "review_floor": 0.05})
    assert path.review_ceiling == 1.0
    assert thresholds_for_budget({"a": 0.9}, path)["a"].review == 0.9


def test_review_ceiling_must_be_above_the_floor(root) -> None:
    from serving.contract.errors import ConfigError
    from training.config import load_config

    with pytest.raises(ConfigError, match="review_ceiling"):
        load_config(
            root / "training/configs/smoke.toml",
            ["decide.review_floor=0.3", "decide.review_ceiling=0.2"],
        )
    # The default profile's ceiling is read from its file (not a code default) and lies above
    # its floor.
    import tomllib

    raw = tomllib.loads((root / "training/configs/default.toml").read_text(encoding="utf-8"))
    cfg = load_config(root / "training/configs/default.toml")
    assert cfg.decide.review_ceiling == raw["decide"]["review_ceiling"]
    assert cfg.decide.review_floor < cfg.decide.review_ceiling <= 1.0


def test_training_takes_the_ceiling_from_its_config(root) -> None:
    # The config's decide.review_ceiling reaches the packaged thresholds and review path
    # (training/pipeline.py `_calibrate_and_decide`), for every budget.
    from serving.contract.artifact import Manifest
    from tests.manifests import identity_manifest
    from training.config import load_config
    from training.pipeline import Split, _calibrate_and_decide

    labels = ["a", "b"]
    manifest = identity_manifest(labels, flag=0.5, review=0.5)
    rng = np.random.default_rng(5)
    y = (rng.random((400, 2)) < 0.3).astype(np.int64)
    # Well separated: the recall search alone would leave both review thresholds high.
    logits = np.where(y == 1, rng.normal(4.0, 0.5, y.shape), rng.normal(-4.0, 0.5, y.shape))
    val = Split(rows=[{}] * len(y), texts=["a listing of several words"] * len(y), y=y)

    def decided(*overrides: str) -> Manifest:
        cfg = load_config(root / "training/configs/smoke.toml", list(overrides))
        out, _ = _calibrate_and_decide(cfg, manifest, logits.astype(np.float32), val)
        return out

    plain = decided("decide.review_floor=0.01")
    assert plain.review_path is not None and plain.review_path.review_ceiling == 1.0
    assert all(t.review > 0.2 for t in plain.thresholds.values())
    capped = decided("decide.review_floor=0.01", "decide.review_ceiling=0.2")
    assert capped.review_path is not None and capped.review_path.review_ceiling == 0.2
    assert all(t.review <= 0.2 for t in capped.thresholds.values())
    tight = decided(
        "decide.review_floor=0.01", "decide.review_ceiling=0.2", "decide.review_budget=0.01"
    )
    assert all(t.review <= 0.2 for t in tight.thresholds.values())
