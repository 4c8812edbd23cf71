"""Back-pressure on the job store: at most ``max_jobs`` unfinished jobs in all, and at most
``max_jobs_per_tenant`` of one tenant. Over either, a submission is refused before it is stored:
503 (the server is full) or 429 (the tenant is), each with Retry-After.

Counting unfinished jobs in the store at every submission would cost a scan per job on the accept
path (6,500 jobs/s measured); instead the counts are read from the store every ``REFRESH_S`` (a
GROUP BY over the unfinished jobs, on the store's side thread) and each job accepted here is added
at once. Servers sharing a PostgreSQL store see each other's jobs at the next refresh, so together
they may overshoot a limit by what they accept within one refresh; one server never does.

Example::

    quota = JobQuota(max_jobs=100_000, max_per_tenant=10_000)
    quota.check("acme")        # raises Unavailable / RateLimited when full
    ...store the job...
    quota.accepted("acme")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from tierserve.errors import RateLimited, Unavailable

log = logging.getLogger(__name__)

REFRESH_S = 1.0
RETRY_AFTER_S = 5.0  # jobs finish at the workers' pace; asking again sooner is unlikely to help


class JobQuota:
    def __init__(self, *, max_jobs: int, max_per_tenant: int) -> None:
        self.max_jobs = max_jobs
        self.max_per_tenant = max_per_tenant
        self.total = 0
        self.by_tenant: dict[str | None, int] = {}

    def reset(self, counts: Mapping[str | None, int]) -> None:
        """The unfinished jobs per tenant as the store holds them now (None: jobs without a tenant)."""
        self.by_tenant = dict(counts)
        self.total = sum(counts.values())

    def check(self, tenant: str | None) -> None:
        if self.max_jobs > 0 and self.total >= self.max_jobs:
            raise Unavailable(
                f"the job store holds {self.total} unfinished jobs, its limit (max_jobs); retry later",
                retry_after_s=RETRY_AFTER_S,
            )
        held = self.by_tenant.get(tenant, 0)
        if tenant is not None and self.max_per_tenant > 0 and held >= self.max_per_tenant:
            raise RateLimited(
                f"tenant '{tenant}' has {held} unfinished jobs, its quota (max_jobs_per_tenant); "
                "retry once some have finished",
                retry_after_s=RETRY_AFTER_S,
            )

    def accepted(self, tenant: str | None) -> None:
        self.total += 1
        self.by_tenant[tenant] = self.by_tenant.get(tenant, 0) + 1

    async def follow(self, count: Callable[[], Awaitable[Mapping[str | None, int]]]) -> None:
        """Refresh from ``count`` (the store's unfinished jobs per tenant) every ``REFRESH_S``."""
        while True:
            try:
                self.reset(await count())
            except Exception:
                log.exception("counting unfinished jobs failed; the quota uses the last count")
            await asyncio.sleep(REFRESH_S)
