"""prepare -> run -> finish: merging requests' inputs into one backend run changes no result
(the API's micro-batcher and the Ray engine rely on it; issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.contract.listing import Listing
from serving.predictor import Predictor

FIRST = [
    Listing(id="a", title="LWIR thermal imaging core 640x512", description="uncooled VOx"),
    Listing(id="b", title="Cotton crew-neck T-shirt, pack of 3"),
]
SECOND = [
    Listing(id="c", title="GNSS anti-jam antenna", attributes={"elements": 4, "crpa": True}),
    Listing(id="d", title="5-axis CNC machining centre", brand="Acme", seller_category="tools"),
    Listing(id="e", title="gadget"),
]


@pytest.mark.parametrize(
    ("which", "backend"),
    [("smoke_model", None), ("smoke_model", "onnx"), ("tfidf_model", None)],
)
def test_merged_run_equals_separate_scoring(request, which, backend):
    predictor = Predictor.load(request.getfixturevalue(which), backend=backend, threads=1)
    first, second = predictor.prepare(FIRST), predictor.prepare(SECOND)
    logits = predictor.run(first.inputs + second.inputs)
    merged = predictor.finish(first, logits[: len(first)])
    merged += predictor.finish(second, logits[len(first) :])
    alone = predictor.score(FIRST) + predictor.score(SECOND)
    assert [s.listing.id for s in merged] == ["a", "b", "c", "d", "e"]
    for m, a in zip(merged, alone, strict=True):
        assert (m.decision, m.label_decisions, m.reasons, m.text) == (
            a.decision,
            a.label_decisions,
            a.reasons,
            a.text,
        )
        # int8 and TF-IDF score each item on its own; fp32 pads a batch: float rounding only.
        assert np.allclose(
            list(m.probabilities.values()), list(a.probabilities.values()), atol=1e-5
        )
        assert m.model_version == predictor.manifest.version
    assert predictor.score(FIRST[:1])[0].probabilities == pytest.approx(
        dict(zip(predictor.labels, predictor.probabilities([merged[0].text])[0], strict=True))
    )
