"""Who a request comes from, once its credentials are checked."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tierserve.security.rates import NO_LIMITS, Limits
from tierserve.security.roles import Role

# A tenant name: from API keys and JWT claims alike. No "/" (tenant-scoped keys such as idempotency
# keys are "<tenant>/<key>"), no whitespace or control characters (fullmatch: "$" lets "\n" through).
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
TENANT_RULE = "1 to 128 letters, digits or . _ : @ - (starting with a letter or digit)"


def valid_tenant(name: object) -> bool:
    return isinstance(name, str) and TENANT_PATTERN.fullmatch(name) is not None


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
