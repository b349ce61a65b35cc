"""End-to-end HTTP benchmark of incident-responder (see bench/README.md).

    .venv/bin/python bench/run_bench.py [--quick] [--naive] [--runs 3] [--out results.json]

It starts the server as a subprocess (fresh temporary data dir, 127.0.0.1, a free
port), waits for /readyz, drives load from this process with one asyncio ``aiohttp``
client per phase (HTTP/1.1 keep-alive, bounded pool), and reads the server's CPU
time and peak RSS from /proc. Afterwards, with the server stopped, it times the
embedding model alone on the same texts. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from ceiling import ratio_bound, storm_ceiling
from workloads import Workload, batches, storm, unique

HOST = "127.0.0.1"
NAIVE_ENV = "IR_PERFORMANCE__NAIVE"
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 45.0


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Plan:
    """How much load each phase offers; every phase is bounded by count and time."""

    single_storm: int  # incidents sent one per request (closed loop)
    single_unique: int
    batch_storm: int  # incidents sent through the batch endpoint
    batch_unique: int
    rates: tuple[int, ...]  # offered request rates of the open-loop phases (req/s)
    rate_seconds: float  # sending time of each open-loop phase
    concurrency: int = 32  # requests in flight in the single-request phases
    batch_concurrency: int = 2  # batch requests in flight
    batch_min: int = 100
    batch_max: int = 500
    open_loop_connections: int = 64  # connections (workers) of the open-loop client
    warmup: int = 40  # unmeasured requests after start-up (own tenant)
    phase_seconds: float = 120.0  # no phase starts a request after this
    drain_seconds: float = 60.0  # then in-flight requests get this long to finish


QUICK = Plan(
    single_storm=160,
    single_unique=50,
    batch_storm=400,
    batch_unique=100,
    rates=(100, 300, 500),
    rate_seconds=1.0,
    warmup=16,
    phase_seconds=10.0,
    drain_seconds=3.0,
)
FULL = Plan(
    single_storm=3_000,
    single_unique=600,
    batch_storm=10_000,
    batch_unique=2_000,
    rates=(100, 300, 500),
    rate_seconds=8.0,
)


# --------------------------------------------------------------------------- /proc


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its living descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{current}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children)
    return found


def cpu_seconds(pid: int) -> float:
    """User+system CPU of the tree, including children it already reaped."""
    total = 0
    for i, p in enumerate(_process_tree(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if i == 0:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mb(pid: int) -> float:
    """Sum of VmHWM (peak resident set) over the tree, in MiB."""
    return sum(_status_kb(p, "VmHWM") for p in _process_tree(pid)) / 1024


def rss_mb(pid: int) -> float:
    return sum(_status_kb(p, "VmRSS") for p in _process_tree(pid)) / 1024


def reset_peak_rss(pid: int) -> bool:
    """Restart VmHWM at the current RSS (``clear_refs`` 5) so each phase gets its own peak."""
    try:
        for p in _process_tree(pid):
            Path(f"/proc/{p}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- server


class ServerFailed(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _server_command() -> list[str]:
    script = Path(sys.executable).parent / "incident-responder"
    return [str(script)] if script.exists() else [sys.executable, "-m", "incident_responder"]


class Server:
    """One server subprocess on a fresh data dir; its log goes to a file in ``workdir``."""

    def __init__(self, label: str, workdir: Path, keys: dict[str, str], extra_env: dict[str, str]) -> None:
        self.label = label
        self.workdir = workdir
        self.port = _free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.log_path = workdir / f"server-{label}.log"
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "IR_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in keys.items()),
            # The benchmark measures capacity, not the per-key budget (6000/minute by default).
            "IR_RATE_LIMIT__PER_KEY": "",
            "IR_RATE_LIMIT__PER_TENANT": "",
            **extra_env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> float:
        """Spawn and wait for /readyz 200; returns seconds from spawn to ready."""
        data_dir = self.workdir / f"data-{self.label}"
        cmd = [
            *_server_command(),
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
        ]
        with self.log_path.open("wb") as log:
            started = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.perf_counter() - started < READY_TIMEOUT_S:
                if self.proc.poll() is not None:
                    raise ServerFailed(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise ServerFailed(f"server not ready after {READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def stop(self) -> float:
        """SIGTERM (graceful), SIGKILL if it lingers; returns seconds to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return time.perf_counter() - started

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_problems(self) -> Counter[str]:
        """Warning/error events of the server log, counted by event (or first words)."""
        found: Counter[str] = Counter()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return found
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if "Traceback" in line or " ERROR " in line or line.startswith(("ERROR", "CRITICAL")):
                    found[line.strip()[:120]] += 1
                continue
            if isinstance(record, dict) and record.get("level") in ("warning", "error", "critical"):
                found[f"{record['level']}: {record.get('event', '?')}"] += 1
        return found


