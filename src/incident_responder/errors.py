"""One error tree for the whole service; the API maps it to statuses in one table.

    IncidentResponderError          500 internal_error
    ├── InvalidInput                422 invalid_input
    ├── Unauthorized                401 unauthorized
    ├── NotFound                    404 not_found
    ├── RequestTimeout              408 request_timeout     (the body did not arrive in time)
    ├── Conflict                    409 conflict
    │   ├── VersionConflict         409 version_conflict   (optimistic concurrency lost)
    │   ├── IdempotencyConflict     409 idempotency_conflict
    │   └── LimitReached            409 limit_reached       (a bounded collection is full)
    ├── PayloadTooLarge             413 payload_too_large
    ├── RateLimited                 429 rate_limited        (carries retry_after)
    ├── HeadersTooLarge             431 headers_too_large
    ├── TooManyConnections          503 too_many_connections
    ├── ConfigError                 500 config_error        (refused at start-up)
    └── BackendError                502 backend_error
        └── BackendUnavailable      503 backend_unavailable (retryable)

Adapters translate vendor exceptions at their boundary (``raise BackendUnavailable(...)
from exc``); nothing above the adapters sees a boto3, OS or library error.
"""

from __future__ import annotations


class IncidentResponderError(Exception):
    status = 500
    code = "internal_error"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(IncidentResponderError):
    status = 422
    code = "invalid_input"


class Unauthorized(IncidentResponderError):
    status = 401
    code = "unauthorized"


class NotFound(IncidentResponderError):
    status = 404
    code = "not_found"


class RequestTimeout(IncidentResponderError):
    status = 408
    code = "request_timeout"


class Conflict(IncidentResponderError):
    status = 409
    code = "conflict"


class VersionConflict(Conflict):
    code = "version_conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class LimitReached(Conflict):
    code = "limit_reached"


class PayloadTooLarge(IncidentResponderError):
    status = 413
    code = "payload_too_large"


class RateLimited(IncidentResponderError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HeadersTooLarge(IncidentResponderError):
    status = 431
    code = "headers_too_large"


class TooManyConnections(IncidentResponderError):
    status = 503
    code = "too_many_connections"


class ConfigError(IncidentResponderError):
    code = "config_error"


class BackendError(IncidentResponderError):
    status = 502
    code = "backend_error"


class BackendUnavailable(BackendError):
    status = 503
    code = "backend_unavailable"
    retryable = True
