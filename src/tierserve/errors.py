"""One error tree for tierserve; each error carries its HTTP status.

    TierserveError                  500  base; message is the V2 ``{"error": ...}`` text
    ├── InvalidInput                400  malformed body, bad tensor, unknown input, bad parameter
    ├── ModelNotFound               404  "Request for unknown model: ..."
    ├── PayloadTooLarge             413  body over the configured limit
    ├── Unavailable                 503  not ready, overloaded, queue full (carries Retry-After)
    │   └── RateLimited             429  a per-client limit (carries Retry-After)
    └── InferenceFailed             500  the backend raised while running a batch

Errors propagate; the API layer turns them into the protocol's error body once.
"""

from __future__ import annotations


class TierserveError(Exception):
    status_code: int = 500

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(TierserveError):
    status_code = 400


class ModelNotFound(TierserveError):
    status_code = 404

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"'{name}'" if version is None else f"'{name}' version {version}"
        super().__init__(f"Request for unknown model: {what} is not found")
        self.name = name
        self.version = version


class PayloadTooLarge(TierserveError):
    status_code = 413


class Unavailable(TierserveError):
    status_code = 503

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        # Retry-After is whole seconds (RFC 9110); never advertise 0.
        return {"Retry-After": str(max(1, round(self.retry_after_s + 0.499)))}


class RateLimited(Unavailable):
    status_code = 429


class DeadlineExceeded(TierserveError):
    """A best-effort request's own ``timeout`` passed before its outputs were ready (HTTP 504)."""

    status_code = 504


class InferenceFailed(TierserveError):
    status_code = 500
    # Whether the backend is to blame (counts against its circuit breaker) rather than the request.
    blames_backend = True
