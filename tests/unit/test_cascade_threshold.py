import numpy as np

from training.cascade_fit import choose_clear_below


def test_clear_below_lets_at_most_the_share_of_positives_under_it():
    risk = np.array([0.001, 0.002, 0.003, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.004, 0.005])
    positive = np.array([0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    # 8 positives; a 12.5 % share allows one strictly below the cut
    cut = choose_clear_below(risk, positive, 0.125, ceiling=1.0)
    assert cut == 0.5
    assert (risk[positive] < cut).sum() == 1
    assert choose_clear_below(risk, positive, 0.0, ceiling=1.0) == 0.002
    assert choose_clear_below(risk, positive, 0.125, ceiling=0.1) == 0.1


def test_no_positives_clears_nothing():
    assert choose_clear_below(np.array([0.1]), np.array([False]), 0.005, 1.0) == 0.0


def test_caught_rule_ignores_positives_the_transformer_misses():
    from training.cascade_fit import _cut_stage

    rng = np.random.default_rng(0)
    # 200 positives with high router logits, 200 negatives with low ones; two positives the
    # router scores lowest of all, and the transformer misses both.
    logit = np.concatenate([rng.normal(3, 1, 200), rng.normal(-3, 1, 200)])
    logit[:2] = -8.0
    positive = np.arange(400) < 200
    caught = positive.copy()
    caught[:2] = False
    common = {"model_file": "cascade.skops", "a": {}, "b": {}}
    labelled = _cut_stage(logit, positive, 0.005, **common)
    faithful = _cut_stage(logit, positive, 0.005, caught, **common)
    # 0.5 % of 200 positives is one item: the two missed positives set the labelled cut alone.
    assert labelled.validation["cleared_share"] <= 0.01
    assert faithful.clear_below > labelled.clear_below
    assert faithful.validation["cleared_share"] > 0.3
    assert faithful.validation["cleared_share_caught"] <= 0.005 + 1e-9
    assert faithful.validation["cleared_share_labelled"] == 0.01  # the two misses only
