"""The gRPC service under authentication: the same keys, roles, default tiers, limits and audit log
as REST, with the credentials in the call's metadata; and over TLS with the REST certificate."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from grpc_api.conftest import GrpcServer, start_grpc_server
from security.servers import FAST_REFRESH_ENV, Key, make_key, wait_for
from security.tls import self_signed, start_tls_server
from support.server import free_port
from support.v2 import model_stats, simple_rows

pytestmark = pytest.mark.integration


@dataclass
class Secured:
    running: GrpcServer
    keys: dict[str, Key]


@pytest.fixture(scope="module")
def secured(example_repo: Path) -> Iterator[Secured]:
    state = Path(tempfile.mkdtemp(prefix="tierserve-grpc-security-"))
    keys = {
        "admin": make_key("ops", "admin", state_dir=state),
        "user": make_key("acme", "user", state_dir=state, extra=["--tier", "bronze"]),
        "reader": make_key("acme", "reader", state_dir=state),
        "limited": make_key("gamma", "user", state_dir=state, extra=["--rate", "2/min"]),
    }
    try:
        running = start_grpc_server(example_repo, ("--state-dir", str(state)), env=FAST_REFRESH_ENV)
        with running.server:
            yield Secured(running, keys)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def inputs() -> list[grpcclient.InferInput]:
    made = []
    for name, array in zip(("INPUT0", "INPUT1"), simple_rows(1), strict=True):
        tensor = grpcclient.InferInput(name, list(array.shape), "INT32")
        tensor.set_data_from_numpy(array)
        made.append(tensor)
    return made


def bearer(key: Key) -> dict[str, str]:
    return {"authorization": f"Bearer {key.key}"}


def code(call: object) -> str:
    with pytest.raises(InferenceServerException) as error:
        call()  # type: ignore[operator]
    return str(error.value.status())


def test_credentials_roles_and_the_keys_default_tier(secured: Secured) -> None:
    keys = secured.keys
    with secured.running.client() as client:
        assert client.is_server_live() and client.is_server_ready()  # health is public
        assert code(lambda: client.infer("simple", inputs())) == "StatusCode.UNAUTHENTICATED"
        wrong = {"authorization": "Bearer tsk_not-a-key"}
        assert code(lambda: client.infer("simple", inputs(), headers=wrong)) == "StatusCode.UNAUTHENTICATED"
        reader = bearer(keys["reader"])
        assert client.get_model_metadata("simple", headers=reader).name == "simple"
        assert (
            code(lambda: client.infer("simple", inputs(), headers=reader)) == "StatusCode.PERMISSION_DENIED"
        )
        assert (
            code(lambda: client.get_inference_statistics("simple", headers=bearer(keys["user"])))
            == "StatusCode.PERMISSION_DENIED"
        )
        assert code(lambda: client.unload_model("simple", headers=bearer(keys["user"]))) == (
            "StatusCode.PERMISSION_DENIED"
        )
        admin = bearer(keys["admin"])
        with httpx.Client(base_url=secured.running.server.base_url, headers=admin, timeout=30) as http:
            before = model_stats(http, "simple").get("tier_stats", {}).get("bronze", {})
            result = client.infer("simple", inputs(), headers={"x-api-key": keys["user"].key})
            a, b = simple_rows(1)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
            after = model_stats(http, "simple")["tier_stats"]["bronze"]
            assert sum(d["count"] for d in after.values()) == sum(d["count"] for d in before.values()) + 1

            def audited() -> list[dict[str, object]]:
                records = http.get("/v1/audit", params={"action": "infer", "tenant": "acme"}).json()[
                    "records"
                ]
                return [r for r in records if r.get("model") == "simple" and r.get("status") == 200]

            record = wait_for(audited, what="the gRPC inference's audit record")[0]
            assert record["key_id"] == keys["user"].id and record["tier"] == "bronze"
            # what the engine decided, handed to the record (not noted on the side)
            assert (record["version"], record["pool"]) == ("1", "cpu") and record["cost"] is not None


def test_a_keys_rate_limit_answers_resource_exhausted(secured: Secured) -> None:
    limited = bearer(secured.keys["limited"])
    with secured.running.client() as client:
        client.infer("simple", inputs(), headers=limited)
        client.infer("simple", inputs(), headers=limited)
        assert (
            code(lambda: client.infer("simple", inputs(), headers=limited)) == "StatusCode.RESOURCE_EXHAUSTED"
        )


def test_grpc_over_tls_with_the_rest_certificate(example_repo: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    server = start_tls_server(example_repo, cert, key, ("--grpc-port", str(port)))
    with server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}", ssl=True, root_certificates=str(cert))
        try:
            assert client.is_server_ready()
            result = client.infer("simple", inputs())
            a, b = simple_rows(1)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
        finally:
            client.close()
        plain = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")  # no TLS: refused
        try:
            with pytest.raises(InferenceServerException):
                plain.is_server_live(client_timeout=5)
        finally:
            plain.close()
