"""The Ray Data engine gives the same output as the local engine (issue 5)."""

from __future__ import annotations

import os
import tempfile

import pytest

from serving.batch.score import ScoreOptions, Scorer
from serving.predictor import Predictor
from tests.batch.test_score import catalog_rows, write_csv

pytestmark = pytest.mark.slow


def test_ray_engine_equals_local_engine(smoke_model, tmp_path):
    """Also under a review ceiling other than the model's: the driver decides with it and the
    actors' int8 guard watches the same thresholds."""
    ray = pytest.importorskip("ray")
    from serving.batch.ray_engine import ray_predictor
    from serving.contract.artifact import verify_artifact
    from serving.contract.decide import review_ceilings

    low = min(review_ceilings(verify_artifact(smoke_model)))
    rows = catalog_rows(120)
    rows[5]["title"] = rows[5]["description"] = ""
    src = write_csv(tmp_path / "in.csv", rows)
    local_out, local_summary = {}, {}
    for ceiling in (None, low):
        local = Predictor.load(smoke_model, threads=1, review_ceiling=ceiling)
        local_out[ceiling] = tmp_path / f"local-{ceiling}.csv"
        local_summary[ceiling] = Scorer(local).score_file(
            ScoreOptions(src, local_out[ceiling], chunk_size=50)
        )
    assert local_summary[None].decisions != local_summary[low].decisions

    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # AF_UNIX socket paths: 107 bytes at most
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=short)
    try:
        for ceiling in (None, low):
            remote = ray_predictor(str(smoke_model), actors=2, review_ceiling=ceiling)
            ray_out = tmp_path / f"ray-{ceiling}.csv"
            summary = Scorer(remote, "ray").score_file(ScoreOptions(src, ray_out, chunk_size=50))
            assert ray_out.read_bytes() == local_out[ceiling].read_bytes()
            assert summary.decisions == local_summary[ceiling].decisions
            assert summary.rejected == local_summary[ceiling].rejected == 1
    finally:
        ray.shutdown()
