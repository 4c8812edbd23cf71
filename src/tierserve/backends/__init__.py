"""Backends run one batch of one model variant; one module per kind of hardware/runtime."""

from tierserve.backends.base import Backend

__all__ = ["Backend"]
