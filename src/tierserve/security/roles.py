"""Roles, weakest first; each role may do everything the weaker ones may.

reader    metadata and health of models, the OpenAPI document
user      inference and jobs, of its own tenant only
operator  statistics, metrics, profiles, autoscaling, dead letters; jobs of every tenant
admin     API keys, model load/unload, the repository, configuration, the audit log
"""

from __future__ import annotations

import enum

from tierserve.errors import InvalidInput


class Role(enum.IntEnum):
    READER = 1
    USER = 2
    OPERATOR = 3
    ADMIN = 4

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, raw: object) -> Role:
        # ASCII names only: "adm\u0131n".upper() (a dotless i) is "ADMIN", which made it an admin.
        if isinstance(raw, str) and raw.isascii():
            try:
                return cls[raw.upper()]
            except KeyError:
                pass
        raise InvalidInput(f"unknown role {raw!r}; one of {', '.join(str(r) for r in cls)}")

    @property
    def sees_all_tenants(self) -> bool:
        """Operators and admins act across tenants; readers and users only within their own."""
        return self >= Role.OPERATOR
