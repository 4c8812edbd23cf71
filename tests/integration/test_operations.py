"""Operations against a real server: the metrics port without credentials, the state metrics a Triton
user alerts on, budgets that refuse a tenant's work and survive a restart, Grafana dashboards that
only query exported metrics, and the shipped alert rules checked by promtool and fired by a real
Prometheus (Debian's package, installed by ``scripts/prometheus.sh install``)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.server import RunningServer, free_port, start_server

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from security.servers import Key, make_key, simple_body, wait_for  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PRICE_PER_REQUEST = 0.001  # cost_per_1k_requests 1.0
BUDGET = 0.005  # acme may spend five requests' worth a day
# Metrics an alert rule or panel may name that a server without that hardware never exports.
ONLY_WITH_HARDWARE = {"tierserve_gpu_utilization_ratio": "exported only where a GPU pool runs"}


def _config(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "pools": [{"name": "cpu", "kind": "onnx-cpu", "cost_per_1k_requests": 1.0}],
                "budgets": [
                    {"name": "acme-daily", "tenant": "acme", "dollars": BUDGET, "window": "day"},
                ],
            }
        )
    )
    return path


class Ops:
    def __init__(self, tmp: Path, example_repo: Path) -> None:
        self.state = tmp / "state"
        self.repo = tmp / "models"
        shutil.copytree(example_repo / "simple", self.repo / "simple")
        self.config = _config(tmp / "server.yaml")
        self.operator = make_key("ops", "operator", state_dir=self.state)
        self.acme = make_key("acme", "user", state_dir=self.state)
        self.beta = make_key("beta", "user", state_dir=self.state)
        self.metrics_port = 0
        self.server: RunningServer | None = None

    def start(self) -> RunningServer:
        self.metrics_port = free_port()
        args = ["--state-dir", str(self.state), "--config", str(self.config)]
        args += ["--metrics-port", str(self.metrics_port)]
        self.server = start_server(self.repo, extra_args=args, env={"TIERSERVE_KEY_REFRESH_S": "0.2"})
        return self.server

    def scrape(self) -> str:
        response = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        assert response.status_code == 200
        return response.text


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, example_repo: Path) -> Iterator[Ops]:
    deployment = Ops(tmp_path_factory.mktemp("ops"), example_repo)
    deployment.start()
    try:
        yield deployment
    finally:
        if deployment.server is not None:
            deployment.server.cleanup()


def infer(server: RunningServer, key: Key, **params: Any) -> httpx.Response:
    body = simple_body(parameters=params) if params else simple_body()
    return httpx.post(f"{server.base_url}/v2/models/simple/infer", json=body, headers=key.headers, timeout=30)


def exported_names(page: str) -> set[str]:
    """Every sample name the page can have: counters as ``_total``, histograms with their suffixes."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", page, re.M):
        names.add(name)
        if kind == "counter":
            names.add(f"{name}_total")
        if kind == "histogram":
            names.update(f"{name}{s}" for s in ("_bucket", "_sum", "_count"))
    return names


def queried_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(tierserve_[a-z_]+|process_[a-z_]+)\b", expr))


# -- metrics ---------------------------------------------------------------------------------------


def test_the_metrics_port_needs_no_key_while_the_main_port_does(ops: Ops) -> None:
    assert ops.server is not None
    assert httpx.get(f"{ops.server.base_url}/metrics", timeout=10).status_code == 401
    page = ops.scrape()
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert family in page
    assert re.search(r'^tierserve_build_info\{python="[\d.]+",version="[^"]+"\} 1\.0$', page, re.M)
    assert 'tierserve_model_ready{model="simple",state="READY",version="1"} 1.0' in page
    assert 'tierserve_breaker_state{endpoint="",model="simple",pool="cpu",version="1"} 0.0' in page
    budget = 'tierserve_budget_limit_dollars{budget="acme-daily",scope="tenant:acme",window="day"} 0.005'
    assert budget in page
    # Job counts come from a periodic count; the first one runs at start.
    wait_for(lambda: 'tierserve_jobs{status="queued"}' in ops.scrape(), what="job counts")
    assert "tierserve_jobs_oldest_queued_age_seconds 0.0" in ops.scrape()
    # What KEDA scales on (deploy/kubernetes): published by the autoscaler's first tick.
    wait_for(lambda: 'tierserve_pool_demand_replicas{pool="cpu"}' in ops.scrape(), timeout=60, what="demand")


def test_cost_is_counted_in_dollars_per_pool_and_tenant(ops: Ops) -> None:
    assert ops.server is not None
    assert infer(ops.server, ops.beta).status_code == 200
    page = ops.scrape()
    beta = re.findall(r'^tierserve_cost_dollars_total\{[^}]*tenant="beta"[^}]*\} (\S+)$', page, re.M)
    assert len(beta) == 1 and float(beta[0]) == pytest.approx(PRICE_PER_REQUEST)
    per_pool = r'^tierserve_cost_dollars_total\{model="simple",pool="cpu",tenant="beta",tier="\w+"\} '
    assert re.search(per_pool, page, re.M)
    served = r'^tierserve_requests_total\{model="simple",outcome="success",version="1"\} '
    assert re.search(served, page, re.M)


