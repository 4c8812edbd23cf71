"""The security of one server: its store, key table, limiter and audit log, started and stopped
with the app. Example::

    security = SecurityService.from_settings(settings, server_config, metrics.registry, engine.tiers)
    await security.open()     # schema, keys loaded, Redis reachable
    security.start()          # key refresh and audit flush in the background
    ...
    await security.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from tierserve.config import ServerSettings
from tierserve.scheduler.tiers import TierTable
from tierserve.security.audit_log import AuditLog
from tierserve.security.audit_records import INFERENCE, AuditQuery, AuditRecord
from tierserve.security.guard import Guard, RequestNote, is_loopback
from tierserve.security.identity import Identity
from tierserve.security.key_admin import create_key, revoke_key
from tierserve.security.keys import KeyRecord, KeySpec
from tierserve.security.rate_limiter import RedisLimiter, open_limiter
from tierserve.security.rates import parse_tenant_limits
from tierserve.security.store import SecurityStore, open_security_store
from tierserve.security.tokens import JwtSettings, TokenVerifier

log = logging.getLogger(__name__)

AUDIT_PURGE_S = 3600.0


class SecurityService:
    def __init__(
        self,
        store: SecurityStore,
        guard: Guard,
        audit: AuditLog,
        tiers: TierTable,
        *,
        refresh_s: float = 2.0,
        audit_retention_s: float = 0.0,
        clock: Callable[[], float] = time.time,  # wall clock: stored times outlive this process
    ) -> None:
        self.store = store
        self.guard = guard
        self.audit = audit
        self.tiers = tiers
        self.refresh_s = refresh_s
        self.audit_retention_s = audit_retention_s
        self._clock = clock
        self._version: tuple[Any, ...] | None = None
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: ServerSettings,
        server_config: Mapping[str, Any],
        registry: CollectorRegistry,
        tiers: TierTable,
    ) -> SecurityService:
        jwt = JwtSettings(
            secret=_secret(settings),
            public_key=settings.jwt_public_key,
            jwks=settings.jwt_jwks,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
        store = open_security_store(settings.database, settings.state_dir)
        guard = Guard(
            open_limiter(settings.redis),
            verifier=TokenVerifier(jwt) if jwt.configured else None,
            tenants=parse_tenant_limits(server_config.get("tenants")),
            loopback=is_loopback(settings.host),
            insecure=settings.insecure,
        )
        audit = AuditLog(store, registry, max_queue=settings.audit_queue_size)
        return cls(
            store,
            guard,
            audit,
            tiers,
            refresh_s=settings.key_refresh_s,
            audit_retention_s=settings.audit_retention_days * 86400,
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.store.open()
        if isinstance(self.guard.limiter, RedisLimiter):
            await self.guard.limiter.check()
        await self.reload_keys()

    def start(self) -> None:
        self.audit.start()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="security-key-refresh")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.audit.stop()
        await self.guard.limiter.close()
        await self.store.close()

    async def reload_keys(self) -> None:
        version = await self.store.keys_version()
        self.guard.load_keys(await self.store.keys(include_revoked=False))
        self._version = version

    async def purge_audit(self) -> int:
        """Delete audit records past the retention (none when it is 0); how many."""
        if self.audit_retention_s <= 0:
            return 0
        purged = await self.store.purge_audit(self._clock() - self.audit_retention_s)
        if purged:
            log.info("purged %d audit record(s) older than the retention", purged)
        return purged

    async def _refresh_loop(self) -> None:
        """Keys made or revoked elsewhere (the CLI, another server) take effect within ``refresh_s``;
        audit records past the retention are purged every ``AUDIT_PURGE_S``."""
        next_purge = 0.0
        while True:
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + AUDIT_PURGE_S
                try:
                    await self.purge_audit()
                except Exception:
                    log.exception("purging old audit records failed")
            await asyncio.sleep(self.refresh_s)
            try:
                if await self.store.keys_version() != self._version:
                    await self.reload_keys()
            except Exception:
                log.exception("reloading API keys failed; the previous keys stay in force")

    # -- keys --------------------------------------------------------------------------------------

    async def create_key(self, doc: Mapping[str, Any], actor: Identity) -> tuple[KeyRecord, str]:
        spec = KeySpec.parse(doc, list(self.tiers.by_name))
        record, secret = await create_key(self.store, spec, actor=actor.key_id, now=self._clock())
        await self.reload_keys()
        return record, secret

    async def revoke_key(self, key_id: str) -> KeyRecord:
        record = await revoke_key(self.store, key_id, now=self._clock())
        await self.reload_keys()
        return record

    async def keys(self, *, include_revoked: bool) -> list[KeyRecord]:
        return await self.store.keys(include_revoked=include_revoked)

    async def audit_page(self, query: AuditQuery) -> tuple[list[AuditRecord], int | None]:
        records = await self.store.audit(query)
        page = records[: query.limit]
        return page, (page[-1].seq if len(records) > query.limit else None)

    # -- a guarded call (auth on), any protocol ------------------------------------------------------

    @contextlib.asynccontextmanager
    async def call(
        self, *, model: str | None = None, version: str | None = None
    ) -> AsyncIterator[RequestNote]:
        """One guarded call: the note that its check fills in. The caller sets ``note.status``
        when it answers (an exception's own status otherwise) and ``note.decision`` to what the
        engine decided for it (``InferRequest.decision``); on the way out the call's concurrency
        slots go back and its inference audit record is queued (``model`` and ``version``: what the
        call named, for when no decision was handed over). Example::

            async with security.call(model=name) as note:
                identity = await access.check(guard, authorization, api_key, note)
                ...
                note.status = 200
        """
        note = RequestNote(time.perf_counter_ns())
        try:
            yield note
        except Exception as exc:
            note.status = getattr(exc, "status_code", 500)
            raise
        finally:
            await self._finish(note, model=model, version=version)

    async def _finish(
        self, note: RequestNote, *, model: str | None = None, version: str | None = None
    ) -> None:
        if note.slots:
            await self.guard.release(note)
        identity = note.identity
        if note.action is None or identity is None:
            return
        decision = note.decision
        self.audit.record(
            AuditRecord(
                at=self._clock(),
                kind=INFERENCE,
                action=note.action,
                key_id=identity.key_id,
                tenant=identity.tenant,
                status=note.status,
                model=decision.model if decision else model,
                version=str(decision.version) if decision else version,
                tier=decision.tier if decision else None,
                latency_ms=round((time.perf_counter_ns() - note.started_ns) / 1e6, 3),
                pool=decision.pool if decision else None,
                cost=decision.cost if decision else None,
            )
        )


def _secret(settings: ServerSettings) -> str:
    if settings.jwt_secret_file is not None:
        try:
            return settings.jwt_secret_file.read_text().strip()
        except OSError as exc:
            from tierserve.errors import InvalidInput

            raise InvalidInput(f"cannot read the JWT secret file {settings.jwt_secret_file}: {exc}") from None
    return settings.jwt_secret
