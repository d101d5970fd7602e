"""The API runs on uvloop and httptools, which `uvicorn`'s "auto" settings pick when installed."""

from __future__ import annotations

import sys

import pytest
from uvicorn.config import Config


def _app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    raise AssertionError("never called")


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build")
def test_serve_picks_the_fast_loop_and_parser() -> None:
    config = Config(_app)  # the settings `dualscreen serve` and its workers use: the defaults
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    assert config.loop == "auto"
    from uvicorn.loops.auto import auto_loop_factory

    assert auto_loop_factory(use_subprocess=False).__module__.startswith("uvloop")
