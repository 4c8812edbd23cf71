"""The Kubernetes manifests in deploy/kubernetes/ validate against the Kubernetes schemas and agree
with each other and with the server: names, ports, Secret keys, flags and the scaled metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tierserve.cli import _parser as build_parser

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSION = "1.30.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize("name, doc", documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_core_manifests_validate_against_the_kubernetes_schemas(name: str, doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        pytest.skip("a KEDA custom resource: no schema in kubernetes-validate (checked below)")
    kubernetes_validate.validate(doc, VERSION, strict=True)


def container() -> dict[str, Any]:
    (deployment,) = by_kind("Deployment")
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return found


def test_the_deployment_runs_flags_the_server_knows_and_scrapes_the_metrics_port() -> None:
    args = container()["args"]
    parsed = build_parser().parse_args(args)  # an unknown flag would exit
    assert parsed.host == "0.0.0.0" and parsed.metrics_port == 8002
    (deployment,) = by_kind("Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(parsed.metrics_port)
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports == {"http": parsed.port, "metrics": parsed.metrics_port}
    (service,) = by_kind("Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)


def test_credentials_come_from_the_secret_the_repository_ships() -> None:
    (secret,) = by_kind("Secret")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container()["env"]}
    assert set(env) == {"TIERSERVE_DATABASE", "TIERSERVE_JWT_SECRET", "TIERSERVE_REDIS"}
    for ref in env.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert secret["stringData"]["database-url"].startswith("postgresql://")


def test_keda_and_the_hpa_scale_the_deployment_on_an_exported_metric() -> None:
    (deployment,) = by_kind("Deployment")
    (scaled,) = by_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"] == 'sum(tierserve_pool_demand_replicas{pool="cpu"})'
    # The threshold is the replicas one pod runs: one per core of the pod's CPU limit.
    cores = container()["resources"]["limits"]["cpu"]
    assert trigger["metadata"]["threshold"] == cores
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "tierserve_pool_demand_replicas"
    assert metric["pods"]["target"]["averageValue"] == cores


def test_the_scaled_metric_is_exported_per_pool() -> None:
    from tierserve.observability.metrics import Metrics

    metrics = Metrics()
    metrics.pool_demand.labels("cpu").set(3.5)
    assert 'tierserve_pool_demand_replicas{pool="cpu"} 3.5' in metrics.render().decode()
