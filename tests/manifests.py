"""A minimal in-memory manifest for unit tests of decisions and thresholds."""

from __future__ import annotations

from serving.contract.artifact import Calibration, DecisionRules, LabelThresholds, Manifest


def identity_manifest(labels: list[str], flag: float = 0.5, review: float = 0.1) -> Manifest:
    """Identity calibration (calibrated logits are the raw logits), one threshold pair for all."""
    return Manifest(
        format_version=1,
        name="t",
        version="1",
        kind="transformer",
        labels=labels,
        taxonomy_version="t",
        calibration=Calibration(a={lb: 1.0 for lb in labels}, b={lb: 0.0 for lb in labels}),
        thresholds={lb: LabelThresholds(flag=flag, review=review) for lb in labels},
        rules=DecisionRules(),
        base_model="t",
        corpus_hash="t",
        git_revision="t",
        created_at="t",
    )
