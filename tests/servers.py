"""Real servers for tests: a free port, readiness polling, uvicorn in a background thread."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    base: str, proc: subprocess.Popen[str] | None = None, timeout_s: float = 120
) -> None:
    """Poll `base`/ready until it answers 200; fail if `proc` exits first or time runs out."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} did not become ready within {timeout_s:.0f} s")


@contextlib.contextmanager
def uvicorn_thread(app: Any) -> Iterator[str]:
    """Serve `app` with a real uvicorn on 127.0.0.1 (random port); yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, timeout_s=60)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
