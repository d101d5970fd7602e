"""Serving's command-line commands (score, serve, review), mounted by `dualscreen.cli`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from serving.contract.listing import TEXT_FIELDS

if TYPE_CHECKING:
    from serving.review.store import ReviewStore
    from serving.settings import Settings

console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("dualscreen.serve")
MAX_REJECTS_SHOWN = 20  # rejected rows `review import` names one by one
TEXT_COLS = ",".join(TEXT_FIELDS)
DoubleReviewOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        envvar="DUALSCREEN_DOUBLE_REVIEW_SHARE",
        help="share of newly queued items that need two reviewers "
        "(env DUALSCREEN_DOUBLE_REVIEW_SHARE, as for the server)",
    ),
]

ReviewBudgetOpt = Annotated[
    str | None,
    typer.Option(
        help="review budget: a number (items without a label sent to review per controlled item "
        "caught, on validation), 'none' (recall target only) or 'default' (the model's)",
        envvar="DUALSCREEN_REVIEW_BUDGET",
    ),
]

ReviewCeilingOpt = Annotated[
    str | None,
    typer.Option(
        help="review ceiling: no label at or above this probability is cleared; one of the "
        "ceilings the model stores a review search for (the model card lists them), or "
        "'default'",
        envvar="DUALSCREEN_REVIEW_CEILING",
    ),
]


def serve(
    model: Annotated[str | None, typer.Option(help="model folder or MLflow URI")] = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    backend: Annotated[
        str | None, typer.Option(help="onnx-int8 | onnx-int8-fast | onnx | torch | cascade")
    ] = None,
    review_budget: ReviewBudgetOpt = None,
    review_ceiling: ReviewCeilingOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="server processes, each with its own copy of the model (at most the CPU "
            "cores); env DUALSCREEN_WORKERS, default 1"
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="inference threads per worker (0: the cores divided among the workers); "
            "env DUALSCREEN_THREADS"
        ),
    ] = None,
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

    from serving.app import create_app
    from serving.auth_keys import create_key
    from serving.contract.decide import parse_review_budget, parse_review_ceiling
    from serving.predictor import Predictor
    from serving.settings import Settings

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
    if review_budget:
        overrides["review_budget"] = review_budget
    if review_ceiling:
        overrides["review_ceiling"] = review_ceiling
    if workers is not None:
        overrides["workers"] = workers
    if threads is not None:
        overrides["threads"] = threads
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
    if (
        first_run
        and not os.environ.get("DUALSCREEN_SESSION_SECRET")
        and not os.environ.get("DUALSCREEN_SESSION_SECRET_FILE")
    ):
        from serving.review.security import ensure_secret_file

        secret_file = Path("var") / "session_secret"
        ensure_secret_file(secret_file)
        overrides["session_secret_file"] = secret_file
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        console.print(f"[red]error:[/red] {exc.errors()[0]['msg']}", highlight=False)
        raise typer.Exit(2) from None
    if first_run:
        _first_admin(settings.database_url.get_secret_value() if settings.database_url else None)
    # Load and verify the model before uvicorn starts: a damaged artifact then ends as one
    # "error: <file>: ..." line and exit code 2; failing inside the lifespan prints a traceback.
    predictor = Predictor.load(
        settings.model,
        settings.backend,
        settings.threads_per_worker(),
        settings.batch_max_size,
        settings.model_cache_dir,
        parse_review_budget(settings.review_budget),
        parse_review_ceiling(settings.review_ceiling),
    )
    if settings.workers > 1:
        folder = predictor.folder
        del predictor  # each worker loads its own; the supervising process keeps none
        _serve_workers(settings, overrides, folder)
        return
    uvicorn.run(
        create_app(settings, predictor=predictor),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )


def _serve_workers(settings: Settings, overrides: dict[str, object], folder: Path) -> None:
    """`serve --workers N`: worker processes that each load the model (`serving.workers`).

    What must happen once is done here, before the workers start: the model reference is
    resolved (an MLflow URI downloads once; the workers load the folder), the review database
    is migrated, a session secret is made when none is configured (every worker must sign and
    check review cookies with the same one), and the Prometheus multiprocess folder is made.
    The workers read their settings from the environment.
    """
    import secrets
    import shutil
    import tempfile

    from serving.api.metrics import MULTIPROCESS_DIR
    from serving.workers import PortInUse, serve_workers

    env = {f"DUALSCREEN_{k.upper()}": str(v) for k, v in overrides.items()}
    env["DUALSCREEN_MODEL"] = str(folder.resolve())
    env["DUALSCREEN_THREADS"] = str(settings.threads_per_worker())
    env["DUALSCREEN_WORKERS"] = str(settings.workers)
    if settings.session_secret is None and not (
        settings.session_secret_file is not None and settings.session_secret_file.exists()
    ):
        log.warning(
            "no DUALSCREEN_SESSION_SECRET: the workers share a random secret made now; review "
            "sessions end when the server restarts"
        )
        env["DUALSCREEN_SESSION_SECRET"] = secrets.token_urlsafe(32)
    if settings.database_auto_migrate:
        _migrate_review_store(settings)
    own_metrics_dir = not os.environ.get(MULTIPROCESS_DIR)
    metrics_dir = os.environ.get(MULTIPROCESS_DIR) or tempfile.mkdtemp(prefix="dualscreen-metrics-")
    env[MULTIPROCESS_DIR] = metrics_dir
    os.environ.update(env)
    log.info(
        "starting %d workers, %d inference threads each",
        settings.workers,
        settings.threads_per_worker(),
    )
    try:
        code = serve_workers(settings.host, settings.port, settings.workers)
    except PortInUse as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        if own_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if code:
        raise typer.Exit(code)


def _migrate_review_store(settings: Settings) -> None:
    """Bring the review schema up to date once, so that workers never migrate side by side.

    A database that cannot be reached now is left to the workers, which open it on first use
    (as one process does): the API starts while the database is still coming up.
    """
    from serving.review.db import resolve_url
    from serving.review.store import ReviewStore

    url = resolve_url(settings.database_url.get_secret_value() if settings.database_url else None)
    try:
        ReviewStore.open(url, migrate=True).dispose()
    except Exception as exc:  # noqa: BLE001 - the workers retry on first use
        log.warning("review store not migrated before the workers start: %s", exc)


def score(
    input: Annotated[Path, typer.Argument(help="catalog file: .csv .tsv .jsonl .parquet (.gz)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="output .csv, .jsonl or .parquet")],
    model: Annotated[str, typer.Option(help="model folder or MLflow URI")] = "models/dualscreen",
    id_col: Annotated[str, typer.Option(help="id column")] = "id",
    text_cols: Annotated[str, typer.Option(help="comma-separated text columns")] = TEXT_COLS,
    backend: Annotated[
        str | None, typer.Option(help="onnx-int8 | onnx-int8-fast | onnx | torch | cascade")
    ] = None,
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
    enqueue_review: Annotated[
        bool, typer.Option(help="put items decided 'review' in the review queue (idempotent)")
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(help="review store for --enqueue-review (default DUALSCREEN_DATABASE_URL)"),
    ] = None,
    review_budget: ReviewBudgetOpt = None,
    review_ceiling: ReviewCeilingOpt = None,
    double_review_share: DoubleReviewOpt = 0.0,
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
    from serving.contract.decide import parse_review_budget, parse_review_ceiling
    from serving.contract.readers import ColumnMapping
    from serving.predictor import Predictor

    budget = parse_review_budget(review_budget)
    ceiling = parse_review_ceiling(review_ceiling)
    if engine == "ray":
        from serving.batch.ray_engine import ray_predictor

        predictor = ray_predictor(
            model, backend, ray_address, ray_actors, review_budget=budget, review_ceiling=ceiling
        )
    elif engine == "local":
        predictor = Predictor.load(
            model, backend=backend, threads=threads, review_budget=budget, review_ceiling=ceiling
        )
    else:
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
    store = None
    if enqueue_review:
        from serving.contract.listing import ScoredListing
        from serving.review.db import resolve_url
        from serving.review.intake import (
            IntakePolicy,
            IntakeResult,
            enqueue_listings,
            flag_thresholds,
            scored_file_rows,
        )
        from serving.review.store import ReviewStore

        store = ReviewStore.open(resolve_url(database_url))
        flags = flag_thresholds(predictor.manifest)

        def enqueue(rows: list[dict[str, object]], scored: list[ScoredListing]) -> IntakeResult:
            return enqueue_listings(
                store,
                scored_file_rows(rows, scored, opts.mapping),
                IntakePolicy.REVIEW,
                f"score:{input.name}",
                flag_thresholds=flags,
                actor="system",
                double_review_share=double_review_share,
            )

        opts.enqueue = enqueue
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
        try:
            summary = Scorer(predictor, engine).score_file(opts, progress)
        finally:
            if store is not None:
                store.dispose()
    data = {k: v for k, v in summary.__dict__.items()}
    if json_summary:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    console.print(
        f"rows read {summary.rows_read:,}, scored {summary.scored:,}, rejected "
        f"{summary.rejected:,} (see {summary.rejects}), duplicate ids {summary.duplicate_ids:,}"
        + (
            f", queued for review {summary.enqueued:,} ({summary.already_queued:,} already queued)"
            if enqueue_review
            else ""
        )
        + "\n"
        f"decisions: {summary.decisions}; review share {summary.review_share:.2%}\n"
        f"per label (flag/review): "
        + ", ".join(f"{k} {v['flag']}/{v['review']}" for k, v in summary.per_label.items())
        + f"\nthroughput {summary.rows_per_second:,.0f} rows/s over {summary.seconds:.1f} s"
        + (" (resumed)" if summary.resumed else "")
        + f"; output {summary.output}",
        highlight=False,
    )


def _first_admin(url: str | None) -> None:
    """Migrate the review store and create user `admin` if it has no users (password shown once)."""
    from serving.review.db import resolve_url
    from serving.review.store import ReviewStore
    from serving.review.users import ensure_first_admin

    store = ReviewStore.open(resolve_url(url))
    try:
        with store.transaction() as session:
            created, generated = ensure_first_admin(
                session, os.environ.get("DUALSCREEN_ADMIN_PASSWORD") or None
            )
    finally:
        store.dispose()
    if created and generated:
        console.print(
            "[bold]Created review user 'admin' (password shown once):[/bold]\n"
            f"  {generated}\nLog in at /review; add reviewers with "
            "`dualscreen review create-user NAME --role reviewer`.",
            highlight=False,
        )
    elif created:
        console.print(
            "Created review user 'admin' with the password in DUALSCREEN_ADMIN_PASSWORD.",
            highlight=False,
        )


review_app = typer.Typer(
    help="The review queue: migrate its database, import, export, add users.",
    no_args_is_help=True,
)
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="review store URL (default: DUALSCREEN_DATABASE_URL or sqlite file var/review.db)",
    ),
]


def _open_store(url: str | None) -> ReviewStore:
    from serving.contract.errors import DualscreenError
    from serving.review.db import resolve_url
    from serving.review.store import ReviewStore

    try:
        return ReviewStore.open(resolve_url(url))
    except DualscreenError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


@review_app.command("migrate")
def review_migrate(
    database_url: DatabaseOpt = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
    down: Annotated[bool, typer.Option("--down", help="downgrade to REVISION instead")] = False,
) -> None:
    """Upgrade (or downgrade) the review database schema."""
    from serving.review import db

    engine = db.make_engine(db.resolve_url(database_url))
    try:
        if down:
            db.downgrade(engine, "base" if revision == "head" else revision)
        else:
            db.migrate(engine, revision)
        current = db.current_revision(engine)
    finally:
        engine.dispose()
    console.print(f"review database at revision {current or 'base (empty)'}", highlight=False)


@review_app.command("import")
def review_import(
    file: Annotated[Path, typer.Argument(help="listings: .csv .tsv .jsonl .parquet (.gz)")],
    model: Annotated[str, typer.Option(help="model folder or MLflow URI")] = "models/dualscreen",
    database_url: DatabaseOpt = None,
    id_col: Annotated[str, typer.Option(help="id column")] = "id",
    text_cols: Annotated[str, typer.Option(help="comma-separated text columns")] = TEXT_COLS,
    source: Annotated[str | None, typer.Option(help="source name (default import:FILE)")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="input format if not by extension")
    ] = None,
    only_uncertain: Annotated[
        bool, typer.Option(help="queue only rows the model flags or sends to review")
    ] = False,
    double_review_share: DoubleReviewOpt = 0.0,
    chunk: Annotated[int, typer.Option(min=1, help="rows scored per batch")] = 512,
) -> None:
    """Score a file with the model and put its rows in the review queue (idempotent)."""
    from serving.contract.errors import DualscreenError, TruncatedInputError
    from serving.contract.readers import ColumnMapping, RejectedRow, read_records
    from serving.predictor import Predictor
    from serving.review.intake import (
        IntakePolicy,
        enqueue_listings,
        flag_thresholds,
        score_file_rows,
    )
    from serving.review.models import EXTERNAL_ID_MAX

    try:
        predictor = Predictor.load(model)
    except DualscreenError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    store = _open_store(database_url)
    m = predictor.manifest
    cols = tuple(c.strip() for c in text_cols.split(",") if c.strip())
    mapping = ColumnMapping(id_col, cols, None)
    name = source or f"import:{file.name}"
    policy = IntakePolicy.NOT_CLEAR if only_uncertain else IntakePolicy.EVERY
    thresholds = flag_thresholds(m)
    counts = {"read": 0, "rejected": 0, "skipped_clear": 0, "queued": 0, "already": 0}
    batch: list[dict[str, object]] = []

    def flush() -> None:
        done = enqueue_listings(
            store,
            score_file_rows(predictor, batch, mapping),
            policy,
            name,
            flag_thresholds=thresholds,
            actor="cli:import",
            double_review_share=double_review_share,
        )
        counts["skipped_clear"] += done.received - done.admitted
        counts["queued"] += done.queued
        counts["already"] += done.already_queued
        batch.clear()

    def reject(line: int, reason: str) -> None:
        counts["rejected"] += 1
        if counts["rejected"] <= MAX_REJECTS_SHOWN:
            console.print(f"{file}: line {line}: {reason}", highlight=False, markup=False)

    truncated: TruncatedInputError | None = None
    try:
        try:
            for result in read_records(file, fmt, mapping):
                if isinstance(result, RejectedRow):
                    reject(result.line, result.reason)
                    continue
                ident = result.data.get(id_col)
                if ident is not None and len(str(ident)) > EXTERNAL_ID_MAX:
                    reject(
                        result.line,
                        f"{id_col} has {len(str(ident)):,} characters; the queue keeps "
                        f"at most {EXTERNAL_ID_MAX}",
                    )
                    continue
                counts["read"] += 1
                batch.append(result.data)
                if len(batch) >= chunk:
                    flush()
        except TruncatedInputError as exc:
            truncated = exc  # queue the rows read before the break, then say so
        if batch:
            flush()
    except DualscreenError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.dispose()
    if counts["rejected"] > MAX_REJECTS_SHOWN:
        console.print(f"... and {counts['rejected'] - MAX_REJECTS_SHOWN:,} more rejected rows")
    console.print(
        f"read {counts['read']:,} rows ({counts['rejected']:,} rejected); queued "
        f"{counts['queued']:,} new ({counts['already']:,} already queued); "
        f"{counts['skipped_clear']:,} clear rows left out; "
        f"model {m.name} {m.version}; source {name}",
        highlight=False,
    )
    if truncated is not None:
        console.print(f"[red]error:[/red] {truncated}", highlight=False)
        raise typer.Exit(2)


@review_app.command("export")
def review_export(
    output: Annotated[Path, typer.Option("-o", "--output", help="labelled .jsonl or .csv")],
    audit_csv: Annotated[Path | None, typer.Option(help="also write the audit log as CSV")] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Write decided reviews in the corpus schema (train with --set data.extra=[FILE])."""
    from serving.contract.errors import DualscreenError
    from serving.review.export import export_audit_csv, export_reviews

    store = _open_store(database_url)
    try:
        with store.session() as session:
            summary = export_reviews(session, output)
            audit_rows = export_audit_csv(session, audit_csv) if audit_csv else None
    except DualscreenError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.dispose()
    console.print(
        f"wrote {summary.rows:,} reviewed rows to {summary.path} "
        f"({summary.needs_info:,} needs-info and {summary.undecided:,} undecided left out)"
        + (f"; {audit_rows:,} audit events to {audit_csv}" if audit_csv else ""),
        highlight=False,
    )


