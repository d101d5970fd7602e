"""The review budget as a serving setting: recomputed from the stored review path, no retraining."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.batch.score import ScoreOptions, Scorer
from serving.contract.artifact import verify_artifact
from serving.contract.decide import parse_review_budget, thresholds_for_budget, with_review_settings
from serving.contract.errors import DualscreenError, InputError
from serving.contract.readers import ColumnMapping
from serving.predictor import Predictor
from serving.settings import Settings

pytestmark = pytest.mark.slow


def test_parse_review_budget():
    assert parse_review_budget(None) is None
    assert parse_review_budget("default") is None
    assert parse_review_budget(" None ") == math.inf
    assert parse_review_budget("off") == math.inf
    assert parse_review_budget("2.5") == 2.5
    assert parse_review_budget(4) == 4.0
    for bad in ("0", "-1", "cheap", "nan"):
        with pytest.raises(DualscreenError, match="review budget"):
            parse_review_budget(bad)


def test_settings_reject_a_bad_budget():
    assert Settings(mode="development", review_budget="3").review_budget == "3"
    with pytest.raises(ValueError, match="review budget"):
        Settings(mode="development", review_budget="lots")


def test_budget_recomputes_review_thresholds_from_the_path(smoke_model: Path):
    manifest = verify_artifact(smoke_model)
    path = manifest.review_path
    assert path is not None and path.steps, "a trained model stores its review search"
    flag = {lb: manifest.thresholds[lb].flag for lb in manifest.labels}
    # The thresholds the model ships are the path cut at its trained budget.
    trained = thresholds_for_budget(flag, path, path.budget or math.inf)
    assert trained == manifest.thresholds
    assert with_review_settings(manifest, None) is manifest
    costs = sorted({s.cost_per_gain for s in path.steps})
    wide = with_review_settings(manifest, math.inf)
    narrow = with_review_settings(manifest, costs[0] / 2 if costs[0] > 0 else 1e-9)
    for lb in manifest.labels:
        assert wide.thresholds[lb].flag == narrow.thresholds[lb].flag == flag[lb]
        assert wide.thresholds[lb].review <= narrow.thresholds[lb].review
    assert wide.review_path is not None and wide.review_path.budget is None
    # Every step whose cost the budget allows, up to the first it does not, is applied.
    for budget in costs:
        t = with_review_settings(manifest, budget).thresholds
        for step in path.steps:
            if step.cost_per_gain > budget:
                break
            assert t[step.label].review <= step.review


def test_a_lower_budget_sends_fewer_items_to_review(smoke_model: Path, root: Path):
    rows = [json.loads(line) for line in (root / "data/corpus/corpus.jsonl").open()][:600]
    wide = Predictor.load(smoke_model, review_budget=math.inf)
    costs = sorted({s.cost_per_gain for s in wide.manifest.review_path.steps})  # type: ignore[union-attr]
    narrow = Predictor.load(smoke_model, review_budget=costs[0] / 2 if costs[0] > 0 else 1e-9)
    n_wide = sum(p.result.decision != "clear" for p in wide.predict(rows))
    n_narrow = sum(p.result.decision != "clear" for p in narrow.predict(rows))
    assert n_wide >= n_narrow
    assert n_wide > n_narrow or costs == [0.0], "the widest band should catch more items"


def _catalog(tmp_path: Path, odd: str, even: str) -> Path:
    """A 40-row CSV alternating two kinds of title."""
    src = tmp_path / "in.csv"
    with src.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "title"])
        for i in range(40):
            w.writerow([f"r{i}", f"{odd} {i}" if i % 2 else f"{even} {i}"])
    return src


def _score_cli(
    model: Path, src: Path, out: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    dualscreen = str(Path(sys.executable).parent / "dualscreen")
    cmd = [dualscreen, "score", str(src), "--model", str(model), "-o", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})


def _resume_is_refused(first: Predictor, other: Predictor, src: Path, out: Path) -> None:
    """A run interrupted with `first` is not resumed with `other`, and is with `first`."""

    class Interrupted(Exception):
        pass

    def stop_after_first_chunk(done: int, total: int | None) -> None:
        if done:
            raise Interrupted

    mapping = ColumnMapping("id", ("title",), None)
    with pytest.raises(Interrupted):
        Scorer(first).score_file(
            ScoreOptions(input=src, output=out, mapping=mapping, chunk_size=10),
            progress=stop_after_first_chunk,
        )
    resume = ScoreOptions(input=src, output=out, mapping=mapping, chunk_size=10, resume=True)
    with pytest.raises(InputError, match="options or model differ"):
        Scorer(other).score_file(resume)
    Scorer(first).score_file(resume)


def test_score_cli_applies_the_budget_and_resume_refuses_another(smoke_model: Path, tmp_path: Path):
    src = _catalog(tmp_path, "IC FPGA I/O 484FBGA", "Cotton T-shirt")
    bad = _score_cli(smoke_model, src, tmp_path / "x.csv", "--review-budget", "cheap")
    assert bad.returncode == 2 and "review budget 'cheap'" in bad.stderr
    assert "Traceback" not in bad.stderr
    # The environment variable reaches `score` as the option does.
    env = {"DUALSCREEN_REVIEW_BUDGET": "pricey"}
    bad_env = _score_cli(smoke_model, src, tmp_path / "y.csv", env=env)
    assert bad_env.returncode == 2 and "review budget 'pricey'" in bad_env.stderr
    ok = _score_cli(smoke_model, src, tmp_path / "o.csv", "--review-budget", "none")
    assert ok.returncode == 0, ok.stderr
    _resume_is_refused(
        Predictor.load(smoke_model, review_budget=math.inf),
        Predictor.load(smoke_model, review_budget=0.5),
        src,
        tmp_path / "r.csv",
    )


def test_the_trained_model_stores_other_ceilings_and_its_card_shows_them(smoke_model: Path):
    from serving.contract.decide import review_ceilings

    manifest = verify_artifact(smoke_model)
    assert manifest.review_path is not None
    ceilings = review_ceilings(manifest)
    assert manifest.review_path.review_ceiling in ceilings and len(ceilings) >= 5
    card = (smoke_model / "README.md").read_text(encoding="utf-8")
    table = card.split("### Review ceilings", 1)[1]
    for ceiling in ceilings:
        assert f"\n| {ceiling:g}" in table


def test_score_cli_applies_the_ceiling_and_resume_refuses_another(
    smoke_model: Path, tmp_path: Path
):
    from serving.contract.decide import review_ceilings

    manifest = verify_artifact(smoke_model)
    low = min(review_ceilings(manifest))
    src = _catalog(tmp_path, "GNSS receiver module", "Wool scarf")
    bad = _score_cli(smoke_model, src, tmp_path / "x.csv", "--review-ceiling", "0.4321")
    assert bad.returncode == 2 and "not 0.4321" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    env = {"DUALSCREEN_REVIEW_CEILING": "0.4321"}
    bad_env = _score_cli(smoke_model, src, tmp_path / "y.csv", env=env)
    assert bad_env.returncode == 2 and "not 0.4321" in bad_env.stderr, bad_env.stderr
    ok = _score_cli(smoke_model, src, tmp_path / "o.csv", "--review-ceiling", str(low))
    assert ok.returncode == 0, ok.stderr
    with (tmp_path / "o.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    # No label at or above the chosen ceiling is cleared (rounded in the file: a hair's margin).
    for row in rows:
        if row["decision"] == "clear":
            assert all(float(row[f"p_{lb}"]) <= low + 1e-4 for lb in manifest.labels), row
    _resume_is_refused(
        Predictor.load(smoke_model, review_ceiling=low),
        Predictor.load(smoke_model),
        src,
        tmp_path / "r.csv",
    )
