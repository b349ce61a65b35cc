"""The sections of the settings, one model per concern (and per backend kind)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class DedupSettings(BaseModel):
    """How close a report must be to an earlier one to join its ticket, and how many earlier
    reports are compared."""

    auto_merge: float | None = Field(
        None, ge=0.0, le=1.0, description="cosine similarity that merges a report (unset: calibrated default)"
    )
    related: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="cosine similarity reported as related, never merged (unset: calibrated)",
    )
    template_similarity: float | None = Field(
        None, ge=0.0, le=1.0, description="template token similarity for a template match (unset: calibrated)"
    )
    search_limit: int = Field(10, ge=1, le=100, description="earlier reports compared per incident")
    without_rules: list[str] = Field(
        default_factory=list,
        description="normalizer rules (by name) left out of the live table; "
        "changing it re-normalizes stored tickets at start-up",
    )


class ShadowSettings(BaseModel):
    """A candidate grouping (normalizer table and thresholds) run beside the live one on live
    traffic, deciding without writing: ``GET /v1/shadow/report``; ``shadow promote``."""

    enabled: bool = Field(False, description="run the candidate beside the live grouping")
    auto_merge: float | None = Field(None, ge=0.0, le=1.0, description="candidate auto_merge (unset: live)")
    related: float | None = Field(None, ge=0.0, le=1.0, description="candidate related (unset: live)")
    template_similarity: float | None = Field(
        None, ge=0.0, le=1.0, description="candidate template_similarity (unset: live)"
    )
    without_rules: list[str] | None = Field(
        None, description="normalizer rules the candidate leaves out (unset: the live table's)"
    )
    sample: float = Field(1.0, gt=0.0, le=1.0, description="share of reports the candidate decides")
    queue: int = Field(
        1_000, ge=1, le=100_000, description="reports waiting for the candidate; more are dropped"
    )


class RetrievalSettings(BaseModel):
    """How many runbooks a new incident gets, and the least score they need."""

    top_k: int = Field(5, ge=1, le=50, description="runbooks returned per new incident")
    min_score: float | None = Field(
        None, ge=0.0, le=1.0, description="drop runbooks scoring below this (unset: retriever default)"
    )


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else all)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; not macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class EmbeddingSettings(BaseModel):
    """The embedding model: which one, what runs it, and how it shares the CPU."""

    model_path: Path | None = Field(
        None, description="sentence-transformers model dir (unset: the packaged all-MiniLM-L6-v2)"
    )
    batch_size: int = Field(64, ge=1, le=1024, description="texts per forward pass at most")
    pass_tokens: int = Field(
        512,
        ge=0,
        description="padded tokens per forward pass at most (texts x the longest; 0: no limit): "
        "passes of about 512 tokens cost the least CPU per text",
    )
    threads: int = Field(
        0, ge=0, description="forward passes run side by side, one core each (0: one per usable core)"
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="CPU priority of the model's threads below the request handlers' (Linux nice; "
        "0: same priority): a busy model then yields the cores to repeats",
    )
    runtime: Literal["onnx", "torch"] = Field(
        "onnx",
        description="what runs the model: onnx (ONNX Runtime; torch if it cannot be set up) or torch",
    )
    onnx_cache_dir: Path | None = Field(
        None,
        description="where the model's ONNX export is kept (unset: ~/.cache/incident-responder/onnx)",
    )

    @property
    def parallel_passes(self) -> int:
        """How many forward passes run at once (``threads``, else one per usable core)."""
        return self.threads or usable_cores()


class EmbeddedVectorSettings(BaseModel):
    """Qdrant Edge: Qdrant's engine in-process, one shard under the data dir."""

    kind: Literal["qdrant-edge"] = "qdrant-edge"
    float16: bool = Field(
        True, description="store vectors as float16 (half the memory); applies to a new index only"
    )
    flush_seconds: float = Field(
        10.0,
        ge=0,
        description="flush the index this often while written to, truncating its WAL (0: only at exit)",
    )


