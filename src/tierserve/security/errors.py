"""Authentication and authorisation errors: branches of ``tierserve.errors.TierserveError``.

TierserveError
├── Unauthorized   401  no credentials, or unknown, revoked, expired or malformed ones
└── Forbidden      403  valid credentials whose role is too weak for the route
"""

from __future__ import annotations

from tierserve.errors import TierserveError


class Unauthorized(TierserveError):
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="tierserve"'}


class Forbidden(TierserveError):
    status_code = 403
