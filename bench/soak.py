"""A bounded soak test: valid and hostile traffic against a real server; answers and memory.

    .venv/bin/python bench/soak.py [--model models/dualscreen] [--duration 300]
        [--max-requests 50000] [--clients 16] [--out bench/soak.json]

(`make soak` runs it with the defaults.) Starts `dualscreen serve` on 127.0.0.1 on a free port in
production mode, with throw-away API keys, session secret and review database in a temporary
folder, and drives it from `--clients` concurrent asyncio + httpx clients until `--duration`
seconds or `--max-requests` requests, whichever comes first. The server is stopped at the end,
also on Ctrl-C or an error. Without `--model`, models/dualscreen is used, or
models/dualscreen-smoke when that is missing (it says so).

About 70 % of requests are valid classify calls (single items, batches, explain=true, long texts,
enqueue=true); the rest are malformed JSON, wrong types, oversized bodies (declared and chunked),
too many items, invalid UTF-8, no key, a wrong key, a key without the scope, unknown routes,
wrong methods, review API calls with and without auth, and /health, /ready, /info, /metrics.
Every request carries the statuses it may get; each answer is `ok`, `shed` (429 or 503, the
documented saturation answers), `unexpected` (another 4xx for an invalid request) or `failure`:
a transport error or client time-out (status `error`), a 5xx other than 429/503, a non-200
answer to a request that should succeed, or a 200 to one that should not (status 599 marks a
200 whose body is not a ClassifyResponse with one result per item).

Measures: requests per kind with their status codes, the first unexpected answers, p50/p95/p99
latency of valid classify calls, throughput, and the resident memory of the server's process
tree sampled every second: at the end of warm-up (10 % of the run, at most 30 s) against the end
of the run. Prints a table, writes the same as JSON to `--out`, and exits 1 when there was a
failure, more than `--max-shed-pct` of valid calls were shed, memory grew more than
`--max-growth-pct` after warm-up, or the server died.

Compromises: the clients share the machine with the server, so throughput is a floor, not the
server's capacity. RSS is compared as the median of the samples around each mark, which smooths
the rise and fall of single batches but not allocator high-water marks: a growth within the
limit is not proof of no leak, only that none is large at this rate and length.
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import json
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import (
    ROOT,
    free_port,
    load_listings,
    percentile,
    start_server,
    stop_server,
    tree_rss_mb,
    wait_ready,
)

SHED = frozenset({429, 503})
LONG_CHARS = 40_000


@dataclass
class Call:
    """One request to send and the statuses it may get."""

    method: str
    path: str
    expect: frozenset[int]
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    json: Any = None
    content: bytes | Callable[[], AsyncIterator[bytes]] | None = None
    items: int = 0


@dataclass(frozen=True)
class Kind:
    """A kind of request: its share of the traffic and how to build one."""

    name: str
    weight: float
    valid: bool
    build: Callable[[random.Random], Call]


@dataclass
class Record:
    """What came back, per kind, plus the latencies of valid calls."""

    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    items: int = 0
    sent: int = 0
    server_died: int | None = None


class Traffic:
    """Builds the request mix from real listings and two keys (full and classify-only)."""

    def __init__(self, listings: list[dict[str, str]], full_key: str, classify_key: str) -> None:
        self.listings = listings
        self.full = {"X-API-Key": full_key}
        self.classify_only = {"X-API-Key": classify_key}
        self.oversized = b'{"title": "' + b"x" * (4 * 1024 * 1024 + 1024) + b'"}'
        self.kinds = [
            # valid classify calls: 70 %
            Kind("single", 36, True, self.single),
            Kind("batch", 16, True, self.batch),
            Kind("long_text", 8, True, self.long_text),
            Kind("explain", 6, True, self.explain),
            Kind("batch_long", 2, True, self.batch_long),
            Kind("enqueue", 2, True, self.enqueue),
            # everything else: 30 %
            Kind("malformed_json", 3, False, self.malformed_json),
            Kind("wrong_types", 4, False, self.wrong_types),
            Kind("oversized_body", 1, False, self.oversized_body),
            Kind("oversized_chunked", 0.5, False, self.oversized_chunked),
            Kind("too_many_items", 1, False, self.too_many_items),
            Kind("invalid_utf8", 2.5, False, self.invalid_utf8),
            Kind("no_key", 3, False, self.no_key),
            Kind("wrong_key", 3, False, self.wrong_key),
            Kind("unknown_route", 2.5, False, self.unknown_route),
            Kind("wrong_method", 1, False, self.wrong_method),
            Kind("review_auth", 2, False, self.review_auth),
            Kind("review_no_auth", 1.5, False, self.review_no_auth),
            Kind("review_no_scope", 1, False, self.review_no_scope),
            Kind("ops", 3, False, self.ops),
            Kind("metrics_no_key", 1, False, self.metrics_no_key),
        ]
        self.weights = [k.weight for k in self.kinds]

    def pick(self, rng: random.Random) -> Kind:
        return rng.choices(self.kinds, self.weights)[0]

    def listing(self, rng: random.Random, n: int | None = None) -> dict[str, Any]:
        item: dict[str, Any] = dict(rng.choice(self.listings))
        item["id"] = n if n is not None else rng.randrange(10**9)
        return item

    def long_listing(self, rng: random.Random) -> dict[str, Any]:
        item = self.listing(rng)
        words = " ".join(self.listing(rng)["description"] or "spare part" for _ in range(20))
        item["description"] = (words + " ") * (LONG_CHARS // (len(words) + 1) + 1)
        return item

    def classify(self, body: Any, items: int, params: dict[str, str] | None = None) -> Call:
        return Call("POST", "/v1/classify", frozenset({200}), self.full, params, body, items=items)

    # valid ---------------------------------------------------------------------------------

    def single(self, rng: random.Random) -> Call:
        return self.classify(self.listing(rng), 1)

    def batch(self, rng: random.Random) -> Call:
        n = rng.randint(2, 32)
        return self.classify({"items": [self.listing(rng, i) for i in range(n)]}, n)

    def long_text(self, rng: random.Random) -> Call:
        return self.classify(self.long_listing(rng), 1)

    def explain(self, rng: random.Random) -> Call:
        return self.classify(self.listing(rng), 1, {"explain": "true"})

    def batch_long(self, rng: random.Random) -> Call:
        return self.classify({"items": [self.long_listing(rng) for _ in range(8)]}, 8)

    def enqueue(self, rng: random.Random) -> Call:
        return self.classify(self.listing(rng), 1, {"enqueue": "true"})

    # invalid and the rest ------------------------------------------------------------------

    def raw(self, body: bytes, expect: set[int], headers: dict[str, str] | None = None) -> Call:
        h = {"Content-Type": "application/json"} | (self.full if headers is None else headers)
        return Call("POST", "/v1/classify", frozenset(expect), h, content=body)

    def malformed_json(self, rng: random.Random) -> Call:
        body = rng.choice(
            [b'{"title": "thermal camera"', b"{title: 'x'}", b'{"title": "a",}', b"", b"nul"]
        )
        return self.raw(body, {400, 422})

    def wrong_types(self, rng: random.Random) -> Call:
        body = rng.choice(
            [
                {"title": 123},
                {"title": None},
                {"title": ["thermal", "camera"]},
                {"items": "thermal camera"},
                {"items": [{"title": {"a": 1}}]},
                {"items": []},
                {"attributes": {"range": [1, 2]}, "title": "radio"},
                {"title": "radio", "colour": "red"},
                {"title": "radio", "items": [{"title": "radio"}]},
                {"title": "   "},
                [1, 2, 3],
                "thermal camera",
            ]
        )
        params = {"explain": "perhaps"} if rng.random() < 0.1 else None
        return Call("POST", "/v1/classify", frozenset({422}), self.full, params, body)

    def oversized_body(self, rng: random.Random) -> Call:
        return self.raw(self.oversized, {413})

    def oversized_chunked(self, rng: random.Random) -> Call:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"title": "'
            for _ in range(80):  # 5 MiB in 64 KiB chunks, no Content-Length
                yield b"x" * 65536
            yield b'"}'

        headers = {"Content-Type": "application/json"} | self.full
        return Call("POST", "/v1/classify", frozenset({413}), headers, content=chunks)

    def too_many_items(self, rng: random.Random) -> Call:
        body = {"items": [{"title": "x"}] * 257}
        return Call("POST", "/v1/classify", frozenset({413}), self.full, json=body)

    def invalid_utf8(self, rng: random.Random) -> Call:
        body = rng.choice([b'{"title": "caf\xe9 \xff\xfe"}', b'{"items": [{"title": "\xc3\x28"}]}'])
        return self.raw(body, {400, 422})

    def no_key(self, rng: random.Random) -> Call:
        return Call("POST", "/v1/classify", frozenset({401}), json=self.listing(rng))

    def wrong_key(self, rng: random.Random) -> Call:
        key = {"X-API-Key": "ds_" + secrets.token_urlsafe(24)}
        return Call("POST", "/v1/classify", frozenset({401}), key, json=self.listing(rng))

    def unknown_route(self, rng: random.Random) -> Call:
        method, path = rng.choice(
            [
                ("GET", "/v1/nope"),
                ("POST", "/v2/classify"),
                ("POST", "/v1/classify/extra"),
                ("GET", "/wp-admin/setup.php"),
                ("GET", "/review/static/secret.txt"),
                ("GET", "/v1/review/items/999999999"),
            ]
        )
        return Call(
            method, path, frozenset({404}), self.full, json={} if method == "POST" else None
        )

    def wrong_method(self, rng: random.Random) -> Call:
        method, path = rng.choice(
            [("GET", "/v1/classify"), ("DELETE", "/health"), ("PUT", "/v1/review/queue")]
        )
        return Call(method, path, frozenset({405}), self.full)

    def review_call(self, rng: random.Random, headers: dict[str, str], expect: int) -> Call:
        method, path = rng.choice(
            [("GET", "/v1/review/queue"), ("GET", "/v1/review/stats"), ("GET", "/v1/review/audit")]
            + [("POST", "/v1/review/items")]
        )
        body = None
        if method == "POST":
            body = {"items": [self.listing(rng)], "source": "soak"}
        params = {"limit": "20"} if path.endswith(("queue", "audit")) else None
        return Call(method, path, frozenset({expect}), headers, params, body)

    def review_auth(self, rng: random.Random) -> Call:
        return self.review_call(rng, self.full, 200)

    def review_no_auth(self, rng: random.Random) -> Call:
        if rng.random() < 0.25:  # the web UI without a session goes to the log-in page
            return Call("GET", "/review/queue", frozenset({303}))
        return self.review_call(rng, {}, 401)

    def review_no_scope(self, rng: random.Random) -> Call:
        return self.review_call(rng, self.classify_only, 403)

    def ops(self, rng: random.Random) -> Call:
        path = rng.choice(["/health", "/ready", "/info", "/metrics", "/review/login"])
        return Call("GET", path, frozenset({200}), self.full)

    def metrics_no_key(self, rng: random.Random) -> Call:
        return Call("GET", rng.choice(["/metrics", "/info"]), frozenset({401}))


def judge(call: Call, status: int | None) -> str:
    """ok, shed, unexpected or failure (see the module docstring)."""
    if status is None:
        return "failure"
    if status in call.expect:
        return "ok"
    if status in SHED:
        return "shed"
    if status >= 500 or 200 in call.expect or status < 300:
        return "failure"
    return "unexpected"


async def send(client: httpx.AsyncClient, call: Call) -> tuple[int | None, str, float]:
    """Send one call: its status (None on a transport error), a problem note and latency in ms."""
    content = call.content() if callable(call.content) else call.content
    started = time.perf_counter()
    try:
        r = await client.request(
            call.method,
            call.path,
            headers=call.headers,
            params=call.params,
            json=call.json,
            content=content,
        )
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}", (time.perf_counter() - started) * 1000
    ms = (time.perf_counter() - started) * 1000
    if call.items and r.status_code == 200:
        try:
            got = len(r.json()["items"])
        except (ValueError, KeyError, TypeError):
            return 599, "200 without a well-formed ClassifyResponse: " + r.text[:200], ms
        if got != call.items:
            return 599, f"200 with {got} results for {call.items} items", ms
        return 200, "", ms
    return r.status_code, "" if r.status_code in call.expect else r.text[:200], ms


def tally(record: Record, kind: Kind, call: Call, status: int | None, note: str, ms: float) -> None:
    """Count one answer under its kind."""
    outcome = judge(call, status)
    record.statuses.setdefault(kind.name, Counter())[str(status or "error")] += 1
    record.outcomes.setdefault(kind.name, Counter())[outcome] += 1
    if kind.valid and status == 200:
        record.latency_ms.setdefault(kind.name, []).append(ms)
        record.items += call.items
    if outcome in ("failure", "unexpected") and len(record.examples) < 20:
        record.examples.append(
            {
                "kind": kind.name,
                "outcome": outcome,
                "request": f"{call.method} {call.path}",
                "expected": sorted(call.expect),
                "status": status,
                "detail": note,
            }
        )


async def drive(
    base: str,
    traffic: Traffic,
    record: Record,
    server: subprocess.Popen[bytes],
    args: argparse.Namespace,
) -> None:
    """Run the clients until the deadline, the request budget, or the server's death."""
    deadline = time.monotonic() + args.duration
    stop = asyncio.Event()

    async def worker(n: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(args.seed * 1000 + n)
        while not stop.is_set() and time.monotonic() < deadline:
            if record.sent >= args.max_requests:
                return
            record.sent += 1
            kind = traffic.pick(rng)
            call = kind.build(rng)
            status, note, ms = await send(client, call)
            tally(record, kind, call, status, note, ms)

    async def watch() -> None:
        while not stop.is_set():
            if server.poll() is not None:
                record.server_died = server.returncode
                stop.set()
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout, limits=limits) as client:
        # every call stands alone: no cookie from /review/login rides along on the next
        client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(worker(n, client) for n in range(args.clients)))
        finally:
            stop.set()
            await watcher


