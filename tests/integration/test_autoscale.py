"""The live autoscaler: the fleet planner's decision on /v1/autoscale and /metrics, and the local
actuator resizing the pool from it, up under load and back down after it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from support.models import slow_input, write_slow_repository
from support.server import start_server

pytestmark = pytest.mark.integration


def body(work: float) -> dict[str, object]:
    x = slow_input(1, work=work)
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}


def test_the_planner_grows_a_busy_local_pool_within_the_host_and_shrinks_it_after(tmp_path: Path) -> None:
    repo = write_slow_repository(tmp_path / "models", max_batch_size=1)
    env = {"TIERSERVE_AUTOSCALE_INTERVAL_S": "1"}
    args = ["--autoscale", "local", "--state-dir", str(tmp_path / "state")]
    with (
        start_server(repo, env=env, extra_args=args) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):
        idle = http.get("/v1/autoscale").json()
        assert idle["actuate"] is True
        cores = idle["host_cores"]
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=server.base_url, timeout=30) as c:
                while not stop.is_set():
                    c.post("/v2/models/slow/infer", json=body(5.0))

        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        try:
            deadline = time.monotonic() + 30
            grown = None
            while time.monotonic() < deadline:
                pools = {p["pool"]: p for p in http.get("/v1/autoscale").json()["pools"]}
                if pools.get("cpu", {}).get("desired", 1) >= 2:
                    grown = pools["cpu"]
                    break
                time.sleep(0.2)
            assert grown is not None, (
                "the planner never asked for a second replica",
                http.get("/v1/autoscale").json(),
            )
            assert any("carry" in r and "req/s" in r for r in grown["reasons"]), grown["reasons"]
            assert grown["desired"] <= cores  # local pools share the host's cores
            plan = http.get("/v1/autoscale").json()["plan"]
            assert sum(plan["forecast_rps"].values()) > 0 and plan["reasons"]
            wanted = grown["desired"]
            assert f'tierserve_desired_replicas{{pool="cpu"}} {float(wanted)}' in http.get("/metrics").text
            while time.monotonic() < deadline:  # the local actuator adds the replicas
                groups = http.get("/v2/models/slow/config").json()["instance_group"]
                if groups[0]["count"] >= 2:
                    break
                time.sleep(0.2)
            assert http.get("/v2/models/slow/config").json()["instance_group"][0]["count"] >= 2
        finally:
            stop.set()
            for w in workers:
                w.join()
        assert http.post("/v2/models/slow/infer", json=body(0.0)).status_code == 200
        # Idle again: once the plan has asked for fewer for its hold time (10 ticks), back to one.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if http.get("/v2/models/slow/config").json()["instance_group"][0]["count"] == 1:
                break
            time.sleep(0.5)
        assert http.get("/v2/models/slow/config").json()["instance_group"][0]["count"] == 1
        pools = {p["pool"]: p for p in http.get("/v1/autoscale").json()["pools"]}
        assert pools["cpu"]["desired"] == 1