class QdrantVectorSettings(BaseModel):
    """A Qdrant server: one collection for every tenant (the tenant is in each point's payload)."""

    kind: Literal["qdrant"]
    url: str = Field(description="Qdrant server URL, e.g. http://qdrant:6333")
    api_key: SecretStr = Field(SecretStr(""), description="Qdrant API key (unset: none)")
    collection: str = Field("incident_responder", description="collection name (tenant is in the payload)")
    timeout: float = Field(5.0, gt=0.0, le=120.0, description="seconds per Qdrant call")


class PgVectorSettings(BaseModel):
    """PostgreSQL with pgvector: one table of vectors, through a pool of connections."""

    kind: Literal["pgvector"]
    dsn: SecretStr = Field(description="postgresql://user:pass@host:5432/db")
    table: str = Field("ir_vectors", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="table of the vectors")
    max_connections: int = Field(8, ge=1, le=200, description="connections in the pool at most")
    statement_timeout_ms: int = Field(10_000, ge=100, le=600_000, description="PostgreSQL statement_timeout")


class PineconeVectorSettings(BaseModel):
    """A Pinecone index through its data plane (REST), one namespace per tenant."""

    kind: Literal["pinecone"]
    index_host: str = Field(description="the index's data-plane host from the Pinecone console")
    api_key: SecretStr = Field(description="Pinecone API key")
    namespace_prefix: str = Field("", description="prefix of the per-tenant namespaces")
    timeout: float = Field(10.0, gt=0.0, le=120.0, description="seconds per Pinecone call")


VectorSettings = Annotated[
    EmbeddedVectorSettings | QdrantVectorSettings | PgVectorSettings | PineconeVectorSettings,
    Field(discriminator="kind"),
]


class LocalTicketSettings(BaseModel):
    """JSON documents under ``<data dir>/objects``, laid out as the S3 keys."""

    kind: Literal["local"] = "local"


class S3TicketSettings(BaseModel):
    """JSON documents in an S3 bucket (or any S3-compatible server), under ``prefix``."""

    kind: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63, description="the bucket of the documents")
    prefix: str = Field("", description="key prefix inside the bucket")
    endpoint_url: str | None = Field(None, description="any S3-compatible endpoint (MinIO, SeaweedFS, R2...)")
    region: str = Field("us-east-1", description="AWS region")
    access_key_id: SecretStr = Field(SecretStr(""), description="unset: boto3's credential chain")
    secret_access_key: SecretStr = Field(SecretStr(""), description="unset: boto3's credential chain")
    connect_timeout: float = Field(3.0, gt=0.0, le=60.0, description="seconds to connect to S3")
    read_timeout: float = Field(10.0, gt=0.0, le=300.0, description="seconds to read an S3 answer")
    max_attempts: int = Field(3, ge=1, le=10, description="botocore attempts per call (standard retry mode)")


TicketSettings = Annotated[LocalTicketSettings | S3TicketSettings, Field(discriminator="kind")]


class RecommenderChoice(BaseModel):
    """Which recommender writes recommendations: offline (extractive) or an OpenAI-compatible chat
    model, and the limits of its calls."""

    kind: Literal["offline", "openai"] = Field(
        "offline", description="offline (extractive) or openai (any Chat Completions server)"
    )
    max_steps: int = Field(6, ge=1, le=20, description="most steps in an offline recommendation")
    model: str = Field("gpt-4o-mini", description="chat model for kind=openai")
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (Azure, Ollama, vLLM, llama.cpp); unset: OpenAI"
    )
    api_key: SecretStr = Field(
        SecretStr(""), description="API key for kind=openai (local servers may not need one)"
    )
    timeout: float = Field(20.0, gt=0.0, le=600.0, description="seconds per LLM call")
    max_retries: int = Field(1, ge=0, le=10, description="SDK retries per LLM call")
    max_output_tokens: int = Field(600, ge=50, le=8000, description="LLM answer budget, tokens")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="LLM sampling temperature")

    def same_as(self, other: RecommenderChoice) -> bool:
        """Whether ``other`` chooses the same recommender (the other kind's fields ignored)."""
        fields = {"kind", "max_steps"} if self.kind == "offline" else set(RecommenderChoice.model_fields)
        return self.model_dump(include=fields) == other.model_dump(include=fields)


