"""Prometheus metrics on a port of their own, without authentication (Triton's ``--metrics-port``,
8002 there): the main port keeps its keys and roles, and a scraper needs no credentials.

It serves only ``/metrics`` (any path answers the same page), from a small threaded HTTP server
beside the application; nothing else of tierserve is reachable through it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_wsgi_server
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)


@dataclass
class MetricsExporter:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


def start_exporter(registry: CollectorRegistry, host: str, port: int) -> MetricsExporter:
    """Serve ``registry`` on ``host:port``; raises OSError when the port cannot be bound."""
    server, thread = start_wsgi_server(port, addr=host, registry=registry)
    exporter = MetricsExporter(server, thread)
    log.info("metrics on http://%s:%d/metrics (no authentication)", host, exporter.port)
    return exporter
