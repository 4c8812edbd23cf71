"""One closed error tree for tierserve; each error carries its HTTP status (and gRPC code, through
the API layer). Raise a branch, never the base: every status a client can see is a class here.

    TierserveError                  500  base, never raised itself; message is the ``{"error": ...}`` text
    ├── InvalidInput                400  malformed body, bad tensor, unknown input, bad parameter
    │   └── Unprocessable           422  well-formed, but contradicts what is stored (an idempotency
    │                                    key reused for another request)
    ├── Unauthorized                401  no credentials, or unknown, revoked, expired or malformed ones
    ├── Forbidden                   403  valid credentials whose role is too weak for the route
    ├── NotFound                    404  an unknown job, API key or other named resource
    │   └── ModelNotFound           404  "Request for unknown model: ..."
    ├── Conflict                    409  the resource is in a state that forbids the action
    ├── PayloadTooLarge             413  body over the configured limit
    ├── Unavailable                 503  not ready, overloaded, queue full, a remote pool down
    │   │                                (carries Retry-After)
    │   └── RateLimited             429  a per-client limit or a spent budget (carries Retry-After)
    ├── DeadlineExceeded            504  a best-effort request's own timeout passed while it ran
    └── InferenceFailed             500  the backend raised while running a batch

``blames_backend`` says whether the error counts against the pool's circuit breaker (a backend
that failed) rather than against the request; the engine retries such work on another pool.
Errors propagate; the API layer turns them into the protocol's error body once.
"""

from __future__ import annotations


class TierserveError(Exception):
    status_code: int = 500
    blames_backend = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(TierserveError):
    status_code = 400


class Unprocessable(InvalidInput):
    status_code = 422


class Unauthorized(TierserveError):
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="tierserve"'}


class Forbidden(TierserveError):
    status_code = 403


class NotFound(TierserveError):
    status_code = 404


class ModelNotFound(NotFound):
    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"'{name}'" if version is None else f"'{name}' version {version}"
        super().__init__(f"Request for unknown model: {what} is not found")
        self.name = name
        self.version = version


class Conflict(TierserveError):
    status_code = 409


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
    blames_backend = True


def explain(exc: BaseException) -> str:
    """The message of a tierserve error, or the type and text of any other exception."""
    if isinstance(exc, TierserveError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