class RecommenderSettings(RecommenderChoice):
    """What writes recommendations (see :class:`RecommenderChoice`), and whether an LLM is asked
    before or after a new ticket opens."""

    asynchronous: bool = Field(
        True,
        description="a new ticket gets the offline recommendation at once, the LLM's when it arrives",
    )


class ReliabilitySettings(BaseModel):
    """Retries and circuit breakers of backend calls, dead-letter replay, and how long and how
    many Idempotency-Key records are kept."""

    retry_attempts: int = Field(
        3, ge=1, le=10, description="attempts per backend call (retryable errors only)"
    )
    retry_initial_wait: float = Field(
        0.05, ge=0.0, le=10.0, description="first backoff, seconds (exponential, jittered)"
    )
    retry_max_wait: float = Field(
        1.0, ge=0.0, le=60.0, description="longest backoff between attempts, seconds"
    )
    retry_deadline: float = Field(5.0, gt=0.0, le=300.0, description="most seconds spent retrying one call")
    breaker_fail_max: int = Field(
        5, ge=1, le=1000, description="consecutive failures that open a backend's circuit"
    )
    breaker_reset_timeout: float = Field(
        10.0, gt=0.0, le=3600.0, description="seconds before an open circuit tries again"
    )
    dlq_replay_interval: float = Field(
        2.0, gt=0.0, le=3600.0, description="seconds between dead-letter replay attempts"
    )
    idempotency_ttl_hours: float = Field(
        24.0, gt=0.0, le=24 * 30, description="how long Idempotency-Key records live"
    )
    idempotency_sweep_interval: float = Field(
        60.0, gt=0.0, le=86_400.0, description="seconds between sweeps of expired Idempotency-Key records"
    )
    idempotency_max_records: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Idempotency-Key records kept per tenant; past it the oldest are forgotten early",
    )


class RateLimitSettings(BaseModel):
    """The request budgets per API key, per tenant and per client address failing authentication,
    and where they are counted."""

    per_key: str = Field(
        "6000/minute",
        description="incidents per API key ('' disables; a batch counts each); limits-library syntax",
    )
    per_tenant: str = Field("12000/minute", description="incidents per tenant across its keys ('' disables)")
    failed_auth_per_address: str = Field(
        "30/minute",
        description="requests with a missing or wrong key per client address; over it, 429 ('' disables)",
    )
    storage_uri: str = Field(
        "", description="limits storage URI ('' = Redis when configured, else memory://)"
    )


class RedisSettings(BaseModel):
    """The Redis that replicas share (locks, idempotency records, rate limits): where, how long a
    call may take, and when a held lock expires."""

    url: SecretStr = Field(
        SecretStr(""),
        description="redis://host:6379/0: shared locks, idempotency records, rate limits ('' = none)",
    )
    timeout: float = Field(2.0, gt=0.0, le=60.0, description="seconds per Redis call")
    lock_timeout: float = Field(
        30.0, gt=0.0, le=600.0, description="a held lock expires after this many seconds"
    )


class LocalDeadLetterSettings(BaseModel):
    """SQLite under the data dir (fsynced), one queue per replica."""

    kind: Literal["local"] = "local"


class SqsDeadLetterSettings(BaseModel):
    """An SQS queue shared by every replica (lookups of queued reports need Redis)."""

    kind: Literal["sqs"]
    queue_url: str = Field(description="the SQS queue URL")
    endpoint_url: str | None = Field(None, description="an SQS-compatible endpoint (unset: AWS)")
    region: str = Field("us-east-1", description="AWS region")
    access_key_id: SecretStr = Field(SecretStr(""), description="unset: boto3's credential chain")
    secret_access_key: SecretStr = Field(SecretStr(""), description="unset: boto3's credential chain")
    visibility_timeout: int = Field(
        60, ge=1, le=43_200, description="seconds a replaying replica holds a letter"
    )


DeadLetterSettings = Annotated[LocalDeadLetterSettings | SqsDeadLetterSettings, Field(discriminator="kind")]


