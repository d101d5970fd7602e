"""Reviewed labels back into training, end to end on the smoke profile (issue 6).

Enqueue what the smoke model is unsure about, review it in the store, export, retrain with
`data.extra`, and find the new version registered as candidate with the reviewed labels counted
in its manifest and model card. The retrain is cut down (fewer rows, one epoch, no ONNX export)
to keep the test around a minute; everything else is the real pipeline and the real registry.
"""

from __future__ import annotations

import json

import pytest

from serving.contract.listing import Listing
from serving.review.intake import IntakePolicy, enqueue_listings, flag_thresholds
from serving.review.queue import claim_next, submit_review
from serving.review.store import ReviewStore

pytestmark = pytest.mark.slow

# New listings written for this test (not in the corpus), with the label a reviewer would give.
REVIEWED = [
    (
        "rv-1",
        "Heavy-lift hexacopter airframe 960 mm",
        "folding carbon arms, 25 kg payload",
        ["uav"],
    ),
    (
        "rv-2",
        "Fibre optic gyroscope module",
        "bias stability 0.05 deg/h, RS-422",
        ["navigation_avionics"],
    ),
    ("rv-3", "Side-scan sonar towfish 900 kHz", "depth rated 1000 m", ["marine"]),
    ("rv-4", "Cooled MWIR camera core", "InSb 640x512, 15 um", ["sensors_lasers"]),
    ("rv-5", "Ceramic flower pot 30 cm", "glazed, drainage hole", []),
    ("rv-6", "Bamboo cutting board set", "three sizes, oiled", []),
]


def test_reviewed_labels_train_the_next_candidate(
    tmp_path, root, predictor, smoke_run, mlflow_store
):
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from dualscreen.cli import app
    from training.config import load_config
    from training.pipeline import run_training

    url = f"sqlite:///{tmp_path / 'review.db'}"
    store = ReviewStore.open(url)
    listings = [Listing(id=i, title=t, description=d) for i, t, d, _ in REVIEWED]
    m = predictor.manifest
    queued = enqueue_listings(
        store,
        predictor.score(listings),
        IntakePolicy.EVERY,
        "loop-test",
        flag_thresholds=flag_thresholds(m),
        actor="test",
    ).queued
    assert queued == len(REVIEWED)
    truth = {i: labels for i, _, _, labels in REVIEWED}
    for _ in REVIEWED:
        with store.transaction() as session:
            review = claim_next(session, "rita")
            labels = truth[review.item.external_id]
            submit_review(
                session,
                review.item_id,
                review.id,
                review.version,
                "rita",
                labels,
                "controlled" if labels else "not_controlled",
            )
    store.dispose()

    out = tmp_path / "reviewed.jsonl"
    result = CliRunner().invoke(
        app, ["review", "export", "-o", str(out), "--database-url", url], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"]: r["labels"] for r in rows} == truth
    assert all(r["model_version"] == m.version and r["split"] == "train" for r in rows)

    models = tmp_path / "models"
    cfg = load_config(
        root / "training" / "configs" / "smoke.toml",
        [
            f"data.extra=['{out}']",
            "data.max_train_rows=120",
            "data.max_eval_rows=60",
            "train.epochs=1",
            "track.export_onnx=false",
            f"track.output_dir='{models}'",
            f"track.report_dir='{tmp_path / 'reports'}'",
        ],
    )
    run = run_training(cfg, console=None, baseline=False)
    assert run.manifest.training_data["reviewed_labels"] == len(REVIEWED)
    assert run.manifest.training_data["extra_files"] == [str(out)]
    card = (run.folder / "README.md").read_text(encoding="utf-8")
    assert f"{len(REVIEWED)} reviewed labels" in card
    assert run.registered_version is not None
    assert int(run.registered_version) > int(smoke_run.registered_version)
    client = MlflowClient(mlflow_store)
    candidate = client.get_model_version_by_alias(m.name, "candidate")
    assert str(candidate.version) == str(run.registered_version)
