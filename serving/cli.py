"""Serving's command-line commands, mounted into the `dualscreen` app by `training.cli`."""

from __future__ import annotations

import typer


def register_serving_commands(app: typer.Typer) -> None:
    """Add the serving commands to the top-level app."""
