"""Drive the API on 127.0.0.1 with a bounded number of requests and print latency and throughput.

    .venv/bin/python bench/api_load.py [--model models/dualscreen] [--workers 2] [--requests 3000]

Starts `dualscreen serve --workers N` in a subprocess (production mode, a throw-away key; N
defaults to the usable CPU cores), then measures: one client sending single items (p50/p99), 32
concurrent clients sending single items (items/s, p99, errors), the server's resident memory
(all its processes) under load, and, for the 80 % target, the bulk scorer's items/s on the same
texts in this process, before the server starts and after it stops (the mean is the reference).

The 32 clients run twice when Debian's `wrk` is installed (`apt-get install wrk`): once from
Python (httpx, in this process, which takes CPU from the 2-core server) and once from wrk (C,
1 thread, a fixed duration), whose figures are the ones to compare with the bulk scorer. Without
wrk the Python clients' figure is the headline (`api_vs_bulk_headline`, `headline_load`).

CPU milliseconds per item (server processes; bulk: this process) are reported beside the rates:
on a machine shared with other jobs they move less than items/s do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from common import (
    ROOT,
    free_port,
    load_listings,
    percentile,
    start_server,
    stop_server,
    tree_cpu_s,
    tree_rss_mb,
    wait_ready,
)


async def one_client(url: str, key: str, items: list[dict[str, str]]) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(timeout=30) as client:
        for item in items:
            t = time.perf_counter()
            r = await client.post(url, json=item, headers={"X-API-Key": key})
            latencies.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
    return latencies


async def many_clients(
    url: str, key: str, items: list[dict[str, str]], clients: int, pid: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors: dict[int | str, int] = {}
    peak = [0.0]
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t = time.perf_counter()
            try:
                r = await client.post(url, json=item, headers={"X-API-Key": key})
            except httpx.TransportError as exc:  # a dropped connection counts, never aborts
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
                continue
            latencies.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                errors[r.status_code] = errors.get(r.status_code, 0) + 1

    async def watch() -> None:
        while True:
            peak[0] = max(peak[0], tree_rss_mb(pid))
            await asyncio.sleep(0.25)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        watcher = asyncio.create_task(watch())
        cpu = tree_cpu_s(pid)
        started = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(clients)])
        elapsed = time.perf_counter() - started
        cpu = tree_cpu_s(pid) - cpu
        watcher.cancel()
    return {
        "items_per_s": len(items) / elapsed,
        "server_cpu_ms_per_item": 1000 * cpu / len(items),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": sum(errors.values()),
        "error_codes": errors,  # type: ignore[dict-item]
        "server_rss_mb": peak[0],
    }


WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("WRK_BODIES")) do bodies[#bodies + 1] = line end
local key = os.getenv("WRK_KEY")
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/classify",
    {["Content-Type"] = "application/json", ["X-API-Key"] = key}, bodies[i])
end
"""


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk_load(
    base: str, key: str, items: list[dict[str, str]], clients: int, seconds: int, pid: int
) -> dict[str, object] | None:
    """32 connections from wrk (1 thread) for `seconds`; None when wrk is not installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("\n".join(json.dumps(i) for i in items) + "\n", encoding="utf-8")
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT, encoding="utf-8")
        env = {"WRK_BODIES": str(bodies), "WRK_KEY": key, "PATH": "/usr/bin:/bin"}
        proc = subprocess.Popen(
            [wrk, "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
            + ["-s", str(script), base],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        peak = 0.0
        cpu = tree_cpu_s(pid)
        while proc.poll() is None:
            peak = max(peak, tree_rss_mb(pid))
            time.sleep(0.25)
        cpu = tree_cpu_s(pid) - cpu
        out = proc.stdout.read() if proc.stdout else ""
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or "50" not in latency:
        return {"error": out[-500:]}
    requests = int(total.group(1)) if total else 0
    return {
        "items_per_s": round(float(rate.group(1)), 1),
        "requests": requests,
        "server_cpu_ms_per_item": round(1000 * cpu / requests, 2) if requests else None,
        "p50_ms": round(_ms(latency["50"]), 1),
        "p99_ms": round(_ms(latency["99"]), 1),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "server_rss_mb": round(peak, 1),
    }


def bulk_rate(model: str, items: list[dict[str, str]]) -> dict[str, float]:
    """The bulk scorer's items/s and CPU ms per item (all threads) on the same listings."""
    import os

    from serving.predictor import Predictor

    predictor = Predictor.load(model)
    texts = [predictor.build(i).text for i in items]
    predictor.probabilities(texts[:64])
    before = os.times()
    started = time.perf_counter()
    predictor.predict_texts(texts)
    elapsed = time.perf_counter() - started
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"items_per_s": len(texts) / elapsed, "cpu_ms_per_item": 1000 * cpu / len(texts)}


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(ROOT / "models" / "dualscreen"))
    parser.add_argument("--single", type=int, default=400)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--wrk-seconds", type=int, default=20)
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="server worker processes (default: the usable CPU cores)",
    )
    args = parser.parse_args()
    items = load_listings()
    bulk_items = items[: min(len(items), 2000)]
    bulk_before = bulk_rate(args.model, bulk_items)
    key = "bench-" + secrets.token_urlsafe(16)
    port = free_port()
    settings = {"DUALSCREEN_API_KEYS": f"{key}:classify", "DUALSCREEN_MODE": "production"}
    server = start_server(args.model, port, settings, workers=args.workers)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, server)
        url = f"{base}/v1/classify"
        asyncio.run(one_client(url, key, items[:50]))  # warm-up
        single = asyncio.run(one_client(url, key, items[: args.single]))
        batch_items = (items * (args.requests // len(items) + 1))[: args.requests]
        load = asyncio.run(many_clients(url, key, batch_items, args.clients, server.pid))
        wrk = wrk_load(base, key, items, args.clients, args.wrk_seconds, server.pid)
        idle_rss = tree_rss_mb(server.pid)
    finally:
        stop_server(server)
    bulk_after = bulk_rate(args.model, bulk_items)
    bulk = (bulk_before["items_per_s"] + bulk_after["items_per_s"]) / 2
    bulk_cpu = (bulk_before["cpu_ms_per_item"] + bulk_after["cpu_ms_per_item"]) / 2
    result: dict[str, object] = {
        "workers": args.workers,
        "single_client": {
            "requests": len(single),
            "p50_ms": round(percentile(single, 50), 1),
            "p99_ms": round(percentile(single, 99), 1),
        },
        f"{args.clients}_clients": {
            k: (round(v, 1) if isinstance(v, float) else v) for k, v in load.items()
        },
        "server_peak_rss_mb": round(max(load["server_rss_mb"], idle_rss), 1),
        "bulk_items_per_s": round(bulk, 1),
        "bulk_items_per_s_before_after": [
            round(bulk_before["items_per_s"], 1),
            round(bulk_after["items_per_s"], 1),
        ],
        "bulk_cpu_ms_per_item": round(bulk_cpu, 2),
        "api_vs_bulk": round(load["items_per_s"] / bulk, 3),
    }
    result["api_vs_bulk_headline"] = result["api_vs_bulk"]
    result["headline_load"] = "python (httpx, in the benchmark process)"
    if wrk is not None:
        result[f"{args.clients}_clients_wrk"] = wrk
        if "items_per_s" in wrk:
            result["api_vs_bulk_wrk"] = round(float(wrk["items_per_s"]) / bulk, 3)  # type: ignore[arg-type]
            result["api_vs_bulk_headline"] = result["api_vs_bulk_wrk"]
            result["headline_load"] = "wrk (1 thread)"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