class PerformanceSettings(BaseModel):
    """Caches, micro-batching and garbage collection; ``naive`` turns the optimizations off."""

    naive: bool = Field(
        False,
        description="no caches, no fingerprint fast path, no micro-batching, no group commit or opening",
    )
    embedding_cache_size: int = Field(
        50_000, ge=0, description="texts whose embeddings are kept (LRU; 0 = off)"
    )
    fingerprint_cache_size: int = Field(
        200_000, ge=0, description="known fingerprint -> ticket entries (0 = off)"
    )
    ticket_cache_size: int = Field(
        256, ge=0, description="parsed tickets kept between group commits (checked by version; 0 = off)"
    )
    recommendation_cache_size: int = Field(
        1_024, ge=0, description="runbook contexts whose recommendations are reused (LRU; 0 = off)"
    )
    recommendation_similarity: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="cosine between two new incidents' logs above which one's recommendation is reused",
    )
    batch_max_wait_ms: float = Field(
        0.0, ge=0.0, le=100.0, description="extra wait to fill a model batch (0: start when a worker is free)"
    )
    batch_max_size: int = Field(64, ge=1, le=1024, description="most texts per micro-batch")
    gc_freeze: bool = Field(
        True, description="at ready, exempt the start-up heap from garbage collection (gc.freeze)"
    )
    gc_young_threshold: int = Field(
        10_000, ge=0, description="allocations between young-generation collections (0 = Python's 700)"
    )


class HttpSettings(BaseModel):
    """What one connection or request may cost the server before it is refused."""

    header_bytes: int = Field(
        32 * 1024, ge=1024, le=1024 * 1024, description="largest request line + headers; larger get 431"
    )
    header_timeout: float = Field(
        10.0, gt=0.0, le=600.0, description="seconds to receive a request's headers once it has started (408)"
    )
    body_timeout: float = Field(
        30.0, gt=0.0, le=3600.0, description="seconds to receive a request's body (408)"
    )
    keep_alive_timeout: int = Field(
        75,
        ge=1,
        le=3600,
        description="seconds an idle connection is kept open (also before its first request)",
    )
    max_connections: int = Field(
        1000, ge=1, le=1_000_000, description="open connections at most; more are answered 503 and closed"
    )
    max_connections_per_client: int = Field(
        100, ge=0, description="open connections per client address at most (0: no limit; behind a proxy: 0)"
    )
    body_bytes: int = Field(
        256 * 1024, ge=1024, description="largest body of a single-object request (an incident, a comment)"
    )
    runbook_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest body of PUT /v1/runbooks/{id}"
    )


class MetricsSettings(BaseModel):
    """Who may read ``/metrics`` and on which port, which labels it has and how many values they take."""

    tenant_label: bool = Field(False, description="label ir_incidents_total by tenant too (more series)")
    token: SecretStr = Field(
        SecretStr(""),
        description="bearer token /metrics asks for ('' = none: keep /metrics off the internet)",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="serve /metrics on this port instead of the API's (unset: the API's)",
    )
    host: str = Field("127.0.0.1", description="bind address of the separate metrics port")
    max_services: int = Field(
        100, ge=1, le=100_000, description="distinct service label values; later services count as 'other'"
    )
    max_tenants: int = Field(
        50, ge=1, le=100_000, description="distinct tenant label values (tenant_label); later ones: 'other'"
    )


class TracingSettings(BaseModel):
    """OpenTelemetry tracing: on or off, where spans go, and the service name."""

    enabled: bool = Field(
        False,
        description="export OpenTelemetry traces; endpoint, headers, sampler: the standard OTEL_* variables",
    )
    exporter: Literal["otlp", "console", "none"] = Field("otlp", description="where spans go")
    service_name: str = Field("incident-responder", description="service.name resource attribute")


