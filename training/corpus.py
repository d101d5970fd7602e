"""Build, validate and describe the labelled corpus.

Sources are hand-written listings (`data/corpus/written/*.jsonl`) and fragment files
(`data/corpus/fragments/*.json`) that a seeded generator combines into further listings. `build`
writes `data/corpus/corpus.jsonl` with ids and splits; `validate` checks any corpus file; `stats`
describes it.

Splits are assigned by group, never by row: a group is a product type, merged with every other
product type that has a near-duplicate text, so near-duplicates cannot straddle splits. Within each
stratum (first label, or hard/plain negative) groups are ordered by a hash of their name and dealt
8/1/1 to train/val/test, which keeps every label present in every split.

Splits are frozen: `splits.json` beside `written/` records every product type's split, and a
rebuild keeps it, so adding rows never moves existing product types between splits (dealing
afresh would shift every later group in hash order and turn the test split over). Only product
types new to the file are dealt, continuing each stratum's 8/1/1 cycle.

Compromise: near-duplicate detection uses cosine similarity of character 3-5-gram TF-IDF vectors,
which catches reworded copies and template siblings but not paraphrases with new vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.contract.errors import TaxonomyError
from serving.contract.taxonomy import Taxonomy
from serving.contract.text import build_text

SPLITS = ("train", "val", "test")
REQUIRED = {
    "id": str,
    "title": str,
    "description": str,
    "brand": str,
    "seller_category": str,
    "labels": list,
    "split": str,
}
SOURCE_REQUIRED = {
    "title": str,
    "description": str,
    "brand": str,
    "seller_category": str,
    "labels": list,
    "product_type": str,
    "hard_negative": bool,
    "lang": str,
}
LANGS = ("en", "zh", "ja", "mixed")
NEAR_DUP_THRESHOLD = 0.9
GENERATED_CAP = 0.5
log = logging.getLogger(__name__)
_DEAL = ("train",) * 8 + ("val", "test")
SPLIT_PINS = "splits.json"


@dataclass
class Problem:
    """One validation finding."""

    kind: str
    message: str


# ---------------------------------------------------------------- reading


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file strictly (any bad line raises ValueError naming the line)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: malformed JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")
            row["_where"] = f"{path.name}:{number}"
            rows.append(row)
    return rows


def text_of(row: dict[str, Any]) -> str:
    """The model input text of a corpus row (the shared text builder)."""
    return build_text(
        row.get("title", ""),
        row.get("description", ""),
        row.get("brand", ""),
        row.get("seller_category", ""),
    ).text


def detect_lang(text: str) -> str:
    """Guess en/zh/ja/mixed from the script of the letters in `text`."""
    kana = len(re.findall(r"[\u3040-\u30ff]", text))
    han = len(re.findall(r"[\u4e00-\u9fff]", text))
    latin = len(re.findall(r"[A-Za-z]", text))
    cjk = kana + han
    if cjk == 0:
        return "en"
    lang = "ja" if kana else "zh"
    return lang if cjk * 2 >= latin else "mixed"


# ---------------------------------------------------------------- generation


def _spec_join(specs: list[str], rng: random.Random, style: str) -> str:
    if style == "distributor":
        return " ".join(s.upper() for s in specs)
    if style == "datasheet":
        return "; ".join(specs)
    if style == "b2b":
        return " ".join(f"- {s}" for s in specs)
    return ", ".join(specs)


def generate_rows(product: dict[str, Any], count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Combine one fragment product's names, brands, specs and phrases into `count` listings."""
    rows: list[dict[str, Any]] = []
    names = product.get("names") or [product["product_type"]]
    brands = product.get("brands") or [""]
    specs = list(product.get("specs") or [])
    phrases = list(product.get("phrases") or [])
    cats = product.get("seller_categories") or [""]
    styles = ["marketplace", "distributor", "b2b", "datasheet"]
    seen: set[str] = set()
    attempts = 0
    while len(rows) < count and attempts < count * 20:
        attempts += 1
        style = rng.choice(styles)
        brand = rng.choice(brands)
        name = rng.choice(names).replace("{brand}", brand).strip()
        k = min(len(specs), rng.randint(1, 5)) if specs else 0
        chosen = rng.sample(specs, k) if k else []
        phrase = rng.choice(phrases) if phrases and style != "distributor" else ""
        if style == "distributor":
            title = name.upper() if rng.random() < 0.5 else name
            description = _spec_join(chosen, rng, style)
        elif style == "b2b":
            title = name
            description = " ".join(
                p for p in [phrase, "Specifications:", _spec_join(chosen, rng, style)] if p
            )
        elif style == "datasheet":
            title = name
            description = _spec_join(chosen, rng, style) + (f". {phrase}" if phrase else "")
        else:
            title = f"{name} {chosen[0]}" if chosen and rng.random() < 0.5 else name
            description = " ".join(p for p in [phrase, _spec_join(chosen[1:], rng, style)] if p)
        key = (title + "|" + description).lower()
        if key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "title": title,
                "description": description.strip(),
                "brand": brand if rng.random() < 0.7 else "",
                "seller_category": rng.choice(cats) if rng.random() < 0.8 else "",
                "labels": list(product.get("labels", [])),
                "product_type": product["product_type"],
                "hard_negative": bool(product.get("hard_negative", False)),
                "lang": product.get("lang", "en"),
                "style": style,
                "note": "",
                "origin": "generated",
            }
        )
    return rows


