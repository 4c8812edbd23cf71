"""CLI commands other than ``serve``: those that build an engine outside a server (``profile``,
``rollout``) and those that manage a server's state (``keys``, in ``security``). Above the API."""
