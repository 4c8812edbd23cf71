"""Who may call what: credentials to an identity, its role against the route's, its rate limits.

Everything a request touches here is in memory: API keys are a dict from the key's SHA-256 to its
identity (loaded from the store at start, reloaded when keys change), JWTs are verified locally
(and cached until they expire), and limits are counted in process or in Redis.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from tierserve.engine.request import Decision
from tierserve.errors import Forbidden, RateLimited, Unauthorized
from tierserve.security.identity import Identity
from tierserve.security.keys import KEY_PREFIX, KeyRecord, hash_key
from tierserve.security.rate_limiter import Limiter
from tierserve.security.rates import NO_LIMITS, Limits
from tierserve.security.roles import Role
from tierserve.security.tokens import TokenVerifier

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def auth_required(*, loopback: bool, insecure: bool, keys: int, tokens: bool) -> bool:
    """Closed once any credential exists; open with none only on loopback, or when told --insecure."""
    return keys > 0 or tokens or not (loopback or insecure)


@dataclass(slots=True)
class RequestNote:
    """What one request's security needs after its handler: the slots to give back, and what its
    inference audit record says (``decision``: what the engine decided, copied by the route from
    the request it served; see ``access.note_decision``)."""

    started_ns: int
    identity: Identity | None = None
    action: str | None = None  # an inference to audit
    slots: list[tuple[str, object]] = field(default_factory=list)
    decision: Decision | None = None
    status: int = 500  # the answer's status, set by whoever answers


class Guard:
    def __init__(
        self,
        limiter: Limiter,
        *,
        verifier: TokenVerifier | None = None,
        tenants: Mapping[str, Limits] | None = None,
        loopback: bool = True,
        insecure: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limiter = limiter
        self.verifier = verifier
        self.tenants = dict(tenants or {})
        self._any_tenant = self.tenants.get("*", NO_LIMITS)
        self.loopback = loopback
        self.insecure = insecure
        self._clock = clock
        self._keys: dict[str, Identity] = {}
        self.enabled = True  # closed until the keys are loaded
        self._announced: bool | None = None

    # -- keys ----------------------------------------------------------------------------------------

    def load_keys(self, records: Iterable[KeyRecord]) -> None:
        """Replace the key table (one assignment: a request sees the old table or the new one)."""
        self._keys = {r.key_hash: r.identity() for r in records if r.revoked_at is None}
        self.enabled = auth_required(
            loopback=self.loopback,
            insecure=self.insecure,
            keys=len(self._keys),
            tokens=self.verifier is not None,
        )
        if self.enabled != self._announced:
            self._announced = self.enabled
            self._announce()

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def _announce(self) -> None:
        if not self.enabled:
            why = "bound to loopback" if self.loopback else "--insecure"
            log.warning(
                "authentication is OFF (%s, no API keys or JWT verification configured): every request "
                "is served; `tierserve keys create` turns it on",
                why,
            )
        elif not self._keys and self.verifier is None:
            log.warning(
                "authentication is required (not bound to loopback) but no API keys exist: every request "
                "but health checks is refused until one is made with `tierserve keys create --role admin`"
            )
        else:
            log.info(
                "authentication is on: %d API key(s)%s",
                len(self._keys),
                ", JWT verification" if self.verifier is not None else "",
            )

    # -- requests ------------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None, api_key: str | None) -> Identity:
        """The identity behind ``Authorization: Bearer ...`` or ``X-API-Key``; raises Unauthorized."""
        if authorization is not None:
            scheme, _, credential = authorization.partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise Unauthorized("the Authorization header must be 'Bearer <API key or token>'")
        elif api_key is not None:
            credential = api_key.strip()
        else:
            raise Unauthorized(
                "credentials required: 'Authorization: Bearer <API key or token>' or 'X-API-Key'"
            )
        if credential.startswith(KEY_PREFIX):
            identity = self._keys.get(hash_key(credential))
            if identity is None:
                raise Unauthorized("unknown or revoked API key")
            return identity
        if self.verifier is not None and credential.count(".") == 2:
            return self.verifier.verify(credential, self._clock())
        raise Unauthorized("unknown or revoked API key")

    @staticmethod
    def authorize(identity: Identity, role: Role) -> None:
        if identity.role < role:
            raise Forbidden(
                f"this route needs the role '{role}' or higher; key '{identity.key_id}' has '{identity.role}'"
            )

    def tenant_limits(self, tenant: str) -> Limits:
        return self.tenants.get(tenant, self._any_tenant)

    async def admit(self, identity: Identity, note: RequestNote | None, holds_work: bool) -> None:
        """Count the request against its key's and its tenant's rate; take concurrency slots for
        work (given back by the middleware once the response is sent). Raises RateLimited (429)."""
        tenant_limits = self.tenant_limits(identity.tenant)
        for limits, key, who in (
            (identity.limits, f"key:{identity.key_id}", f"key '{identity.key_id}'"),
            (tenant_limits, f"tenant:{identity.tenant}", f"tenant '{identity.tenant}'"),
        ):
            window = limits.window
            if window is None:
                continue
            retry_after = await self.limiter.hit(window, key)
            if retry_after is not None:
                raise RateLimited(f"rate limit of {who} exceeded ({window})", retry_after_s=retry_after)
        if not holds_work or note is None:
            return
        for limits, key, who in (
            (identity.limits, f"key:{identity.key_id}", f"key '{identity.key_id}'"),
            (tenant_limits, f"tenant:{identity.tenant}", f"tenant '{identity.tenant}'"),
        ):
            if limits.concurrency is None:
                continue
            token = await self.limiter.acquire(key, limits.concurrency)
            if token is None:
                raise RateLimited(
                    f"{who} already has {limits.concurrency} requests in flight", retry_after_s=1.0
                )
            note.slots.append((key, token))

    async def release(self, note: RequestNote) -> None:
        for key, token in note.slots:
            await self.limiter.release(key, token)
        note.slots.clear()
