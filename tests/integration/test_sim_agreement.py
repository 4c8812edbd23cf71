"""The simulator and the live server agree: the same trace, replayed against a real server and
simulated with that server's own service-time profile, gives SLO attainment per tier within a stated
tolerance (``TOLERANCE``, absolute share of requests). The simulator does not model HTTP and
decoding (about half a millisecond per request here), so the live server is allowed to be a little
worse; at 30% load that costs little attainment."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.rawhttp import RawConnection, post
from support.server import start_server
from tierserve.examples.minilm import build_minilm_onnx, tokenize
from tierserve.profiler.profile import BatchTiming
from tierserve.scheduler.tiers import DEFAULT_TIERS
from tierserve.sim.fleet import SimPoolSpec
from tierserve.sim.simulator import SimConfig, simulate
from tierserve.sim.traces import poisson

pytestmark = pytest.mark.integration

TOLERANCE = 0.2
DURATION_S = 12.0
LOAD = 0.3
TIER_NAMES = ("gold", "silver", "bronze")


def live_replay(port: int, arrivals: np.ndarray, tiers: np.ndarray, bodies: list[bytes]) -> np.ndarray:
    """Open loop: each request leaves at its arrival time; latency from that time; NaN if not 200."""
    latency = np.full(len(arrivals), np.nan)
    requests = [post("/v2/models/all-minilm-l6-v2/infer", body) for body in bodies]

    async def run() -> None:
        idle: list[RawConnection] = []
        start = time.perf_counter() + 0.1

        async def one(i: int) -> None:
            connection = idle.pop() if idle else RawConnection("127.0.0.1", port)
            status, _ = await connection.request(requests[tiers[i]])
            if status == 200:
                latency[i] = time.perf_counter() - (start + arrivals[i])
            idle.append(connection)

        tasks = []
        for i, at in enumerate(arrivals):
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        for connection in idle:
            await connection.close()

    asyncio.run(run())
    return latency


def served_profile(base_url: str) -> dict[int, BatchTiming]:
    """The server's own service-time estimate per batch size (GET /v1/profiles), as a profile."""
    batches = httpx.get(f"{base_url}/v1/profiles").json()["profiles"][0]["batches"]
    return {
        int(rows): BatchTiming(p["mean_ms"], p["mean_ms"], p["mean_ms"] + 2 * p["dev_ms"], p["dev_ms"], 0)
        for rows, p in batches.items()
    }


def attainment(latency: np.ndarray, tiers: np.ndarray) -> dict[str, float]:
    return {
        name: float((latency[tiers == t] <= DEFAULT_TIERS[t].target_s).sum() / max(1, (tiers == t).sum()))
        for t, name in enumerate(TIER_NAMES)
    }


def test_simulated_attainment_matches_the_live_server(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    (repo / "all-minilm-l6-v2" / "1").mkdir(parents=True)
    build_minilm_onnx(repo / "all-minilm-l6-v2" / "1" / "model.onnx")
    (repo / "all-minilm-l6-v2" / "config.yaml").write_text(
        "max_batch_size: 32\nwarmup_shape: {input_ids: [32], attention_mask: [32]}\n"
    )
    ids, mask = tokenize(["word " * 30])
    ids, mask = ids[:, :32], mask[:, :32]
    inputs = [
        {"name": name, "datatype": "INT64", "shape": [1, 32], "data": array.ravel().tolist()}
        for name, array in (("input_ids", ids), ("attention_mask", mask))
    ]
    bodies = [
        httpx.Request("POST", "http://x", json={"inputs": inputs, "parameters": {"tier": name}}).content
        for name in TIER_NAMES
    ]
    with start_server(repo, extra_args=["--state-dir", str(tmp_path / "state")]) as server:
        config = httpx.get(f"{server.base_url}/v2/models/all-minilm-l6-v2/config").json()
        replicas = config["instance_group"][0]["count"]
        capacity = replicas * max(
            rows / (t.mean_ms / 1000) for rows, t in served_profile(server.base_url).items()
        )
        trace = poisson(LOAD * capacity, DURATION_S, [0.2, 0.3, 0.5], TIER_NAMES, seed=4)
        live = live_replay(server.port, trace.arrivals, trace.tiers, bodies)
        # The server's estimate after the replay has seen this machine as it was during it.
        profile = served_profile(server.base_url)
    spec = SimPoolSpec("cpu", profile, replicas=replicas, min_replicas=replicas, max_replicas=replicas,
                       max_batch_size=32)  # fmt: skip
    simulated = simulate(SimConfig([spec], list(DEFAULT_TIERS), autoscale="fixed", seed=0), trace)
    live_att, sim_att = attainment(live, trace.tiers), attainment(simulated.latency, trace.tiers)
    for name in TIER_NAMES:
        assert abs(live_att[name] - sim_att[name]) <= TOLERANCE, (name, live_att, sim_att, len(trace))
