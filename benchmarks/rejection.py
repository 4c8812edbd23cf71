"""What a rejection costs the server: time to the 503 and CPU per rejected request.

Run::

    .venv/bin/python benchmarks/rejection.py --model-repository models [--requests 2000]

A ``tierserve serve`` pinned to core 0 with a gold target no batch can meet (1 ms), so admission
refuses every gold request; this process, pinned to core 1, sends them one after another on one
kept-alive connection (aiohttp), a sentence-encoder request each (a 32-token JSON body):

* ``header``: the tier in ``X-Tier``, the body naming none: refused before the body is decoded;
* ``body``: the tier in the body's parameters: decoded and validated first, then refused;
* ``served``: bronze requests that are served, for scale.

Per case: client-side time from sending to the full response (p50/p99; an upper bound of the
server's time, which excludes the client), and the server process's CPU per request from
``/proc/<pid>/stat`` over the case. Figures, not pass/fail; the machine's load is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
from loadgen import CLOCK_TICKS, model_file, model_info, process_ticks, sentence_feeds, tierserve_server


async def one_case(port: int, path: str, body: bytes, headers: dict[str, str], n: int) -> dict[str, Any]:
    times = np.zeros(n)
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        url = f"http://127.0.0.1:{port}{path}"
        for _ in range(50):  # warm the connection and the route
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        before = process_ticks(os.environ["TIERSERVE_BENCH_PID"])
        for i in range(n):
            sent = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            times[i] = time.perf_counter() - sent
        cpu_s = (process_ticks(os.environ["TIERSERVE_BENCH_PID"]) - before) / CLOCK_TICKS
    return {
        "statuses": statuses,
        "p50_ms": round(float(np.percentile(times, 50)) * 1000, 3),
        "p99_ms": round(float(np.percentile(times, 99)) * 1000, 3),
        "server_cpu_ms_per_request": round(cpu_s / n * 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rejection.json"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = args.out.parent / "rejection-server.yaml"
    config.write_text(
        "tiers:\n"
        "  - {name: gold, target_ms: 1, priority: 0, miss_policy: reject}\n"
        "  - {name: bronze, target_ms: 1000, priority: 1, miss_policy: best_effort}\n"
    )
    info = model_info(model_file(args.model_repository, args.model), 32)
    feeds = sentence_feeds(info.inputs, 32, 1)
    inputs = [
        {"name": name, "datatype": "INT64", "shape": list(array.shape), "data": array.ravel().tolist()}
        for name, array in feeds.items()
    ]
    plain = orjson.dumps({"inputs": inputs})
    named = orjson.dumps({"inputs": inputs, "parameters": {"tier": "gold"}})
    cases = {
        "header": (plain, {"X-Tier": "gold"}),
        "body": (named, {}),
        "served": (plain, {"X-Tier": "bronze"}),
    }
    os.sched_setaffinity(0, {1})
    path = f"/v2/models/{args.model}/infer"
    log = args.out.parent / "rejection-server.log"
    results: dict[str, Any] = {"load_average": Path("/proc/loadavg").read_text().split()[:3]}
    with tierserve_server(args.model_repository, args.model, [0], log, ["--config", str(config)]) as server:
        os.environ["TIERSERVE_BENCH_PID"] = str(server.pid)
        for name, (body, headers) in cases.items():
            n = args.requests if name != "served" else max(50, args.requests // 10)
            results[name] = asyncio.run(one_case(server.port, path, body, headers, n))
            print(f"{name:7} {results[name]}")
    results["load_average_after"] = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average {results['load_average']} -> {results['load_average_after']}")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
