"""Fixtures for the gRPC tests: a server on the example repository that also serves gRPC, shared by
a module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from integration import conftest as integration
from support.server import RunningServer, free_port, start_server

example_repo = integration.example_repo  # the session's example repository (built by the CLI)


class GrpcServer:
    """A running ``tierserve serve --grpc-port ...``: its REST side and its gRPC address."""

    def __init__(self, server: RunningServer, grpc_port: int) -> None:
        self.server = server
        self.grpc_url = f"127.0.0.1:{grpc_port}"

    def client(self, **kwargs: object) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.grpc_url, **kwargs)  # type: ignore[arg-type]


def start_grpc_server(repo: Path, extra_args: tuple[str, ...] = (), **kwargs: object) -> GrpcServer:
    port = free_port()
    server = start_server(repo, extra_args=["--grpc-port", str(port), *extra_args], **kwargs)  # type: ignore[arg-type]
    return GrpcServer(server, port)


@pytest.fixture(scope="module")
def grpc_server(example_repo: Path) -> Iterator[GrpcServer]:
    running = start_grpc_server(example_repo)
    with running.server:
        yield running


@pytest.fixture
def client(grpc_server: GrpcServer) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpc_server.client()
    try:
        yield triton
    finally:
        triton.close()
