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
    ray = pytest.importorskip("ray")
    from serving.batch.ray_engine import ray_predictor

    rows = catalog_rows(120)
    rows[5]["title"] = rows[5]["description"] = ""
    src = write_csv(tmp_path / "in.csv", rows)
    local = Predictor.load(smoke_model, threads=1)
    local_out = tmp_path / "local.csv"
    local_summary = Scorer(local).score_file(ScoreOptions(src, local_out, chunk_size=50))

    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # AF_UNIX socket paths: 107 bytes at most
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=short)
    try:
        remote = ray_predictor(str(smoke_model), actors=2)
        ray_out = tmp_path / "ray.csv"
        ray_summary = Scorer(remote, "ray").score_file(ScoreOptions(src, ray_out, chunk_size=50))
    finally:
        ray.shutdown()
    assert ray_out.read_bytes() == local_out.read_bytes()
    assert ray_summary.decisions == local_summary.decisions
    assert ray_summary.rejected == local_summary.rejected == 1