class PriceTable(BaseModel):
    """Unit prices in US dollars."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm_input_per_million: float = Field(0.15, ge=0.0, description="$ per 1M LLM prompt tokens")
    llm_output_per_million: float = Field(0.60, ge=0.0, description="$ per 1M LLM completion tokens")
    vector_query_per_thousand: float = Field(
        1.0, ge=0.0, description="$ per 1,000 vector reads (remote vector kinds only, e.g. pinecone)"
    )
    vector_write_per_thousand: float = Field(
        0.004, ge=0.0, description="$ per 1,000 vector writes: upsert/update/delete (remote kinds only)"
    )
    s3_put_per_thousand: float = Field(0.005, ge=0.0, description="$ per 1,000 S3 PUT/LIST requests")
    s3_get_per_thousand: float = Field(0.0004, ge=0.0, description="$ per 1,000 S3 GET/HEAD requests")


class AlertSettings(BaseModel):
    """How alert sources' notifications become reports, and the tenant defaults of their
    lifecycle (each tenant may override them with ``PUT /v1/policy``)."""

    service_labels: list[str] = Field(
        ["service", "job", "app", "namespace", "alertname"],
        min_length=1,
        max_length=20,
        description="labels naming an alert's service, first present wins",
    )
    ignored_labels: list[str] = Field(
        [],
        max_length=100,
        description="labels left out of an alert's log text (besides Grafana's __name__ ones)",
    )
    resolve_policy: Literal["all", "first", "never"] = Field(
        "all", description="a ticket resolves when all / the first / never of its source alerts resolve"
    )
    flapping_window: float = Field(
        900.0,
        ge=0.0,
        le=7 * 86_400.0,
        description="seconds after resolving in which firing again means flapping",
    )
    max_per_request: int = Field(
        5_000, ge=1, le=100_000, description="alerts per notification (keep Alertmanager's max_alerts below)"
    )
    max_per_ticket: int = Field(
        200, ge=1, le=10_000, description="source alerts a ticket tracks (resolved ones forgotten first)"
    )
    grafana_secret: SecretStr = Field(
        SecretStr(""), description="Grafana's HMAC signature secret (unset: signatures not checked)"
    )
    grafana_signature_header: str = Field(
        "X-Grafana-Alerting-Signature", description="the header Grafana's HMAC signature comes in"
    )
    grafana_timestamp_header: str = Field(
        "", description="the header of the signed timestamp, if Grafana is set to send one"
    )


class NotificationSettings(BaseModel):
    """Where and how notifications are delivered, and the tenant defaults of storm control."""

    storm_reports: int = Field(
        1, ge=1, le=10_000, description="reports a new ticket needs within storm_window before it notifies"
    )
    storm_window: float = Field(300.0, ge=1.0, le=86_400.0, description="seconds of storm_reports")
    update_interval: float = Field(
        60.0,
        ge=0.0,
        le=86_400.0,
        description="least seconds between messages about one ticket to one channel",
    )
    recommendation_wait: float = Field(
        10.0, ge=0.0, le=600.0, description="seconds a new ticket's message waits for an LLM recommendation"
    )
    give_up_after: float = Field(
        86_400.0, ge=1.0, le=30 * 86_400.0, description="seconds of failed delivery before a message is dead"
    )
    retry_base: float = Field(1.0, ge=0.01, le=60.0, description="first retry delay (doubles, with jitter)")
    retry_cap: float = Field(300.0, ge=0.1, le=3_600.0, description="longest retry delay")
    timeout: float = Field(10.0, ge=0.1, le=120.0, description="seconds one delivery attempt may take")
    concurrency: int = Field(8, ge=1, le=256, description="deliveries in flight at once")
    allow_private_targets: bool = Field(
        False, description="allow channel URLs on loopback or private networks (refused: SSRF)"
    )
    public_url: str = Field("", description="this service's URL, for links to tickets in messages")
    outbox: Literal["local", "redis"] = Field(
        "local", description="local: SQLite under the data dir; redis: IR_REDIS__URL, shared by replicas"
    )
    keep_sent: float = Field(
        7 * 86_400.0, ge=60.0, description="seconds delivered messages are kept (so they are not sent twice)"
    )


class ExperimentSettings(BaseModel):
    """The recommender A/B: a share of new tickets gets recommender B instead of the configured
    one (A); their recommendations say which (``variant``), and recommendations given and votes
    on them (``POST /v1/tickets/{id}/feedback``) are counted per variant."""

    b_share: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="share of new tickets that get recommender B (0: no experiment), chosen by a hash "
        "of the ticket's first log; while it runs, recommendations are not reused between tickets",
    )
    recommender_b: RecommenderChoice = Field(default_factory=RecommenderChoice)

    @property
    def running(self) -> bool:
        """Whether any new ticket gets recommender B."""
        return self.b_share > 0.0
