"""The `dualscreen` command line: serving's commands always, training's where it is installed.

`score`, `serve` and `review` come from `serving.cli` and need only the base install. `data`,
`train`, `evaluate`, `registry` and `models` come from `training.cli` and are mounted only when
the `training` package and its dependencies import (`pip install 'dualscreen[training]'`), so a
serving-only install never imports torch, transformers or MLflow; its `--help` says how to add them.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from serving.cli import console, register_serving_commands
from serving.contract.errors import DualscreenError

HELP = "dualscreen: screen product catalogs for likely dual-use goods."
# "\\[" keeps rich (typer's help renderer) from reading "[training]" as markup.
NO_TRAINING = (
    "Training commands (data, train, evaluate, registry, models) need the training extra: "
    "pip install 'dualscreen\\[training]'."
)


def training_commands() -> Callable[[typer.Typer], None] | None:
    """Training's command registrar, or None when training or a dependency is not installed."""
    try:
        from training.cli import register_training_commands
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.startswith(("dualscreen", "serving", "training.")):
            raise  # our own code is broken: say so rather than hide the commands
        return None
    return register_training_commands


def create_app() -> typer.Typer:
    """The `dualscreen` app with every command this install can run."""
    register_training = training_commands()
    app = typer.Typer(
        help=HELP,
        epilog=None if register_training else NO_TRAINING,
        no_args_is_help=True,
        add_completion=False,
    )
    register_serving_commands(app)
    if register_training is not None:
        register_training(app)
    return app


app = create_app()


def main() -> None:
    """Entry point of the `dualscreen` console script."""
    try:
        app()
    except DualscreenError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
