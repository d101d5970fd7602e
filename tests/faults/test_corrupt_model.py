"""Fault: the API is given a model folder with one corrupted, missing or unexpected file.

Each case copies a real model folder (links, except the file being damaged, which is a real copy
so the original is never touched), damages one file, and starts the app through its real
lifespan. The service must either refuse to start with a message naming the file, or stay up
with /ready answering 503 and naming it; it must never come up ready on a damaged model. One case
runs `dualscreen serve` itself, which must exit with that message and no traceback.

The copies are re-sealed with the current `write_manifest` first, so a model trained by an older
checkout (the DUALSCREEN_TEST_*_MODEL shortcut) carries the manifest's own checksum too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving.app import create_app
from serving.contract.artifact import read_manifest, write_manifest
from serving.contract.errors import DualscreenError
from serving.settings import Settings
from tests.servers import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-fault-classify-key-0123456789"
TRANSFORMER_FILES = [
    "model.int8.onnx",
    "model.onnx",
    "tokenizer.json",
    "manifest.json",
    "cascade.skops",
    "taxonomy.yaml",
    "config.json",
]


def linked_copy(src: Path, dst: Path, real: str | None = None) -> Path:
    """`src` as hard links in `dst`; `real` is copied instead, so damaging it spares `src`."""
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.name == real:
            shutil.copyfile(path, dst / path.name)
            continue
        try:
            os.link(path, dst / path.name)
        except OSError:  # another file system: a symbolic link reads the same
            os.symlink(path.resolve(), dst / path.name)
    return dst


@pytest.fixture(scope="module")
def sealed(smoke_model, tfidf_model, tmp_path_factory) -> dict[str, Path]:
    """Both smoke models, linked and re-sealed (a fresh manifest.json, the weights shared)."""
    out = {}
    for kind, src in (("transformer", smoke_model), ("tfidf", tfidf_model)):
        folder = linked_copy(src, tmp_path_factory.mktemp("sealed") / kind, real="manifest.json")
        write_manifest(folder, read_manifest(folder))
        out[kind] = folder
    return out


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    if how == "flip":  # one low bit in the middle
        data[middle] ^= 0x01
    elif how == "threshold":  # 0.69 -> 0.79 in the first flag threshold: valid, and wrong
        marker = b'"flag": 0.'
        data[data.index(marker) + len(marker)] ^= 0x01
    else:
        del data[middle:]
    path.write_bytes(bytes(data))


async def start_outcome(folder: Path) -> str:
    """Start the app on `folder`; return the refusal, or /ready's 503 body if it stayed up."""
    settings = Settings(api_keys=f"{KEY}:classify", model=str(folder))
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await client.get("/health")).status_code == 200
                ready = await client.get("/ready")
                assert ready.status_code == 503, "ready on a damaged model"
                return ready.text
    except DualscreenError as exc:
        return str(exc)
    finally:
        app.state.review.close()


CASES = [
    *[("transformer", name, how) for name in TRANSFORMER_FILES for how in ("flip", "truncate")],
    ("transformer", "manifest.json", "threshold"),
    ("tfidf", "manifest.json", "threshold"),
    ("tfidf", "model.skops", "flip"),
    ("tfidf", "model.skops", "truncate"),
    ("transformer", "model.int8.onnx", "missing"),
    ("transformer", "model.pkl", "extra"),
    ("tfidf", "model.pkl", "extra"),
]


async def test_a_damaged_model_never_comes_up_ready(sealed, tmp_path):
    # Control: the undamaged copy starts and is ready, so every refusal below is the damage's.
    app = create_app(Settings(api_keys=f"{KEY}:classify", model=str(sealed["transformer"])))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/ready")).status_code == 200
    app.state.review.close()

    outcomes = {}
    for n, (kind, name, how) in enumerate(CASES):
        damaged = how not in ("missing", "extra")  # the others leave the linked files alone
        folder = linked_copy(sealed[kind], tmp_path / f"case{n}", real=name if damaged else None)
        target = folder / name
        if how == "missing":
            target.unlink()
        elif how == "extra":
            target.write_bytes(b"\x80\x04\x95junk pickle\x94.")
        else:
            damage(target, how)
        outcomes[(kind, name, how)] = await start_outcome(folder)
        shutil.rmtree(folder)
    unnamed = {case: text for case, text in outcomes.items() if case[1] not in text}
    assert not unnamed, unnamed
    for (_, _, how), text in outcomes.items():
        if how == "threshold":  # caught by the manifest's own checksum, not by luck
            assert "manifest_sha256 does not match" in text, text


def test_serve_refuses_a_damaged_model_without_a_traceback(sealed, tmp_path):
    folder = linked_copy(sealed["transformer"], tmp_path / "model", real="model.int8.onnx")
    damage(folder / "model.int8.onnx", "flip")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUALSCREEN_")}
    env |= {"DUALSCREEN_API_KEYS": f"{KEY}:classify", "PYTHONPATH": str(ROOT)}
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "dualscreen.cli", "serve", "--model", str(folder), "--port", port],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "error:" in output and "model.int8.onnx: checksum mismatch" in output, output
    assert "Traceback" not in output, output
