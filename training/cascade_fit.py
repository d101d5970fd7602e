"""The cascade's first stage: the TF-IDF baseline with an any-label router, cut on validation.

`attach_cascade` saves the router model into the transformer's artifact and records its
calibration and clearing cut (`choose_clear_below`) in the manifest; `serving.backends.cascade`
serves it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from training.report import evaluate_sets

if TYPE_CHECKING:
    from training.pipeline import Packaged, Split


def choose_clear_below(
    risk: NDArray[np.floating], positive: NDArray[np.bool_], max_share: float, ceiling: float
) -> float:
    """Highest first-stage risk cut that clears at most `max_share` of items with a label.

    Args:
        risk: first-stage calibrated risk (highest label probability) per item.
        positive: items with any label.
        max_share: most of the positives that may fall under the cut.
        ceiling: the cut never exceeds this.
    """
    pos = np.sort(np.asarray(risk, dtype=np.float64)[np.asarray(positive, dtype=bool)])
    if pos.size == 0:
        return 0.0
    k = int(np.floor(max_share * pos.size))  # positives allowed strictly below the cut
    cut = float(pos[k]) if k < pos.size else float(pos[-1])
    return min(cut, ceiling)


def attach_cascade(
    main: Packaged,
    base: Packaged,
    train: Split,
    val: Split,
    sets: dict[str, tuple[list[str], NDArray[np.int64], list[str]]],
    max_share: float = 0.005,
) -> dict[str, Any]:
    """Add the TF-IDF model, plus an any-label router column, as the cascade's first stage.

    Returns:
        Evaluation figures of the cascade on every evaluation set.
    """
    from serving.backends.cascade import CascadeBackend
    from serving.backends.tfidf import TfidfBackend
    from serving.contract.artifact import CascadeStage
    from training.baseline import save_tfidf, with_any_label_router
    from training.calibrate import fit_platt

    labels = main.manifest.labels
    pipeline = getattr(base.backend, "pipeline")  # noqa: B009 - a TfidfBackend
    save_tfidf(with_any_label_router(pipeline, train.texts, train.y), main.folder, "cascade.skops")
    raw = TfidfBackend(main.folder, main.manifest, "cascade.skops").raw(val.texts)
    positive = np.asarray(val.y.any(axis=1), dtype=bool)
    any_a, any_b = fit_platt(raw[:, len(labels)], positive.astype(int))
    risk = 1.0 / (1.0 + np.exp(-(raw[:, len(labels)] * any_a + any_b)))
    cut = choose_clear_below(risk, positive, max_share, ceiling=1.0)
    cleared = risk < cut
    stage = CascadeStage(
        clear_below=cut,
        model_file="cascade.skops",
        a=dict(base.manifest.calibration.a),
        b=dict(base.manifest.calibration.b),
        max_clear_share_labelled=max_share,
        validation={
            "cleared_share": round(float(cleared.mean()), 4),
            "cleared_share_labelled": round(float(cleared[positive].mean()), 4)
            if positive.any()
            else 0.0,
        },
        router="any_label",
        any_a=any_a,
        any_b=any_b,
    )
    main.manifest = main.manifest.model_copy(update={"cascade": stage})
    cascade = CascadeBackend(main.folder, main.manifest)
    metrics, _ = evaluate_sets(cascade, main.manifest, sets)
    for name, (texts, _, _) in sets.items():
        routed, _, _ = cascade.route(texts)
        metrics[name]["cascade_cleared_share"] = round(float(routed.mean()), 4)
    return metrics