@review_app.command("create-user")
def review_create_user(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="reviewer | admin")] = "reviewer",
    password_stdin: Annotated[
        bool, typer.Option(help="read the password from stdin instead of generating one")
    ] = False,
    api_key: Annotated[
        bool, typer.Option(help="also create an API key for the JSON endpoints (shown once)")
    ] = False,
    no_password: Annotated[bool, typer.Option(help="API key only, no web log-in")] = False,
    database_url: DatabaseOpt = None,
) -> None:
    """Add a review user; a generated password or key is printed once and stored hashed."""
    import sys

    from serving.contract.errors import DualscreenError
    from serving.review.security import new_api_key, new_password
    from serving.review.users import create_user

    if no_password and not api_key:
        console.print("[red]error:[/red] --no-password needs --api-key", highlight=False)
        raise typer.Exit(2)
    password: str | None = None
    generated = False
    if not no_password:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password, generated = new_password(), True
    key = new_api_key() if api_key else None
    store = _open_store(database_url)
    try:
        with store.transaction() as session:
            create_user(session, name, role, password=password, api_key=key, actor="cli")
    except DualscreenError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        store.dispose()
    console.print(f"created {role} {name!r}", highlight=False)
    if generated:
        console.print(f"  password (shown once): {password}", highlight=False)
    if key:
        console.print(f"  API key (shown once): {key}", highlight=False)


def register_serving_commands(app: typer.Typer) -> None:
    """Add the serving commands to the top-level app."""
    app.command("serve")(serve)
    app.command("score")(score)
    app.add_typer(review_app, name="review")
