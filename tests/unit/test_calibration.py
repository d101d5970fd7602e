import numpy as np
import pytest

from training.calibrate import (
    apply_calibration,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
)


def test_ece_known_values():
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([0, 1])) == 0.0
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([0, 0])) == pytest.approx(0.9)
    # two bins: 0.2 predicted with 50 % observed, 0.8 predicted with 50 % observed
    p = np.array([0.2, 0.2, 0.8, 0.8])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(p, y) == pytest.approx(0.3)


def test_platt_fixes_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    overconfident = true_logit * 4 + 1.0
    a, b = fit_platt(overconfident, y)
    assert a == pytest.approx(0.25, rel=0.15)
    cal = fit_calibration(overconfident[:, None], y[:, None], ["x"])
    before = expected_calibration_error(1 / (1 + np.exp(-overconfident)), y)
    after = expected_calibration_error(
        apply_calibration(overconfident[:, None], cal, ["x"]), y[:, None]
    )
    assert after < before / 2


def test_platt_falls_back_on_one_class():
    assert fit_platt(np.array([1.0, 2.0]), np.array([0, 0])) == (1.0, 0.0)
