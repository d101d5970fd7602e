"""Shared helpers for the benchmark scripts: texts to score, process memory, and a throw-away
`dualscreen serve` subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_listings(limit: int | None = None) -> list[dict[str, str]]:
    """Real-world listings when ../shared/realworld is present, else the corpus test split."""
    rows: list[dict[str, str]] = []
    realworld = ROOT.parent / "shared" / "realworld"
    files = sorted(realworld.glob("*.jsonl")) if realworld.is_dir() else []
    if files:
        for path in files:
            for line in path.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                rows.append(
                    {
                        k: r.get(k) or ""
                        for k in ("title", "description", "brand", "seller_category")
                    }
                )
    else:
        for line in (ROOT / "data" / "corpus" / "corpus.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r["split"] == "test":
                rows.append({k: r[k] for k in ("title", "description", "brand", "seller_category")})
    return rows[:limit] if limit else rows


def mean_tokens(predictor: Any, texts: list[str]) -> float:
    """Mean token count of `texts` as the model sees them (a blend's inputs are (text, ids))."""
    backend = getattr(predictor.backend, "inner", predictor.backend)
    ids = backend.encode(texts)
    return sum(len(i) for i in ids) / max(len(ids), 1)


def rss_mb(pid: int | None = None) -> dict[str, float]:
    """Current and peak resident memory of a process in MB (Linux /proc)."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    out = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = int(value.split()[0]) / 1024
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def tree_rss_mb(pid: int) -> float:
    """Resident memory in MB of a process and all its descendants (Linux /proc); 0 once gone."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += rss_mb(p).get("rss_mb", 0.0)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between listing and reading
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between listing and reading
    return total


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    model: str | Path,
    port: int,
    settings: dict[str, str],
    log: IO[bytes] | None = None,
    workers: int = 1,
) -> subprocess.Popen[bytes]:
    """Start `dualscreen serve` on 127.0.0.1:`port` in its own process group.

    The environment is this process's without any inherited `DUALSCREEN_*` variable, plus
    `settings` (for example DUALSCREEN_API_KEYS), so a shell's configuration (a production
    database URL, say) never leaks into a benchmark. Output goes to `log`, or is discarded.
    `workers` > 1 starts that many worker processes (`serve --workers`).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUALSCREEN_")} | settings
    return subprocess.Popen(
        [sys.executable, "-m", "dualscreen.cli", "serve", "--model", str(model)]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Poll `base`/ready until it answers 200; exit if the server dies or takes too long."""
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with code {server.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server did not become ready within {timeout_s:.0f} s")


def stop_server(server: subprocess.Popen[bytes], grace_s: float = 30) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after `grace_s`."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    except ProcessLookupError:
        server.wait()


def labelled_sets(
    config: Path, names: tuple[str, ...] = ("val", "test")
) -> tuple[Any, Any, dict[str, Any], dict[str, Any], dict[str, tuple[list[str], Any]]]:
    """What a quality study scores: (config with MLflow off, taxonomy, corpus splits, their info,
    sets).

    `sets` holds the built texts and 0/1 truth of the named corpus splits, then of every labelled
    real-world file as "realworld/<stem>" when ../shared/realworld is present.
    """
    from serving.contract.taxonomy import load_taxonomy
    from training.config import load_config
    from training.evaluate import load_labelled
    from training.paths import realworld_dir
    from training.pipeline import _resolve, load_data

    cfg = load_config(config, ["track.mlflow=false"])
    taxonomy = load_taxonomy(_resolve(cfg.data.taxonomy))
    splits, info = load_data(cfg, taxonomy)
    sets: dict[str, tuple[list[str], Any]] = {n: (splits[n].texts, splits[n].y) for n in names}
    realworld = realworld_dir()
    if realworld is not None:
        for path in sorted(realworld.glob("*.jsonl")):
            got = load_labelled(path, taxonomy, max_chars=cfg.model.max_chars)
            sets[f"realworld/{path.stem}"] = (got.texts, got.y)
    return cfg, taxonomy, splits, info, sets
