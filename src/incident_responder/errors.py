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
    │   └── SourceThrottled         503 rate_limited        (an alert source: it retries 5xx, drops 4xx)
    ├── HeadersTooLarge             431 headers_too_large
    ├── TooManyConnections          503 too_many_connections
    ├── ConfigError                 500 config_error        (refused at start-up)
    └── BackendError                502 backend_error
        └── BackendUnavailable      503 backend_unavailable (retryable)

Every 503 answer carries ``Retry-After`` (the error's ``retry_after``, else 1 s).

Adapters translate vendor exceptions at their boundary (``raise BackendUnavailable(...)
from exc``); nothing above the adapters sees a boto3, OS or library error.
"""

from __future__ import annotations


class IncidentResponderError(Exception):
    """The root of the service's errors: each class sets its HTTP ``status``, its ``code`` and
    whether it is ``retryable``."""

    status = 500
    code = "internal_error"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(IncidentResponderError):
    """A request, or a value in it, breaks a rule (422)."""

    status = 422
    code = "invalid_input"


class Unauthorized(IncidentResponderError):
    """A missing or unknown API key or token (401)."""

    status = 401
    code = "unauthorized"


class NotFound(IncidentResponderError):
    """An unknown id, also one of another tenant (404)."""

    status = 404
    code = "not_found"


class RequestTimeout(IncidentResponderError):
    """A request's headers or body did not arrive in time (408)."""

    status = 408
    code = "request_timeout"


class Conflict(IncidentResponderError):
    """The request conflicts with the current state of what it changes (409)."""

    status = 409
    code = "conflict"


class VersionConflict(Conflict):
    """A conditional write refused: the object changed since it was read, or already exists."""

    code = "version_conflict"


class IdempotencyConflict(Conflict):
    """An Idempotency-Key used again with a different request body."""

    code = "idempotency_conflict"


class LimitReached(Conflict):
    """A bounded collection is full (e.g. the comments of a ticket)."""

    code = "limit_reached"


class PayloadTooLarge(IncidentResponderError):
    """A request body over its route's size limit (413)."""

    status = 413
    code = "payload_too_large"


class RateLimited(IncidentResponderError):
    """A request over a rate limit (429); ``retry_after``: seconds until it may be tried again."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceThrottled(RateLimited):
    """A request of an alert source over a rate limit: 503, which sources retry (Alertmanager
    drops a notification answered with a 4xx)."""

    status = 503


class HeadersTooLarge(IncidentResponderError):
    """A request line and headers over the server's size limit (431)."""

    status = 431
    code = "headers_too_large"


class TooManyConnections(IncidentResponderError):
    """A connection over the server's or its client's connection cap (503)."""

    status = 503
    code = "too_many_connections"


class ConfigError(IncidentResponderError):
    """A setting, or a file it names, that cannot work (refused at start-up)."""

    code = "config_error"


class BackendError(IncidentResponderError):
    """A backing service failed or refused a call in a way that retrying will not fix (502)."""

    status = 502
    code = "backend_error"


class BackendUnavailable(BackendError):
    """A backing service is down, overloaded or too slow (503): the call may be retried."""

    status = 503
    code = "backend_unavailable"
    retryable = True