class RssSampler(threading.Thread):
    """Samples the server's process-tree RSS every `interval` seconds in a thread of its own,
    so a busy event loop does not delay the samples."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while True:
            rss = tree_rss_mb(self.pid)
            if rss > 0:
                self.samples.append((round(time.monotonic() - started, 2), round(rss, 1)))
            if self._stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join()


def memory(
    samples: list[tuple[float, float]], warmup_s: float | None, start_mb: float
) -> dict[str, Any]:
    """RSS at the end of warm-up and at the end (medians around each mark) and the growth."""
    out: dict[str, Any] = {"start_mb": round(start_mb, 1), "samples": len(samples)}
    if len(samples) < 3:
        return out | {"warm_mb": None, "end_mb": None, "growth_pct": None}
    mark = warmup_s if warmup_s is not None else min(30.0, 0.1 * samples[-1][0])
    around = [r for t, r in samples if abs(t - mark) <= 2.0]
    warm = statistics.median(around or [min(samples, key=lambda s: abs(s[0] - mark))[1]])
    end = statistics.median(r for _, r in samples[-3:])
    after = [(t, r) for t, r in samples if t >= mark]
    slope = None
    if len(after) >= 3:
        fit = statistics.linear_regression([t for t, _ in after], [r for _, r in after])
        slope = round(fit.slope * 60, 2)
    return out | {
        "warmup_at_s": round(mark, 1),
        "warm_mb": round(warm, 1),
        "end_mb": round(end, 1),
        "peak_mb": max(r for _, r in samples),
        "growth_pct": round(100 * (end - warm) / warm, 2),
        "slope_mb_per_min": slope,
    }


def summarize(
    record: Record,
    traffic: Traffic,
    elapsed: float,
    rss: dict[str, Any],
    args: argparse.Namespace,
    model: str,
    info: dict[str, Any],
    log_text: str,
    interrupted: bool,
) -> dict[str, Any]:
    """Everything the table shows, and the verdict."""
    valid = {k.name for k in traffic.kinds if k.valid}
    kinds: dict[str, dict[str, Any]] = {}
    for k in traffic.kinds:
        if k.name not in record.statuses:
            continue
        kinds[k.name] = {
            "valid": k.valid,
            "sent": sum(record.statuses[k.name].values()),
            "statuses": dict(sorted(record.statuses[k.name].items())),
            "outcomes": {
                o: record.outcomes[k.name][o] for o in ("ok", "shed", "unexpected", "failure")
            },
        }
    totals = Counter[str]()
    for c in record.outcomes.values():
        totals.update(c)
    all_valid = [ms for name, v in record.latency_ms.items() if name in valid for ms in v]
    latency = {
        name: {
            "n": len(v),
            "p50_ms": round(percentile(v, 50), 1),
            "p95_ms": round(percentile(v, 95), 1),
            "p99_ms": round(percentile(v, 99), 1),
            "max_ms": round(max(v), 1),
        }
        for name, v in [("all valid", all_valid), *sorted(record.latency_ms.items())]
        if v
    }
    answered = sum(k["sent"] for k in kinds.values())
    valid_sent = sum(kinds[k]["sent"] for k in kinds if k in valid)
    valid_shed = sum(kinds[k]["outcomes"]["shed"] for k in kinds if k in valid)
    shed_pct = 100 * valid_shed / valid_sent if valid_sent else 0.0
    reasons = []
    if totals["failure"]:
        reasons.append(f"{totals['failure']} failed requests")
    if shed_pct > args.max_shed_pct:
        reasons.append(f"{shed_pct:.1f} % of valid calls shed (limit {args.max_shed_pct} %)")
    if rss.get("growth_pct") is not None and rss["growth_pct"] > args.max_growth_pct:
        reasons.append(f"RSS grew {rss['growth_pct']:.1f} % (limit {args.max_growth_pct} %)")
    if record.server_died is not None:
        reasons.append(f"server exited with code {record.server_died}")
    if not record.sent:
        reasons.append("no requests sent")
    logged = [line for line in log_text.splitlines() if re.search(r"\bERROR\b|Traceback", line)]
    return {
        "model": model,
        "backend": info.get("backend"),
        "model_version": info.get("model", {}).get("version"),
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "stopped_by": "interrupt"
        if interrupted
        else "server death"
        if record.server_died is not None
        else "max-requests"
        if record.sent >= args.max_requests
        else "duration",
        "requests": answered,
        "cancelled_in_flight": record.sent - answered,
        "kinds": kinds,
        "outcomes": dict(totals),
        "valid_shed_pct": round(shed_pct, 2),
        "examples": record.examples,
        "latency_valid": latency,
        "throughput": {
            "requests_per_s": round(answered / elapsed, 1) if elapsed else None,
            "valid_calls_per_s": round(len(all_valid) / elapsed, 1) if elapsed else None,
            "items_per_s": round(record.items / elapsed, 1) if elapsed else None,
        },
        "rss": rss,
        "server_log_errors": logged[:20],
        "server_log_error_lines": len(logged),
        "passed": not reasons and not interrupted,
        "reasons": reasons + (["interrupted"] if interrupted else []),
    }


def print_summary(r: dict[str, Any]) -> None:
    """The summary table."""
    print(
        f"\ndualscreen soak: {r['model']} ({r['backend']}, {r['model_version']}), "
        f"{r['clients']} clients, {r['seconds']} s, {r['requests']:,} requests answered"
        + (f" ({r['cancelled_in_flight']} cancelled in flight)" if r["cancelled_in_flight"] else "")
        + f", stopped by {r['stopped_by']}\n"
    )
    print(
        f"{'kind':<18} {'valid':<5} {'sent':>6}  {'statuses':<28} {'ok':>6} {'shed':>5} "
        f"{'unexp':>5} {'fail':>5}"
    )
    for name, k in r["kinds"].items():
        codes = " ".join(f"{c}:{n}" for c, n in k["statuses"].items())
        o = k["outcomes"]
        print(
            f"{name:<18} {'yes' if k['valid'] else '':<5} {k['sent']:>6}  {codes:<28} "
            f"{o['ok']:>6} {o['shed']:>5} {o['unexpected']:>5} {o['failure']:>5}"
        )
    t = r["outcomes"]
    print(
        f"{'total':<18} {'':<5} {r['requests']:>6}  {'':<28} {t.get('ok', 0):>6} "
        f"{t.get('shed', 0):>5} {t.get('unexpected', 0):>5} {t.get('failure', 0):>5}"
    )
    if r["examples"]:
        print(f"\nunexpected answers (first {min(len(r['examples']), 8)}):")
        for e in r["examples"][:8]:
            print(
                f"  [{e['outcome']}] {e['kind']}: {e['request']} -> {e['status']} "
                f"(expected {e['expected']}) {e['detail'][:160]}"
            )
    print("\nlatency of valid classify calls (200 only), ms:")
    print(f"  {'':<12} {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    for name, v in r["latency_valid"].items():
        print(
            f"  {name:<12} {v['n']:>6} {v['p50_ms']:>8.1f} {v['p95_ms']:>8.1f} "
            f"{v['p99_ms']:>8.1f} {v['max_ms']:>8.1f}"
        )
    tp = r["throughput"]
    print(
        f"\nthroughput: {tp['requests_per_s']} requests/s, {tp['valid_calls_per_s']} valid "
        f"calls/s, {tp['items_per_s']} items/s; valid calls shed {r['valid_shed_pct']} %"
    )
    m = r["rss"]
    if m.get("growth_pct") is None:
        print("server RSS: too few samples to compare")
    else:
        print(
            f"server RSS (process tree): start {m['start_mb']} MB, warm-up (at "
            f"{m['warmup_at_s']} s) {m['warm_mb']} MB, end {m['end_mb']} MB, peak "
            f"{m['peak_mb']} MB; growth {m['growth_pct']:+.2f} % "
            f"(slope after warm-up {m['slope_mb_per_min']} MB/min)"
        )
    if r["server_log_error_lines"]:
        print(f"server log: {r['server_log_error_lines']} ERROR/Traceback lines, first:")
        for line in r["server_log_errors"][:5]:
            print(f"  {line[:200]}")
    verdict = "PASS" if r["passed"] else "FAIL: " + "; ".join(r["reasons"])
    print(f"\nverdict: {verdict}")


def resolve_model(given: str | None) -> str:
    """--model, else models/dualscreen, else models/dualscreen-smoke (said out loud)."""
    if given:
        if not (Path(given) / "manifest.json").exists() and "://" not in given:
            raise SystemExit(f"no model at {given} (no manifest.json)")
        return given
    default = ROOT / "models" / "dualscreen"
    if (default / "manifest.json").exists():
        return str(default)
    smoke = ROOT / "models" / "dualscreen-smoke"
    if not (smoke / "manifest.json").exists():
        raise SystemExit("neither models/dualscreen nor models/dualscreen-smoke exists")
    print(f"note: {default} is missing; soaking the smoke model {smoke}", file=sys.stderr)
    return str(smoke)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="default models/dualscreen, else -smoke")
    parser.add_argument("--duration", type=float, default=300, help="seconds of traffic")
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--warmup", type=float, default=None, help="default 10 %% of the run, <= 30 s"
    )
    parser.add_argument("--max-growth-pct", type=float, default=10.0)
    parser.add_argument("--max-shed-pct", type=float, default=1.0, help="429/503 share of valid")
    parser.add_argument("--timeout", type=float, default=60.0, help="client time-out per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "soak.json")
    args = parser.parse_args()

    from serving.auth_keys import create_key

    model = resolve_model(args.model)
    signal.signal(signal.SIGTERM, _interrupt)
    record = Record()
    interrupted = False
    info: dict[str, Any] = {}
    elapsed = 0.0
    start_mb = 0.0
    sampler: RssSampler | None = None
    with tempfile.TemporaryDirectory(prefix="dualscreen-soak-") as tmp:
        keys = Path(tmp) / "api_keys.json"
        full_key = create_key(keys, "soak-full", ("classify", "review", "admin"))
        classify_key = create_key(keys, "soak-classify", ("classify",))
        traffic = Traffic(load_listings(), full_key, classify_key)
        settings = {
            "DUALSCREEN_MODE": "production",
            "DUALSCREEN_KEYS_FILE": str(keys),
            "DUALSCREEN_DATABASE_URL": f"sqlite:///{tmp}/review.db",
            "DUALSCREEN_SESSION_SECRET": secrets.token_urlsafe(32),
        }
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            server = start_server(model, port, settings, log)
            try:
                print(f"starting the server on {base} ...", file=sys.stderr)
                wait_ready(base, server, timeout_s=300)
                info = httpx.get(f"{base}/info", headers=traffic.full, timeout=10).json()
                start_mb = tree_rss_mb(server.pid)
                print(
                    f"ready ({info.get('backend')}); soaking for up to {args.duration:.0f} s or "
                    f"{args.max_requests:,} requests with {args.clients} clients",
                    file=sys.stderr,
                )
                sampler = RssSampler(server.pid)
                sampler.start()
                started = time.monotonic()
                try:
                    asyncio.run(drive(base, traffic, record, server, args))
                except KeyboardInterrupt:
                    interrupted = True
                elapsed = time.monotonic() - started
            except KeyboardInterrupt:
                interrupted = True
            finally:
                if sampler is not None:
                    sampler.stop()
                stop_server(server)
        log_text = log_path.read_text(encoding="utf-8", errors="replace")
    rss = memory(sampler.samples if sampler else [], args.warmup, start_mb)
    result = summarize(record, traffic, elapsed, rss, args, model, info, log_text, interrupted)
    print_summary(result)
    if (result["outcomes"].get("failure") or record.server_died is not None) and log_text:
        print("\nlast lines of the server log:", file=sys.stderr)
        for line in log_text.splitlines()[-30:]:
            print(f"  {line}", file=sys.stderr)
    result["rss"]["series"] = sampler.samples if sampler else []
    args.out.write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}} | result, indent=2)
    )
    print(f"wrote {args.out}")
    return 130 if interrupted else 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
