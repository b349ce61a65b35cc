"""Intake latency with a slow LLM: the recommendation asked before answering vs. after.

    .venv/bin/python bench/slow_llm.py                 # 2 s per LLM answer, 300 reports at 30/s
    .venv/bin/python bench/slow_llm.py --delay 5 --rate 50

Starts the local fake of the Chat Completions API (``tests/openai_fake.py``) answering every
call after ``--delay`` seconds, then one server per mode on a fresh data dir with the example
runbooks, and sends the same alert-storm workload open loop (``--rate`` reports/s over 4
services). Modes: ``sync`` (``IR_RECOMMENDER__ASYNCHRONOUS=false``: a new ticket's
recommendation is asked before its report is answered, holding its service's locks) and
``async`` (the default: answered with the offline recommendation, the LLM's added later).
Prints latency per outcome (p50/p95/p99/max ms) and the LLM calls made.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
from run_bench import Server, percentile
from workloads import storm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.openai_fake import FakeOpenAI, Reply, answer

KEY = "bench-llm-key-123"
RUNBOOKS = Path(__file__).resolve().parent.parent / "src" / "incident_responder" / "examples" / "runbooks"


def _load_runbooks(base_url: str) -> int:
    with httpx.Client(base_url=base_url, headers={"X-API-Key": KEY}, timeout=30) as client:
        for path in sorted(RUNBOOKS.glob("*.md")):
            text = path.read_text()
            heading = (line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
            title = next(heading, path.stem)
            client.put(f"/v1/runbooks/{path.stem}", json={"title": title, "content": text}).raise_for_status()
    return len(list(RUNBOOKS.glob("*.md")))


async def _drive(base_url: str, bodies: list[dict[str, str]], rate: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base_url, connector=connector, headers={"X-API-Key": KEY}) as session:
        start = time.perf_counter()

        async def one(i: int, body: dict[str, str]) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent = time.perf_counter()
            async with session.post("/v1/incidents", json=body) as response:
                status = (await response.json()).get("status", str(response.status))
            out.append((status, (time.perf_counter() - sent) * 1000))

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return out


def _row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<10} {0:>5}"
    return (
        f"  {label:<10} {len(values):>5} {percentile(values, 50):>9.1f} {percentile(values, 95):>9.1f}"
        f" {percentile(values, 99):>9.1f} {max(values):>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--delay", type=float, default=2.0, help="seconds per LLM answer")
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--rate", type=float, default=30.0, help="reports per second (open loop)")
    parser.add_argument("--modes", default="sync,async")
    args = parser.parse_args()

    workload = storm(args.reports, seed=7, templates=12, repeat_ratio=0.85)
    services = ["checkout", "payments", "search", "auth"]
    bodies = [{"service": services[i % 4], "log": b["log"]} for i, b in enumerate(workload.bodies)]
    fake = FakeOpenAI()
    reply = answer("Follow the runbook.", [("Do what the runbook says", "disk-full")])
    fake.otherwise = Reply(status=reply.status, body=reply.body, delay=args.delay)
    print(
        f"LLM fake answering after {args.delay:g}s; "
        f"{len(bodies)} reports at {args.rate:g}/s over 4 services\n"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="ir-slow-llm-") as tmp:
            for mode in args.modes.split(","):
                env = {
                    "IR_RECOMMENDER__KIND": "openai",
                    "IR_RECOMMENDER__BASE_URL": fake.base_url,
                    "IR_RECOMMENDER__API_KEY": "sk-bench",
                    "IR_RECOMMENDER__MODEL": "bench",
                    "IR_RECOMMENDER__TIMEOUT": str(args.delay * 3),
                    "IR_RECOMMENDER__ASYNCHRONOUS": "true" if mode == "async" else "false",
                    # every ticket of the workload asks: no answer reused between them
                    "IR_PERFORMANCE__RECOMMENDATION_CACHE_SIZE": "0",
                }
                server = Server(mode, Path(tmp), {"bench": KEY}, env)
                server.start()
                try:
                    _load_runbooks(server.base_url)
                    calls_before = len(fake.requests)
                    results = asyncio.run(_drive(server.base_url, bodies, args.rate))
                    calls = len(fake.requests) - calls_before
                finally:
                    server.stop()
                print(f"{mode}: {calls} LLM calls during the run")
                print(f"  {'outcome':<10} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}")
                print(_row("all", [ms for _, ms in results]))
                for status in sorted({s for s, _ in results}):
                    print(_row(status, [ms for s, ms in results if s == status]))
                print()
    finally:
        fake.close()


if __name__ == "__main__":
    main()
