"""The simulator and the live server agree: the same trace at 65% of capacity (the lower of the
profile's and what a short closed loop is served now: the machine is shared), replayed against a
real server and simulated with that server's own service-time profile (read after the replay, so it
saw the machine as it was), gives per-tier p50 and p95 latencies within ``TOLERANCE_MS`` plus
``TOLERANCE_SHARE`` of the figure. The live server also decodes HTTP and JSON (about half a millisecond
per request here) and shares the machine with its client, which the simulator does not model; a
scheduling disagreement (batches of another size, another order, a tier held back) moves these
figures by tens of milliseconds and fails."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.rawhttp import RawConnection, post
from support.server import start_server
from tierserve.examples.minilm import build_minilm_onnx, tokenize
from tierserve.profiler.profile import BatchTiming
from tierserve.scheduler.tiers import DEFAULT_TIERS, Tier
from tierserve.sim.fleet import SimPoolSpec
from tierserve.sim.simulator import SimConfig, simulate
from tierserve.sim.traces import poisson

pytestmark = pytest.mark.integration

TOLERANCE_MS = 10.0
TOLERANCE_SHARE = 0.25
DURATION_S = 12.0
LOAD = 0.65
TIER_NAMES = ("gold", "silver", "bronze")
# Agreement cannot be judged while other programs hold the cores: live latencies then include waits
# for a core that no profile saw (seen here with other sessions at load 10 on 2 cores: live p50 four
# times the simulated one). CI's machine runs the suite alone, about 1 runnable per core.
MAX_LOAD_PER_CORE = 2.0


def skip_when_the_machine_is_overloaded() -> None:
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    if load > MAX_LOAD_PER_CORE:
        pytest.skip(f"load average {load:.1f} per core (> {MAX_LOAD_PER_CORE}): others hold the cores")


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


def served_rate(port: int, body: bytes, seconds: float = 2.0, connections: int = 16) -> float:
    """Responses per second under closed-loop load now: what this (shared) machine serves, HTTP
    included, which the warm-up profile alone overstates when other processes take the cores."""
    request = post("/v2/models/all-minilm-l6-v2/infer", body)
    done = 0

    async def run() -> None:
        nonlocal done
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            connection = RawConnection("127.0.0.1", port)
            while time.perf_counter() < end:
                status, _ = await connection.request(request)
                done += status == 200
            await connection.close()

        await asyncio.gather(*(worker() for _ in range(connections)))

    asyncio.run(run())
    return done / seconds


def served_profile(base_url: str) -> dict[int, BatchTiming]:
    """The server's own service-time estimate per batch size (GET /v1/profiles), as a profile."""
    batches = httpx.get(f"{base_url}/v1/profiles").json()["profiles"][0]["batches"]
    return {
        int(rows): BatchTiming(p["mean_ms"], p["mean_ms"], p["mean_ms"] + p["dev_ms"], p["dev_ms"], 0)
        for rows, p in batches.items()
    }


def plain_body(inputs: list[dict[str, object]]) -> bytes:
    return httpx.Request("POST", "http://x", json={"inputs": inputs}).content


def request_parameters(tier: Tier) -> dict[str, object]:
    if tier.rejects_late:
        return {"tier": tier.name, "timeout": round(tier.target_s * 1e6)}
    return {"tier": tier.name}


def percentiles(latency: np.ndarray, tiers: np.ndarray) -> dict[str, tuple[float, float, int]]:
    """Per tier: p50 and p95 of the served requests in milliseconds, and how many were served."""
    out = {}
    for t, name in enumerate(TIER_NAMES):
        served = latency[(tiers == t) & ~np.isnan(latency)] * 1000
        p50, p95 = np.percentile(served, [50, 95]) if len(served) else (np.nan, np.nan)
        out[name] = (round(float(p50), 2), round(float(p95), 2), len(served))
    return out


def test_simulated_latencies_per_tier_match_the_live_server_at_65_percent_load(tmp_path: Path) -> None:
    skip_when_the_machine_is_overloaded()
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
    with start_server(repo, extra_args=["--state-dir", str(tmp_path / "state")]) as server:
        config = httpx.get(f"{server.base_url}/v2/models/all-minilm-l6-v2/config").json()
        replicas = config["instance_group"][0]["count"]
        profile = served_profile(server.base_url)
        capacity = replicas * max(rows / (t.mean_ms / 1000) for rows, t in profile.items())
        capacity = min(capacity, served_rate(server.port, plain_body(inputs)))
        profile = served_profile(server.base_url)  # as the closed loop just saw the machine
        # Deadlines this machine can hold now (it is shared): gold at least 8 one-row batches, silver 3x
        # gold, as each request's own Triton ``timeout``; bronze best effort.
        gold_s = max(0.050, 8 * profile[min(profile)].mean_ms / 1000)
        tiers = [replace(DEFAULT_TIERS[0], target_s=gold_s), replace(DEFAULT_TIERS[1], target_s=3 * gold_s),
                 DEFAULT_TIERS[2]]  # fmt: skip
        bodies = [
            httpx.Request(
                "POST", "http://x", json={"inputs": inputs, "parameters": request_parameters(tier)}
            ).content
            for tier in tiers
        ]
        trace = poisson(LOAD * capacity, DURATION_S, [0.2, 0.3, 0.5], TIER_NAMES, seed=4)
        live = live_replay(server.port, trace.arrivals, trace.tiers, bodies)
        # The server's estimate after the replay has seen this machine as it was during it.
        profile = served_profile(server.base_url)
    spec = SimPoolSpec("cpu", profile, replicas=replicas, min_replicas=replicas, max_replicas=replicas,
                       max_batch_size=32)  # fmt: skip
    simulated = simulate(SimConfig([spec], tiers, autoscale="fixed", seed=0), trace)
    live_p, sim_p = percentiles(live, trace.tiers), percentiles(simulated.latency, trace.tiers)
    skip_when_the_machine_is_overloaded()  # the load while it replayed (the last minute's average)
    print(f"{len(trace)} requests, {replicas} replicas, gold {gold_s * 1000:.0f} ms")
    print(f"per tier (p50 ms, p95 ms, served): live {live_p}\nsim  {sim_p}")
    for name in TIER_NAMES:
        assert live_p[name][2] >= 0.5 * (trace.tiers == TIER_NAMES.index(name)).sum(), (name, live_p)
        for i, figure in enumerate(("p50", "p95")):
            allowed = TOLERANCE_MS + TOLERANCE_SHARE * max(live_p[name][i], sim_p[name][i])
            assert abs(live_p[name][i] - sim_p[name][i]) <= allowed, (name, figure, live_p, sim_p, len(trace))
