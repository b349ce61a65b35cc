"""Grouping quality on data and formats the rules were never tuned on: the shared machinery.

* :class:`Grouper` replays reports in order through the service's own dedup decision, in
  process: the real :class:`~incident_responder.pipeline.normalize.LogNormalizer`, the real
  embedding model (the session ``embedder`` of ``tests/conftest.py``), and the real
  :class:`~incident_responder.pipeline.dedup.Deduplicator` with its ``FingerprintLookup`` and
  calibrated thresholds. Only the vector index is a small exact in-memory one (the service
  writes one point per ticket and fingerprint, which is what :meth:`Grouper.replay` writes).
* :func:`grouping_metrics` scores tickets against true groups exactly as the black-box runner
  ``run_eval.py`` of the dev set does (pairwise precision/recall/F1 and GA per service, then
  the macro average over services).
* The dev set is read where ``IR_EVAL_DEV`` points (default ``/work/shared/eval-dev``), at run
  time, never copied: it is research-licensed LogHub data. Tests that need it skip without it;
  :data:`SYSTEMS` are invented systems (every line made up for these tests) that always run.
* The figures of a run are printed at its end (``pytest_terminal_summary``).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from incident_responder.evaluation import grouping_score
from incident_responder.pipeline.dedup import Deduplicator, FingerprintLookup
from incident_responder.pipeline.matching import DEFAULT_THRESHOLDS, MatchDecision
from incident_responder.pipeline.normalize import NORMALIZER_VERSION, LogNormalizer, NormalizedLog
from incident_responder.ports import Vector, VectorFilter, VectorHit, VectorPoint
from incident_responder.settings.sections import DedupSettings

if TYPE_CHECKING:
    from incident_responder.ports import Embedder

TENANT = "quality"
DEV_DIR = Path(os.environ.get("IR_EVAL_DEV", "/work/shared/eval-dev"))

# section title -> lines, printed at the end of the run
FIGURES: dict[str, list[str]] = defaultdict(list)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for title, lines in FIGURES.items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


# --------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class Report:
    """One labelled report: its service, its true group, its raw log, and the parts a
    re-rendering needs (the message without header, a level, the tag that ended the header)."""

    service: str
    group: str
    log: str
    message: str
    level: str = "INFO"
    tag: str = ""  # e.g. "sshd[24200]:" / "dfs.DataNode:" ("" when the header had none)


_LEVELS = {"TRACE", "DEBUG", "INFO", "NOTICE", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL"}
_TAG_RE = re.compile(r"(\S+:)\s*$")


def load_dev() -> list[Report]:
    """The dev set's dedup reports (``pytest.skip`` when it is not there)."""
    path = DEV_DIR / "dedup.jsonl"
    if not path.is_file():
        pytest.skip(f"dev set not found at {path} (set IR_EVAL_DEV)")
    reports = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            log, content = row["log"], row["content"].strip()
            at = log.rfind(content) if content else -1
            header = log[:at] if at >= 0 else ""
            tag = _TAG_RE.search(header)
            level = str(row.get("level") or "").upper()
            reports.append(
                Report(
                    service=row["service"],
                    group=str(row["group"]),
                    log=log,
                    message=content if at >= 0 else log,
                    level=level if level in _LEVELS else "INFO",
                    tag=tag.group(1) if tag else "",
                )
            )
    return reports


# --------------------------------------------------------------------------- invented systems
@dataclass(frozen=True)
class System:
    """A made-up system: how its own header looks, and its kinds of event (one true group each)."""

    name: str
    header: Callable[[random.Random, int], str]  # (rng, line number) -> header, tag included
    tag: str
    events: Mapping[str, tuple[str, str]]  # group -> (level, message with {slots})


