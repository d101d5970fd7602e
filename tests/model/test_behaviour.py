"""Behavioural tests (issue 3): invariance, direction and minimum function.

They run on the smoke model in every `make test`; with `-m default_model` (or whenever
models/dualscreen exists) they also run on the default model, with stricter expectations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "models" / "dualscreen"

LISTINGS = [
    {
        "title": "LWIR thermal imaging core 640x512",
        "description": "Uncooled VOx microbolometer.\n12 um pixel pitch.\nNETD < 40 mK.\n30 Hz",
    },
    {
        "title": "Cotton crew-neck T-shirt, pack of 3",
        "description": "100% cotton.\nMachine washable.\nSizes S to XXL.",
    },
    {
        "title": "Survey GNSS receiver, multi-band RTK",
        "description": "1408 channels.\nL1/L2/L5.\nIP67 housing.\n1 cm + 1 ppm RTK accuracy.",
    },
    {
        "title": "Stainless steel kitchen scale 5 kg",
        "description": "Tare function.\nLCD display.\nBatteries included.",
    },
]


def _variants(item: dict[str, str]) -> list[dict[str, str]]:
    lines = item["description"].split("\n")
    return [
        {k: v.upper() for k, v in item.items()},
        {k: v.lower() for k, v in item.items()},
        {"title": item["title"], "description": "<p>" + "<br>".join(lines) + "</p>&nbsp;"},
        {"title": item["title"], "description": "\n".join(reversed(lines))},
    ]


@pytest.fixture(scope="module", params=["smoke", "default"])
def predictor(request, smoke_model):
    if request.param == "default":
        if not (DEFAULT / "manifest.json").exists():
            pytest.skip("models/dualscreen is not trained here (run `make train`)")
        return Predictor.load(DEFAULT)
    return Predictor.load(smoke_model)


# The smoke model's thresholds sit a few points apart at the bottom of the scale (review at 3.7 %
# for one label), so an item within this much of a threshold may change side under a harmless
# rewording; its probabilities must still hold still.
SMOKE_BAND = 0.05


def _near_threshold(predictor, probabilities: dict[str, float], band: float) -> bool:
    for label, p in probabilities.items():
        t = predictor.manifest.thresholds[label]
        if min(abs(p - t.review), abs(p - t.flag)) < band:
            return True
    return False


@pytest.mark.parametrize("item", LISTINGS, ids=lambda i: i["title"][:20])
def test_casing_html_and_line_order_do_not_change_the_decision(predictor, item, request):
    [base] = predictor.predict([item])
    band = SMOKE_BAND if "smoke" in request.node.callspec.id else 0.0
    for variant in _variants(item):
        [pred] = predictor.predict([variant])
        for label, p in base.result.probabilities.items():
            assert abs(pred.result.probabilities[label] - p) < 0.15, (label, variant)
        if band and _near_threshold(predictor, base.result.probabilities, band):
            continue
        assert pred.result.decision == base.result.decision, variant


def test_microbolometer_raises_sensors_lasers(predictor):
    plain = {"title": "OEM module for system integration, compact aluminium housing, USB output"}
    added = {"title": plain["title"] + " 640x512 uncooled VOx microbolometer"}
    [a, b] = predictor.predict([plain, added])
    assert b.result.probabilities["sensors_lasers"] > a.result.probabilities["sensors_lasers"]


def test_plain_t_shirt_is_cleared(predictor, request):
    [pred] = predictor.predict([LISTINGS[1]])
    if "smoke" in request.node.callspec.id:
        # The smoke model (480 training rows) has thresholds from 240 validation rows that sit
        # very low; it must still not flag a T-shirt nor think any label more likely than not.
        assert pred.result.decision != "flag" and pred.result.risk < 0.5, pred.result
    else:
        # Cleared since the 5 % review floor (issue 12); before it, recall-first review thresholds
        # of about 1 % sent it to review.
        assert pred.result.decision == "clear", pred.result.probabilities