# ---------------------------------------------------------------- building


def _group_key(row: dict[str, Any]) -> str:
    return re.sub(r"\s+", " ", str(row["product_type"]).strip().lower())


def _stratum(row: dict[str, Any]) -> str:
    if row["labels"]:
        return str(sorted(row["labels"])[0])
    return "hard_negative" if row.get("hard_negative") else "negative"


def near_duplicate_pairs(
    texts_a: Sequence[str],
    texts_b: Sequence[str] | None = None,
    threshold: float = NEAR_DUP_THRESHOLD,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) whose character 3-5-gram TF-IDF cosine is at least `threshold`.

    With one list, pairs within it (i < j); with two, pairs across them.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    all_texts = list(texts_a) + list(texts_b or [])
    if not all_texts:
        return []
    vec = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), lowercase=True, sublinear_tf=True, min_df=1
    )
    matrix = vec.fit_transform(all_texts)
    a = matrix[: len(texts_a)]
    b = matrix[len(texts_a) :] if texts_b is not None else a
    pairs: list[tuple[int, int, float]] = []
    step = 512
    for start in range(0, a.shape[0], step):
        sims = (a[start : start + step] @ b.T).toarray()
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows, cols, strict=True):
            i = start + int(r)
            j = int(c)
            if texts_b is None and j <= i:
                continue
            pairs.append((i, j, float(sims[r, c])))
    return pairs