# -- budgets ---------------------------------------------------------------------------------------


def spend_until_refused(server: RunningServer, key: Key, limit: int = 20) -> tuple[int, httpx.Response]:
    for served in range(limit):
        response = infer(server, key)
        if response.status_code != 200:
            return served, response
    raise AssertionError(f"{limit} requests were served on a budget of {BUDGET / PRICE_PER_REQUEST:.0f}")


def test_a_spent_budget_refuses_its_tenant_with_429_naming_it_and_survives_a_restart(ops: Ops) -> None:
    assert ops.server is not None
    served, refused = spend_until_refused(ops.server, ops.acme)
    assert served in (5, 6)  # 5 x $0.001 reaches $0.005, give or take the float sum
    assert refused.status_code == 429
    assert "budget 'acme-daily' of tenant 'acme' is spent" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    assert infer(ops.server, ops.beta).status_code == 200  # other tenants are untouched
    mine = httpx.get(f"{ops.server.base_url}/v1/budgets", headers=ops.acme.headers, timeout=10).json()
    (row,) = mine["budgets"]
    assert row["name"] == "acme-daily" and row["remaining"] == 0 and row["used"] >= BUDGET
    assert httpx.get(f"{ops.server.base_url}/v1/budgets", headers=ops.beta.headers, timeout=10).json() == {
        "budgets": []
    }
    pattern = r'^tierserve_budget_spent_dollars\{budget="acme-daily".*\} (\S+)$'
    spent = wait_for(
        lambda: re.search(pattern, ops.scrape(), re.M),
        what="budget metric",
    )
    assert float(spent.group(1)) >= BUDGET

    ops.server.stop()  # SIGTERM: the last usage is written on the way out
    ops.start()
    assert infer(ops.server, ops.acme).status_code == 429


# -- dashboards and rules ----------------------------------------------------------------------------


def dashboard_exprs() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        doc = json.loads(path.read_text())
        found[path.name] = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    return found


def test_the_dashboard_files_are_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("grafana_build", DEPLOY / "grafana" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name, doc in build.dashboards().items():
        assert (DEPLOY / "grafana" / "dashboards" / f"{name}.json").read_text() == build.render(doc), name
    assert set(dashboard_exprs()) == {"overview.json", "models.json", "cost.json", "jobs.json"}


def test_every_dashboard_and_alert_query_names_metrics_the_server_exports(ops: Ops) -> None:
    exported = exported_names(ops.scrape())
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = {f"{n}: {e}" for n, es in dashboard_exprs().items() for e in es}
    exprs |= {f"alerts.yml {r.get('alert') or r.get('record')}: {r['expr']}" for g in rules["groups"]
              for r in g["rules"]}  # fmt: skip
    missing = {
        where: sorted(queried_names(where) - exported - set(ONLY_WITH_HARDWARE))
        for where in exprs
        if queried_names(where) - exported - set(ONLY_WITH_HARDWARE)
    }
    assert not missing, missing


def promtool() -> str:
    found = subprocess.run(["bash", str(ROOT / "scripts" / "prometheus.sh"), "promtool"], capture_output=True)
    if found.returncode != 0:
        pytest.skip("promtool is not installed (scripts/prometheus.sh install)")
    return found.stdout.decode().strip()


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    tool = promtool()
    folder = DEPLOY / "prometheus"
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run([tool, *args], cwd=folder, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    config = subprocess.run(
        [tool, "check", "config", "prometheus.yml"], cwd=folder, capture_output=True, text=True, timeout=60
    )
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.fixture
def prometheus(ops: Ops, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the server's metrics port every second with the shipped config and
    rules; the rules' ``for:`` durations become 0s so that an alert fires within the test."""
    found = subprocess.run(["bash", str(ROOT / "scripts" / "prometheus.sh"), "bin"], capture_output=True)
    if found.returncode != 0:
        pytest.skip("prometheus is not installed (scripts/prometheus.sh install)")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"] = [c for c in config["scrape_configs"] if c["job_name"] == "tierserve"]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{ops.metrics_port}"]}]
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(re.sub(r"^(\s+for:) \S+$", r"\1 0s", rules, flags=re.M))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [found.stdout.decode().strip(), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{url}/-/ready") == 200, timeout=60, what="Prometheus ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_prometheus_fires_the_sla_alert_when_gold_is_rejected(ops: Ops, prometheus: str) -> None:
    """Gold requests with a deadline of 1 µs cannot be met: each is rejected at admission (503), so
    gold's attainment falls to 0 and TierserveSLABreach fires for tier gold."""
    assert ops.server is not None

    def firing() -> bool:
        response = infer(ops.server, ops.beta, tier="gold", timeout=1)  # type: ignore[arg-type]
        assert response.status_code == 503, response.text
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return any(
            a["labels"].get("alertname") == "TierserveSLABreach"
            and a["labels"].get("tier") == "gold"
            and a["state"] == "firing"
            for a in alerts
        )

    wait_for(firing, timeout=120, what="TierserveSLABreach to fire for gold")
