"""Who a request comes from, once its credentials are checked."""

from __future__ import annotations

from dataclasses import dataclass

from tierserve.security.rates import NO_LIMITS, Limits
from tierserve.security.roles import Role


@dataclass(frozen=True, slots=True)
class Identity:
    key_id: str  # an API key's id, or "jwt:<sub>" for a token
    tenant: str
    role: Role
    tier: str | None = None  # the default tier of its requests that name none
    limits: Limits = NO_LIMITS

    @property
    def tenant_scope(self) -> str | None:
        """The only tenant whose resources it may see, or None for all (operators and admins)."""
        return None if self.role.sees_all_tenants else self.tenant


# Who acts when authentication is off (loopback with no keys, or --insecure): anyone may do anything.
ANONYMOUS = Identity(key_id="anonymous", tenant="", role=Role.ADMIN)
