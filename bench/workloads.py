"""Synthetic, deterministic incident workloads for the benchmark.

Two shapes:

* :func:`storm` - an alert storm: ~90 % of the lines are repeats of ~50 templates whose
  variable parts (timestamps, pids, IPs, ports, ids, counters, durations) change on
  every line; the other ~10 % are one-off incidents.
* :func:`unique` - every line is a different incident: different wording, not just
  different numbers.

Every generator takes a ``seed`` and returns the same lines for the same arguments.
The request bodies follow ``POST /v1/incidents`` of the contract.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NotRequired, TypedDict

__all__ = [
    "STORM_TEMPLATES",
    "IncidentBody",
    "Workload",
    "batches",
    "storm",
    "unique",
]


class IncidentBody(TypedDict):
    """One request body of ``POST /v1/incidents``."""

    service: str
    log: str
    severity: NotRequired[str]


@dataclass(frozen=True)
class Workload:
    name: str
    bodies: list[IncidentBody]
    # For each body, the storm template it was made from (None: a one-off line).
    template_ids: list[int | None]

    def __len__(self) -> int:
        return len(self.bodies)

    @property
    def texts(self) -> list[str]:
        return [b["log"] for b in self.bodies]

    @property
    def groups(self) -> list[str]:
        """The incident each line belongs to: its template, or the line itself when one-off."""
        return [
            f"{self.name}:t{kind}" if kind is not None else f"{self.name}:line{i}"
            for i, kind in enumerate(self.template_ids)
        ]


_EPOCH = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
_SEVERITIES = ("critical", "high", "medium", "low")

# (service, level, message). Placeholders in braces are filled with fresh values on
# every line: {ip} {port} {n} {ms} {hex} {uuid} {user} {path} {pct} {bytes} {pod}.
STORM_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("payments-api", "ERROR", "could not connect to db at {ip}:{port}: connection refused (attempt {n})"),
    ("payments-api", "ERROR", "charge {uuid} failed: card processor timeout after {ms}ms"),
    ("payments-api", "WARN", "idempotency key {hex} replayed with a different body from {ip}"),
    ("payments-api", "ERROR", "ledger write for account {n} rejected: balance check failed"),
    ("payments-api", "ERROR", "refund {uuid} stuck in state PENDING for {n} minutes"),
    ("checkout-web", "ERROR", "upstream cart-service returned 502 for session {hex} in {ms}ms"),
    ("checkout-web", "WARN", "slow render of /checkout/{n} took {ms}ms (budget 800ms)"),
    ("checkout-web", "ERROR", "csrf token mismatch for user {user} from {ip}"),
    (
        "checkout-web",
        "ERROR",
        "TypeError: cannot read properties of undefined (reading 'price') at bundle.{hex}.js:{n}",
    ),
    ("checkout-web", "ERROR", "websocket to {ip}:{port} closed unexpectedly, code 1006"),
    ("auth-service", "ERROR", "jwt signature verification failed for kid {hex}"),
    ("auth-service", "WARN", "{n} failed login attempts for user {user} from {ip} in 60s"),
    ("auth-service", "ERROR", "ldap bind to {ip}:{port} timed out after {ms}ms"),
    ("auth-service", "ERROR", "oauth callback state {uuid} not found or expired"),
    ("auth-service", "ERROR", "password hash upgrade failed for user {user}: argon2 memory limit"),
    ("inventory-db", "ERROR", "deadlock detected: process {n} waits for ShareLock on transaction {n}"),
    ("inventory-db", "WARN", "checkpoint took {ms}ms, {pct}% of WAL segments recycled"),
    ("inventory-db", "ERROR", "could not extend file {path}: No space left on device"),
    ("inventory-db", "ERROR", "replication slot replica_{n} lag {bytes} bytes exceeds threshold"),
    ("inventory-db", "ERROR", "too many connections for role app_rw ({n} of {n})"),
    (
        "search-indexer",
        "ERROR",
        "bulk request to {ip}:{port} rejected: es_rejected_execution_exception queue {n}",
    ),
    ("search-indexer", "WARN", "mapping conflict on field sku_{n} in index products-{n}"),
    ("search-indexer", "ERROR", "circuit_breaking_exception: data too large, [{bytes}] would exceed limit"),
    ("search-indexer", "ERROR", "reindex task {hex} aborted after {n} documents"),
    ("search-indexer", "ERROR", "shard {n} of index orders-{n} is unassigned: NODE_LEFT"),
    ("notification-worker", "ERROR", "smtp 421 from {ip}: too many concurrent sessions"),
    ("notification-worker", "ERROR", "push token {hex} rejected by apns: BadDeviceToken"),
    ("notification-worker", "WARN", "sms provider rate limit hit, backing off {ms}ms"),
    ("notification-worker", "ERROR", "template welcome_v{n} missing variable first_name for user {user}"),
    ("notification-worker", "ERROR", "message {uuid} moved to dead-letter queue after {n} deliveries"),
    ("k8s-node", "ERROR", "OOMKilled: container api in pod {pod} exceeded memory limit {bytes}"),
    ("k8s-node", "WARN", "kubelet: image pull backoff for registry.local/app:{hex}"),
    ("k8s-node", "ERROR", "readiness probe failed for pod {pod}: HTTP probe failed with statuscode 503"),
    ("k8s-node", "ERROR", "disk pressure on node worker-{n}: {pct}% of /var/lib/containerd used"),
    ("k8s-node", "ERROR", "CrashLoopBackOff: back-off {n}s restarting failed container in pod {pod}"),
    (
        "cache-redis",
        "ERROR",
        "MISCONF redis is configured to save RDB snapshots, but it is unable to persist",
    ),
    ("cache-redis", "WARN", "client {ip}:{port} closed for overcoming output buffer limits"),
    ("cache-redis", "ERROR", "cluster slot {n} migrating to {ip}:{port} stalled"),
    ("cache-redis", "ERROR", "eviction storm: {n} keys evicted in {ms}ms, maxmemory {bytes}"),
    ("cache-redis", "ERROR", "READONLY you can't write against a read only replica ({ip})"),
    ("billing-batch", "ERROR", "invoice run {n} failed at customer {n}: currency EUR not configured"),
    ("billing-batch", "ERROR", "s3 upload of {path} failed: SlowDown, retry {n}"),
    ("billing-batch", "WARN", "job invoices-nightly exceeded its window by {n} minutes"),
    ("billing-batch", "ERROR", "tax service returned 400 for order {uuid}: invalid postal code"),
    ("billing-batch", "ERROR", "java.lang.OutOfMemoryError: GC overhead limit exceeded in worker {n}"),
    ("gateway-edge", "ERROR", "tls handshake with {ip} failed: certificate has expired"),
    ("gateway-edge", "WARN", "upstream {ip}:{port} marked down after {n} consecutive failures"),
    ("gateway-edge", "ERROR", "request {hex} exceeded 30s timeout routing to orders-api"),
    ("gateway-edge", "ERROR", "rate limiter backend {ip}:{port} unreachable, failing open"),
    ("gateway-edge", "ERROR", "http2 stream {n} reset by peer: PROTOCOL_ERROR"),
)

_USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory")


def _filler(rng: random.Random) -> dict[str, str]:
    """Fresh values for every placeholder a template may use."""
    return {
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "port": str(rng.choice((5432, 6379, 9200, 443, 8080, 3306, 25, 389)) + rng.randrange(3)),
        "n": str(rng.randrange(1, 100_000)),
        "ms": str(rng.randrange(5, 60_000)),
        "hex": f"{rng.getrandbits(48):012x}",
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user": f"{rng.choice(_USERS)}{rng.randrange(1000)}",
        "path": f"/var/lib/data/base/{rng.randrange(100_000)}/{rng.randrange(1_000_000)}.{rng.randrange(10)}",
        "pct": str(rng.randrange(50, 100)),
        "bytes": str(rng.randrange(10**6, 10**10)),
        "pod": f"api-{rng.getrandbits(32):08x}-{rng.getrandbits(20):05x}",
    }


def _stamp(i: int, rng: random.Random) -> str:
    moment = _EPOCH + timedelta(milliseconds=i * 37 + rng.randrange(37))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _storm_line(template: tuple[str, str, str], i: int, rng: random.Random) -> str:
    service, level, message = template
    return (
        f"{_stamp(i, rng)} {level} {service}[{rng.randrange(100, 65_000)}]: {message.format(**_filler(rng))}"
    )


# --- one-off incidents: varied sentences over large vocabularies -------------------------

_COMPONENTS = (
    "scheduler",
    "shipment tracker",
    "pricing engine",
    "loyalty ledger",
    "geocoder",
    "thumbnail renderer",
    "fraud scorer",
    "audit trail",
    "feature flag store",
    "session broker",
    "report exporter",
    "recommendation ranker",
    "catalog importer",
    "warehouse picker",
    "coupon validator",
    "tax calculator",
    "address normalizer",
    "fx rate poller",
    "kyc verifier",
    "chat relay",
    "video transcoder",
    "pdf stamper",
    "translation memory",
    "sitemap builder",
    "consent registry",
    "webhook dispatcher",
    "license checker",
    "seat allocator",
    "route planner",
    "billing reconciler",
    "metrics rollup",
    "backup verifier",
    "certificate rotator",
    "dns updater",
    "quota enforcer",
    "ab test assigner",
    "spam classifier",
    "image moderator",
    "calendar sync",
    "contact deduper",
    "label printer",
    "returns processor",
    "gift card minter",
    "subscription renewer",
    "payout batcher",
    "credit limit monitor",
    "ocr pipeline",
    "barcode scanner bridge",
    "crm mirror",
    "survey collector",
    "sla timer",
    "on-call pager bridge",
)
_FAILURES = (
    "panicked with an index out of range",
    "returned a malformed protobuf",
    "leaked file descriptors",
    "hit an unhandled enum variant",
    "wrote a truncated checksum",
    "double-counted a ledger entry",
    "dropped its leader lease",
    "spun on a busy loop",
    "lost its config watch",
    "deserialized a null owner",
    "rejected a valid signature",
    "exhausted its thread pool",
    "produced negative inventory",
    "ignored a cancellation",
    "corrupted the sort order",
    "skipped a migration step",
    "computed a stale exchange rate",
    "overflowed a 32-bit counter",
    "fell back to an unsafe default",
    "timed out waiting on a semaphore",
    "emitted duplicate events",
    "crashed on an emoji in a name",
    "misparsed a leap-day date",
    "mixed up two tenants' caches",
    "stalled behind a poisoned message",
    "retried a non-idempotent call",
    "returned an empty page forever",
    "mis-rounded half cents",
    "forgot to release a row lock",
    "served an expired token",
    "looped on a redirect",
    "lost precision on a decimal",
    "sent the wrong locale",
    "deadlocked its own mutex",
    "blocked the event loop",
    "dropped trailing whitespace in keys",
    "truncated a unicode surrogate",
)
_ACTIONS = (
    "while reconciling",
    "during the nightly import of",
    "after rotating",
    "on first access to",
    "when resizing",
    "while streaming",
    "while exporting",
    "during failover of",
    "when paginating",
    "after a schema change to",
    "while compacting",
    "while warming",
    "on shutdown of",
    "when replaying",
)
_OBJECTS = (
    "the european warehouse batch",
    "archived customer invoices",
    "partner catalog feeds",
    "gift wrapping options",
    "the holiday price list",
    "student discount codes",
    "courier manifests",
    "legacy loyalty points",
    "marketplace seller payouts",
    "the tax jurisdiction table",
    "expired promotion banners",
    "subscription trial accounts",
    "b2b purchase orders",
    "bundled warranties",
    "preorder reservations",
    "frozen goods shipments",
    "regional shipping zones",
    "merchant chargebacks",
)
_SYLLABLES = (
    "ka",
    "zu",
    "mo",
    "ri",
    "tel",
    "vak",
    "quo",
    "pen",
    "dri",
    "sol",
    "brax",
    "nim",
    "fu",
    "gor",
    "lyn",
    "tro",
    "wex",
    "yal",
    "cid",
    "hum",
    "jor",
    "pli",
    "smu",
    "vor",
)
_ONE_OFF_SERVICES = (
    "orders-api",
    "catalog-svc",
    "ledger-core",
    "shipping-svc",
    "search-api",
    "media-svc",
    "profile-svc",
    "pricing-svc",
    "returns-svc",
    "reporting-svc",
    "identity-svc",
    "partner-gw",
    "fulfilment-svc",
    "support-desk",
    "marketing-svc",
    "analytics-etl",
    "vendor-portal",
    "mobile-bff",
    "ads-svc",
    "feeds-svc",
)
_FRAMES: tuple[Callable[[str, str, str, str], str], ...] = (
    lambda comp, fail, act, obj: f"{comp} {fail} {act} {obj} (module {{code}})",
    lambda comp, fail, act, obj: f"unexpected state in {comp}: it {fail} {act} {obj}; codename {{code}}",
    lambda comp, fail, act, obj: f"{{code}} subsystem alert - the {comp} {fail}, seen {act} {obj}",
    lambda comp, fail, act, obj: f"assertion in {{code}}: {comp} {fail} {act} {obj}",
    lambda comp, fail, act, obj: f"operator note: {act} {obj}, the {comp} {fail} ({{code}} build)",
)


def _codename(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randrange(3, 5)))


def _one_off_lines(n: int, rng: random.Random, services: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``n`` (service, message) pairs, each with a word combination never used before."""
    seen: set[tuple[str, ...]] = set()
    while len(seen) < n:
        comp, fail = rng.choice(_COMPONENTS), rng.choice(_FAILURES)
        act, obj, code = rng.choice(_ACTIONS), rng.choice(_OBJECTS), _codename(rng)
        key = (comp, fail, code)
        if key in seen:
            continue
        seen.add(key)
        frame = rng.choice(_FRAMES)
        yield rng.choice(services), frame(comp, fail, act, obj).format(code=code)


