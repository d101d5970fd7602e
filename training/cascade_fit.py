"""The cascade's first stage: a cheap any-label router, cut on validation.

Two routers, both Platt-scaled on validation and cut there (`choose_clear_below`) so that at most
`max_share` of the labelled validation items are cleared. With `clear_rule = "caught"` the share
counts only the labelled items the transformer itself flags or sends to review: the stage's
recall loss against the transformer, so items the transformer misses anyway do not set the cut.
It clears more but generalises worse (see `CascadeConfig.clear_rule`); "labelled" is the default:

- "tfidf" (`router: any_label`): the TF-IDF baseline with one more logistic regression, on
  "has any label", saved as `cascade.skops`.
- "static" (`router: static`): a static embedding table distilled (model2vec) from the fine-tuned
  transformer (`training.static_distill`), and a logistic regression on the embedding stacked
  with the TF-IDF any-label logit. Both parts are scored out of fold on the training split and a
  two-weight stacker is fitted on those scores, so a router that adds nothing gets little weight
  rather than fitting the TF-IDF part's over-confident training scores. The stack folds into one
  linear function of [embedding, TF-IDF logit], stored with the table in `static.safetensors`.

`attach_cascade` writes the chosen stage into the transformer's artifact and records it in the
manifest; `serving.backends.cascade` serves it. With `first_stage = "auto"` both are fitted and
the one that clears more validation items is kept (its rival's figure stays in
`cascade.validation`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from training.report import evaluate_sets

if TYPE_CHECKING:
    from serving.contract.artifact import CascadeStage
    from training.config import CascadeConfig
    from training.pipeline import Packaged, Split
    from training.static_distill import Distilled


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


def _cut_stage(
    logit: NDArray[np.floating],
    positive: NDArray[np.bool_],
    max_share: float,
    counted: NDArray[np.bool_] | None = None,
    **fields: Any,
) -> CascadeStage:
    """Platt-scale a router's validation logits, cut them, and describe the stage.

    `counted`: the positives the share is counted on (None: all of `positive`).
    """
    from serving.contract.artifact import CascadeStage
    from serving.contract.decide import sigmoid
    from training.calibrate import fit_platt

    any_a, any_b = fit_platt(logit, positive.astype(int))
    risk = sigmoid(np.asarray(logit, dtype=np.float64) * any_a + any_b)
    counted = positive if counted is None else counted
    cut = choose_clear_below(risk, counted, max_share, ceiling=1.0)
    cleared = risk < cut
    validation = {
        "cleared_share": round(float(cleared.mean()), 4),
        "cleared_share_labelled": round(float(cleared[positive].mean()), 4)
        if positive.any()
        else 0.0,
        "cleared_share_caught": round(float(cleared[counted].mean()), 4) if counted.any() else 0.0,
    }
    return CascadeStage(
        clear_below=cut,
        max_clear_share_labelled=max_share,
        validation=validation,
        any_a=any_a,
        any_b=any_b,
        **fields,
    )


def fit_static_router(
    main: Packaged,
    router_pipeline: Any,
    train: Split,
    val: Split,
    val_any: NDArray[np.float32],
    options: CascadeConfig,
    seed: int = 13,
    distilled: Distilled | None = None,
) -> tuple[dict[str, Any], NDArray[np.float64]]:
    """Distil the static table, fit the stacked router, write `static.safetensors`.

    Args:
        main: the transformer artifact (its folder receives the file).
        router_pipeline: the TF-IDF pipeline with the any-label column (`cascade.skops`).
        train: training split (the router is fitted on it).
        val: validation split.
        val_any: the TF-IDF any-label logits of the validation texts.
        options: the cascade config.
        seed: fold shuffling seed.
        distilled: an already distilled table of this artifact (None: distil now).

    Returns:
        The stage's `static` settings (as a dict) and the router's validation logits, read back
        through the serving code.
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from serving.backends.static import ROUTER_BIAS, ROUTER_WEIGHT, StaticRouter
    from training.static_distill import distill_static, encoder_for, save_static

    if distilled is None:
        distilled = distill_static(
            main.folder,
            train.texts + val.texts,
            pca_dims=options.static_pca_dims,
            sif_coefficient=options.static_sif_coefficient,
        )
    y = np.asarray(train.y.any(axis=1), dtype=int)
    folds = StratifiedKFold(
        min(options.static_folds, int(y.sum()), int((1 - y).sum())), shuffle=True, random_state=seed
    )
    embedded = encoder_for(main.folder, distilled.settings, distilled.table).encode(train.texts)
    tfidf_any = clone(router_pipeline.named_steps["classifier"].estimators_[-1])
    features = router_pipeline.named_steps["features"].transform(train.texts)
    tfidf_oof = cross_val_predict(tfidf_any, features, y, cv=folds, method="decision_function")
    static_lr = LogisticRegression(C=options.static_c, max_iter=3000)
    static_oof = cross_val_predict(static_lr, embedded, y, cv=folds, method="decision_function")
    static_lr.fit(embedded, y)
    stack = LogisticRegression(C=1.0, max_iter=1000).fit(
        np.column_stack([static_oof, tfidf_oof]), y
    )
    w_static, w_tfidf = (float(v) for v in stack.coef_[0])
    weight = np.concatenate([w_static * static_lr.coef_[0], [w_tfidf]])
    bias = w_static * float(static_lr.intercept_[0]) + float(stack.intercept_[0])
    save_static(
        main.folder,
        distilled.table,
        {ROUTER_WEIGHT: weight, ROUTER_BIAS: np.array([bias])},
    )
    router = StaticRouter(main.folder, distilled.settings)
    return distilled.settings.model_dump(), router.logit(val.texts, val_any)


