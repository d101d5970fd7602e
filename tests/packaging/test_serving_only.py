"""A serving-only install (`pip install .`, no extras) scores files without training (issue 13).

The venv is a clean one (no system site-packages) with a normal install of the project from the
package index pip is configured with. It is cached under the pytest cache, keyed by the hash of
pyproject.toml and constraints.txt: a cached venv gets the current source installed again (a
normal `pip install .`; its dependencies are already there), a new one is created from nothing.
How long each step took is written to `timings.json` beside the venv.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from serving.batch.score import ScoreOptions, Scorer
from serving.predictor import Predictor

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "dualscreen", "serving", "training")
INSTALL_WARN_S = 180.0
ROWS = [
    {"id": "a1", "title": "LWIR thermal imaging core 640x512", "description": "uncooled VOx"},
    {"id": "a2", "title": "Cotton crew-neck T-shirt, pack of 3", "description": "machine wash"},
    {"id": "a3", "title": "", "description": ""},
    {"id": "a4", "title": "GNSS anti-jam antenna module", "description": "CRPA, 4 elements"},
]


def _key() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    """The test's environment without anything that would let the venv see this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", ORT_DISABLE_TELEMETRY="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.fixture(scope="module")
def serving_venv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with `pip install .` (no extras) of the current source; reused while the key holds."""
    cache = Path(request.config.cache.mkdir("serving-only-venv"))
    venv = cache / _key()
    env = _clean_env()
    timings: dict[str, float] = {}
    fresh = not (venv / ".ready").exists()
    if fresh:
        for old in cache.iterdir():
            shutil.rmtree(old, ignore_errors=True)
        started = time.perf_counter()
        python = shutil.which("python3.11") or sys.executable
        _run([python, "-m", "venv", str(venv)], cache, env)
        timings["venv_s"] = round(time.perf_counter() - started, 1)
    # A copy of the packages only: pip's build writes into the tree it builds.
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    started = time.perf_counter()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, "-c", str(ROOT / "constraints.txt"), "."], src, env)
    timings["install_s" if fresh else "reinstall_s"] = round(time.perf_counter() - started, 1)
    (venv / ".ready").touch()
    (cache / "timings.json").write_text(json.dumps({"venv": str(venv), **timings}, indent=1))
    sys.stderr.write(f"serving-only venv {venv}: {timings}\n")
    if timings.get("install_s", 0.0) > INSTALL_WARN_S:
        warnings.warn(
            f"a serving-only install took {timings['install_s']} s (over {INSTALL_WARN_S:.0f} s)",
            stacklevel=1,
        )
    return venv


def test_training_does_not_import(serving_venv: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(serving_venv / "bin" / "python"), "-c", "import training"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr and "dualscreen[training]" in done.stderr
    probe = "import importlib.util as u; print([m for m in ('torch', 'mlflow') if u.find_spec(m)])"
    out = _run([str(serving_venv / "bin" / "python"), "-c", probe], tmp_path, _clean_env())
    assert out.strip() == "[]"


def test_help_lists_serving_commands_only(serving_venv: Path, tmp_path: Path) -> None:
    out = _run([str(serving_venv / "bin" / "dualscreen"), "--help"], tmp_path, _clean_env())
    commands = {line.split()[1] for line in out.splitlines() if line.startswith("│ ")}
    assert {"score", "serve", "review"} <= commands
    assert not commands & {"train", "data", "evaluate", "registry", "models"}
    assert "dualscreen[training]" in out


@pytest.mark.parametrize("which", ["smoke_model", "tfidf_model"])
def test_score_writes_the_rows_the_full_install_writes(
    serving_venv: Path, tmp_path: Path, request: pytest.FixtureRequest, which: str
) -> None:
    model: Path = request.getfixturevalue(which)
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    out = tmp_path / "out.csv"
    cmd = [str(serving_venv / "bin" / "dualscreen"), "score", str(src), "-o", str(out)]
    _run([*cmd, "--model", str(model), "--json-summary"], tmp_path, _clean_env())
    expected = tmp_path / "expected.csv"
    Scorer(Predictor.load(model)).score_file(ScoreOptions(src, expected))
    assert out.read_bytes() == expected.read_bytes()
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == ["a1", "a2", "a4"]  # a3 has no text: a reject
    assert all(r["decision"] in ("flag", "review", "clear") for r in rows)
    rejects = out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()
    assert [json.loads(line)["line"] for line in rejects] == [4]
