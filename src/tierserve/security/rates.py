"""Request-rate and concurrency limits as keys and tenants declare them (pure; no storage).

A limit of ``rate`` requests per second with a ``burst`` is enforced as a moving window: at most
``burst`` requests in any ``burst / rate`` seconds (rounded to whole seconds, the finest window
the limiter library keeps). Long-run that admits ``rate`` per second, and a client that was idle
may send ``burst`` at once, as a token bucket would. Example::

    limits = Limits.parse(rate="50/s", burst=100, concurrency=8)
    limits.window  # Window(amount=100, seconds=2)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierserve.errors import InvalidInput

_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
}  # fmt: skip
_RATE = re.compile(r"\s*(\d{1,18})\s*(?:/\s*([a-z]+)\s*)?", re.ASCII)
MAX_AMOUNT = 1_000_000


@dataclass(frozen=True, slots=True)
class Rate:
    amount: int
    per_s: int  # the unit's length in seconds

    @classmethod
    def parse(cls, raw: str) -> Rate:
        """``"50/s"``, ``"600/min"``, ``"1000/h"``; a bare number is per second."""
        match = _RATE.fullmatch(raw.lower())
        unit = (match.group(2) or "s") if match else ""
        if match is None or unit not in _UNITS:
            raise InvalidInput(f"invalid rate {raw!r}: expected N/s, N/min or N/h, e.g. 50/s")
        amount = int(match.group(1))
        if not 0 < amount <= MAX_AMOUNT:
            raise InvalidInput(f"invalid rate {raw!r}: the count must be from 1 to {MAX_AMOUNT}")
        return cls(amount, _UNITS[unit])

    @property
    def per_second(self) -> float:
        return self.amount / self.per_s

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}[self.per_s]
        return f"{self.amount}/{unit}"


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``amount`` requests in any ``seconds``."""

    amount: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.amount} per {self.seconds} s"


@dataclass(frozen=True, slots=True)
class Limits:
    rate: Rate | None = None
    burst: int | None = None
    concurrency: int | None = None  # requests holding inference work at once

    @classmethod
    def parse(cls, *, rate: object = None, burst: object = None, concurrency: object = None) -> Limits:
        parsed_rate = None if rate is None or rate == "" else Rate.parse(_text("rate", rate))
        parsed_burst = _count("burst", burst)
        if parsed_burst is not None:
            if parsed_rate is None:
                raise InvalidInput("'burst' needs a 'rate'")
            if parsed_burst < parsed_rate.per_second:
                raise InvalidInput(
                    f"'burst' ({parsed_burst}) must be at least the rate per second "
                    f"({parsed_rate.per_second:g}): windows are whole seconds"
                )
        return cls(parsed_rate, parsed_burst, _count("concurrency", concurrency))

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], where: str) -> Limits:
        unknown = set(doc) - {"rate", "burst", "concurrency"}
        if unknown:
            raise InvalidInput(f"{where}: unknown keys {sorted(unknown)}; known: rate, burst, concurrency")
        return cls.parse(rate=doc.get("rate"), burst=doc.get("burst"), concurrency=doc.get("concurrency"))

    @property
    def window(self) -> Window | None:
        if self.rate is None:
            return None
        if self.burst is None:
            return Window(self.rate.amount, self.rate.per_s)
        return Window(self.burst, max(1, round(self.burst / self.rate.per_second)))

    @property
    def empty(self) -> bool:
        return self.rate is None and self.concurrency is None

    def describe(self) -> dict[str, Any]:
        window = self.window
        return {
            "rate": None if self.rate is None else str(self.rate),
            "burst": self.burst,
            "concurrency": self.concurrency,
            "window": None if window is None else str(window),
        }


NO_LIMITS = Limits()


def parse_tenant_limits(raw: object) -> dict[str, Limits]:
    """The server YAML's ``tenants``: ``{NAME: {rate, burst, concurrency}}``; ``"*"`` is every tenant
    that has no entry of its own."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidInput("'tenants' must map tenant names to {rate, burst, concurrency}")
    limits: dict[str, Limits] = {}
    for name, doc in raw.items():
        if not isinstance(doc, Mapping):
            raise InvalidInput(f"tenants.{name}: expected a mapping of rate, burst, concurrency")
        limits[str(name)] = Limits.from_mapping(doc, f"tenants.{name}")
    return limits


def _text(name: str, raw: object) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    raise InvalidInput(f"'{name}' must be a string such as 50/s")


def _count(name: str, raw: object) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 7:
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= MAX_AMOUNT:
        raise InvalidInput(f"'{name}' must be an integer from 1 to {MAX_AMOUNT}")
    return raw
