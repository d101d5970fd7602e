"""Training's commands of `dualscreen`: data, train, evaluate, registry and models.

`dualscreen.cli` mounts them next to serving's (score, serve, review) when the training extra is
installed; nothing here knows serving's commands.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serving.contract.listing import TEXT_FIELDS
from serving.contract.taxonomy import load_taxonomy
from training import paths

app = typer.Typer(
    help="dualscreen: screen product catalogs for likely dual-use goods.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(
    help="Build, validate and describe the labelled corpus.", no_args_is_help=True
)
registry_app = typer.Typer(help="MLflow model registry: list and promote.", no_args_is_help=True)
models_app = typer.Typer(
    help="Base models: offline folders to fine-tune from.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(registry_app, name="registry")
app.add_typer(models_app, name="models")
console = Console(stderr=True, soft_wrap=True)
TEXT_COLS = ",".join(TEXT_FIELDS)

TaxonomyOpt = Annotated[
    Path | None, typer.Option(help="taxonomy YAML (default data/taxonomy.yaml)")
]
CorpusOpt = Annotated[
    Path | None, typer.Option(help="corpus JSONL (default data/corpus/corpus.jsonl)")
]


@data_app.command("build")
def data_build(
    source: Annotated[Path | None, typer.Option(help="folder with written/ and fragments/")] = None,
    output: CorpusOpt = None,
    taxonomy: TaxonomyOpt = None,
    seed: int = 13,
    reshuffle: Annotated[
        bool,
        typer.Option(
            help="deal every product type's split afresh, ignoring splits.json "
            "(turns the test split over: results before and after are not comparable)"
        ),
    ] = False,
) -> None:
    """Build corpus.jsonl (ids, generated rows, grouped splits) from the source files.

    Product types keep the split recorded in splits.json; new ones are dealt and recorded."""
    from training.corpus import (
        build_corpus,
        corpus_stats,
        read_split_pins,
        split_pins,
        write_corpus,
        write_split_pins,
    )

    tax = load_taxonomy(taxonomy or paths.default_taxonomy())
    source = source or paths.project_root() / "data" / "corpus"
    output = output or paths.default_corpus()
    before = {} if reshuffle else read_split_pins(source)
    rows = build_corpus(source, tax, seed=seed, pins=before)
    write_corpus(rows, output)
    after = split_pins(rows)
    write_split_pins(source, after)
    stats = corpus_stats(rows, tax)
    console.print(
        f"wrote {len(rows):,} rows to {output} "
        f"(train {stats['per_split']['train']}, val {stats['per_split']['val']}, "
        f"test {stats['per_split']['test']})"
    )
    added = {k: v for k, v in after.items() if k not in before}
    moved = {k: (before[k], v) for k, v in after.items() if k in before and before[k] != v}
    if added:
        console.print(f"{len(added)} new product type(s) dealt: {dict(Counter(added.values()))}")
    if moved:
        console.print(f"[yellow]{len(moved)} product type(s) changed split: {moved}")


@data_app.command("validate")
def data_validate(
    corpus: CorpusOpt = None,
    taxonomy: TaxonomyOpt = None,
    holdout: Annotated[
        Path | None,
        typer.Option(
            help="folder of evaluation-only JSONL files the corpus must not copy "
            "(default: ../shared/realworld when present)"
        ),
    ] = None,
) -> None:
    """Fail on schema errors, unknown labels, duplicate ids, empty texts, split leakage,
    held-out files (data/heldout) that share product types or text with the corpus, and
    near-copies of the evaluation-only real-world files."""
    from training.corpus import heldout_problems, holdout_overlap, read_jsonl, validate_corpus

    tax = load_taxonomy(taxonomy or paths.default_taxonomy())
    path = corpus or paths.default_corpus()
    try:
        rows = read_jsonl(path)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {path}: {exc}")
        raise typer.Exit(1) from None
    problems = validate_corpus(rows, tax)
    own = {p.name: read_jsonl(p) for p in paths.heldout_files()}
    if own:
        problems += heldout_problems(rows, own, tax)
        console.print(f"checked the held-out files: {', '.join(own)}")
    held_dir = holdout or paths.realworld_dir()
    if held_dir is not None:
        held = {p.name: read_jsonl(p) for p in sorted(Path(held_dir).glob("*.jsonl"))}
        problems += holdout_overlap(rows, held)
        console.print(f"checked against the evaluation-only files in {held_dir}")
    if problems:
        for p in problems[:200]:
            console.print(f"[red]{p.kind}[/red]: {p.message}", markup=True, highlight=False)
        if len(problems) > 200:
            console.print(f"... and {len(problems) - 200} more")
        console.print(f"[red]{len(problems)} problem(s) in {path}")
        raise typer.Exit(1)
    console.print(f"[green]{path}: {len(rows):,} rows, no problems")


@data_app.command("stats")
def data_stats(
    corpus: CorpusOpt = None,
    taxonomy: TaxonomyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Counts per split and label, hard-negative and language shares, length percentiles."""
    from training.corpus import corpus_stats, read_jsonl

    tax = load_taxonomy(taxonomy or paths.default_taxonomy())
    rows = read_jsonl(corpus or paths.default_corpus())
    stats = corpus_stats(rows, tax)
    if as_json:
        sys.stdout.write(json.dumps(stats, indent=2) + "\n")
        return
    table = Table(title=f"corpus: {stats['rows']:,} rows")
    table.add_column("label")
    for col in ("train", "val", "test", "total", "types"):
        table.add_column(col, justify="right")
    for label, counts in stats["per_label"].items():
        table.add_row(
            label,
            *(str(counts[c]) for c in ("train", "val", "test", "total")),
            str(stats["product_types_per_label"][label]),
        )
    Console().print(table)
    for key in (
        "negative_share",
        "hard_negative_share_of_negatives",
        "multi_label_share_of_positives",
        "cjk_share",
        "generated_share",
        "words",
    ):
        Console().print(f"{key}: {stats[key]}")


