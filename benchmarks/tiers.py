"""Does tierserve hold gold under overload? Open-loop Poisson load at 0.5x-2x capacity, tiers vs FIFO.

Run::

    .venv/bin/python benchmarks/tiers.py --model-repository models [--duration 20] [--out FILE]

Figures, not a pass/fail test. Method:

1. **Capacity**: a ``tierserve serve`` (both cores) under closed-loop load (32 connections, bronze,
   one 32-token sentence per request) for ``--duration`` seconds: its served items/s is *capacity*.
2. **Open loop**: for each level (0.5, 1, 1.5, 2 x capacity) a seeded Poisson arrival process with a
   20/30/50 gold/silver/bronze mix. Each request is sent at its arrival time whatever happened to the
   earlier ones (overload is real: nobody waits for a free worker), on a connection of its own from a
   pool, and timed from its *scheduled* arrival, so a late client counts against the server.
3. The same arrivals twice, on two fresh servers: ``--scheduling tiers`` (priorities, deadlines,
   early rejection) and ``--scheduling fifo`` (tiers ignored: nothing rejected early, first come
   first served). Tier targets are the defaults: gold 50 ms, silver 150 ms, bronze best effort
   (1000 ms reported).

Per tier and level it reports p50/p99 of the served requests, the share of *all* that tier's
requests served within target, the share rejected (503/429), and the share served late (a
request that was neither rejected nor on time); and goodput: requests served within target per
second over capacity. Targets on this machine: at 2x, gold within target >= 99.9% of gold requests
(none silently late), silver >= 99% of *admitted* silver within target, goodput >= 0.9 of capacity.
The load generator shares the two cores with the server; its cost is small next to the model's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loadgen import (
    HttpConnection,
    RequestLog,
    closed_loop_worker,
    infer_request,
    model_file,
    model_info,
    response_problem,
    sentence_feeds,
    tierserve_server,
)

TIERS = ("gold", "silver", "bronze")
MIX = (0.2, 0.3, 0.5)
TARGET_S = {"gold": 0.050, "silver": 0.150, "bronze": 1.000}
LEVELS = (0.5, 1.0, 1.5, 2.0)
MAX_CONNECTIONS = 16_000  # open loop: a connection per request in flight, whatever the backlog
CORES = [0, 1]


@dataclass
class Outcome:
    tier: int
    latency: float = math.nan  # from scheduled arrival to response
    status: int = 0  # 0: no answer (client error)


@dataclass
class ConnectionPool:
    port: int
    free: list[HttpConnection] = field(default_factory=list)
    opened: int = 0

    def take(self) -> HttpConnection | None:
        if self.free:
            return self.free.pop()
        if self.opened >= MAX_CONNECTIONS:
            return None
        self.opened += 1
        return HttpConnection(self.port)

    def give(self, connection: HttpConnection) -> None:
        self.free.append(connection)


async def one_request(
    pool: ConnectionPool, raw: bytes, sizes: dict[str, int], scheduled: float, out: Outcome
) -> None:
    connection = pool.take()
    if connection is None:
        return  # the client ran out of connections: counted as no answer
    try:
        response = await connection.request(raw)
        out.latency = time.perf_counter() - scheduled
        out.status = (
            response.status
            if response.status != 200
            else (200 if response_problem(response, sizes) is None else -1)
        )
        pool.give(connection)
    except Exception:
        await connection.close()


async def open_loop(port: int, requests: list[bytes], sizes: dict[str, int], arrivals: np.ndarray,
                    tiers: np.ndarray) -> list[Outcome]:  # fmt: skip
    pool = ConnectionPool(port)
    outcomes = [Outcome(int(t)) for t in tiers]
    start = time.perf_counter() + 0.2
    tasks = []
    for i, at in enumerate(arrivals):
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            asyncio.create_task(one_request(pool, requests[tiers[i]], sizes, start + at, outcomes[i]))
        )
    await asyncio.gather(*tasks)
    for connection in pool.free:
        await connection.close()
    return outcomes


async def capacity(port: int, raw: bytes, sizes: dict[str, int], seconds: float) -> float:
    log = RequestLog()
    connections = [HttpConnection(port) for _ in range(32)]
    warm = time.perf_counter() + 2.0
    await asyncio.gather(*(closed_loop_worker(c, raw, sizes, warm, RequestLog()) for c in connections))
    start = time.perf_counter()
    await asyncio.gather(*(closed_loop_worker(c, raw, sizes, start + seconds, log) for c in connections))
    for c in connections:
        await c.close()
    return len(log.window(start, start + seconds)) / seconds


def summarise(
    outcomes: list[Outcome], duration: float, cap: float, targets: dict[str, float] = TARGET_S
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    met_total = 0
    for t, name in enumerate(TIERS):
        mine = [o for o in outcomes if o.tier == t]
        served = [o.latency for o in mine if o.status == 200]
        rejected = sum(1 for o in mine if o.status in (429, 503))
        met = sum(1 for lat in served if lat <= targets[name])
        met_total += met
        n = max(1, len(mine))
        rows[name] = {
            "requests": len(mine),
            "p50_ms": round(float(np.percentile(served, 50)) * 1000, 1) if served else None,
            "p99_ms": round(float(np.percentile(served, 99)) * 1000, 1) if served else None,
            "within_target": round(met / n, 5),
            "rejected": round(rejected / n, 5),
            "late": round((len(served) - met) / n, 5),
            "admitted_within_target": round(met / len(served), 5) if served else None,
            "unanswered": sum(1 for o in mine if o.status not in (200, 429, 503)),
        }
    rows["goodput_ratio"] = round(met_total / duration / cap, 4)
    return rows


def print_level(level: float, n: int, scheduling: str, summary: dict[str, Any]) -> None:
    print(f"\n{level}x capacity ({n} requests), scheduling={scheduling}: goodput {summary['goodput_ratio']}")
    for name in TIERS:
        row = summary[name]
        print(
            f"  {name:7} p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
            f"within target {row['within_target']:.2%}  rejected {row['rejected']:.2%}  "
            f"late {row['late']:.2%}  admitted in target {row['admitted_within_target']}"
        )


def tiers_yaml(targets: dict[str, float]) -> str:
    policies = {"gold": "reject", "silver": "reject", "bronze": "best_effort"}
    rows = [
        f"  - {{name: {name}, target_ms: {targets[name] * 1000:g}, priority: {i}, "
        f"miss_policy: {policies[name]}}}"
        for i, name in enumerate(TIERS)
    ]
    return "tiers:\n" + "\n".join(rows) + "\n"


def raise_file_limit() -> None:
    """Open loop under overload keeps thousands of requests in flight: one socket each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals per level")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tiers.json"))
    parser.add_argument(
        "--targets-ms",
        type=float,
        nargs=3,
        default=[t * 1000 for t in TARGET_S.values()],
        metavar=("GOLD", "SILVER", "BRONZE"),
        help="tier targets for this run (default: the server's defaults, 50 150 1000)",
    )
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="multiples of capacity")
    args = parser.parse_args()
    raise_file_limit()
    targets = dict(zip(TIERS, (ms / 1000 for ms in args.targets_ms), strict=True))
    config = args.out.parent / "tiers-server.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(tiers_yaml(targets))
    info = model_info(model_file(args.model_repository, args.model), args.tokens)
    feeds = sentence_feeds(info.inputs, args.tokens, 1)
    requests = [infer_request(args.model, feeds, {"tier": name}) for name in TIERS]
    logs = args.out.parent
    levels: dict[str, dict[str, dict[str, Any]]] = {str(level): {} for level in args.levels}
    results: dict[str, object] = {"levels": levels}
    with tierserve_server(args.model_repository, args.model, CORES, logs / "tiers-capacity.log") as server:
        cap = asyncio.run(capacity(server.port, requests[2], info.output_bytes, args.duration))
    results["capacity_items_per_s"] = round(cap, 1)
    results["targets_ms"] = args.targets_ms
    print(f"capacity: {cap:.1f} requests/s (closed loop, 32 connections)")
    rng = np.random.default_rng(args.seed)
    for level in args.levels:
        n = rng.poisson(level * cap * args.duration)
        arrivals = np.sort(rng.uniform(0, args.duration, n))
        tiers = rng.choice(3, size=n, p=MIX)
        for scheduling in ("tiers", "fifo"):
            log = logs / f"tiers-{scheduling}-{level}.log"
            extra = ["--scheduling", scheduling, "--config", str(config)]
            with tierserve_server(args.model_repository, args.model, CORES, log, extra) as server:
                outcomes = asyncio.run(open_loop(server.port, requests, info.output_bytes, arrivals, tiers))
            summary = summarise(outcomes, args.duration, cap, targets)
            levels[str(level)][scheduling] = summary
            print_level(level, n, scheduling, summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
