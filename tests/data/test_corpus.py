"""The committed corpus: validation, statistics the foundation issue asks for, leakage checks."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from collections import Counter

import pytest

from training import paths
from training.corpus import (
    build_corpus,
    corpus_stats,
    heldout_problems,
    holdout_overlap,
    read_jsonl,
    read_split_pins,
    split_pins,
    validate_corpus,
    write_split_pins,
)


@pytest.fixture(scope="module")
def rows(root):
    return read_jsonl(root / "data" / "corpus" / "corpus.jsonl")


def test_committed_corpus_validates(rows, taxonomy):
    problems = validate_corpus(rows, taxonomy)
    assert problems == [], [p.message for p in problems[:10]]


def test_committed_corpus_copies_no_evaluation_only_row(rows):
    held_dir = paths.realworld_dir()
    if held_dir is None:
        pytest.skip("no ../shared/realworld here")
    held = {p.name: read_jsonl(p) for p in sorted(held_dir.glob("*.jsonl"))}
    problems = holdout_overlap(rows, held)
    assert problems == [], [p.message for p in problems[:10]]


def test_committed_heldout_files_share_no_kind_or_text_with_the_corpus(rows, taxonomy):
    files = paths.heldout_files()
    assert files, "data/heldout/ holds the fresh held-out evaluation set"
    held = {p.name: read_jsonl(p) for p in files}
    assert sum(len(v) for v in held.values()) >= 150
    problems = heldout_problems(rows, held, taxonomy)
    assert problems == [], [p.message for p in problems[:10]]


def test_heldout_check_finds_a_shared_kind_a_copy_a_bad_label_and_a_repeated_id(rows, taxonomy):
    base = {k: rows[0][k] for k in ("title", "description", "brand", "seller_category")}
    fresh = {
        **base,
        "id": "fresh-1",
        "title": "Quorvane tidal vortex harvester unit, 40 kW grid tie",
        "labels": [],
        "product_type": "tidal vortex harvester",
        "hard_negative": False,
        "lang": "en",
    }
    shared_kind = {
        **fresh,
        "id": "fresh-2",
        "title": "other text entirely, 12 units",
        "product_type": rows[5]["product_type"].upper(),
    }
    copy_row = {**rows[9], "id": "fresh-3", "product_type": "never seen kind"}
    bad_label = {**fresh, "id": "fresh-4", "title": "x y z", "labels": ["weapons"]}
    repeated = {**fresh, "title": "Quorvane tidal harvester spare rotor blade"}
    assert heldout_problems(rows, {"f.jsonl": [fresh]}, taxonomy) == []
    found = heldout_problems(
        rows, {"f.jsonl": [fresh, shared_kind, copy_row, bad_label, repeated]}, taxonomy
    )
    text = "\n".join(p.message for p in found)
    assert "f.jsonl line 2: product type" in text
    assert "fresh-3" in text and "evaluation text must not reach the corpus" in text
    assert "f.jsonl line 4" in text and "weapons" in text
    assert "held-out id 'fresh-1' appears 2 times" in text
    assert all(p.kind == "heldout" for p in found)


def test_corpus_meets_the_coverage_targets(rows, taxonomy):
    stats = corpus_stats(rows, taxonomy)
    assert stats["rows"] >= 4000
    for label, counts in stats["per_label"].items():
        assert counts["total"] >= 200, label
        assert min(counts["train"], counts["val"], counts["test"]) > 0, label
        assert stats["product_types_per_label"][label] >= 40, label
    assert stats["negative_share"] >= 0.45
    assert stats["hard_negative_share_of_negatives"] >= 0.40
    assert stats["multi_label_share_of_positives"] >= 0.08
    assert stats["cjk_share"] >= 0.05
    assert stats["generated_share"] <= 0.5
    split = stats["per_split"]
    assert 0.75 <= split["train"] / stats["rows"] <= 0.85
    assert stats["words"]["p0"] >= 1 and stats["words"]["p100"] <= 400


def test_generated_rows_never_the_only_source_of_a_product_type(rows):
    written = {r["product_type"] for r in rows if r["origin"] == "written"}
    generated = {r["product_type"] for r in rows if r["origin"] == "generated"}
    assert generated <= written


def test_build_is_deterministic_and_matches_the_committed_file(root, rows, taxonomy):
    built = build_corpus(root / "data" / "corpus", taxonomy)
    committed = [{k: v for k, v in r.items() if k != "_where"} for r in rows]
    assert built == committed


def _clean(rows):
    return [{k: v for k, v in r.items() if k != "_where"} for r in rows]


def test_planted_near_duplicate_across_splits_is_caught(rows, taxonomy):
    data = _clean(rows[:300])
    train = next(r for r in data if r["split"] == "train" and len(r["description"]) > 60)
    twin = copy.deepcopy(train)
    twin["id"] = "planted-twin"
    twin["split"] = "test"
    twin["description"] = twin["description"].replace(" ", "  ", 1) + " New."
    data.append(twin)
    problems = validate_corpus(data, taxonomy)
    leaks = [p for p in problems if p.kind == "leak_near"]
    assert any("planted-twin" in p.message and train["id"] in p.message for p in leaks)


def test_exact_duplicate_across_splits_duplicate_id_unknown_label_empty_text(rows, taxonomy):
    data = _clean(rows[:50])
    exact = dict(data[0], id="copy-1", split="val" if data[0]["split"] != "val" else "test")
    dup_id = dict(data[1], title=data[1]["title"] + " variant zz", id=data[2]["id"])
    unknown = dict(data[3], id="bad-label", labels=["drones"], title="unique title qq")
    empty = dict(data[4], id="empty", title="", description="", brand="", seller_category="")
    missing = {k: v for k, v in data[5].items() if k != "split"} | {"id": "no-split"}
    problems = validate_corpus(data + [exact, dup_id, unknown, empty, missing], taxonomy)
    kinds = {p.kind for p in problems}
    assert {"leak_exact", "duplicate_id", "label", "empty", "schema"} <= kinds
    text = " ".join(p.message for p in problems)
    assert "'drones'" in text and "copy-1" in text and "no-split" in text


def test_cli_validate_fails_on_a_leaky_file_and_stats_json(root, rows, tmp_path):
    data = _clean(rows[:40])
    data.append(dict(data[0], id="leak", split="test" if data[0]["split"] != "test" else "val"))
    path = tmp_path / "leaky.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    bad = subprocess.run(
        [sys.executable, "-m", "dualscreen.cli", "data", "validate", "--corpus", str(path)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert bad.returncode == 1 and "leak_exact" in bad.stderr
    stats = subprocess.run(
        [sys.executable, "-m", "dualscreen.cli", "data", "stats", "--json"],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert stats.returncode == 0
    parsed = json.loads(stats.stdout)
    assert parsed["rows"] == len(rows) and "hard_negative_share_of_negatives" in parsed


def test_cli_validate_fails_on_a_copy_of_an_evaluation_only_row(root, rows, tmp_path):
    data = _clean(rows[:40])
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in data))
    source = next(r for r in data if len(r["title"]) > 30)
    copied = {k: source[k] for k in ("title", "description", "brand", "seller_category")}
    copied |= {"id": "rw-1", "title": source["title"] + " (refurb)", "labels": []}
    other = {"id": "rw-2", "title": "stainless steel garlic press", "description": "", "labels": []}
    held = tmp_path / "held"
    held.mkdir()

    def validate(*held_rows):
        (held / "retail.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_rows))
        return subprocess.run(
            [sys.executable, "-m", "dualscreen.cli", "data", "validate", "--corpus", str(corpus)]
            + ["--holdout", str(held)],
            capture_output=True,
            text=True,
            cwd=root,
        )

    clean = validate(other)
    assert clean.returncode == 0, clean.stderr
    bad = validate(other, copied)
    assert bad.returncode == 1
    assert "holdout_near" in bad.stderr and source["id"] in bad.stderr and "rw-1" in bad.stderr


def _written(path, kinds):
    """A written/ file with two rows of made-up words per product type (no near-duplicates)."""
    rng = random.Random(path.stem)
    lines = []
    for n, kind in enumerate(kinds):
        for k in range(2):
            words = " ".join(
                "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(3))
                for _ in range(5)
            )
            lines.append(
                {
                    "id": f"{path.stem}-{n}-{k}",
                    "title": f"{kind} {words}",
                    "description": "",
                    "brand": "",
                    "seller_category": "",
                    "labels": [],
                    "product_type": kind,
                    "hard_negative": False,
                    "lang": "en",
                    "style": "marketplace",
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_adding_product_types_moves_no_pinned_one_and_deals_the_new(root, taxonomy, tmp_path):
    src = tmp_path / "corpus"
    (src / "written").mkdir(parents=True)
    (src / "fragments").mkdir()
    _written(src / "written" / "a.jsonl", [f"gadget type {n}" for n in range(40)])
    first = build_corpus(src, taxonomy)
    assert {r["split"] for r in first} == {"train", "val", "test"}
    write_split_pins(src, split_pins(first))
    assert read_split_pins(src) == split_pins(first)
    _written(src / "written" / "b.jsonl", [f"sprocket {n}" for n in range(30)])

    def splits(rows):
        return {r["id"]: r["split"] for r in rows}

    kept = build_corpus(src, taxonomy)  # reads splits.json
    old = splits(first)
    assert {i: s for i, s in splits(kept).items() if i in old} == old
    new = Counter(r["split"] for r in kept if r["product_type"].startswith("sprocket"))
    assert new["train"] > new["val"] > 0 and new["test"] > 0
    # Without the pins, the same addition turns existing product types over.
    dealt = splits(build_corpus(src, taxonomy, pins={}))
    assert any(dealt[i] != s for i, s in old.items())


def test_a_split_pin_file_with_an_unknown_split_is_refused(tmp_path):
    (tmp_path / "splits.json").write_text(json.dumps({"product_types": {"x": "holdout"}}))
    with pytest.raises(ValueError, match="holdout"):
        read_split_pins(tmp_path)
