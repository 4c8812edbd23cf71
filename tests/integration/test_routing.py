"""Cost-aware routing across real pools: onnx-cpu, onnx-cpu-int8 and a remote tierserve.

Prices are per 1,000 requests so that the order is fixed: int8 (1) < burst (2) < cpu (3). Gold
accepts only exact variants, so it goes to the remote burst pool; bronze accepts approximate ones,
so it goes to int8. Killing the remote mid-load must fail no gold request: a failed batch is retried
on the cpu pool while the deadline allows, and the remote pool's breaker opens.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from support.models import build_mlp_model
from support.server import RunningServer, start_server
from support.v2 import model_stats

pytestmark = pytest.mark.integration

WIDTH = 256


@dataclass
class Fleet:
    front: RunningServer
    remote: RunningServer
    model_path: Path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    repo = tmp_path / "models"
    model_path = repo / "mlp" / "1" / "model.onnx"
    build_mlp_model(model_path, width=WIDTH)
    (repo / "mlp" / "config.yaml").write_text("max_batch_size: 16\n")
    with start_server(repo, extra_args=["--state-dir", str(tmp_path / "remote-state")]) as remote:
        config = tmp_path / "server.yaml"
        # Generous targets: this test is about where work goes, not about deadlines on a busy machine.
        config.write_text(
            "tiers:\n"
            "  - {name: gold, target_ms: 5000, priority: 0, miss_policy: reject}\n"
            "  - {name: bronze, target_ms: 10000, priority: 2, miss_policy: best_effort, approximate: true}\n"
            "pools:\n"
            "  - {name: cpu, kind: onnx-cpu, cost_per_1k_requests: 3}\n"
            "  - {name: cpu-int8, kind: onnx-cpu-int8, cost_per_1k_requests: 1, accuracy_threshold: 0.98}\n"
            f"  - {{name: burst, kind: remote, endpoints: ['{remote.base_url}'], cost_per_1k_requests: 2,\n"
            "      rtt_ms: 1, concurrency: 4, timeout_ms: 5000}\n"
        )
        args = ["--config", str(config), "--state-dir", str(tmp_path / "front-state")]
        with start_server(repo, extra_args=args) as front:
            yield Fleet(front, remote, model_path)


def request(x: np.ndarray, tier: str) -> dict[str, Any]:
    return {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
        "parameters": {"tier": tier},
    }


def reference(model_path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"X": x})[0]
    return result


def pool_requests(http: httpx.Client) -> dict[str, int]:
    return {pool: int(c["requests"]) for pool, c in model_stats(http, "mlp").get("pool_stats", {}).items()}


def test_int8_variant_passes_its_gate_and_is_listed(fleet: Fleet) -> None:
    meta = httpx.get(f"{fleet.front.base_url}/v2/models/mlp").json()
    assert meta["variants"]["cpu-int8"]["accepted"] is True
    assert meta["variants"]["cpu-int8"]["cosine_min"] >= 0.98
    assert [p["name"] for p in meta["pools"]] == ["cpu", "cpu-int8", "burst"]


def test_bronze_goes_to_int8_and_gold_to_the_cheapest_exact_pool(fleet: Fleet) -> None:
    x = np.random.default_rng(1).standard_normal((1, WIDTH)).astype(np.float32)
    want = reference(fleet.model_path, x)
    with httpx.Client(base_url=fleet.front.base_url, timeout=30) as http:
        for tier in ("bronze", "gold"):
            for _ in range(5):
                response = http.post("/v2/models/mlp/infer", json=request(x, tier))
                assert response.status_code == 200, response.text
                got = np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(want.shape)
                cosine = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
                assert cosine > (0.98 if tier == "bronze" else 0.99999)
        assert pool_requests(http) == {"cpu-int8": 5, "burst": 5}
        metrics = http.get("/metrics").text
        burst = 'tierserve_cost_dollars_total{model="mlp",pool="burst",tenant="anonymous",tier="gold"} 0.01'
        assert burst in metrics


def test_killing_the_remote_mid_load_fails_no_gold_request(fleet: Fleet) -> None:
    x = np.random.default_rng(2).standard_normal((1, WIDTH)).astype(np.float32)
    body = request(x, "gold")
    statuses: list[int] = []

    def client_loop(n: int) -> None:
        with httpx.Client(base_url=fleet.front.base_url, timeout=30) as http:
            for _ in range(n):
                statuses.append(http.post("/v2/models/mlp/infer", json=body).status_code)

    with ThreadPoolExecutor(max_workers=4) as pool, httpx.Client(base_url=fleet.front.base_url) as http:
        futures = [pool.submit(client_loop, 150) for _ in range(4)]
        while pool_requests(http).get("burst", 0) < 40:  # load is flowing through the remote pool
            assert not all(f.done() for f in futures), "load ended before the remote took any"
        fleet.remote.process.send_signal(signal.SIGKILL)
        for future in futures:
            future.result()
        served = pool_requests(http)
    assert len(statuses) == 600
    assert set(statuses) == {200}, f"gold answers: { {s: statuses.count(s) for s in set(statuses)} }"
    assert served["burst"] >= 40 and served["cpu"] > 0  # the rest failed over to the cpu pool