@app.command("train")
def train(
    config: Annotated[Path, typer.Option(help="TOML profile")] = Path(
        "training/configs/default.toml"
    ),
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override: section.key=value")
    ] = None,
    no_baseline: Annotated[
        bool, typer.Option(help="skip the side-by-side TF-IDF baseline")
    ] = False,
) -> None:
    """Fine-tune, calibrate, choose thresholds, evaluate, track in MLflow and register."""
    from training.config import load_config
    from training.pipeline import run_training

    cfg = load_config(config, overrides or [])
    run_training(cfg, console=console, baseline=not no_baseline)


@app.command("evaluate")
def evaluate(
    model: Annotated[
        str, typer.Option(help="model folder or MLflow URI (models:/dualscreen@champion)")
    ],
    data: Annotated[
        Path, typer.Option(help="labelled file: CSV, TSV, JSONL or Parquet (gzip too)")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print exactly one JSON object")] = False,
    backend: Annotated[
        str | None, typer.Option(help="onnx-int8, onnx, torch (default by kind)")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="file format if not by extension")
    ] = None,
    id_col: Annotated[str, typer.Option(help="id column")] = "id",
    text_cols: Annotated[str, typer.Option(help="comma-separated text columns")] = TEXT_COLS,
    labels_col: Annotated[
        str,
        typer.Option(help="labels column (list, '|'-string); or 0/1 columns named after labels"),
    ] = "labels",
    split: Annotated[
        str | None, typer.Option(help="only rows whose `split` column is this (e.g. test)")
    ] = None,
    review_budget: Annotated[
        str | None, typer.Option(help="review budget override: a number, 'none' or 'default'")
    ] = None,
    review_ceiling: Annotated[
        str | None,
        typer.Option(help="review ceiling override: one the model stores, or 'default'"),
    ] = None,
) -> None:
    """Evaluate a model on a labelled file: per-label, routing and per-language figures."""
    from serving.backends import load_backend
    from serving.contract.decide import calibrate, parse_review_budget, parse_review_ceiling
    from serving.contract.open import open_artifact
    from serving.contract.readers import ColumnMapping
    from training.evaluate import (
        compute_metrics,
        format_metrics_table,
        format_per_label,
        load_labelled,
        metrics_by_lang,
        metrics_by_source,
    )

    folder, manifest, taxonomy = open_artifact(
        model,
        review_budget=parse_review_budget(review_budget),
        review_ceiling=parse_review_ceiling(review_ceiling),
    )
    scorer = load_backend(folder, manifest, backend)
    mapping = ColumnMapping(
        id_col, tuple(c.strip() for c in text_cols.split(",") if c.strip()), labels_col
    )
    labelled = load_labelled(
        data, taxonomy, mapping, manifest.rules.max_chars, fmt=fmt, split=split
    )
    for bad in labelled.rejected[:20]:
        console.print(f"[yellow]rejected[/yellow] {data}:{bad.line}: {bad.reason}", highlight=False)
    probs = calibrate(scorer.logits(labelled.texts), manifest)
    metrics = compute_metrics(probs, labelled.y, labelled.texts, manifest)
    by_lang = metrics_by_lang(probs, labelled.y, labelled.texts, labelled.langs, manifest)
    if as_json:
        keys = (
            "macro_f1",
            "micro_f1",
            "per_label",
            "any_label",
            "review_rate",
            "flag_rate",
            "ece",
            "n",
        )
        out_json = {k: metrics[k] for k in keys}
        out_json["by_lang"] = by_lang
        path = manifest.review_path
        out_json["review"] = {
            "ceiling": path.review_ceiling if path else None,
            "budget": path.budget if path else None,
        }
        sys.stdout.write(json.dumps(out_json) + "\n")
        return
    out = Console()
    path = manifest.review_path
    review = (
        f"; review ceiling {path.review_ceiling:g}, budget {path.budget or 'none'}" if path else ""
    )
    out.print(
        f"{manifest.name} {manifest.version} ({scorer.name}) "
        f"on {data}: "
        f"{metrics['n']} rows, {len(labelled.rejected)} rejected{review}"
    )
    out.print(format_metrics_table({data.name: {manifest.kind: metrics}}))
    out.print(format_per_label(metrics))
    if any(labelled.sources):
        for source, m in metrics_by_source(
            probs, labelled.y, labelled.texts, labelled.sources, manifest
        ).items():
            out.print(
                f"source {source}: n={m['n']} macro F1 {m['macro_f1']:.3f} any-label recall "
                f"{m['any_label']['recall']} review rate {m['review_rate']:.3f}"
            )
    for lang, m in by_lang.items():
        out.print(
            f"lang {lang}: n={m['n']} macro F1 {m['macro_f1']:.3f} any-label recall "
            f"{m['any_label']['recall']} review rate {m['review_rate']:.3f}"
        )


