"""HTTP API: thin routes that decode, call the engine, and encode."""

from tierserve.api.app import create_app

__all__ = ["create_app"]