def _slots(rng: random.Random) -> dict[str, object]:
    return {
        "n": rng.randrange(1, 5000),
        "ms": rng.randrange(1, 9000),
        "hex": f"{rng.getrandbits(48):012x}",
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "port": rng.randrange(1024, 65535),
        "host": f"{rng.choice(['vault', 'cache', 'edge'])}-{rng.randrange(1, 40)}.corp.example.net",
        "uuid": f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}"
        f"-a{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}",
        "pct": rng.randrange(1, 100),
        "f": round(rng.uniform(0.5, 99.0), 2),
        "mac": ":".join(f"{rng.randrange(256):02x}" for _ in range(6)),
        "name": rng.choice(["nightly-7", "drain-eu-2", "hourly-19", "manual-4"]),
        "email": f"{rng.choice(['ops', 'billing', 'noc'])}{rng.randrange(99)}@mail.example.org",
        "user": rng.choice(["amara", "jiro", "ksenia", "tomasz"]),
    }


def _iso_header(rng: random.Random, i: int) -> str:
    return (
        f"2031-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:"
        f"{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d} {{level}} "
        f"[settle-{rng.randrange(1, 9)}] tollgate.Ledger: "
    )


def _syslog_header(rng: random.Random, i: int) -> str:
    month = ["Mar", "Apr", "May", "Jun"][rng.randrange(4)]
    return (
        f"{month} {rng.randrange(1, 29):2d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:"
        f"{rng.randrange(60):02d} pumpctl-{rng.randrange(1, 9)} brined[{rng.randrange(100, 32000)}]: "
    )


def _bracket_header(rng: random.Random, i: int) -> str:
    return (
        f"[2031-04-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:"
        f"{rng.randrange(60):02d}Z] [relay-{rng.randrange(1, 5)}] {{level}} quill: "
    )


def _epoch_header(rng: random.Random, i: int) -> str:
    return f"{1_900_000_000 + i * 37 + rng.randrange(30)} gs-{rng.randrange(1, 12):02d} orbitd: "


# Every line below is invented. Pairs that differ only in a state word are different groups
# ("state 'Active'" / "state 'Inactive'"): masking that word would merge them.
SYSTEMS: tuple[System, ...] = (
    System(
        "tollgate",
        _iso_header,
        "tollgate.Ledger:",
        {
            "T1": ("INFO", "settlement batch {n} committed in {ms}ms"),
            "T2": ("WARN", "settlement batch {n} rolled back after {ms}ms: ledger conflict"),
            "T3": ("INFO", "card vault {host} state 'Active'"),
            "T4": ("ERROR", "card vault {host} state 'Inactive'"),
            "T5": ("WARN", "merchant {n} webhook to {ip}:{port} timed out after {ms}ms"),
            "T6": ("INFO", "fraud model v{n} loaded from /srv/models/fraud-{n}.bin"),
            "T7": ("ERROR", "ledger shard {n} lag {n} entries exceeds limit {n}"),
            "T8": ("INFO", "checkout session {uuid} registered for merchant {n}"),
            "T9": ("INFO", "checkout session {uuid} deregistered for merchant {n}"),
        },
    ),
    System(
        "brinepump",
        _syslog_header,
        "brined:",
        {
            "B1": ("INFO", "pump {n} status=up pressure {f} bar"),
            "B2": ("ERROR", "pump {n} status=down pressure {f} bar"),
            "B3": ("INFO", "valve {n} opened by schedule '{name}'"),
            "B4": ("INFO", "valve {n} closed by schedule '{name}'"),
            "B5": ("INFO", 'sensor {mac} power event "on-sleep" after {n}s idle'),
            "B6": ("INFO", 'sensor {mac} power event "on-wake" after {n}s idle'),
            "B7": ("WARN", "tank {n} level {pct}% below threshold {pct}%"),
            "B8": ("ERROR", "firmware image {hex} rejected: signature mismatch"),
        },
    ),
    System(
        "quillmail",
        _bracket_header,
        "quill:",
        {
            "Q1": ("WARN", "queue {hex} deferred: remote {host} said 451 try later"),
            "Q2": ("INFO", "queue {hex} delivered to {email} in {ms}ms"),
            "Q3": ("INFO", "spam filter enabled for domain {host}"),
            "Q4": ("WARN", "spam filter disabled for domain {host}"),
            "Q5": ("WARN", "mailbox {email} locked after {n} bad passwords"),
            "Q6": ("INFO", "mailbox {email} unlocked after {n} bad passwords"),
            "Q7": ("ERROR", "tls handshake with {ip} aborted: protocol version {n} unsupported"),
        },
    ),
    System(
        "orbitd",
        _epoch_header,
        "orbitd:",
        {
            "O1": ("INFO", "pass {n} over station gs-{n} scheduled, elevation {f} deg"),
            "O2": ("INFO", "antenna {n} slewing to azimuth {f} elevation {f}"),
            "O3": ("INFO", "downlink {n} connected at {n} Mbps"),
            "O4": ("WARN", "downlink {n} disconnected at {n} Mbps"),
            "O5": ("INFO", "station gs-{n} mode 'online'"),
            "O6": ("ERROR", "station gs-{n} mode 'offline'"),
            "O7": ("WARN", "clock drift {ms}ms against gps reference, correcting"),
        },
    ),
)


