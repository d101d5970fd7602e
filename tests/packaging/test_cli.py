"""`dualscreen` mounts serving's commands and, in a full install, training's (issue 13)."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from dualscreen.cli import create_app
from serving.cli import register_serving_commands
from training.cli import register_training_commands

SERVING = {"score", "serve", "review"}
TRAINING = {"data", "train", "evaluate", "registry", "models"}


def _commands(app: typer.Typer) -> set[str]:
    group = typer.main.get_group(app)
    return set(group.commands)


def test_a_full_install_has_every_command():
    assert _commands(create_app()) == SERVING | TRAINING
    result = CliRunner().invoke(create_app(), ["--help"])
    assert result.exit_code == 0 and "dualscreen[training]" not in result.output


def test_each_side_registers_only_its_own_commands():
    serving, training = typer.Typer(), typer.Typer()
    register_serving_commands(serving)
    register_training_commands(training)
    assert _commands(serving) == SERVING
    assert _commands(training) == TRAINING