@registry_app.command("list")
def registry_list(name: str = "dualscreen") -> None:
    """Registered versions with aliases and test metrics."""
    from training.registry import list_versions

    for row in list_versions(name):
        Console().print(row)


@registry_app.command("promote")
def registry_promote(
    name: str = "dualscreen",
    tolerance: Annotated[
        float, typer.Option(help="allowed drop in test macro F1 and any-label recall")
    ] = 0.005,
) -> None:
    """Move alias 'champion' to the candidate if it is not worse than the current champion."""
    from training.registry import promote

    result = promote(name, tolerance)
    console.print(
        ("[green]promoted[/green]: " if result.promoted else "[yellow]refused[/yellow]: ")
        + result.reason,
        highlight=False,
    )
    if not result.promoted:
        raise typer.Exit(1)


@models_app.command("prepare")
def models_prepare(
    name: Annotated[str, typer.Argument(help="base model alias")] = "multilingual-e5-small",
    force: Annotated[bool, typer.Option(help="convert again even if up to date")] = False,
) -> None:
    """Convert a packaged base model into a transformers folder (once); print the folder."""
    import time

    from training.base_models import folder_size, prepare_base_model

    started = time.perf_counter()
    folder = prepare_base_model(name, force=force)
    console.print(
        f"{name}: {folder} ({folder_size(folder) / 1e6:,.0f} MB, "
        f"{time.perf_counter() - started:.1f} s)",
        highlight=False,
    )
    sys.stdout.write(f"{folder}\n")


def register_training_commands(target: typer.Typer) -> None:
    """Add the training commands to the top-level `dualscreen` app."""
    target.add_typer(app)
