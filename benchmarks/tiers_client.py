"""Load generator in its own process: aiohttp, pre-encoded bodies, pinned by its caller with taskset.

Open loop (``--schedule``): each request leaves at its scheduled time, whatever happened to the
earlier ones, on a connection of its own from an unbounded pool; latency is timed from the
*scheduled* time, so a late client counts against the server, and the client's own lateness is
recorded apart (``lag``: actual send minus scheduled) so that it can be told from the server's.
Closed loop (``--closed N``): N connections, each sends its next request when the last answer
arrives, for ``--duration`` seconds; the served rate is the capacity.

Its own cost is part of the output: CPU seconds per request, and the lag percentiles.

Run by benchmarks/tiers.py; by hand::

    taskset -c 1 .venv/bin/python benchmarks/tiers_client.py --port 8000 --path /v2/models/m/infer \\
        --bodies bodies.npz --schedule schedule.npz --out result.npz
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from pathlib import Path

import aiohttp
import numpy as np

HEADERS = {"Content-Type": "application/json"}
# A 503 for a request that was queued, then dropped (its deadline became unreachable) or evicted by
# more important work: the server's error names it. Any other 503 is a rejection at admission.
QUEUED = (b"dropped from the queue", b"evicted from the full queue")


async def open_loop(
    url: str, bodies: list[bytes], arrivals: np.ndarray, tiers: np.ndarray, x_tier: list[str]
) -> dict[str, np.ndarray]:
    """Request i sends ``bodies[tiers[i]]``, with ``X-Tier: x_tier[tiers[i]]`` when names are given."""
    headers = [{"X-Tier": name} for name in x_tier] if x_tier else [{} for _ in bodies]
    n = len(arrivals)
    status = np.zeros(n, dtype=np.int32)  # 0: no answer (connection error)
    latency = np.full(n, np.nan)  # scheduled arrival -> response read
    lag = np.full(n, np.nan)  # scheduled arrival -> request handed to the connection
    service = np.full(n, np.nan)  # request handed over -> response read
    dropped = np.zeros(n, dtype=bool)  # refused after it was queued (not at admission)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=HEADERS) as session:

        async def one(i: int, scheduled: float) -> None:
            sent = time.perf_counter()
            lag[i] = sent - scheduled
            try:
                async with session.post(url, data=bodies[tiers[i]], headers=headers[tiers[i]]) as response:
                    body = await response.read()
                    status[i] = response.status
                    dropped[i] = response.status == 503 and any(word in body for word in QUEUED)
            except aiohttp.ClientError:
                return
            done = time.perf_counter()
            latency[i] = done - scheduled
            service[i] = done - sent

        start = time.perf_counter() + 0.5
        tasks = []
        for i, at in enumerate(arrivals):
            scheduled = start + float(at)
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    return {
        "status": status,
        "latency": latency,
        "lag": lag,
        "service": service,
        "arrivals": arrivals,
        "dropped": dropped,
    }


async def closed_loop(url: str, body: bytes, connections: int, seconds: float) -> dict[str, np.ndarray]:
    connector = aiohttp.TCPConnector(limit=0)
    served: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
        warm_until = time.perf_counter() + 2.0
        start = warm_until
        end = start + seconds

        async def worker() -> None:
            nonlocal errors
            while (now := time.perf_counter()) < end:
                async with session.post(url, data=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                    elif now >= start:
                        served.append(time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(connections)))
    done = np.asarray([t for t in served if t <= end])
    return {"rate": np.asarray([len(done) / seconds]), "errors": np.asarray([errors])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="npz: body0, body1, ... (uint8 arrays)")
    parser.add_argument("--schedule", type=Path, help="npz: arrivals (s), tiers (index into bodies)")
    parser.add_argument("--closed", type=int, default=0, help="closed loop with this many connections")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--x-tier", nargs="*", default=[], help="X-Tier header per body index")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    with np.load(args.bodies) as stored:
        bodies = [stored[f"body{i}"].tobytes() for i in range(len(stored.files))]
    url = f"http://127.0.0.1:{args.port}{args.path}"
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    if args.closed:
        result = asyncio.run(closed_loop(url, bodies[-1], args.closed, args.duration))
        requests = 0
    else:
        with np.load(args.schedule) as schedule:
            arrivals, tiers = schedule["arrivals"], schedule["tiers"]
        result = asyncio.run(open_loop(url, bodies, arrivals, tiers, args.x_tier))
        requests = len(arrivals)
    cpu = time.process_time() - cpu_before
    result["client_cpu_s"] = np.asarray([cpu])
    result["client_wall_s"] = np.asarray([time.perf_counter() - wall_before])
    result["requests"] = np.asarray([requests])
    np.savez(args.out, **result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
