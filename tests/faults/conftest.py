"""Fixtures for fault injection: a private PostgreSQL server, and the bulk scorer as a process.

PostgreSQL: the machine's shared server on 5432 is never touched (other tests use it).
`private_postgres` runs `initdb` into a fresh temporary folder, listens on a free port on
127.0.0.1 with its socket in that folder, and is stopped (immediate mode) and deleted at the end
even when the test fails. initdb and postgres refuse to run as root, so as root they run as the
`postgres` OS user.

Scorer: one catalog with bad rows, one set of arguments, and one uninterrupted run per output
format that the interrupted runs are compared with, byte for byte.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port

PG_TIMEOUT_S = 60


def _pg_bin() -> Path | None:
    """The newest installed server's bin folder."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda b: [int(n) for n in b.parent.name.split(".") if n.isdigit()])
    return found[-1] if found else None


@dataclass
class PrivatePostgres:
    """One throw-away PostgreSQL server: its folder, port, URL, and stop/start controls."""

    bin: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=5"

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=PG_TIMEOUT_S + 30,
            check=False,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = self.root / "server.log"
        done = self._ctl("-l", str(log), "-w", "-t", str(PG_TIMEOUT_S), "start")
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text(errors="replace")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast` rolls back open transactions and closes every connection)."""
        done = self._ctl("-m", mode, "-w", "-t", str(PG_TIMEOUT_S), "stop")
        assert done.returncode == 0, done.stdout + done.stderr

    def running(self) -> bool:
        return self._ctl("status").returncode == 0


@pytest.fixture()
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server for one test, stopped and deleted afterwards."""
    pg_bin = _pg_bin()
    if pg_bin is None or not (pg_bin / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="dualscreen-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        assert runuser, "running as root needs runuser to start PostgreSQL as user postgres"
        as_user = [runuser, "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(pg_bin, root, free_port(), as_user)
    try:
        init = subprocess.run(
            [
                *as_user,
                str(pg_bin / "initdb"),
                "-D",
                str(server.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert init.returncode == 0, init.stdout + init.stderr
        with open(server.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"\nport = {server.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\nmax_connections = 50\n"
            )
        server.start()
        yield server
    finally:
        if server.data.exists() and server.running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------------------------------------
# The bulk scorer as a subprocess, on a catalog with bad rows in it


def faulty_catalog(path: Path, n: int) -> Path:
    """A CSV of `n` good rows (tests.batch's catalog) with a bad row of each kind every 97 lines.

    The bad rows (no text, wrong column count, undecodable bytes) land in the rejects file, so a
    resumed run has to get that file right too.
    """
    from tests.batch.test_score import catalog_rows

    rows = catalog_rows(n)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    lines = [line.encode() for line in text.getvalue().splitlines(keepends=True)]
    for i, row in enumerate(rows):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(row.values())
        lines.append(buf.getvalue().encode())
        if i % 97 == 50:
            lines += [
                f"bad{i}a,,,{i}\n".encode(),
                f"bad{i}b,too,many,fields,{i}\n".encode(),
                f"bad{i}c,bad \xff byte,x,{i}\n".encode("latin-1"),
            ]
    path.write_bytes(b"".join(lines))
    return path


CATALOG_ROWS = 1500
CHUNK = 50


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The catalog every scorer fault runs on."""
    return faulty_catalog(tmp_path_factory.mktemp("catalog") / "in.csv", CATALOG_ROWS)


def score_args(catalog: Path, output: Path, model: Path) -> list[str]:
    """The arguments of every scorer run here: the same model, chunk size and thread count."""
    model_args = ["--model", str(model), "--batch-size", str(CHUNK), "--threads", "1"]
    return [str(catalog), "-o", str(output), *model_args]


@pytest.fixture(scope="session")
def clean_scores(
    catalog: Path, smoke_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[Path, dict[str, object]]]:
    """An uninterrupted run per output format (made once, on first use): output and summary."""
    done: dict[str, tuple[Path, dict[str, object]]] = {}

    def clean(ext: str) -> tuple[Path, dict[str, object]]:
        if ext not in done:
            output = tmp_path_factory.mktemp("clean") / f"clean{ext}"
            code, out, err = score_to_end(
                [*score_args(catalog, output, smoke_model), "--json-summary"]
            )
            assert code == 0, err
            done[ext] = (output, json.loads(out))
        return done[ext]

    return clean


def score_cli(args: list[str], **popen: Any) -> subprocess.Popen[str]:
    """`dualscreen score ARGS` in a child process (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dualscreen.cli", "score", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        **popen,
    )


def score_to_end(args: list[str], timeout: float = 300, **popen: Any) -> tuple[int, str, str]:
    """Run `dualscreen score ARGS` to the end: (exit code, stdout, stderr)."""
    proc = score_cli(args, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err
