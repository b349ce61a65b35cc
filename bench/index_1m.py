"""The embedded vector index at scale: a Qdrant Edge shard with 1M stored incidents.

    .venv/bin/python bench/index_1m.py [--points 1000000] [--queries 1000] [--out index.json]

Builds a shard through the project's adapter (``QdrantEdgeIndex(path, 384)``) with random
unit vectors and incident payloads (100 services, ~1 % of the rows each), upserting
in batches of 1,000; then times the server's two index reads - the filtered nearest-
neighbour search (tenant+kind+service, limit 10) and the fingerprint lookup - and
this process's peak RSS. Finally a fresh process reopens the shard, which is what a
server restart costs. ``optimize()`` is never called, as on the request path.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from incident_responder.backends.vector.qdrant_edge import QdrantEdgeIndex
from incident_responder.ports import VectorFilter, VectorPoint

DIM = 384
TENANT = "bench"
KIND = "incident"
REPORTS_PER_TICKET = 10


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _service(k: int) -> str:
    return f"svc-{k:03d}"


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


@dataclass(frozen=True)
class Shape:
    points: int
    services: int

    @property
    def tickets_per_service(self) -> int:
        return max(self.points // self.services // REPORTS_PER_TICKET, 1)

    def fingerprint(self, service: int, ticket: int) -> str:
        return f"{(service * 1_000_003 + ticket) * 2_654_435_761 % 2**64:016x}"


def build(index: QdrantEdgeIndex, shape: Shape, batch: int, seed: int) -> tuple[float, float]:
    """Upsert ``shape.points`` points; returns (wall seconds, seconds inside upsert)."""
    rng = np.random.default_rng(seed)
    ids = random.Random(seed)
    started, in_upsert = time.perf_counter(), 0.0
    report_every = max(shape.points // 10, batch)
    for start in range(0, shape.points, batch):
        n = min(batch, shape.points - start)
        vectors = unit_vectors(rng, n)
        services = rng.integers(0, shape.services, n)
        tickets = rng.integers(0, shape.tickets_per_service, n)
        points = [
            VectorPoint(
                id=str(uuid.UUID(int=ids.getrandbits(128), version=4)),
                vector=vectors[i],
                payload={
                    "tenant": TENANT,
                    "kind": KIND,
                    "service": _service(int(services[i])),
                    "ticket_id": f"tkt_{int(services[i]):03d}_{int(tickets[i]):06d}",
                    "fingerprint": shape.fingerprint(int(services[i]), int(tickets[i])),
                    # the rest of what the server writes per report (a typical template)
                    "template": f"ERROR {_service(int(services[i]))}[<num>]: request <hex> to upstream "
                    f"<ip>:<num> failed after <duration> (cause {int(tickets[i])})",
                    "status": "open",
                    "normalizer_version": "bench",
                },
            )
            for i in range(n)
        ]
        t = time.perf_counter()
        index.upsert(points)
        in_upsert += time.perf_counter() - t
        done = start + n
        if done % report_every < batch or done == shape.points:
            elapsed = time.perf_counter() - started
            print(f"  {done:>10,} points  {elapsed:7.1f}s  {done / elapsed:8.0f} points/s", flush=True)
    return time.perf_counter() - started, in_upsert


def time_queries(n: int, query: Callable[[int], None]) -> list[float]:
    """Milliseconds of each of ``n`` calls."""
    out = []
    for i in range(n):
        t = time.perf_counter()
        query(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def measure_reads(index: QdrantEdgeIndex, shape: Shape, queries: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed + 1)
    vectors = unit_vectors(rng, queries)
    services = [_service(int(k)) for k in rng.integers(0, shape.services, queries)]
    fingerprints = [
        shape.fingerprint(int(k), int(t))
        for k, t in zip(
            rng.integers(0, shape.services, queries),
            rng.integers(0, shape.tickets_per_service, queries),
            strict=True,
        )
    ]
    short: list[int] = []
    missed: list[int] = []

    def search(i: int) -> None:
        where = VectorFilter({"tenant": TENANT, "kind": KIND, "service": services[i]})
        hits = index.search(vectors[i], where, 10)
        if len(hits) < 10 or any(h.payload.get("service") != services[i] for h in hits):
            short.append(i)

    def by_fingerprint(i: int) -> None:
        where = VectorFilter({"tenant": TENANT, "kind": KIND, "fingerprint": fingerprints[i]})
        if not index.find(where, 1):
            missed.append(i)

    first = time_queries(1, search)[0]
    searched = time_queries(queries, search)
    looked_up = time_queries(queries, by_fingerprint)
    return {
        "first_search_ms": first,
        "search_p50_ms": _percentile(searched, 50),
        "search_p99_ms": _percentile(searched, 99),
        "search_max_ms": max(searched),
        "search_qps": 1000 * len(searched) / sum(searched),
        "search_bad_results": len(short),
        "fingerprint_p50_ms": _percentile(looked_up, 50),
        "fingerprint_p99_ms": _percentile(looked_up, 99),
        "fingerprint_misses": len(missed),
    }


def reopen(path: Path, shape: Shape, queries: int, seed: int) -> dict[str, float]:
    """Run in a fresh process: open the shard, query it, report."""
    started = time.perf_counter()
    index = QdrantEdgeIndex(path, DIM)
    opened = time.perf_counter() - started
    # on the indexed ``kind`` alone: a server restart reads no payload of every point either
    count = index.count(VectorFilter({"kind": KIND}))
    reads = measure_reads(index, shape, queries, seed + 7)
    index.close()
    return {"reopen_s": opened, "reopen_count": count, **reads, "reopen_peak_rss_mb": _status_mb("VmHWM")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=1_000_000, help="stored incidents")
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1_000, help="points per upsert")
    parser.add_argument("--queries", type=int, default=1_000, help="timed queries of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help="where to build the shard (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the shard")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--reopen", type=Path, help=argparse.SUPPRESS)  # internal: child process mode
    args = parser.parse_args(argv)
    shape = Shape(args.points, args.services)
    if args.reopen:
        print(json.dumps(reopen(args.reopen, shape, min(args.queries, 200), args.seed)))
        return 0

    root = args.dir or Path(tempfile.mkdtemp(prefix="ir-index-bench-"))
    path = root / "shard"
    if path.exists() and any(path.iterdir()):
        parser.error(f"{path} is not empty")
    try:
        print(f"building {args.points:,} points in {path} (batches of {args.batch:,})", flush=True)
        baseline = _status_mb("VmRSS")
        index = QdrantEdgeIndex(path, DIM)
        wall, in_upsert = build(index, shape, args.batch, args.seed)
        built_rss = _status_mb("VmRSS")
        print(f"timing {args.queries:,} filtered searches and fingerprint lookups", flush=True)
        reads = measure_reads(index, shape, args.queries, args.seed)
        t = time.perf_counter()
        index.close()
        close_s = time.perf_counter() - t
        figures: dict[str, float] = {
            "points": args.points,
            "build_s": wall,
            "upsert_s": in_upsert,
            "upsert_points_per_s": args.points / in_upsert,
            "close_s": close_s,
            "rss_before_mb": baseline,
            "rss_after_build_mb": built_rss,
            "peak_rss_mb": _status_mb("VmHWM"),
            **reads,
            "disk_mb": _dir_mb(path),
        }
        print("reopening in a fresh process", flush=True)
        command = [sys.executable, __file__, "--reopen", str(path), "--points", str(args.points)]
        command += [
            "--services",
            str(args.services),
            "--queries",
            str(args.queries),
            "--seed",
            str(args.seed),
        ]
        child = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
        reopened = json.loads(child.stdout.strip().splitlines()[-1])
        figures.update(
            {
                f"reopened_{k}" if k.startswith(("search", "first", "finger")) else k: v
                for k, v in reopened.items()
            }
        )
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print_table(figures)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    return 0


ROWS = (
    ("points stored", "points", "{:,.0f}"),
    ("build wall time (s)", "build_s", "{:.1f}"),
    ("upsert throughput (points/s)", "upsert_points_per_s", "{:,.0f}"),
    ("flush+close (s)", "close_s", "{:.2f}"),
    ("shard on disk (MiB)", "disk_mb", "{:,.0f}"),
    ("RSS before build (MiB)", "rss_before_mb", "{:,.0f}"),
    ("RSS after build (MiB)", "rss_after_build_mb", "{:,.0f}"),
    ("peak RSS, build+queries (MiB, VmHWM)", "peak_rss_mb", "{:,.0f}"),
    ("filtered search: first (ms)", "first_search_ms", "{:.2f}"),
    ("filtered search p50 (ms)", "search_p50_ms", "{:.2f}"),
    ("filtered search p99 (ms)", "search_p99_ms", "{:.2f}"),
    ("filtered search max (ms)", "search_max_ms", "{:.2f}"),
    ("filtered search (queries/s, 1 thread)", "search_qps", "{:,.0f}"),
    ("searches with <10 or wrong-service hits", "search_bad_results", "{:.0f}"),
    ("fingerprint lookup p50 (ms)", "fingerprint_p50_ms", "{:.2f}"),
    ("fingerprint lookup p99 (ms)", "fingerprint_p99_ms", "{:.2f}"),
    ("fingerprint lookups finding nothing", "fingerprint_misses", "{:.0f}"),
    ("reopen: open the shard (s)", "reopen_s", "{:.2f}"),
    ("reopen: points found", "reopen_count", "{:,.0f}"),
    ("reopen: first search (ms)", "reopened_first_search_ms", "{:.2f}"),
    ("reopen: search p50 (ms)", "reopened_search_p50_ms", "{:.2f}"),
    ("reopen: search p99 (ms)", "reopened_search_p99_ms", "{:.2f}"),
    ("reopen: searches with <10 or wrong-service hits", "reopened_search_bad_results", "{:.0f}"),
    ("reopen: fingerprint lookups finding nothing", "reopened_fingerprint_misses", "{:.0f}"),
    ("reopen: peak RSS of the fresh process (MiB)", "reopen_peak_rss_mb", "{:,.0f}"),
)


def print_table(figures: dict[str, float]) -> None:
    width = max(len(label) for label, _, _ in ROWS)
    print()
    for label, key, fmt in ROWS:
        if key in figures:
            print(f"{label:<{width}}  {fmt.format(figures[key]):>12}")


if __name__ == "__main__":
    sys.exit(main())