def build_corpus(
    source_dir: Path,
    taxonomy: Taxonomy,
    seed: int = 13,
    per_product: int = 4,
    pins: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Build the corpus rows (with ids and splits) from written and fragment sources.

    Args:
        source_dir: `data/corpus`, holding `written/` and `fragments/`.
        taxonomy: labels are checked against it.
        seed: seeds the generator and nothing else.
        per_product: listings generated per fragment product (capped so generated rows stay at
            most half of the corpus).
        pins: product type -> split to keep; None reads `source_dir/splits.json` when present,
            {} deals every group afresh.

    Returns:
        Corpus rows in a stable order.
    """
    written: list[dict[str, Any]] = []
    for path in sorted((source_dir / "written").glob("*.jsonl")):
        for row in read_jsonl(path):
            _check_source_row(row, taxonomy)
            row["origin"] = "written"
            written.append(row)
    products: list[tuple[str, dict[str, Any]]] = []
    for path in sorted((source_dir / "fragments").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for n, product in enumerate(data.get("products", []), start=1):
            taxonomy.check_labels(product.get("labels", []), where=f"{path.name}")
            products.append((f"{path.stem}-g-{n:03d}", product))
    written_types = Counter(_group_key(r) for r in written)
    rng = random.Random(seed)
    generated: list[dict[str, Any]] = []
    budget = int(len(written) * GENERATED_CAP / (1 - GENERATED_CAP))
    for area, product in products:  # area: '<file>-g-<product number>'
        if written_types[_group_key(product)] == 0:
            continue  # generated rows are never the only source of a product type
        rows = generate_rows(product, per_product, rng)
        for i, row in enumerate(rows):
            row["id"] = f"{area}-{i + 1}"
        generated.extend(rows)
    if len(generated) > budget:
        rng.shuffle(generated)
        generated = sorted(generated[:budget], key=lambda r: r["id"])
    rows = written + generated
    texts = [text_of(r) for r in rows]
    keep = _drop_exact_duplicates(rows, texts)
    rows = [rows[i] for i in keep]
    texts = [texts[i] for i in keep]
    for row in rows:
        row.pop("_where", None)
        row["lang"] = row.get("lang") or detect_lang(text_of(row))
    if pins is None:
        pins = read_split_pins(source_dir)
    _assign_splits(rows, texts, pins)
    ordered = sorted(rows, key=lambda r: ({"train": 0, "val": 1, "test": 2}[r["split"]], r["id"]))
    return [_ordered_fields(r) for r in ordered]


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _ordered_fields(row: dict[str, Any]) -> dict[str, Any]:
    keys = [
        "id",
        "title",
        "description",
        "brand",
        "seller_category",
        "labels",
        "split",
        "product_type",
        "hard_negative",
        "lang",
        "style",
        "origin",
        "note",
    ]
    return {k: row.get(k, "") for k in keys}


def _check_source_row(row: dict[str, Any], taxonomy: Taxonomy) -> None:
    where = row.get("_where", "?")
    for key, typ in SOURCE_REQUIRED.items():
        if not isinstance(row.get(key), typ):
            raise ValueError(f"{where}: field {key!r} missing or not {typ.__name__}")
    taxonomy.check_labels(row["labels"], where=where)
    if row["hard_negative"] and row["labels"]:
        raise ValueError(f"{where}: hard_negative is true but the row has labels")


def _drop_exact_duplicates(rows: list[dict[str, Any]], texts: list[str]) -> list[int]:
    seen: dict[str, int] = {}
    keep = []
    for i, text in enumerate(texts):
        key = text.lower()
        if key in seen:
            continue
        seen[key] = i
        keep.append(i)
    return keep


def read_split_pins(source_dir: Path) -> dict[str, str]:
    """The frozen product type -> split map (`splits.json`), or {} when there is none."""
    path = source_dir / SPLIT_PINS
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    pins = data.get("product_types", {})
    bad = {k: v for k, v in pins.items() if v not in SPLITS}
    if bad:
        raise ValueError(f"{path}: splits must be one of {', '.join(SPLITS)}: {bad}")
    return {str(k): str(v) for k, v in pins.items()}


def split_pins(rows: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Every product type's split in built rows (the content of `splits.json`)."""
    return dict(sorted({_group_key(r): r["split"] for r in rows}.items()))


def write_split_pins(source_dir: Path, pins: dict[str, str]) -> None:
    """Write `splits.json`, one product type per line (a diff shows each one added)."""
    data = {
        "about": "product type -> split, kept by dualscreen data build (training/corpus.py)",
        "product_types": pins,
    }
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    (source_dir / SPLIT_PINS).write_text(text, encoding="utf-8")


def _assign_splits(rows: list[dict[str, Any]], texts: list[str], pins: dict[str, str]) -> None:
    groups = [_group_key(r) for r in rows]
    parent: dict[str, str] = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for i, j, _ in near_duplicate_pairs(texts, threshold=NEAR_DUP_THRESHOLD - 0.1):
        a, b = find(groups[i]), find(groups[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[find(g)].append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for root, idx in members.items():
        strata[Counter(_stratum(rows[i]) for i in idx).most_common(1)[0][0]].append(root)
    for stratum, roots in sorted(strata.items()):
        roots.sort(key=_short_hash)
        fresh = []
        for root in roots:
            # A group keeps its pinned split; a new near-duplicate link between groups pinned to
            # different splits keeps the split holding most of its rows (near-duplicates never
            # straddle splits).
            pinned = Counter(pins[groups[i]] for i in members[root] if groups[i] in pins)
            if not pinned:
                fresh.append(root)
                continue
            split = min(pinned.items(), key=lambda kv: (-kv[1], SPLITS.index(kv[0])))[0]
            if len(pinned) > 1:
                log.warning(
                    "stratum %s: near-duplicates join product types pinned to %s; all go to %s",
                    stratum,
                    dict(pinned),
                    split,
                )
            for i in members[root]:
                rows[i]["split"] = split
        offset = len(roots) - len(fresh)
        for n, root in enumerate(fresh, start=offset):
            split = _DEAL[n % len(_DEAL)]
            for i in members[root]:
                rows[i]["split"] = split


def corpus_hash(path: Path) -> str:
    """sha256 of a corpus file (travels into every manifest)."""
    digest = hashlib.sha256(path.read_bytes())
    return digest.hexdigest()


def write_corpus(rows: Iterable[dict[str, Any]], path: Path) -> None:
    """Write corpus rows as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- validation


def validate_corpus(rows: list[dict[str, Any]], taxonomy: Taxonomy) -> list[Problem]:
    """Return every problem found: schema, labels, ids, empty and duplicate texts, leakage."""
    problems: list[Problem] = []
    ids: Counter[str] = Counter()
    good: list[int] = []
    for n, row in enumerate(rows):
        where = row.get("_where") or f"row {n + 1}"
        if isinstance(row.get("id"), str):
            where += f" (id {row['id']})"
        bad = False
        for key, typ in REQUIRED.items():
            if not isinstance(row.get(key), typ):
                problems.append(
                    Problem("schema", f"{where}: field {key!r} missing or not {typ.__name__}")
                )
                bad = True
        if bad:
            continue
        if row["split"] not in SPLITS:
            problems.append(
                Problem(
                    "schema", f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}"
                )
            )
            continue
        try:
            taxonomy.check_labels(row["labels"], where=where)
        except TaxonomyError as exc:
            problems.append(Problem("label", str(exc)))
            continue
        if len(set(row["labels"])) != len(row["labels"]):
            problems.append(Problem("label", f"{where}: repeated label in {row['labels']}"))
        ids[row["id"]] += 1
        if not text_of(row).strip():
            problems.append(Problem("empty", f"{where}: id {row['id']} has no text"))
            continue
        good.append(n)
    for dup, count in ids.items():
        if count > 1:
            problems.append(Problem("duplicate_id", f"id {dup!r} appears {count} times"))
    texts = {n: text_of(rows[n]) for n in good}
    by_text: dict[str, list[int]] = defaultdict(list)
    for n in good:
        by_text[texts[n].lower()].append(n)
    for same in by_text.values():
        if len(same) > 1:
            splits = {rows[n]["split"] for n in same}
            kind = "leak_exact" if len(splits) > 1 else "duplicate_text"
            problems.append(
                Problem(
                    kind,
                    "identical text in ids "
                    + ", ".join(f"{rows[n]['id']} ({rows[n]['split']})" for n in same),
                )
            )
    by_split = {s: [n for n in good if rows[n]["split"] == s] for s in SPLITS}
    for left, right in (("train", "val"), ("train", "test"), ("val", "test")):
        a, b = by_split[left], by_split[right]
        for i, j, sim in near_duplicate_pairs([texts[n] for n in a], [texts[n] for n in b]):
            ra, rb = rows[a[i]], rows[b[j]]
            if texts[a[i]].lower() == texts[b[j]].lower():
                continue  # already reported as leak_exact
            problems.append(
                Problem(
                    "leak_near",
                    f"near-duplicate across splits (cosine {sim:.2f}): "
                    f"{ra['id']} ({left}) ~ {rb['id']} ({right})",
                )
            )
    return problems


def holdout_overlap(
    rows: list[dict[str, Any]], holdout: dict[str, list[dict[str, Any]]]
) -> list[Problem]:
    """Corpus rows that are near-duplicates of an evaluation-only file's rows ("holdout_near").

    The real-world files must never reach the corpus, copied or paraphrased; this catches a copy
    (the same character 3-5-gram cosine as the split-leakage check), not a paraphrase.
    """
    problems: list[Problem] = []
    texts = [text_of(r) for r in rows]
    for name, held in holdout.items():
        held_texts = [text_of(r) for r in held]
        for i, j, sim in near_duplicate_pairs(texts, held_texts):
            problems.append(
                Problem(
                    "holdout_near",
                    f"corpus row {rows[i].get('id')} ~ {name} row {held[j].get('id')} "
                    f"(cosine {sim:.2f}): evaluation text must not reach the corpus",
                )
            )
    return problems


def heldout_problems(
    rows: list[dict[str, Any]], heldout: dict[str, list[dict[str, Any]]], taxonomy: Taxonomy
) -> list[Problem]:
    """Held-out files (`data/heldout/`) must measure unseen kinds: every row well formed, and no
    product type, id or near-copy of text shared with the corpus ("heldout")."""
    problems: list[Problem] = []
    corpus_types = {_group_key(r) for r in rows}
    ids: Counter[str] = Counter()
    for name, held in heldout.items():
        for n, row in enumerate(held):
            where = f"{name} line {n + 1}"
            try:
                _check_source_row({**row, "_where": where}, taxonomy)
            except (ValueError, TaxonomyError) as exc:
                problems.append(Problem("heldout", str(exc)))
                continue
            if not isinstance(row.get("id"), str):
                problems.append(Problem("heldout", f"{where}: field 'id' missing or not str"))
                continue
            ids[row["id"]] += 1
            if _group_key(row) in corpus_types:
                problems.append(
                    Problem(
                        "heldout",
                        f"{where}: product type {row['product_type']!r} is also in the corpus; "
                        "a held-out file measures unseen kinds only",
                    )
                )
    problems += [
        Problem("heldout", f"held-out id {i!r} appears {c} times") for i, c in ids.items() if c > 1
    ]
    for p in holdout_overlap(rows, heldout):
        problems.append(Problem("heldout", p.message))
    return problems


# ---------------------------------------------------------------- statistics


def corpus_stats(rows: list[dict[str, Any]], taxonomy: Taxonomy) -> dict[str, Any]:
    """Counts per split and label, negative shares, languages, lengths, origins."""
    n = len(rows)
    per_split = Counter(r["split"] for r in rows)
    per_label: dict[str, dict[str, int]] = {
        label: {s: 0 for s in SPLITS} | {"total": 0} for label in taxonomy.labels
    }
    for r in rows:
        for label in r["labels"]:
            per_label[label][r["split"]] += 1
            per_label[label]["total"] += 1
    positives = [r for r in rows if r["labels"]]
    negatives = [r for r in rows if not r["labels"]]
    hard = [r for r in negatives if r.get("hard_negative")]
    langs = Counter(r.get("lang") or detect_lang(text_of(r)) for r in rows)
    words = np.array([len(text_of(r).split()) for r in rows]) if rows else np.zeros(1)
    types_per_label = {
        label: len({_group_key(r) for r in positives if label in r["labels"]})
        for label in taxonomy.labels
    }
    origins = Counter(r.get("origin", "written") for r in rows)
    return {
        "rows": n,
        "taxonomy_version": taxonomy.version,
        "per_split": {s: per_split.get(s, 0) for s in SPLITS},
        "per_label": per_label,
        "product_types_per_label": types_per_label,
        "negative_product_types": len({_group_key(r) for r in negatives}),
        "positives": len(positives),
        "negatives": len(negatives),
        "negative_share": round(len(negatives) / n, 4) if n else 0.0,
        "hard_negatives": len(hard),
        "hard_negative_share_of_negatives": round(len(hard) / len(negatives), 4)
        if negatives
        else 0.0,
        "multi_label_share_of_positives": round(
            sum(1 for r in positives if len(r["labels"]) > 1) / len(positives), 4
        )
        if positives
        else 0.0,
        "languages": dict(langs),
        "cjk_share": round(sum(v for k, v in langs.items() if k != "en") / n, 4) if n else 0.0,
        "origins": dict(origins),
        "generated_share": round(origins.get("generated", 0) / n, 4) if n else 0.0,
        "words": {f"p{q}": int(np.percentile(words, q)) for q in (0, 5, 25, 50, 75, 95, 100)},
    }
