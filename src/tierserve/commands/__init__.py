"""CLI commands that build an engine outside a server (above the engine, beside the API)."""