def synthetic_reports(per_system: int = 150, seed: int = 20261203) -> list[Report]:
    """``per_system`` reports of each invented system, interleaved, in a fixed random order."""
    rng = random.Random(seed)
    streams: list[list[Report]] = []
    for system in SYSTEMS:
        groups = sorted(system.events)
        weights = [1.0 / (k + 1) for k in range(len(groups))]  # a few big groups, a tail of small
        stream = []
        for i in range(per_system):
            group = rng.choices(groups, weights)[0] if i >= len(groups) else groups[i]
            level, text = system.events[group]
            message = text.format(**_slots(rng))
            header = system.header(rng, i).replace("{level}", level)
            stream.append(Report(system.name, group, header + message, message, level, system.tag))
        streams.append(stream)
    merged: list[Report] = []
    while any(streams):
        stream = rng.choice([s for s in streams if s])
        merged.append(stream.pop(0))
    return merged


# --------------------------------------------------------------------------- metrics
def grouping_metrics(true_labels: Sequence[str], pred_labels: Sequence[str]) -> dict[str, float]:
    """Pairwise P/R/F1 and grouping accuracy for one service (the package's ``grouping_score``,
    which computes them as ``run_eval.py`` does)."""
    score = grouping_score(true_labels, pred_labels)
    return {
        "reports": score.reports,
        "true_groups": score.true_groups,
        "tickets": score.tickets,
        "f1": score.f1,
        "ga": score.ga,
    }


@dataclass
class Scores:
    """Macro F1 and GA over services (the runner's last line), and the per-service figures."""

    f1: float
    ga: float
    per_service: dict[str, dict[str, float]]

    def line(self) -> str:
        return f"F1 {self.f1:.4f}  GA {self.ga:.4f}"


def score(reports: Sequence[Report], tickets: Sequence[str]) -> Scores:
    truth: dict[str, list[str]] = defaultdict(list)
    pred: dict[str, list[str]] = defaultdict(list)
    for rep, ticket in zip(reports, tickets, strict=True):
        truth[rep.service].append(rep.group)
        pred[rep.service].append(ticket)
    per = {svc: grouping_metrics(truth[svc], pred[svc]) for svc in sorted(truth)}
    n = len(per)
    return Scores(sum(m["f1"] for m in per.values()) / n, sum(m["ga"] for m in per.values()) / n, per)