def _body(service: str, log: str, rng: random.Random) -> IncidentBody:
    body = IncidentBody(service=service, log=log)
    if rng.random() < 0.5:
        body["severity"] = rng.choice(_SEVERITIES)
    return body


def storm(n: int, seed: int = 0, templates: int = 50, repeat_ratio: float = 0.9) -> Workload:
    """An alert storm of ``n`` lines: ``repeat_ratio`` of them from ``templates`` templates."""
    if not 1 <= templates <= len(STORM_TEMPLATES):
        raise ValueError(f"templates must be 1..{len(STORM_TEMPLATES)}")
    if not 0.0 <= repeat_ratio <= 1.0:
        raise ValueError("repeat_ratio must be in [0, 1]")
    rng = random.Random(f"storm:{seed}")
    chosen = STORM_TEMPLATES[:templates]
    n_templated = round(n * repeat_ratio)
    kinds: list[int | None] = [i % templates for i in range(n_templated)] + [None] * (n - n_templated)
    rng.shuffle(kinds)
    storm_services = sorted({t[0] for t in chosen})
    one_offs = _one_off_lines(n - n_templated, rng, storm_services)
    bodies: list[IncidentBody] = []
    for i, kind in enumerate(kinds):
        if kind is None:
            service, message = next(one_offs)
            line = f"{_stamp(i, rng)} ERROR {service}[{rng.randrange(100, 65_000)}]: {message}"
        else:
            service, line = chosen[kind][0], _storm_line(chosen[kind], i, rng)
        bodies.append(_body(service, line, rng))
    return Workload("storm", bodies, kinds)


def unique(n: int, seed: int = 0) -> Workload:
    """``n`` lines that are each a different incident (different words, not only numbers)."""
    rng = random.Random(f"unique:{seed}")
    bodies = [
        _body(service, f"{_stamp(i, rng)} ERROR {service}[{rng.randrange(100, 65_000)}]: {message}", rng)
        for i, (service, message) in enumerate(_one_off_lines(n, rng, _ONE_OFF_SERVICES))
    ]
    return Workload("unique", bodies, [None] * n)


def batches(
    bodies: Sequence[IncidentBody], min_size: int, max_size: int, seed: int = 0
) -> list[list[IncidentBody]]:
    """Split ``bodies`` in order into batches of random sizes in [min_size, max_size]."""
    if not 1 <= min_size <= max_size:
        raise ValueError("need 1 <= min_size <= max_size")
    rng = random.Random(f"batches:{seed}")
    out: list[list[IncidentBody]] = []
    start = 0
    while start < len(bodies):
        size = rng.randint(min_size, max_size)
        out.append(list(bodies[start : start + size]))
        start += size
    return out
