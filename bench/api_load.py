"""Drive the API on 127.0.0.1 with a bounded number of requests and print latency and throughput.

    .venv/bin/python bench/api_load.py [--model models/dualscreen] [--single 400] [--requests 3000]

Starts `dualscreen serve` in a subprocess (production mode, a throw-away key), then measures:
one client sending single items (p50/p99), 32 concurrent clients sending single items (items/s,
p99, errors), the server's resident memory under load, and, for the 80 % target, the bulk
scorer's items/s on the same texts in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time

import httpx
from common import ROOT, load_listings, percentile, rss_mb


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    errors: dict[int, int] = {}
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
            r = await client.post(url, json=item, headers={"X-API-Key": key})
            latencies.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                errors[r.status_code] = errors.get(r.status_code, 0) + 1

    async def watch() -> None:
        while True:
            peak[0] = max(peak[0], rss_mb(pid)["rss_mb"])
            await asyncio.sleep(0.25)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(clients)])
        elapsed = time.perf_counter() - started
        watcher.cancel()
    return {
        "items_per_s": len(items) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": sum(errors.values()),
        "error_codes": errors,
        "server_rss_mb": peak[0],
    }  # type: ignore[dict-item]


def bulk_rate(model: str, items: list[dict[str, str]]) -> float:
    from serving.predictor import Predictor

    predictor = Predictor.load(model)
    texts = [predictor.build(i).text for i in items]
    predictor.probabilities(texts[:64])
    started = time.perf_counter()
    predictor.predict_texts(texts)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(ROOT / "models" / "dualscreen"))
    parser.add_argument("--single", type=int, default=400)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    items = load_listings()
    key = "bench-" + secrets.token_urlsafe(16)
    port = free_port()
    env = dict(os.environ, DUALSCREEN_API_KEYS=f"{key}:classify", DUALSCREEN_MODE="production")
    server = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "serve", "--model", args.model, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("server did not become ready")
        url = f"{base}/v1/classify"
        asyncio.run(one_client(url, key, items[:50]))  # warm-up
        single = asyncio.run(one_client(url, key, items[: args.single]))
        batch_items = (items * (args.requests // len(items) + 1))[: args.requests]
        load = asyncio.run(many_clients(url, key, batch_items, args.clients, server.pid))
        idle_rss = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    bulk = bulk_rate(args.model, items[: min(len(items), 2000)])
    result = {
        "single_client": {
            "requests": len(single),
            "p50_ms": round(percentile(single, 50), 1),
            "p99_ms": round(percentile(single, 99), 1),
        },
        f"{args.clients}_clients": {
            k: (round(v, 1) if isinstance(v, float) else v) for k, v in load.items()
        },
        "server_peak_rss_mb": round(max(load["server_rss_mb"], idle_rss["peak_rss_mb"]), 1),
        "bulk_items_per_s": round(bulk, 1),
        "api_vs_bulk": round(load["items_per_s"] / bulk, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
