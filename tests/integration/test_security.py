"""Security through HTTP on real servers: who may call what, keys made by the CLI and by admins,
tenants, rate and concurrency limits, the default tier of a key, the audit log, JWTs, exposure
rules, TLS. (Unit tests of the parts: tests/security/.)"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from security.servers import (
    FAST_REFRESH_ENV,
    Key,
    cli,
    make_key,
    simple_body,
    slow_body,
    wait_for,
    write_security_repository,
)
from security.tokens import SECRET, hs256
from support.server import RunningServer, start_server
from support.v2 import JSON, assert_json_error, metric_value
from tierserve.api.app import create_app
from tierserve.api.auth.access import all_routes, route_access
from tierserve.config import ServerSettings
from tierserve.security.roles import Role

pytestmark = pytest.mark.integration

ROLES = ["reader", "user", "operator", "admin"]


@dataclass
class Deployment:
    server: RunningServer
    state: Path
    keys: dict[str, Key]  # admin, operator, acme (user, tier gold), acme-reader, beta (user), limited, capped


@pytest.fixture(scope="module")
def security_repo(tmp_path_factory: pytest.TempPathFactory, example_repo: Path) -> Path:
    return write_security_repository(tmp_path_factory.mktemp("security-repo"), example_repo)


@pytest.fixture(scope="module")
def deployment(security_repo: Path) -> Iterator[Deployment]:
    """One server with keys of every role, made by the CLI before it starts."""
    state = Path(tempfile.mkdtemp(prefix="tierserve-security-"))
    keys = {
        "admin": make_key("ops", "admin", state_dir=state),
        "operator": make_key("ops", "operator", state_dir=state),
        "acme": make_key("acme", "user", state_dir=state, extra=["--tier", "gold"]),
        "acme-reader": make_key("acme", "reader", state_dir=state),
        "beta": make_key("beta", "user", state_dir=state),
        "limited": make_key("gamma", "user", state_dir=state, extra=["--rate", "3/min"]),
        "capped": make_key("delta", "user", state_dir=state, extra=["--concurrency", "1"]),
    }
    try:
        with start_server(
            security_repo, env=FAST_REFRESH_ENV, extra_args=["--state-dir", str(state)]
        ) as server:
            yield Deployment(server, state, keys)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def http(deployment: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployment.server.base_url, timeout=30.0) as client:
        yield client


def submit_job(http: httpx.Client, key: Key, **headers: str) -> dict[str, Any]:
    response = http.post(
        "/v1/jobs", json={"model": "simple", **simple_body()}, headers={**key.headers, **headers}
    )
    assert response.status_code == 202, response.text
    doc: dict[str, Any] = response.json()
    return doc


def audit(http: httpx.Client, admin: Key, **params: Any) -> list[dict[str, Any]]:
    response = http.get("/v1/audit", params=params, headers=admin.headers)
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["records"]
    return records


# -- the route table ---------------------------------------------------------------------------------


def route_table() -> list[tuple[str, str, Role | None]]:
    """(method, path, role) of every route, read from the app the server runs."""
    root = Path(tempfile.mkdtemp(prefix="tierserve-routes-"))
    try:
        (root / "models").mkdir()
        app = create_app(ServerSettings(model_repository=root / "models", state_dir=root / "state"))
        rows = set()
        for route in all_routes(app):
            access = route_access(route)
            assert access is not None, f"{route} declares no role"
            for method in getattr(route, "methods", None) or ():
                if method != "HEAD":
                    rows.add((method, getattr(route, "path", ""), access.role))
        return sorted(rows, key=lambda row: (row[1], row[0]))
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Unknown(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"no-such-{key}"


def weaker(role: Role) -> str:
    return {Role.USER: "acme-reader", Role.OPERATOR: "acme", Role.ADMIN: "operator"}[role]


def holder(role: Role) -> str:
    return {Role.READER: "acme-reader", Role.USER: "acme", Role.OPERATOR: "operator", Role.ADMIN: "admin"}[
        role
    ]


def test_every_route_answers_401_without_credentials_403_to_weaker_roles_and_404_across_tenants(
    http: httpx.Client, deployment: Deployment
) -> None:
    keys = deployment.keys
    job_id = submit_job(http, keys["acme"])["id"]
    table = route_table()
    assert len(table) >= 35
    checked = {"401": 0, "403": 0, "404": 0, "allowed": 0}

    def call(method: str, path: str, key: Key | None) -> int:
        headers = key.headers if key else {}
        with http.stream(method, path, headers=headers, content=b"{}") as response:
            return response.status_code

    for method, template, role in table:
        known = {"model_name": "simple", "model_version": "1", "job_id": job_id, "key_id": "no-such-key"}
        path = template.format_map(_Unknown(known))  # other names (collections, regions): unknown ones
        if "/repository/models/" in template:
            path = template.format(model_name="no-such-model")  # never unload a model other tests use
        if role is None:
            assert call(method, path, None) not in (401, 403), f"{method} {template} must stay open"
            continue
        status = call(method, path, None)
        assert status == 401, f"{method} {template} without credentials: {status}"
        checked["401"] += 1
        if role > Role.READER:
            status = call(method, path, keys[weaker(role)])
            assert status == 403, f"{method} {template} with a {weaker(role)} key: {status}"
            checked["403"] += 1
        if "{job_id}" in template and role is Role.USER:
            status = call(method, path, keys["beta"])
            assert status == 404, f"{method} {template} with another tenant's key: {status}"
            checked["404"] += 1
        status = call(method, path, keys[holder(role)])
        assert status not in (401, 403), f"{method} {template} with a {holder(role)} key: {status}"
        checked["allowed"] += 1
    guarded = [role for _, _, role in table if role is not None]
    assert checked == {
        "401": len(guarded),
        "403": sum(role > Role.READER for role in guarded),
        "404": 3,  # GET and DELETE /v1/jobs/{id}, GET /v1/jobs/{id}/events
        "allowed": len(guarded),
    }


def test_a_bad_key_is_401_before_the_body_is_read(http: httpx.Client) -> None:
    huge = b"x" * (1 << 20)
    response = http.post("/v2/models/simple/infer", content=huge, headers={"X-API-Key": "tsk_wrong"})
    assert assert_json_error(response, 401) == "unknown or revoked API key"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_admin_bodies_are_limited(http: httpx.Client, deployment: Deployment) -> None:
    response = http.post("/v1/admin/keys", content=b"x" * (1 << 17), headers=deployment.keys["admin"].headers)
    assert_json_error(response, 413)


# -- keys --------------------------------------------------------------------------------------------


def test_an_admin_makes_uses_lists_and_revokes_a_key(http: httpx.Client, deployment: Deployment) -> None:
    admin = deployment.keys["admin"].headers
    created = http.post(
        "/v1/admin/keys",
        json={"tenant": "omega", "role": "user", "rate": "100/s", "burst": 200},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["key"].startswith("tsk_") and doc["window"] == "200 per 2 s"
    key = Key(doc["id"], doc["key"], "omega", "user")
    assert http.post("/v2/models/simple/infer", json=simple_body(), headers=key.headers).status_code == 200
    listed = http.get("/v1/admin/keys", headers=admin).json()["keys"]
    mine = [k for k in listed if k["id"] == key.id]
    assert mine and "key" not in mine[0] and "key_hash" not in mine[0] and key.key not in str(listed)
    revoked = http.delete(f"/v1/admin/keys/{key.id}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = http.post("/v2/models/simple/infer", json=simple_body(), headers=key.headers)
    assert_json_error(response, 401)  # at once on the server that revoked it
    assert_json_error(http.delete("/v1/admin/keys/no-such-key", headers=admin), 404)
    assert_json_error(http.post("/v1/admin/keys", json={"tenant": "x", "role": "god"}, headers=admin), 400)
    assert_json_error(
        http.post("/v1/admin/keys", json={"tenant": "x", "role": "user", "tier": "platinum"}, headers=admin),
        400,
    )
    actions = {
        (r["action"], r["target"], r["status"]) for r in audit(http, deployment.keys["admin"], tenant="omega")
    }
    assert {("keys.create", key.id, 201), ("keys.revoke", key.id, 200)} <= actions


def test_keys_made_and_revoked_by_the_cli_reach_the_running_server(
    http: httpx.Client, deployment: Deployment
) -> None:
    key = make_key("cli-tenant", "reader", state_dir=deployment.state)
    wait_for(
        lambda: http.get("/v2/models/simple", headers=key.headers).status_code == 200, what="the new key"
    )
    listed = cli("keys", "list", "--state-dir", str(deployment.state)).stdout
    assert key.id in listed and key.key not in listed
    cli("keys", "revoke", key.id, "--state-dir", str(deployment.state))
    wait_for(
        lambda: http.get("/v2/models/simple", headers=key.headers).status_code == 401, what="the revocation"
    )
    assert (
        "unknown API key"
        in cli("keys", "revoke", "nope", "--state-dir", str(deployment.state), check=False).stderr
    )
    by_cli = audit(http, deployment.keys["admin"], tenant="cli-tenant")
    assert {r["action"] for r in by_cli} == {"keys.create", "keys.revoke"}
    assert all(r["key_id"].startswith("cli:") and r["kind"] == "admin" for r in by_cli)


# -- limits ------------------------------------------------------------------------------------------


def test_over_the_rate_is_429_with_retry_after_and_the_v2_error_body(
    http: httpx.Client, deployment: Deployment
) -> None:
    key = deployment.keys["limited"]
    statuses = [http.get("/v2/models/simple", headers=key.headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = http.post("/v2/models/simple/infer", json=simple_body(), headers=key.headers)
    message = assert_json_error(response, 429)
    assert "rate limit of key" in message
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert http.get("/v2/models/simple", headers=deployment.keys["beta"].headers).status_code == 200


def test_a_keys_concurrency_cap_holds_while_its_request_runs(
    http: httpx.Client, deployment: Deployment
) -> None:
    key = deployment.keys["capped"]
    operator = deployment.keys["operator"].headers
    results: list[int] = []

    def slow_batches() -> float:
        text = http.get("/metrics", headers=operator).text
        return metric_value(text, "tierserve_queue_duration_seconds_count", model="slow")

    started_before = slow_batches()

    def slow() -> None:
        with httpx.Client(base_url=deployment.server.base_url, timeout=60.0) as own:
            results.append(
                own.post("/v2/models/slow/infer", json=slow_body(1, 60.0), headers=key.headers).status_code
            )

    worker = threading.Thread(target=slow)
    worker.start()
    try:
        # Probe only once the slow request runs: a probe sent earlier could take the key's only slot
        # first and have the slow request refused instead (seen on a loaded machine).
        wait_for(lambda: slow_batches() > started_before, what="the slow request to start")
        # The slow request holds the key's only slot for a second or more: every other request of
        # the key that does inference is refused meanwhile, metadata is not.
        refused = wait_for(
            lambda: (
                http.post("/v2/models/simple/infer", json=simple_body(), headers=key.headers).status_code
                == 429
            ),
            what="a 429 while the slow request runs",
        )
        assert refused
        assert http.get("/v2/models/simple", headers=key.headers).status_code == 200
    finally:
        worker.join(60)
    assert results == [200]
    assert http.post("/v2/models/simple/infer", json=simple_body(), headers=key.headers).status_code == 200


# -- tenants and tiers --------------------------------------------------------------------------------


def test_jobs_belong_to_their_tenant(http: httpx.Client, deployment: Deployment) -> None:
    acme, beta, operator = (deployment.keys[k] for k in ("acme", "beta", "operator"))
    mine = submit_job(http, acme, **{"Idempotency-Key": "order-1"})
    assert mine["status"] == "queued"
    theirs = submit_job(http, beta, **{"Idempotency-Key": "order-1"})
    assert theirs["id"] != mine["id"]  # idempotency keys are per tenant
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/events")):
        response = http.request(method, f"/v1/jobs/{mine['id']}{suffix}", headers=beta.headers)
        assert_json_error(response, 404)
    beta_sees = [j["id"] for j in http.get("/v1/jobs", headers=beta.headers).json()["jobs"]]
    acme_sees = [j["id"] for j in http.get("/v1/jobs", headers=acme.headers).json()["jobs"]]
    assert mine["id"] in acme_sees and mine["id"] not in beta_sees and theirs["id"] in beta_sees
    mine_doc = http.get(f"/v1/jobs/{mine['id']}", headers=acme.headers).json()
    assert mine_doc["idempotency_key"] == "order-1" and mine_doc["tier"] == "gold"  # the key's tier
    assert (
        http.get(f"/v1/jobs/{mine['id']}", headers=operator.headers).status_code == 200
    )  # operators see all
    all_ids = [j["id"] for j in http.get("/v1/jobs", headers=operator.headers).json()["jobs"]]
    assert {mine["id"], theirs["id"]} <= set(all_ids)


def test_the_keys_tier_is_the_default_and_inference_is_audited(
    http: httpx.Client, deployment: Deployment
) -> None:
    admin = deployment.keys["admin"]
    # A key of this test's own: records of earlier tests' requests (queued, flushed later) never
    # match it, however loaded the machine (a look-back window of one second did, and failed).
    made = http.post(
        "/v1/admin/keys", json={"tenant": "acme", "role": "user", "tier": "gold"}, headers=admin.headers
    ).json()
    acme = Key(made["id"], made["key"], "acme", "user")
    assert http.post("/v2/models/simple/infer", json=simple_body(1), headers=acme.headers).status_code == 200
    assert (
        http.post(
            "/v2/models/simple/infer", json=simple_body(2), headers={**acme.headers, "X-Tier": "bronze"}
        ).status_code
        == 200
    )
    assert (
        http.post(
            "/v2/models/simple/versions/1/infer",
            json=simple_body(3, parameters={"tier": "silver"}),
            headers=acme.headers,
        ).status_code
        == 200
    )
    assert_json_error(http.post("/v2/models/simple/infer", content=b"{", headers=acme.headers), 400)
    wrong_shape = {
        "inputs": [
            {"name": n, "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]} for n in ("INPUT0", "INPUT1")
        ]
    }
    bronze = {**acme.headers, "X-Tier": "bronze"}
    assert_json_error(http.post("/v2/models/simple/infer", json=wrong_shape, headers=bronze), 400)

    def records() -> list[dict[str, Any]] | None:
        found = audit(http, admin, tenant="acme", action="infer", limit=1000)
        found = [r for r in found if r["key_id"] == acme.id]
        return found if len(found) >= 5 else None

    found = wait_for(records, what="five inference audit records")
    assert [r["tier"] for r in found[2:]] == ["silver", "bronze", "gold"]  # newest first
    # Refused by the engine (its shape): the tier it was decided for, no pool ran it.
    assert (found[0]["status"], found[0]["tier"], found[0]["pool"]) == (400, "bronze", None)
    assert (found[1]["status"], found[1]["tier"]) == (400, None)  # not even JSON: nothing was decided
    for record in found[2:]:
        assert record["kind"] == "inference" and record["key_id"] == acme.id and record["status"] == 200
        assert (record["model"], record["version"], record["pool"]) == ("simple", "1", "cpu")
        assert record["latency_ms"] > 0 and record["cost"] is not None
    assert "INPUT0" not in str(found)  # metadata only, never payloads


def test_admin_actions_are_audited_with_their_result(http: httpx.Client, deployment: Deployment) -> None:
    admin = deployment.keys["admin"]
    # Admin records are stored before their answer: everything after the newest one now is this
    # test's (a look-back window of one second caught the previous test's records).
    newest = audit(http, admin, limit=1)
    mark = newest[0]["seq"] if newest else 0
    since = newest[0]["at"] if newest else 0.0
    assert http.post("/v2/repository/models/simple/unload", headers=admin.headers).status_code == 200
    try:
        assert_json_error(
            http.post("/v2/models/simple/infer", json=simple_body(), headers=admin.headers), 404
        )
    finally:
        assert http.post("/v2/repository/models/simple/load", headers=admin.headers).status_code == 200
    assert_json_error(http.post("/v2/repository/models/nope/load", headers=admin.headers), 404)
    records = [r for r in audit(http, admin, kind="admin", since=since) if r["seq"] > mark]
    got = [(r["action"], r["target"], r["status"], r["key_id"]) for r in reversed(records)]
    assert got == [
        ("model.unload", "simple", 200, admin.id),
        ("model.load", "simple", 200, admin.id),
        ("model.load", "nope", 404, admin.id),
    ]
    assert audit(http, admin, action="model.load", since=since, limit=1)[0]["target"] == "nope"
    assert all(r["at"] < since for r in audit(http, admin, kind="admin", until=since))
    assert_json_error(http.get("/v1/audit", params={"since": "yesterday"}, headers=admin.headers), 400)


def test_the_config_shows_settings_without_secrets(http: httpx.Client, deployment: Deployment) -> None:
    doc = http.get("/v1/admin/config", headers=deployment.keys["admin"].headers).json()
    assert doc["auth"]["enabled"] is True and doc["auth"]["jwt"] is False
    assert doc["auth"]["keys"] >= len(deployment.keys)
    assert "jwt_secret" not in doc["settings"]
    assert [t["name"] for t in doc["tiers"]] == ["gold", "silver", "bronze"]


# -- exposure, JWTs, TLS ---------------------------------------------------------------------------------


def test_a_loopback_server_without_keys_serves_openly_and_says_so(server: RunningServer) -> None:
    assert "authentication is OFF" in server.log_text()
    assert httpx.get(f"{server.base_url}/v2/models/simple").status_code == 200


def test_an_exposed_server_requires_credentials_unless_insecure(security_repo: Path) -> None:
    with start_server(security_repo, extra_args=["--host", "0.0.0.0"]) as exposed:
        base = exposed.base_url
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200
        assert_json_error(httpx.get(f"{base}/v2/models/simple"), 401)
        assert_json_error(httpx.post(f"{base}/v2/models/simple/infer", json=simple_body()), 401)
        assert "no API keys exist" in exposed.log_text()
    with start_server(security_repo, extra_args=["--host", "0.0.0.0", "--insecure"]) as insecure:
        assert httpx.get(f"{insecure.base_url}/v2/models/simple").status_code == 200
        assert "authentication is OFF (--insecure" in insecure.log_text()


def test_jwts_and_audit_drops_counted_in_metrics(security_repo: Path) -> None:
    env = {"TIERSERVE_JWT_SECRET": SECRET, "TIERSERVE_AUDIT_QUEUE_SIZE": "0"}
    with (
        start_server(security_repo, env=env, extra_args=["--jwt-audience", "tierserve"]) as server,
        httpx.Client(base_url=server.base_url, timeout=30.0) as http,
    ):
        user = {"Authorization": f"Bearer {hs256(tier='silver')}"}
        assert http.post("/v2/models/simple/infer", json=simple_body(), headers=user).status_code == 200
        expired = {"Authorization": f"Bearer {hs256(exp=int(time.time()) - 3600)}"}
        assert "expired" in assert_json_error(http.get("/v2/models/simple", headers=expired), 401)
        wrong_audience = {"Authorization": f"Bearer {hs256(aud='other')}"}
        assert_json_error(http.get("/v2/models/simple", headers=wrong_audience), 401)
        reader = {"Authorization": f"Bearer {hs256(role='reader')}"}
        assert_json_error(http.post("/v2/models/simple/infer", json=simple_body(), headers=reader), 403)
        operator = {"Authorization": f"Bearer {hs256(role='operator', sub='prometheus')}"}
        metrics = http.get("/metrics", headers=operator)
        assert metrics.status_code == 200
        # The queue holds nothing: the inference records (200 and 403) were dropped, and counted.
        assert metric_value(metrics.text, "tierserve_audit_dropped_total") >= 2


def test_tls(security_repo: Path, tmp_path: Path) -> None:
    from security.tls import self_signed, start_tls_server

    cert, key = self_signed(tmp_path)
    with start_tls_server(security_repo, cert, key) as server:
        trust = ssl.create_default_context(cafile=str(cert))
        response = httpx.get(f"https://{server.url}/v2/models/simple", verify=trust)
        assert response.status_code == 200 and response.headers["content-type"] == JSON
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{server.url}/v2/models/simple", timeout=5.0)
