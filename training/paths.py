"""Project paths, resolved from the working directory or DUALSCREEN_HOME (no side effects)."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The project folder: DUALSCREEN_HOME, or the nearest parent holding data/taxonomy.yaml."""
    env = os.environ.get("DUALSCREEN_HOME")
    if env:
        return Path(env)
    here = Path.cwd()
    for candidate in (here, *here.parents):
        if (candidate / "data" / "taxonomy.yaml").exists():
            return candidate
    return Path(__file__).resolve().parent.parent


def default_taxonomy() -> Path:
    """The repository's taxonomy file."""
    return project_root() / "data" / "taxonomy.yaml"


def default_corpus() -> Path:
    """The built corpus file."""
    return project_root() / "data" / "corpus" / "corpus.jsonl"


def heldout_files() -> list[Path]:
    """The corpus's held-out evaluation files (`data/heldout/*.jsonl`): never trained on."""
    return sorted((project_root() / "data" / "heldout").glob("*.jsonl"))


def realworld_dir() -> Path | None:
    """../shared/realworld when present (evaluation only), else None."""
    env = os.environ.get("DUALSCREEN_REALWORLD")
    candidates = [Path(env)] if env else []
    candidates.append(project_root().parent / "shared" / "realworld")
    for path in candidates:
        if path.is_dir() and any(path.glob("*.jsonl")):
            return path
    return None
