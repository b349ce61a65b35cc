"""The only reader of the environment: every setting, its default and its validation.

Environment variables use the prefix ``IR_`` and ``__`` between nested sections
(``IR_DEDUP__AUTO_MERGE=0.9``). The same names may be put in a config file (dotenv
syntax) named by ``IR_CONFIG_FILE``; real environment variables win over it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from incident_responder.errors import ConfigError
from incident_responder.settings.reference import describe, reference, reference_markdown
from incident_responder.settings.sections import (
    AlertSettings,
    DeadLetterSettings,
    DedupSettings,
    EmbeddedVectorSettings,
    EmbeddingSettings,
    ExperimentSettings,
    HttpSettings,
    LocalDeadLetterSettings,
    LocalTicketSettings,
    MetricsSettings,
    NotificationSettings,
    PerformanceSettings,
    PgVectorSettings,
    PineconeVectorSettings,
    PriceTable,
    QdrantVectorSettings,
    RateLimitSettings,
    RecommenderChoice,
    RecommenderSettings,
    RedisSettings,
    ReliabilitySettings,
    RetrievalSettings,
    S3TicketSettings,
    ShadowSettings,
    SqsDeadLetterSettings,
    TicketSettings,
    TracingSettings,
    VectorSettings,
    usable_cores,
)

_SERVICE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

__all__ = [
    "AlertSettings",
    "DeadLetterSettings",
    "DedupSettings",
    "EmbeddedVectorSettings",
    "EmbeddingSettings",
    "ExperimentSettings",
    "HttpSettings",
    "LocalDeadLetterSettings",
    "LocalTicketSettings",
    "MetricsSettings",
    "NotificationSettings",
    "PerformanceSettings",
    "PgVectorSettings",
    "PineconeVectorSettings",
    "PriceTable",
    "QdrantVectorSettings",
    "RateLimitSettings",
    "RecommenderChoice",
    "RecommenderSettings",
    "RedisSettings",
    "ReliabilitySettings",
    "RetrievalSettings",
    "S3TicketSettings",
    "Settings",
    "ShadowSettings",
    "SqsDeadLetterSettings",
    "TicketSettings",
    "TracingSettings",
    "VectorSettings",
    "describe",
    "load_settings",
    "parse_api_keys",
    "reference",
    "reference_markdown",
    "usable_cores",
]


class Settings(BaseSettings):
    """Every setting of the service: ``IR_*`` environment variables (``__`` between nested
    sections), or the same names in the file named by ``IR_CONFIG_FILE``."""

    model_config = SettingsConfigDict(
        env_prefix="IR_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    data_dir: Path = Field(Path("./data"), description="where tickets, the index and runbooks live")
    api_keys: SecretStr = Field(SecretStr(""), description='"tenant1:key1,tenant2:key2"')
    api_keys_file: Path | None = Field(
        None,
        description="file of 'tenant:sha256(key)' lines, re-read when it changes (rotation without restart)",
    )
    insecure_no_auth: bool = Field(
        False, description="serve without API keys (everything is tenant 'default')"
    )
    host: str = Field("127.0.0.1", description="bind address of the API")
    port: int = Field(8080, ge=1, le=65535, description="port of the API")
    max_log_chars: int = Field(10_000, ge=1, le=1_000_000, description="longest accepted log text")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest request body (a batch); larger bodies get 413"
    )
    max_batch: int = Field(1_000, ge=1, le=10_000, description="most incidents in one batch request")
    occurrence_comments: int = Field(
        25,
        ge=1,
        le=1_000,
        description="the newest occurrence comments a ticket keeps (its occurrence count stays exact; "
        "every report stays readable at /v1/incidents/{id})",
    )
    max_comments: int = Field(
        1_000, ge=1, le=100_000, description="user comments per ticket; more are refused (409 limit_reached)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="least severe log event written"
    )
    log_format: Literal["json", "console", "auto"] = Field(
        "auto", description="json, console, or auto (JSON unless stderr is a terminal)"
    )
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    vector: VectorSettings = Field(default_factory=EmbeddedVectorSettings)
    tickets: TicketSettings = Field(default_factory=LocalTicketSettings)
    recommender: RecommenderSettings = Field(default_factory=RecommenderSettings)
    reliability: ReliabilitySettings = Field(default_factory=ReliabilitySettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    workers: int = Field(
        1, ge=1, le=64, description="server processes (>1 needs Redis and a server vector index)"
    )
    # Variables of other tools, read here like every other: prometheus-client's (set by
    # `serve --workers N`) and the XDG base directory of caches.
    prometheus_multiproc_dir: Path | None = Field(
        None, validation_alias="PROMETHEUS_MULTIPROC_DIR", description="prometheus-client's multiprocess dir"
    )
    xdg_cache_home: Path | None = Field(
        None, validation_alias="XDG_CACHE_HOME", description="caches go under it (unset: ~/.cache)"
    )
    performance: PerformanceSettings = Field(default_factory=PerformanceSettings)
    dead_letters: DeadLetterSettings = Field(default_factory=LocalDeadLetterSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    prices: PriceTable = Field(default_factory=PriceTable)
    experiment: ExperimentSettings = Field(default_factory=ExperimentSettings)

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: SecretStr) -> SecretStr:
        parse_api_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _refuse_open_server(self) -> Settings:
        # Checked here so that every entry point (serve, tests, scripts) gets the same rule.
        if not self.api_keys.get_secret_value() and self.api_keys_file is None and not self.insecure_no_auth:
            raise ValueError("IR_API_KEYS (or IR_API_KEYS_FILE) is unset: set it or pass --insecure-no-auth")
        if self.dead_letters.kind == "sqs" and not self.redis.url.get_secret_value():
            raise ValueError(
                "IR_DEAD_LETTERS__KIND=sqs needs IR_REDIS__URL (it answers lookups of queued reports)"
            )
        if self.notifications.outbox == "redis" and not self.redis.url.get_secret_value():
            raise ValueError("IR_NOTIFICATIONS__OUTBOX=redis needs IR_REDIS__URL")
        if self.workers > 1 and not self.redis.url.get_secret_value():
            raise ValueError(
                "IR_WORKERS > 1 needs IR_REDIS__URL (locks and idempotency shared by the workers)"
            )
        if self.workers > 1 and self.vector.kind == "qdrant-edge":
            raise ValueError(
                "IR_WORKERS > 1 needs a server vector index (the embedded one is single-process)"
            )
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise ValueError(f"IR_API_KEYS_FILE {self.api_keys_file} does not exist")
        return self

    @model_validator(mode="after")
    def _experiment_compares_something(self) -> Settings:
        if self.experiment.running and self.experiment.recommender_b.same_as(self.recommender):
            raise ValueError(
                "IR_EXPERIMENT__RECOMMENDER_B__* is the same recommender as IR_RECOMMENDER__*: "
                "set B to the one to compare, or IR_EXPERIMENT__B_SHARE=0"
            )
        return self

    @property
    def onnx_cache_dir(self) -> Path:
        """Where the model's ONNX export is kept."""
        if self.embedding.onnx_cache_dir is not None:
            return self.embedding.onnx_cache_dir
        return (self.xdg_cache_home or Path.home() / ".cache") / "incident-responder" / "onnx"

    def key_to_tenant(self) -> dict[str, str]:
        return parse_api_keys(self.api_keys.get_secret_value())


