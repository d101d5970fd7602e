"""Shared helpers for the benchmark scripts: texts to score and process memory."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

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
