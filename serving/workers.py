"""`serve --workers N`: N server processes on one port, each with its own event loop and model.

One Python process serves requests on one event loop (the GIL), so on a machine with several
cores the HTTP work of one request and the model run of the next take turns in it. N worker
processes each run the whole app (`serving.app.create_app`, settings from the environment,
the model loaded in the lifespan with `threads` inference threads), so one parses and answers
requests while another runs its model.

Each worker listens on its own socket bound with SO_REUSEPORT, and the kernel spreads new
connections over them. A single shared listening socket (uvicorn's `--workers`) lets whichever
process wakes first accept every waiting connection: 32 keep-alive clients that connect
together all land on one worker, and the others idle (measured, issue 14).

The supervisor (this process) holds a bound, non-listening socket on the port, so a port in use
fails at once, restarts a worker that dies after it started, gives up when one dies within
`STARTUP_GRACE_S` of its start (a model or database it cannot load would only die again), and
stops all of them on SIGTERM or SIGINT. Linux only (SO_REUSEPORT with load balancing).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger("dualscreen.workers")

APP = "serving.app:create_app"
STARTUP_GRACE_S = 30.0
STOP_TIMEOUT_S = 30.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PortInUse(Exception):
    """The address to serve on is taken by another process."""


def bind_socket(host: str, port: int, listen: bool) -> socket.socket:
    """A TCP socket on host:port with SO_REUSEPORT (listening when `listen`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot bind {host}:{port}: {exc.strerror}") from None
    if listen:
        sock.listen(2048)
    return sock


def run_worker(host: str, port: int, number: int) -> None:
    """One worker process: its own listening socket, the app, uvicorn until told to stop."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    sock = bind_socket(host, port, listen=True)
    log.info("worker %d listening on %s:%d", number, host, port)
    config = uvicorn.Config(APP, factory=True, log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(host: str, port: int, workers: int) -> int:
    """Run `workers` worker processes until SIGTERM or SIGINT; the exit code for the CLI.

    The environment (DUALSCREEN_* settings) must already hold what the workers need.
    """
    reserved = bind_socket(host, port, listen=False)
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    running: dict[int, tuple[BaseProcess, float]] = {}

    def start(number: int) -> None:
        process = context.Process(
            target=run_worker, args=(host, port, number), name=f"dualscreen-worker-{number}"
        )
        process.start()
        running[number] = (process, time.monotonic())

    code = 0
    try:
        for number in range(workers):
            start(number)
        log.info("serving on http://%s:%d with %d workers", host, port, workers)
        while not stopping:
            wait([p.sentinel for p, _ in running.values()], timeout=0.5)
            for number, (process, started) in list(running.items()):
                if process.is_alive() or stopping:
                    continue
                if time.monotonic() - started < STARTUP_GRACE_S:
                    log.error(
                        "worker %d exited with code %s while starting; stopping",
                        number,
                        process.exitcode,
                    )
                    code = 1
                    stopping = True
                    break
                log.warning("worker %d exited with code %s; restarting", number, process.exitcode)
                start(number)
    finally:
        for process, _ in running.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process, _ in running.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        reserved.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code