def parse_api_keys(raw: str) -> dict[str, str]:
    """``"t1:k1,t2:k2"`` -> ``{"k1": "t1", "k2": "t2"}``; refuses malformed or duplicate keys."""
    keys: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        tenant, sep, key = item.partition(":")
        tenant, key = tenant.strip(), key.strip()
        if not sep or not tenant or not key:
            raise ValueError("IR_API_KEYS entries must look like tenant:key")
        if not set(tenant) <= _SERVICE_CHARS or len(tenant) > 64:
            raise ValueError("tenant names may use only [A-Za-z0-9._-], at most 64 chars")
        if len(key) < 8:
            raise ValueError(f"the API key of tenant {tenant!r} is shorter than 8 characters")
        if key in keys:
            raise ValueError("the same API key is given twice")
        keys[key] = tenant
    return keys


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment (+ ``config_file``, default ``IR_CONFIG_FILE``) and
    explicit overrides."""
    config_file = str(config_file) if config_file is not None else os.environ.get("IR_CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"IR_CONFIG_FILE {config_file!r} does not exist")
    try:
        return Settings(_env_file=config_file, **overrides)
    except ValueError as exc:
        raise ConfigError(_first_error(exc)) from exc


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        return f"invalid setting {where}: {first.get('msg')}"
    return str(exc)