def stage_seconds(base_url: str) -> dict[str, tuple[float, int]]:
    """Server-side time per pipeline stage from /metrics (``ir_stage_seconds``): {stage: (sum, count)}."""
    try:
        text = httpx.get(f"{base_url}/metrics", timeout=10.0).text
    except httpx.HTTPError:
        return {}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith(("ir_stage_seconds_sum{", "ir_stage_seconds_count{")):
            continue
        labels, value = line.rsplit(" ", 1)
        stage = labels.split('stage="', 1)[1].split('"', 1)[0]
        if labels.startswith("ir_stage_seconds_sum"):
            sums[stage] = float(value)
        else:
            counts[stage] = int(float(value))
    return {stage: (sums[stage], counts.get(stage, 0)) for stage in sorted(sums, key=lambda k: -sums[k])}


def naive_switch_recognized() -> bool | None:
    """Does ``incident-responder config`` list IR_PERFORMANCE__NAIVE? (None: could not tell)."""
    env = {**os.environ, "IR_API_KEYS": "bench:bench-key-123", NAIVE_ENV: "true"}
    try:
        out = subprocess.run(
            [*_server_command(), "config", "--json"], env=env, capture_output=True, timeout=60, check=True
        ).stdout
        return str(json.loads(out).get(NAIVE_ENV, "")).lower() in ("true", "1")
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


# --------------------------------------------------------------------------- measuring


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK  # minus idle and iowait


@dataclass(frozen=True)
class Job:
    """One request: the path, its JSON body and the incident group of each report in it."""

    path: str
    payload: Any
    groups: tuple[str, ...]


@dataclass
class Phase:
    """What one phase sent and got back."""

    name: str
    offered_rate: float | None = None
    incidents: int = 0  # incidents in requests that were answered or failed
    ok: int = 0  # incidents answered 2xx
    requests: int = 0
    late: int = 0  # incidents not answered within the phase's time budget (never sent or cut off)
    latencies_ms: list[float] = field(default_factory=list)  # one per answered request
    errors: Counter[str] = field(default_factory=Counter)  # failed incidents by cause
    statuses: Counter[str] = field(default_factory=Counter)
    tickets: set[str] = field(default_factory=set)  # distinct ticket ids in the answers
    groups: set[str] = field(default_factory=set)  # distinct incidents the workload sent (ok)
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    server_peak_rss_mb: float = 0.0
    client_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # CPU used meanwhile by every other process on the machine

    def record(self, job: Job, due: float, response: Answer | None, cause: str) -> None:
        """Count one finished request; ``due`` is when it was meant to start (perf_counter)."""
        bodies = len(job.groups)
        self.requests += 1
        self.incidents += bodies
        self.latencies_ms.append((time.perf_counter() - due) * 1000)
        if response is None:
            self.errors[cause] += bodies
            return
        if response.status_code >= 300:
            self.errors[f"HTTP {response.status_code} {_error_code(response)}".strip()] += bodies
            return
        try:
            payload = json.loads(response.body)
            results = payload.get("results", [payload])
        except (ValueError, AttributeError):
            self.errors["unparsable response"] += bodies
            return
        if not isinstance(results, list) or len(results) != bodies:
            self.errors["wrong number of results"] += bodies
            return
        self.ok += bodies
        self.groups.update(job.groups)
        for result in results:
            self.statuses[str(result.get("status"))] += 1
            if result.get("ticket_id"):
                self.tickets.add(str(result["ticket_id"]))

    def summary(self) -> dict[str, float]:
        lat = self.latencies_ms
        return {
            "incidents": self.incidents,
            "seconds": self.seconds,
            "throughput": self.ok / self.seconds if self.seconds > 0 else 0.0,
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat, default=float("nan")),
            "errors": sum(self.errors.values()),
            "late": self.late,
            "new": self.statuses["new"],
            "existing": self.statuses["existing"] + self.statuses["regression"],
            "queued": self.statuses["queued"],
            "tickets": len(self.tickets),
            "expected_tickets": len(self.groups),
            "server_cpu_s": self.server_cpu_s,
            "server_peak_rss_mb": self.server_peak_rss_mb,
            "client_cpu_s": self.client_cpu_s,
            "other_cpu_s": self.other_cpu_s,
            "requests": self.requests,
        }


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes


def _error_code(response: Answer) -> str:
    try:
        return str(json.loads(response.body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _client(base_url: str, key: str, connections: int) -> aiohttp.ClientSession:
    # aiohttp, not httpx: with 64 connections httpx's pool spent 6-10 ms of CPU per request
    # here (aiohttp 0.24 ms), a core taken from the server on a 2-core machine.
    return aiohttp.ClientSession(
        base_url=base_url,
        headers={"X-API-Key": key},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def _post(client: aiohttp.ClientSession, phase: Phase, job: Job, due: float) -> None:
    response, cause = None, ""
    try:
        async with client.post(job.path, json=job.payload) as answer:
            response = Answer(answer.status, await answer.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        cause = type(exc).__name__
    phase.record(job, due, response, cause)


async def _serve_queue(
    client: aiohttp.ClientSession,
    phase: Phase,
    queue: asyncio.Queue[tuple[float | None, Job]],
    workers: int,
    feed: Callable[[], Awaitable[None]],
    stop_starting: float,
    deadline: float,
) -> None:
    """``workers`` connections take (due, job) from ``queue`` (due None: now) until ``feed``
    is done and the queue is empty. No request starts after ``stop_starting``, and any
    still in flight at ``deadline`` is cut off; both count as late."""
    in_flight: dict[int, Job] = {}

    async def worker(n: int) -> None:
        while True:
            due, job = await queue.get()
            now = time.perf_counter()
            if now > stop_starting:
                phase.late += len(job.groups)
            else:
                in_flight[n] = job
                await _post(client, phase, job, now if due is None else due)
                del in_flight[n]
            queue.task_done()

    async def run_all() -> None:
        await feed()
        await queue.join()

    tasks = [asyncio.create_task(worker(n)) for n in range(workers)]
    try:
        async with asyncio.timeout(max(deadline - time.perf_counter(), 0.0)):
            await run_all()
    except TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    phase.late += sum(len(job.groups) for job in in_flight.values())
    while not queue.empty():
        phase.late += len(queue.get_nowait()[1].groups)


async def closed_loop(
    client: aiohttp.ClientSession, phase: Phase, jobs: Sequence[Job], concurrency: int, plan: Plan
) -> None:
    """``concurrency`` connections send ``jobs`` back to back (latency from each send)."""
    queue: asyncio.Queue[tuple[float | None, Job]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait((None, job))
    now = time.perf_counter()

    async def feed() -> None:
        return None

    await _serve_queue(
        client,
        phase,
        queue,
        concurrency,
        feed,
        now + plan.phase_seconds,
        now + plan.phase_seconds + plan.drain_seconds,
    )


async def open_loop(
    client: aiohttp.ClientSession, phase: Phase, jobs: Sequence[Job], rate: float, plan: Plan
) -> None:
    """Job i is due at t0 + i/rate whatever happened before (no coordinated omission):
    latency runs from that due time, so waiting for a free connection counts too."""
    count = min(int(rate * plan.rate_seconds), len(jobs))
    queue: asyncio.Queue[tuple[float | None, Job]] = asyncio.Queue()
    t0 = time.perf_counter() + 0.05

    async def feed() -> None:
        for i in range(count):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((due, jobs[i]))

    end = t0 + plan.rate_seconds + plan.drain_seconds
    await _serve_queue(client, phase, queue, plan.open_loop_connections, feed, end, end)


async def measured(
    server: Server, name: str, run: Callable[[Phase], Awaitable[None]], offered: float | None = None
) -> Phase:
    phase = Phase(name=name, offered_rate=offered)
    cpu0, client0, busy0 = cpu_seconds(server.pid), time.process_time(), machine_busy_seconds()
    reset = reset_peak_rss(server.pid)
    started = time.perf_counter()
    await run(phase)
    phase.seconds = time.perf_counter() - started
    phase.client_cpu_s = time.process_time() - client0
    phase.server_cpu_s = cpu_seconds(server.pid) - cpu0
    phase.other_cpu_s = max(machine_busy_seconds() - busy0 - phase.client_cpu_s - phase.server_cpu_s, 0.0)
    phase.server_peak_rss_mb = peak_rss_mb(server.pid) if reset else float("nan")
    return phase


# --------------------------------------------------------------------------- one server run


@dataclass(frozen=True)
class Workloads:
    single_storm: Workload
    single_unique: Workload
    batch_storm: Workload
    batch_unique: Workload
    rate_storms: tuple[Workload, ...]  # one per offered rate: no phase reuses another's texts

    @classmethod
    def make(cls, plan: Plan, seed: int) -> Workloads:
        rate_n = max(int(max(plan.rates, default=1) * plan.rate_seconds), 1)
        return cls(
            single_storm=storm(plan.single_storm, seed),
            single_unique=unique(plan.single_unique, seed),
            batch_storm=storm(plan.batch_storm, seed + 1),
            batch_unique=unique(plan.batch_unique, seed + 1),
            # Own texts per rate: a phase's one-offs must be new to the server, else its
            # latencies read as a warm storm's (3-4x better than a fresh one's).
            rate_storms=tuple(storm(rate_n, seed + 2 + 100 * j) for j in range(len(plan.rates))),
        )


def phase_names(plan: Plan) -> list[str]:
    batch = f"{plan.batch_min}-{plan.batch_max}"
    return [
        "warmup",
        f"single storm c{plan.concurrency}",
        f"single unique c{plan.concurrency}",
        f"batch storm {batch}",
        f"batch unique {batch}",
        *(f"open-loop storm {r}/s" for r in plan.rates),
    ]


def tenant_keys(plan: Plan) -> dict[str, str]:
    """One tenant per phase, so that no phase dedups against another's tickets."""
    return {f"bench-p{i}": f"bench-key-p{i}-0123456789" for i in range(len(phase_names(plan)))}


def single_jobs(load: Workload) -> list[Job]:
    return [
        Job("/v1/incidents", body, (group,)) for body, group in zip(load.bodies, load.groups, strict=True)
    ]


def batch_jobs(load: Workload, plan: Plan, seed: int) -> list[Job]:
    jobs, start = [], 0
    for chunk in batches(load.bodies, plan.batch_min, plan.batch_max, seed):
        groups = tuple(load.groups[start : start + len(chunk)])
        jobs.append(Job("/v1/incidents/batch", {"incidents": chunk}, groups))
        start += len(chunk)
    return jobs


async def drive(server: Server, plan: Plan, loads: Workloads, seed: int) -> list[Phase]:
    names = phase_names(plan)
    keys = list(tenant_keys(plan).values())
    warmup = single_jobs(storm(plan.warmup // 2, seed + 9)) + single_jobs(unique(plan.warmup // 2, seed + 9))
    closed: list[tuple[list[Job], int]] = [
        (warmup, 4),
        (single_jobs(loads.single_storm), plan.concurrency),
        (single_jobs(loads.single_unique), plan.concurrency),
        (batch_jobs(loads.batch_storm, plan, seed), plan.batch_concurrency),
        (batch_jobs(loads.batch_unique, plan, seed), plan.batch_concurrency),
    ]
    phases: list[Phase] = []
    for i, (jobs, concurrency) in enumerate(closed):
        async with _client(server.base_url, keys[i], concurrency) as client:

            async def run(
                phase: Phase,
                client: aiohttp.ClientSession = client,
                jobs: list[Job] = jobs,
                c: int = concurrency,
            ) -> None:
                await closed_loop(client, phase, jobs, c, plan)

            phases.append(await measured(server, names[i], run))
        print(f"  {names[i]:<24} done in {phases[-1].seconds:6.1f}s", flush=True)
    for j, rate in enumerate(plan.rates):
        i = len(closed) + j
        rate_jobs = single_jobs(loads.rate_storms[j])
        async with _client(server.base_url, keys[i], plan.open_loop_connections) as client:

            async def run_rate(
                phase: Phase,
                client: aiohttp.ClientSession = client,
                rate: float = rate,
                rate_jobs: list[Job] = rate_jobs,
            ) -> None:
                await open_loop(client, phase, rate_jobs, rate, plan)

            phases.append(await measured(server, names[i], run_rate, offered=rate))
        print(f"  {names[i]:<24} done in {phases[-1].seconds:6.1f}s", flush=True)
    return phases


@dataclass
class ServerRun:
    label: str
    spawn_to_ready_s: float
    ready_rss_mb: float
    peak_rss_mb: float  # highest of start-up and every phase
    total_cpu_s: float
    shutdown_s: float
    exit_code: int | None
    phases: list[Phase]
    log_problems: Counter[str]
    stages: dict[str, tuple[float, int]]  # server-side stage -> (seconds, calls), whole run
    note: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "spawn_to_ready_s": self.spawn_to_ready_s,
            "ready_rss_mb": self.ready_rss_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "total_cpu_s": self.total_cpu_s,
            "shutdown_s": self.shutdown_s,
            "exit_code": self.exit_code,
            "note": self.note,
            "log_problems": dict(self.log_problems),
            "stage_seconds": {k: {"seconds": v[0], "calls": v[1]} for k, v in self.stages.items()},
            "phases": {p.name: {**p.summary(), "errors_by_cause": dict(p.errors)} for p in self.phases},
        }


def run_server(
    label: str, workdir: Path, plan: Plan, loads: Workloads, seed: int, env: dict[str, str]
) -> ServerRun:
    server = Server(label, workdir, tenant_keys(plan), env)
    note = ""
    try:
        try:
            ready_s = server.start()
        except ServerFailed as exc:
            if NAIVE_ENV not in env:
                raise
            server.stop()
            note = f"server refused {sorted(env)}; ran with the defaults ({str(exc).splitlines()[0]})"
            print(f"  ! {note}", flush=True)
            server = Server(
                label, workdir, tenant_keys(plan), {k: v for k, v in env.items() if k != NAIVE_ENV}
            )
            ready_s = server.start()
        ready_rss, startup_peak = rss_mb(server.pid), peak_rss_mb(server.pid)
        print(f"  [{label}] ready in {ready_s:.1f}s (pid {server.pid}, RSS {ready_rss:.0f} MiB)", flush=True)
        phases = asyncio.run(drive(server, plan, loads, seed))
        total_cpu = cpu_seconds(server.pid)
        stages = stage_seconds(server.base_url)
    finally:
        shutdown_s = server.stop()
    return ServerRun(
        label=label,
        spawn_to_ready_s=ready_s,
        ready_rss_mb=ready_rss,
        peak_rss_mb=max([startup_peak, *(p.server_peak_rss_mb for p in phases)]),
        total_cpu_s=total_cpu,
        shutdown_s=shutdown_s,
        exit_code=server.proc.returncode if server.proc else None,
        phases=phases,
        log_problems=server.log_problems(),
        stages=stages,
        note=note,
    )


# --------------------------------------------------------------------------- the model alone


def model_throughput(texts: dict[str, list[str]], runs: int) -> dict[str, float]:
    """Texts/s of the server's own embedder (batch 64) in this process on the texts the server
    embeds (each log normalized, as dedup does): the ceiling for anything that embeds every
    text. Call only with no server running."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from incident_responder.backends.embedding.bert import load_embedder
    from incident_responder.pipeline.normalize import LogNormalizer

    normalizer = LogNormalizer()
    model = load_embedder(batch_size=64)
    model.embed([normalizer.normalize(t).embed_text for t in next(iter(texts.values()))[:128]])  # warm-up
    out = {}
    for name, items in texts.items():
        embedded = [normalizer.normalize(t).embed_text for t in items]
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            model.embed(embedded)
            rates.append(len(items) / (time.perf_counter() - started))
        out[name] = statistics.median(rates)
    return out


# --------------------------------------------------------------------------- report

COLUMNS = (
    ("inc", "incidents", "{:.0f}"),
    ("sec", "seconds", "{:.1f}"),
    ("inc/s", "throughput", "{:.1f}"),
    ("p50 ms", "p50_ms", "{:.1f}"),
    ("p95 ms", "p95_ms", "{:.1f}"),
    ("p99 ms", "p99_ms", "{:.1f}"),
    ("max ms", "max_ms", "{:.0f}"),
    ("err", "errors", "{:.0f}"),
    ("late", "late", "{:.0f}"),
    ("new", "new", "{:.0f}"),
    ("exist", "existing", "{:.0f}"),
    ("tkts", "tickets", "{:.0f}"),
    ("exp", "expected_tickets", "{:.0f}"),
    ("srv cpu s", "server_cpu_s", "{:.1f}"),
    ("srv MiB", "server_peak_rss_mb", "{:.0f}"),
    ("cli cpu s", "client_cpu_s", "{:.1f}"),
    ("other cpu s", "other_cpu_s", "{:.1f}"),
)


def median_phases(runs: Sequence[ServerRun]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in [p.name for p in runs[0].phases]:
        rows = [next(p for p in r.phases if p.name == name).summary() for r in runs]
        out[name] = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return out


def format_table(title: str, phases: dict[str, dict[str, float]]) -> str:
    header = ["phase", *(c[0] for c in COLUMNS)]
    rows = [[name, *(fmt.format(values[key]) for _, key, fmt in COLUMNS)] for name, values in phases.items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _median(runs: Sequence[ServerRun], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in runs)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def report(plan: Plan, by_label: dict[str, list[ServerRun]], model: dict[str, float]) -> dict[str, Any]:
    single_u, batch_u = phase_names(plan)[2], phase_names(plan)[4]
    single_s, batch_s = phase_names(plan)[1], phase_names(plan)[3]
    result: dict[str, Any] = {"medians": {}, "server": {}}
    for label, runs in by_label.items():
        table = median_phases(runs)
        result["medians"][label] = table
        n = len(runs)
        print()
        print(format_table(f"== {label} server (median of {n} run{'s' * (n > 1)}) ==", table))
        info = {
            attr: _median(runs, attr)
            for attr in ("spawn_to_ready_s", "ready_rss_mb", "peak_rss_mb", "total_cpu_s", "shutdown_s")
        }
        result["server"][label] = info
        print(
            f"spawn->ready {info['spawn_to_ready_s']:.2f}s | RSS at ready {info['ready_rss_mb']:.0f} MiB | "
            f"peak RSS {info['peak_rss_mb']:.0f} MiB | server CPU {info['total_cpu_s']:.1f}s | "
            f"SIGTERM->exit {info['shutdown_s']:.2f}s (exit codes {[r.exit_code for r in runs]})"
        )
        problems: Counter[str] = sum((r.log_problems for r in runs), Counter())
        for name in table:
            errors: Counter[str] = sum(
                (p.errors for r in runs for p in r.phases if p.name == name), Counter()
            )
            late = sum(p.late for r in runs for p in r.phases if p.name == name)
            if errors or late:
                print(f"  {name}: errors {dict(errors)}, late {late} (all runs)")
        if problems:
            print(
                "server log warnings/errors (all runs): "
                + ", ".join(f"{k} x{v}" for k, v in problems.most_common(8))
            )
        if runs[-1].stages:
            print(
                "server stage time, last run (s/calls): "
                + ", ".join(f"{k} {v[0]:.1f}/{v[1]}" for k, v in runs[-1].stages.items())
            )
        for r in runs:
            if r.note:
                print(f"note: {r.note}")
    opt = result["medians"]["optimized"]
    print()
    print("== the embedding model alone (this process, batch_size=64, server stopped) ==")
    ratios: dict[str, float] = {}
    for name, rate in model.items():
        print(f"model throughput on the {name} texts: {rate:.1f} texts/s")
    if "unique" in model:
        ratios["single_unique_over_model"] = _ratio(opt[single_u]["throughput"], model["unique"])
        ratios["batch_unique_over_model"] = _ratio(opt[batch_u]["throughput"], model["unique"])
        print(
            f"unique throughput / model throughput: single {ratios['single_unique_over_model']:.2f}, "
            f"batch {ratios['batch_unique_over_model']:.2f}"
        )
    if "naive" in result["medians"]:
        naive = result["medians"]["naive"]
        ratios["single_storm_optimized_over_naive"] = _ratio(
            opt[single_s]["throughput"], naive[single_s]["throughput"]
        )
        ratios["batch_storm_optimized_over_naive"] = _ratio(
            opt[batch_s]["throughput"], naive[batch_s]["throughput"]
        )
        print(
            f"storm throughput optimized / naive: single {ratios['single_storm_optimized_over_naive']:.2f}, "
            f"batch {ratios['batch_storm_optimized_over_naive']:.2f}"
        )
    if "storm" in model:
        ratios.update(_ceilings(model["storm"], opt, result["medians"].get("naive"), (single_s, batch_s)))
    result["model_texts_per_s"] = model
    result["ratios"] = ratios
    return result


def _ceilings(
    model_rate: float,
    opt: dict[str, dict[str, float]],
    naive: dict[str, dict[str, float]] | None,
    phases: Sequence[str],
) -> dict[str, float]:
    """Print and return each storm phase's ceiling (the model alone on its distinct
    incidents) and the optimized/naive ratio that ceiling allows."""
    out: dict[str, float] = {}
    parts = []
    for kind, name in zip(("single", "batch"), phases, strict=True):
        ceiling = storm_ceiling(model_rate, opt[name]["incidents"], opt[name]["expected_tickets"])
        out[f"{kind}_storm_ceiling"] = ceiling
        text = f"{kind} {ceiling:.0f} inc/s"
        if naive is not None:
            bound = ratio_bound(ceiling, naive[name]["throughput"])
            out[f"{kind}_storm_max_optimized_over_naive"] = bound
            text += f" (at most {bound:.1f}x naive)"
        parts.append(text)
    print(
        "storm ceiling, the model alone on each distinct incident once and nothing else costing "
        "anything: " + ", ".join(parts)
    )
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts: a smoke run of well under a minute"
    )
    parser.add_argument("--naive", action="store_true", help=f"also run a server with {NAIVE_ENV}=true")
    parser.add_argument("--runs", type=int, default=1, help="repeat everything N times; report medians")
    parser.add_argument("--out", type=Path, help="write all figures as JSON here")
    parser.add_argument("--seed", type=int, default=7, help="workload seed")
    parser.add_argument("--concurrency", type=int, help="requests in flight in the single-request phases")
    parser.add_argument("--rates", help="comma-separated offered rates of the open-loop phases (req/s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dirs and server logs")
    parser.add_argument("--skip-model", action="store_true", help="do not time the embedding model alone")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="K=V", help="extra env for the server(s)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.concurrency:
        changes["concurrency"] = args.concurrency
    if args.rates:
        changes["rates"] = tuple(int(r) for r in args.rates.split(",") if r.strip())
    return Plan(**{**plan.__dict__, **changes})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    extra = dict(item.split("=", 1) for item in args.server_env)
    loads = Workloads.make(plan, args.seed)
    variants: dict[str, dict[str, str]] = {"optimized": extra}
    if args.naive:
        variants["naive"] = {**extra, NAIVE_ENV: "true"}
        known = naive_switch_recognized()
        if not known:
            print(
                f"! {NAIVE_ENV} is {'not recognized' if known is False else 'unverified'} by this server's "
                "settings: the naive run may equal the optimized one",
                flush=True,
            )
    by_label: dict[str, list[ServerRun]] = {label: [] for label in variants}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ir-bench-") as tmp:
        for run in range(args.runs):
            for label, env in variants.items():
                print(f"run {run + 1}/{args.runs}: {label} server", flush=True)
                workdir = Path(tmp) / f"run{run}"
                workdir.mkdir(exist_ok=True)
                by_label[label].append(run_server(label, workdir, plan, loads, args.seed, env))
        if args.keep:
            kept = Path(tempfile.mkdtemp(prefix="ir-bench-kept-"))
            subprocess.run(["cp", "-a", f"{tmp}/.", str(kept)], check=False)
            print(f"data dirs and server logs kept in {kept}")
    model: dict[str, float] = {}
    if not args.skip_model:
        print("timing the embedding model alone ...", flush=True)
        model = model_throughput(
            {
                "unique": loads.single_unique.texts + loads.batch_unique.texts,
                "storm": loads.single_storm.texts,
            },
            args.runs,
        )
    result = report(plan, by_label, model)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.out:
        result["plan"] = plan.__dict__
        result["runs"] = {label: [r.summary() for r in runs] for label, runs in by_label.items()}
        args.out.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