def attach_cascade(
    main: Packaged,
    base: Packaged,
    train: Split,
    val: Split,
    sets: dict[str, tuple[list[str], NDArray[np.int64], list[str]]],
    max_share: float = 0.005,
    options: CascadeConfig | None = None,
    distilled: Distilled | None = None,
    val_caught: NDArray[np.bool_] | None = None,
) -> dict[str, Any]:
    """Add the cascade's first stage to the transformer's artifact (see the module docstring).

    Args:
        main: the transformer artifact; its folder and manifest are updated.
        base: the TF-IDF baseline fitted on the same data.
        train: training split.
        val: validation split (calibration and the clearing cut).
        sets: evaluation sets, as `evaluate_sets` takes them.
        max_share: most of the labelled validation items the stage may clear (when `options`
            is None; otherwise `options.max_clear_share_labelled`).
        options: the cascade config (None: the TF-IDF router).
        distilled: an already distilled static table of this artifact, for the static router.
        val_caught: per validation item, whether the transformer flags it or sends it to review
            (needed for `clear_rule = "caught"`; None: the share counts every labelled item).

    Returns:
        Evaluation figures of the cascade on every evaluation set.
    """
    from serving.backends.cascade import CascadeBackend
    from serving.backends.static import STATIC_FILE
    from serving.backends.tfidf import TfidfBackend
    from training.baseline import save_tfidf, with_any_label_router

    first_stage = options.first_stage if options is not None else "tfidf"
    if options is not None:
        max_share = options.max_clear_share_labelled
    labels = main.manifest.labels
    pipeline = getattr(base.backend, "pipeline")  # noqa: B009 - a TfidfBackend
    router_pipeline = with_any_label_router(pipeline, train.texts, train.y)
    save_tfidf(router_pipeline, main.folder, "cascade.skops")
    raw = TfidfBackend(main.folder, main.manifest, "cascade.skops").raw(val.texts)
    positive = np.asarray(val.y.any(axis=1), dtype=bool)
    common = {
        "model_file": "cascade.skops",
        "a": dict(base.manifest.calibration.a),
        "b": dict(base.manifest.calibration.b),
    }
    counted = positive
    rule = options.clear_rule if options is not None else "labelled"
    if rule == "caught" and val_caught is not None:
        counted = positive & np.asarray(val_caught, dtype=bool)
    val_any = raw[:, len(labels)]
    stage = _cut_stage(val_any, positive, max_share, counted, router="any_label", **common)
    if first_stage != "tfidf":
        assert options is not None
        seed = int(main.manifest.config.get("train", {}).get("seed", 13))
        static, logit = fit_static_router(
            main, router_pipeline, train, val, val_any, options, seed, distilled
        )
        static_stage = _cut_stage(
            logit, positive, max_share, counted, router="static", static=static, **common
        )
        tfidf_share = stage.validation["cleared_share"]
        static_share = static_stage.validation["cleared_share"]
        if first_stage == "static" or static_share > tfidf_share:
            stage = static_stage
        else:
            (main.folder / STATIC_FILE).unlink()
        stage.validation.update(
            {"tfidf_cleared_share": tfidf_share, "static_cleared_share": static_share}
        )
    stage = stage.model_copy(
        update={"clear_rule": "caught" if counted is not positive else "labelled"}
    )
    main.manifest = main.manifest.model_copy(update={"cascade": stage})
    cascade = CascadeBackend(main.folder, main.manifest)
    metrics, _ = evaluate_sets(cascade, main.manifest, sets)
    for name, (texts, _, _) in sets.items():
        routed, _, _ = cascade.route(texts)
        metrics[name]["cascade_cleared_share"] = round(float(routed.mean()), 4)
    return metrics
