"""Rollouts against a real server: a canary steps and is promoted, a failing candidate is rolled
back, A/B and shadow modes route as they say, state survives a restart, and a version swap under
load loses no request."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.server import RunningServer, start_server, tierserve_command
from support.v2 import assert_json_error, simple_json_request, simple_rows
from tierserve.examples.basic import build_simple
from tierserve.examples.variants import build_simple_variant

pytestmark = pytest.mark.integration

# Steps of a second judge a second of traffic; on a loaded machine a stall of a few ms in it is
# "significant", so the latency checks are left to the policy tests and the benchmark here.
FAST = {
    "min_samples": 30,
    "min_step_s": 1,
    "check_interval_s": 0.5,
    "warmup_s": 0.5,
    "criteria": {"latency_tolerance": 100, "latency_floor_ms": 1000},
}


def _model(
    repo: Path, name: str, versions: dict[int, dict[str, int]], config: str = "version_policy: all\n"
) -> None:
    for version, variant in versions.items():
        path = repo / name / str(version) / "model.onnx"
        if variant:
            build_simple_variant(path, **variant)
        else:
            build_simple(path)
    (repo / name / "config.yaml").write_text(config)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rollout-repo")
    _model(root, "canary", {1: {}, 2: {}})
    # fails 1 in 5 (a rate under the circuit breaker's, whose 503s would count as SLO misses)
    _model(root, "failing", {1: {}, 2: {"fail_every": 5}})
    _model(root, "ab", {1: {}, 2: {}})
    _model(root, "shadow", {1: {}, 2: {"fail_every": 5}})
    _model(
        root, "declared", {1: {}, 2: {}}, "version_policy: all\nrollout: {candidate: 2, steps: [10, 100]}\n"
    )
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with start_server(repo) as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


def infer(http: httpx.Client, server: RunningServer, model: str, i: int, **headers: str) -> httpx.Response:
    a, b = simple_rows(1, seed=i)
    a[0, 0] = 10 * i  # never a failure on the fail_every variants
    return http.post(
        f"{server.base_url}/v2/models/{model}/infer",
        json=simple_json_request(a, b, id=f"req-{i}"),
        headers=headers,
    )


def wait_for_phase(
    http: httpx.Client, server: RunningServer, model: str, phase: str, traffic: Any = None
) -> dict[str, Any]:
    deadline = time.monotonic() + 90.0
    i = 0
    while True:
        doc: dict[str, Any] = http.get(f"{server.base_url}/v1/rollouts/{model}").json()
        if doc["phase"] == phase:
            return doc
        assert time.monotonic() < deadline, f"rollout of {model} still {doc['phase']}: {doc}"
        for _ in range(20):
            i += 1
            (traffic or (lambda n: infer(http, server, model, n)))(i)


def test_canary_steps_then_promotes_an_identical_candidate(server: RunningServer, http: httpx.Client) -> None:
    created = http.post(
        f"{server.base_url}/v1/rollouts",
        json={"model": "canary", "candidate": 2, "steps": [20, 50, 100], **FAST},
    )
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["stable"] == 1 and doc["weight"] == 20.0 and doc["phase"] == "stepping"
    assert created.headers["location"] == "/v1/rollouts/canary"
    # a second rollout while this one steps: 409
    assert_json_error(
        http.post(f"{server.base_url}/v1/rollouts", json={"model": "canary", "candidate": 2}), 409
    )
    # sticky: a request id on the candidate stays there (as the weight grows, others join it)
    versions = {i: infer(http, server, "canary", i).json()["model_version"] for i in range(200)}
    on_candidate = [i for i, version in versions.items() if version == "2"]
    assert all(infer(http, server, "canary", i).json()["model_version"] == "2" for i in on_candidate)
    share = Counter(versions.values())["2"] / 200
    assert 0.08 < share < 0.35, share
    done = wait_for_phase(http, server, "canary", "promoted")
    actions = [d["action"] for d in done["decisions"]]
    assert actions == ["start", "step", "promote"], done["decisions"]
    assert done["decisions"][1]["reasons"][0] == "no regression" and done["decisions"][1]["actor"] == "judge"
    assert {infer(http, server, "canary", i).json()["model_version"] for i in range(30)} == {"2"}
    assert (
        infer_pinned(http, server, "canary", 1).json()["model_version"] == "1"
    )  # a named version still serves
    audit = http.get(f"{server.base_url}/v1/audit", params={"action": "rollout.promote"}).json()["records"]
    assert any(r["target"] == "canary" and "no regression" in r["detail"] for r in audit)
    metrics = http.get(f"{server.base_url}/metrics").text
    assert 'tierserve_rollout_decisions_total{action="promote",actor="judge",model="canary"}' in metrics
    assert 'tierserve_rollout_weight{model="canary"} 100.0' in metrics


def infer_pinned(http: httpx.Client, server: RunningServer, model: str, version: int) -> httpx.Response:
    a, b = simple_rows(1)
    return http.post(
        f"{server.base_url}/v2/models/{model}/versions/{version}/infer", json=simple_json_request(a, b)
    )


def test_failing_candidate_is_rolled_back_with_its_error_rate(
    server: RunningServer, http: httpx.Client
) -> None:
    created = http.post(
        f"{server.base_url}/v1/rollouts",
        json={"model": "failing", "candidate": 2, "steps": [50, 100], **FAST},
    )
    assert created.status_code == 201, created.text
    statuses: Counter[int] = Counter()

    def odd_inputs(i: int) -> None:
        a, b = simple_rows(1, seed=i)
        a[0, 0] = i  # i = 4 mod 5 fails on version 2
        statuses[
            http.post(
                f"{server.base_url}/v2/models/failing/infer", json=simple_json_request(a, b, id=f"f{i}")
            ).status_code
        ] += 1

    done = wait_for_phase(http, server, "failing", "rolled_back", odd_inputs)
    assert statuses[500] > 0
    last = done["decisions"][-1]
    assert last["action"] == "rollback" and last["actor"] == "judge", done
    assert any("error rate" in reason for reason in last["reasons"]), done
    assert done["weight"] == 0.0
    # all traffic back on stable at once
    for i in range(40):
        a, b = simple_rows(1, seed=i)
        a[0, 0] = 5 * i + 4
        response = http.post(
            f"{server.base_url}/v2/models/failing/infer", json=simple_json_request(a, b, id=f"after{i}")
        )
        assert response.status_code == 200 and response.json()["model_version"] == "1"
    metrics = http.get(f"{server.base_url}/metrics").text
    assert 'tierserve_rollout_failed_checks_total{check="error_rate",model="failing"}' in metrics


def test_ab_splits_by_header_and_never_promotes_itself(server: RunningServer, http: httpx.Client) -> None:
    body = {
        "model": "ab",
        "candidate": 2,
        "mode": "ab",
        "ab": {"by": "header", "header": "X-Variant", "candidate_values": ["b"]},
        **FAST,
    }
    assert http.post(f"{server.base_url}/v1/rollouts", json=body).status_code == 201
    for i in range(120):
        variant = "b" if i % 2 else "a"
        response = infer(http, server, "ab", i, **{"X-Variant": variant})
        assert response.json()["model_version"] == ("2" if variant == "b" else "1")
    assert infer(http, server, "ab", 999).json()["model_version"] == "1"  # no header: stable
    doc = wait_for_verdict(http, server, "ab")
    assert doc["phase"] == "stepping" and "never promotes on its own" in doc["verdict"]["reasons"][0]
    promoted = http.post(f"{server.base_url}/v1/rollouts/ab/promote", json={"reason": "B wins"})
    assert promoted.status_code == 200 and promoted.json()["phase"] == "promoted"
    assert promoted.json()["decisions"][-1]["reasons"] == ["B wins"]
    assert_json_error(http.post(f"{server.base_url}/v1/rollouts/ab/rollback"), 409)  # already finished
    archived = http.delete(f"{server.base_url}/v1/rollouts/ab")
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert_json_error(http.get(f"{server.base_url}/v1/rollouts/ab"), 404)


def wait_for_verdict(http: httpx.Client, server: RunningServer, model: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60.0
    while True:
        doc: dict[str, Any] = http.get(f"{server.base_url}/v1/rollouts/{model}").json()
        if doc.get("verdict") and "never promotes" in doc["verdict"]["reasons"][0]:
            return doc
        assert time.monotonic() < deadline, doc
        for i in range(20):
            infer(http, server, model, i, **{"X-Variant": "b" if i % 2 else "a"})


def test_shadow_serves_stable_and_judges_the_mirrored_copies(
    server: RunningServer, http: httpx.Client
) -> None:
    body = {"model": "shadow", "candidate": 2, "mode": "shadow", "weight": 100, **FAST}
    assert http.post(f"{server.base_url}/v1/rollouts", json=body).status_code == 201
    for i in range(60):
        a, b = simple_rows(1, seed=i)
        a[0, 0] = i  # one in five would fail on the candidate
        response = http.post(
            f"{server.base_url}/v2/models/shadow/infer", json=simple_json_request(a, b, id=f"s{i}")
        )
        assert response.status_code == 200 and response.json()["model_version"] == "1"

    def more(i: int) -> None:
        a, b = simple_rows(1, seed=i)
        a[0, 0] = i
        assert (
            http.post(f"{server.base_url}/v2/models/shadow/infer", json=simple_json_request(a, b)).status_code
            == 200
        )

    done = wait_for_phase(http, server, "shadow", "rolled_back", more)
    assert any("error rate" in reason for reason in done["decisions"][-1]["reasons"]), done


def test_config_yaml_declares_a_rollout(server: RunningServer, http: httpx.Client) -> None:
    deadline = time.monotonic() + 30.0
    while (response := http.get(f"{server.base_url}/v1/rollouts/declared")).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)
    doc = response.json()
    assert doc["candidate"] == 2 and doc["stable"] == 1 and doc["decisions"][0]["actor"] == "config"


def test_bad_requests_are_clear_4xx(server: RunningServer, http: httpx.Client) -> None:
    base = f"{server.base_url}/v1/rollouts"
    assert_json_error(http.post(base, content=b"{"), 400)
    assert_json_error(http.post(base, json={"candidate": 2}), 400)
    assert_json_error(http.post(base, json={"model": "canary", "candidate": 2, "steps": [50, 20]}), 400)
    assert_json_error(http.post(base, json={"model": "nope", "candidate": 2}), 404)
    assert "not loaded" in assert_json_error(http.post(base, json={"model": "canary", "candidate": 7}), 400)
    assert_json_error(http.get(f"{base}/nope"), 404)
    assert_json_error(http.post(f"{base}/simple-missing/promote"), 404)
    assert http.get(base).status_code == 200


def test_rollout_state_survives_a_restart(repo: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ["--state-dir", str(state)]
    with httpx.Client(timeout=30.0) as http:
        with start_server(repo, extra_args=args) as first:
            body = {"model": "canary", "candidate": 2, "steps": [30, 100], "min_step_s": 3600}
            created = http.post(f"{first.base_url}/v1/rollouts", json=body).json()
            before = {i: infer(http, first, "canary", i).json()["model_version"] for i in range(60)}
        with start_server(repo, extra_args=args) as second:
            doc = http.get(f"{second.base_url}/v1/rollouts/canary").json()
            assert (doc["id"], doc["phase"], doc["weight"]) == (created["id"], "stepping", 30.0)
            after = {i: infer(http, second, "canary", i).json()["model_version"] for i in range(60)}
            assert after == before  # the same split after the restart
            assert (
                http.post(f"{second.base_url}/v1/rollouts/canary/rollback").json()["phase"] == "rolled_back"
            )


def test_version_swaps_under_load_lose_no_request(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    _model(repo, "swap", {1: {}}, "version_policy: latest\ninstances: 1\n")
    failures: list[str] = []
    served: Counter[str] = Counter()
    stop = threading.Event()
    with start_server(repo) as server:

        def load(worker: int) -> None:
            with httpx.Client(timeout=30.0) as own:
                i = 0
                while not stop.is_set():
                    i += 1
                    response = infer(own, server, "swap", worker * 1_000_000 + i)
                    if response.status_code != 200:
                        failures.append(response.text)
                    else:
                        served[response.json()["model_version"]] += 1

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        try:
            with httpx.Client(timeout=120.0) as admin:
                for swap in range(4):
                    if swap == 2:  # a new version: version 1 goes away while requests name the model
                        build_simple(repo / "swap" / "2" / "model.onnx")
                    done = admin.post(f"{server.base_url}/v2/repository/models/swap/load", json={})
                    assert done.status_code == 200, done.text
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert failures == []
    assert served["1"] > 0 and served["2"] > 0


def test_the_cli_starts_and_rolls_back_a_rollout_that_a_running_server_follows(
    repo: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"

    def cli(*args: str) -> str:
        result = subprocess.run(
            [*tierserve_command(), "rollout", *args, "--state-dir", str(state)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    started = json.loads(cli("start", "canary", "--candidate", "2", "--stable", "1", "--steps", "40,100",
                             "--min-step-s", "3600", "--json"))  # fmt: skip
    assert started["phase"] == "stepping" and started["decisions"][0]["actor"].startswith("cli:")
    assert [r["id"] for r in json.loads(cli("list", "--json"))] == [started["id"]]
    with (
        start_server(repo, extra_args=["--state-dir", str(state)]) as server,
        httpx.Client(timeout=30.0) as http,
    ):
        assert http.get(f"{server.base_url}/v1/rollouts/canary").json()["id"] == started["id"]
        assert "rolled_back" in cli("rollback", "canary", "--reason", "pager went off")
        deadline = time.monotonic() + 30.0
        while (doc := http.get(f"{server.base_url}/v1/rollouts/canary").json())["phase"] != "rolled_back":
            assert time.monotonic() < deadline, doc
            time.sleep(0.1)
        assert doc["decisions"][-1]["reasons"] == ["pager went off"]
        assert {infer(http, server, "canary", i).json()["model_version"] for i in range(30)} == {"1"}
    assert "rollback" in cli("show", "canary")
