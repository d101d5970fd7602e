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
