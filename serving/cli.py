"""Serving's command-line commands, mounted into the `dualscreen` app by `training.cli`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def serve(
    model: Annotated[str | None, typer.Option(help="model folder or MLflow URI")] = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    backend: Annotated[str | None, typer.Option(help="onnx-int8 | onnx | torch")] = None,
    first_run: Annotated[
        bool,
        typer.Option(
            help="create an API key in var/ on first start (printed once) if none is configured"
        ),
    ] = False,
) -> None:
    """Start the classification API (uvicorn)."""
    import uvicorn
    from pydantic import ValidationError

    from serving.api.app import create_app
    from serving.api.auth import create_key
    from serving.api.settings import Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, object] = {}
    if model:
        overrides["model"] = model
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if backend:
        overrides["backend"] = backend
    if (
        first_run
        and not os.environ.get("DUALSCREEN_API_KEYS")
        and not os.environ.get("DUALSCREEN_KEYS_FILE")
    ):
        keys_file = Path("var") / "api_keys.json"
        if not keys_file.exists():
            key = create_key(keys_file, "first-run", ("classify", "review", "admin"))
            console.print(
                f"[bold]Created an API key (shown once, stored hashed in {keys_file}):[/bold]\n"
                f"  {key}\nUse it as: curl -H 'X-API-Key: {key}' ...",
                highlight=False,
            )
        overrides["keys_file"] = keys_file
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        console.print(f"[red]error:[/red] {exc.errors()[0]['msg']}", highlight=False)
        raise typer.Exit(2) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )


def score(
    input: Annotated[Path, typer.Argument(help="catalog file: .csv .tsv .jsonl .parquet (.gz)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="output .csv, .jsonl or .parquet")],
    model: Annotated[str, typer.Option(help="model folder or MLflow URI")] = "models/dualscreen",
    id_col: Annotated[str, typer.Option(help="id column")] = "id",
    text_cols: Annotated[
        str, typer.Option(help="comma-separated text columns")
    ] = "title,description,brand,seller_category",
    backend: Annotated[str | None, typer.Option(help="onnx-int8 | onnx | torch")] = None,
    batch_size: Annotated[int, typer.Option(help="rows per chunk (checkpoint interval)")] = 2048,
    fmt: Annotated[
        str | None, typer.Option("--format", help="input format if not by extension")
    ] = None,
    output_format: Annotated[str | None, typer.Option(help="csv | jsonl | parquet")] = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output")] = False,
    threads: Annotated[int, typer.Option(help="inference threads (0: all cores)")] = 0,
    engine: Annotated[str, typer.Option(help="local | ray")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (ray engine)")
    ] = None,
    ray_actors: Annotated[int | None, typer.Option(help="actors in the pool (ray engine)")] = None,
    json_summary: Annotated[
        bool, typer.Option(help="print the summary as one JSON object")
    ] = False,
) -> None:
    """Score a catalog file: every row to OUTPUT or OUTPUT.rejects.jsonl, resumable."""
    import json
    import sys

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from serving.batch.score import ScoreOptions, Scorer
    from serving.contract.readers import ColumnMapping
    from serving.predictor import Predictor

    predictor = Predictor.load(model, backend=backend, threads=threads)
    scorer_predictor: object = predictor
    if engine == "ray":
        from serving.batch.ray_engine import RayPredictor

        scorer_predictor = RayPredictor(predictor, model, backend, ray_address, ray_actors)
    elif engine != "local":
        raise typer.BadParameter("--engine must be local or ray")
    cols = tuple(c.strip() for c in text_cols.split(",") if c.strip())
    opts = ScoreOptions(
        input=input,
        output=output,
        mapping=ColumnMapping(id_col, cols, None),
        input_format=fmt,
        output_format=output_format,
        chunk_size=batch_size,
        resume=resume,
        overwrite=overwrite,
    )
    bar = Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.0f} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    started = [0.0]

    def progress(done: int, total: int | None) -> None:
        import time

        if not started[0]:
            started[0] = time.perf_counter()
            bar.update(task, total=total)
        elapsed = time.perf_counter() - started[0]
        bar.update(task, completed=done, rate=done / elapsed if elapsed > 0 else 0.0)

    with bar:
        task = bar.add_task("score", total=None, rate=0.0)
        summary = Scorer(scorer_predictor, engine).score_file(opts, progress)
    data = {k: v for k, v in summary.__dict__.items()}
    if json_summary:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    console.print(
        f"rows read {summary.rows_read:,}, scored {summary.scored:,}, rejected "
        f"{summary.rejected:,} (see {summary.rejects}), duplicate ids {summary.duplicate_ids:,}\n"
        f"decisions: {summary.decisions}; review share {summary.review_share:.2%}\n"
        f"per label (flag/review): "
        + ", ".join(f"{k} {v['flag']}/{v['review']}" for k, v in summary.per_label.items())
        + f"\nthroughput {summary.rows_per_second:,.0f} rows/s over {summary.seconds:.1f} s"
        + (" (resumed)" if summary.resumed else "")
        + f"; output {summary.output}",
        highlight=False,
    )


def register_serving_commands(app: typer.Typer) -> None:
    """Add the serving commands to the top-level app."""
    app.command("serve")(serve)
    app.command("score")(score)
