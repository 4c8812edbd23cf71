"""Every route declares who may call it, and the OpenAPI document says so (no server needed)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from tierserve.api.app import create_app
from tierserve.api.auth.access import all_routes, route_access
from tierserve.config import ServerSettings
from tierserve.security.roles import Role

# The role of every route. A new route must be added here, with the role the issue gives it.
EXPECTED: dict[str, Role | None] = {
    "GET /openapi.json": None,
    "GET /docs": None,
    "GET /docs/oauth2-redirect": None,
    "GET /redoc": None,
    "GET /v2/health/live": None,
    "GET /v2/health/ready": None,
    "GET /v2": Role.READER,
    "GET /v2/": Role.READER,
    "GET /v2/models/{model_name}": Role.READER,
    "GET /v2/models/{model_name}/versions/{model_version}": Role.READER,
    "GET /v2/models/{model_name}/ready": Role.READER,
    "GET /v2/models/{model_name}/versions/{model_version}/ready": Role.READER,
    "GET /v2/models/{model_name}/config": Role.READER,
    "GET /v2/models/{model_name}/versions/{model_version}/config": Role.READER,
    "POST /v2/models/{model_name}/infer": Role.USER,
    "POST /v2/models/{model_name}/versions/{model_version}/infer": Role.USER,
    "POST /v1/jobs": Role.USER,
    "GET /v1/jobs": Role.USER,
    "GET /v1/jobs/{job_id}": Role.USER,
    "DELETE /v1/jobs/{job_id}": Role.USER,
    "GET /v1/jobs/{job_id}/events": Role.USER,
    "GET /v2/models/stats": Role.OPERATOR,
    "GET /v2/models/{model_name}/stats": Role.OPERATOR,
    "GET /v2/models/{model_name}/versions/{model_version}/stats": Role.OPERATOR,
    "GET /metrics": Role.OPERATOR,
    "GET /v1/profiles": Role.OPERATOR,
    "GET /v1/autoscale": Role.OPERATOR,
    "GET /v1/budgets": Role.READER,
    "POST /v1/admin/jobs/{job_id}/requeue": Role.OPERATOR,
    # Triton's shared-memory extensions: regions are server-wide, so operators manage them.
    "GET /v2/systemsharedmemory/status": Role.OPERATOR,
    "GET /v2/systemsharedmemory/region/{region_name}/status": Role.OPERATOR,
    "POST /v2/systemsharedmemory/region/{region_name}/register": Role.OPERATOR,
    "POST /v2/systemsharedmemory/unregister": Role.OPERATOR,
    "POST /v2/systemsharedmemory/region/{region_name}/unregister": Role.OPERATOR,
    "GET /v2/cudasharedmemory/status": Role.OPERATOR,
    "GET /v2/cudasharedmemory/region/{region_name}/status": Role.OPERATOR,
    "POST /v2/cudasharedmemory/region/{region_name}/register": Role.OPERATOR,
    "POST /v2/cudasharedmemory/unregister": Role.OPERATOR,
    "POST /v2/cudasharedmemory/region/{region_name}/unregister": Role.OPERATOR,
    "POST /v2/repository/index": Role.ADMIN,
    "POST /v2/repository/models/{model_name}/load": Role.ADMIN,
    "POST /v2/repository/models/{model_name}/unload": Role.ADMIN,
    "POST /v1/admin/keys": Role.ADMIN,
    "GET /v1/admin/keys": Role.ADMIN,
    "DELETE /v1/admin/keys/{key_id}": Role.ADMIN,
    "GET /v1/audit": Role.ADMIN,
    "GET /v1/admin/config": Role.ADMIN,
    "POST /v1/embeddings": Role.USER,
    "GET /v1/models": Role.READER,
    "GET /v1/models/{model}": Role.READER,
    "POST /v1/collections": Role.USER,
    "GET /v1/collections": Role.READER,
    "GET /v1/collections/{name}": Role.READER,
    "DELETE /v1/collections/{name}": Role.USER,
    "POST /v1/collections/{name}/upsert": Role.USER,
    "POST /v1/collections/{name}/delete": Role.USER,
    "GET /v1/collections/{name}/items/{item_id}": Role.READER,
    "POST /v1/collections/{name}/search": Role.USER,
    "POST /v1/rollouts": Role.ADMIN,
    "GET /v1/rollouts": Role.OPERATOR,
    "GET /v1/rollouts/{model}": Role.OPERATOR,
    "POST /v1/rollouts/{model}/promote": Role.ADMIN,
    "POST /v1/rollouts/{model}/rollback": Role.ADMIN,
    "DELETE /v1/rollouts/{model}": Role.ADMIN,
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    root = tmp_path_factory.mktemp("routes")
    (root / "models").mkdir()
    return create_app(ServerSettings(model_repository=root / "models", state_dir=root / "state"))


def declared(app: FastAPI) -> dict[str, Role | None]:
    roles: dict[str, Role | None] = {}
    for route in all_routes(app):
        access = route_access(route)
        for method in sorted(getattr(route, "methods", None) or ()):
            if method == "HEAD":
                continue
            name = f"{method} {getattr(route, 'path', route)}"
            assert access is not None, f"{name} declares no role (dependencies=access.<ROLE>)"
            assert roles.get(name, access.role) == access.role, f"{name}: its routes disagree"
            roles[name] = access.role
    return roles


def test_every_route_declares_its_role(app: FastAPI) -> None:
    assert declared(app) == EXPECTED


def test_work_is_capped_and_audited_only_on_inference(app: FastAPI) -> None:
    for route in all_routes(app):
        access = route_access(route)
        assert access is not None
        path = getattr(route, "path", "")
        is_infer = path.endswith("/infer")
        is_embed = path == "/v1/embeddings"
        assert access.holds_work is (is_infer or is_embed)
        assert access.audit == ("infer" if is_infer else "embeddings" if is_embed else None)


def test_the_openapi_document_states_each_operations_role_and_refusals(app: FastAPI) -> None:
    schema = app.openapi()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    seen = 0
    for name, role in EXPECTED.items():
        method, path = name.split(" ", 1)
        operation = schema["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue  # documentation routes and /v2/ are not in the document
        seen += 1
        responses = operation["responses"]
        if role is None:
            assert operation["security"] == [] and "401" not in responses
            continue
        assert operation["x-tierserve-role"] == str(role)
        assert {"401", "429"} <= set(responses)
        assert ("403" in responses) is (role > Role.READER)
        assert "Retry-After" in responses["429"]["headers"]
    assert seen == sum(len(operations) for operations in schema["paths"].values())