# --------------------------------------------------------------------------- replay
class MemoryIndex:
    """An exact in-memory vector index (cosine on normalized vectors), with the payload
    filters ``Deduplicator`` and ``FingerprintLookup`` use."""

    def __init__(self) -> None:
        self._points: dict[str, VectorPoint] = {}

    @staticmethod
    def _matches(point: VectorPoint, where: VectorFilter) -> bool:
        payload = point.payload
        return all(payload.get(k) == v for k, v in where.equals.items()) and all(
            payload.get(k) in vs for k, vs in where.any_of.items()
        )

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        for point in points:
            self._points[point.id] = point

    def search(self, vector: Vector, where: VectorFilter, limit: int) -> list[VectorHit]:
        points = [p for p in self._points.values() if self._matches(p, where)]
        if not points:
            return []
        scores = np.stack([p.vector for p in points]) @ np.asarray(vector, dtype=np.float32)
        best = np.argsort(-scores, kind="stable")[:limit]
        return [VectorHit(points[i].id, float(scores[i]), points[i].payload) for i in best]

    def find(self, where: VectorFilter, limit: int) -> list[VectorHit]:
        hits = [VectorHit(p.id, 0.0, p.payload) for p in self._points.values() if self._matches(p, where)]
        return hits[:limit]

    def exists(self, point_id: str) -> bool:
        return point_id in self._points


@dataclass
class Replay:
    """Where a replay left things: the ticket of each report, their normalized forms, and the
    index and deduplicator to ask about more reports without writing them."""

    tickets: list[str]
    norms: list[NormalizedLog]
    dedup: Deduplicator


class Grouper:
    """Reports -> tickets, by the service's own normalizer and dedup decision (see the module doc)."""

    def __init__(self, embedder: Embedder, normalizer_factory: Callable[[], Any] = LogNormalizer) -> None:
        self._embedder = embedder
        self._normalizer_factory = normalizer_factory
        self._vectors: dict[str, Vector] = {}  # embed text -> vector, shared by every replay

    def vectors(self, texts: Iterable[str]) -> list[Vector]:
        wanted = list(texts)
        missing = list(dict.fromkeys(t for t in wanted if t not in self._vectors))
        if missing:
            embedded = self._embedder.embed(missing)
            for text, vec in zip(missing, embedded, strict=True):
                self._vectors[text] = np.asarray(vec, dtype=np.float32)
        return [self._vectors[t] for t in wanted]

    def normalize(self, logs: Iterable[str]) -> list[NormalizedLog]:
        normalizer = self._normalizer_factory()
        return [normalizer.normalize(log, TENANT) for log in logs]

    def replay(self, reports: Sequence[Report], logs: Sequence[str] | None = None) -> Replay:
        """Each report in order, as the service decides it (``logs``: other texts for them)."""
        norms = self.normalize(logs if logs is not None else [r.log for r in reports])
        vectors = self.vectors(n.embed_text for n in norms)
        index = MemoryIndex()
        dedup = Deduplicator(
            index=index,  # type: ignore[arg-type]  # the part of VectorIndex dedup uses
            thresholds=DEFAULT_THRESHOLDS,
            search_limit=DedupSettings().search_limit,
            fingerprints=FingerprintLookup(index),  # type: ignore[arg-type]
            normalizer_version=NORMALIZER_VERSION,
        )
        out = Replay([], norms, dedup)
        for n, (rep, norm, vec) in enumerate(zip(reports, norms, vectors, strict=True)):
            decision = dedup.decide(TENANT, rep.service, norm, vec)
            ticket = decision.ticket_id or f"{rep.service}-t{n}"
            point_id = f"{ticket}/{norm.fingerprint}"
            if not index.exists(point_id):
                payload = {
                    "tenant": TENANT,
                    "kind": "incident",
                    "service": rep.service,
                    "ticket_id": ticket,
                    "fingerprint": norm.fingerprint,
                    "template": norm.template,
                    "normalizer_version": NORMALIZER_VERSION,
                }
                index.upsert([VectorPoint(point_id, vec, payload)])
            out.tickets.append(ticket)
        return out

    def decide(self, replay: Replay, service: str, log: str) -> tuple[NormalizedLog, MatchDecision]:
        """Which ticket ``log`` would join after ``replay`` (nothing is written)."""
        norm = self.normalize([log])[0]
        return norm, replay.dedup.decide(TENANT, service, norm, self.vectors([norm.embed_text])[0])


@pytest.fixture(scope="session")
def grouper(embedder: Embedder) -> Grouper:
    return Grouper(embedder)
