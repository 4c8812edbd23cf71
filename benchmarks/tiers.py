"""Do tiers cost throughput? Open-loop Poisson load at 0.5x-2x capacity, tiers vs FIFO, same run.

Run::

    .venv/bin/python benchmarks/tiers.py --model-repository models [--duration 15] [--layouts unpinned pinned]

Figures, not a pass/fail test. Method, per server layout (``unpinned``: server on cores 0-1, the
load generator on them too, since this machine has two; ``pinned``: server on core 0, load generator
on core 1):

1. **Capacity**: a ``tierserve serve`` under closed-loop load (32 connections, bronze, one 32-token
   sentence per request) for ``--duration`` seconds: its served requests/s is *capacity*.
2. **Open loop**: for each level (0.5, 1, 1.5, 2 x capacity) a seeded Poisson arrival process with a
   20/30/50 gold/silver/bronze mix, the same arrivals for ``--scheduling tiers`` (priorities,
   deadlines, early rejection, work-conserving batches) and ``--scheduling fifo`` (tiers ignored), each
   on a fresh server. Tier targets: gold 50 ms, silver 150 ms, bronze best effort (1000 ms reported).
3. The load generator (``benchmarks/tiers_client.py``: aiohttp, pre-encoded bodies) runs in a process of
   its own under ``taskset``; each request leaves at its scheduled time on a connection of its own and
   is timed from that time. Its own cost is reported: CPU per request and its lag behind schedule.

Per tier and level: p50/p99 of the served requests, the share of *all* that tier's requests served
within target, rejected (503/429), late, and of admitted within target; served/arrivals; served
throughput and goodput (served within target per second) over capacity; tiers' served throughput over
FIFO's; the time from sending to a 503 at admission (p50/p99, an upper bound of the server's time
to reject) and, apart, the requests admitted, queued, then dropped (their deadline became
unreachable) or evicted, with their time to the 503;
the mean batch size (server's histogram); and the machine's other load (cores used by every process
but server and load generator: this machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from loadgen import (
    Server,
    batch_size_counts,
    cpu_sample,
    cpu_use,
    model_file,
    model_info,
    parse_histogram,
    sentence_feeds,
    tierserve_server,
)
from serving import snapshot

TIERS = ("gold", "silver", "bronze")
MIX = (0.2, 0.3, 0.5)
TARGET_S = {"gold": 0.050, "silver": 0.150, "bronze": 1.000}
LEVELS = (0.5, 1.0, 1.5, 2.0)
# Server cores, load-generator cores.
LAYOUTS = {"unpinned": ([0, 1], [0, 1]), "pinned": ([0], [1])}
CLIENT = Path(__file__).with_name("tiers_client.py")


def run_loadgen(
    cores: list[int], port: int, path: str, bodies: Path, out: Path, *args: str
) -> dict[str, Any]:
    command = ["taskset", "-c", ",".join(map(str, cores)), sys.executable, str(CLIENT)]
    command += ["--port", str(port), "--path", path, "--bodies", str(bodies), "--out", str(out), *args]
    subprocess.run(command, check=True)
    with np.load(out) as result:
        return {name: result[name] for name in result.files}


def quantiles_ms(seconds: np.ndarray) -> dict[str, float] | None:
    """p50 and p99 in milliseconds and the count; None when there are none."""
    if not len(seconds):
        return None
    p50, p99 = np.percentile(seconds, [50, 99]) * 1000
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2), "count": len(seconds)}


def summarise(
    result: dict[str, Any], tiers: np.ndarray, duration: float, cap: float, targets: dict[str, float]
) -> dict[str, Any]:
    status, latency = result["status"], result["latency"]
    rows: dict[str, Any] = {}
    met_total = served_total = 0
    for t, name in enumerate(TIERS):
        mine = tiers == t
        n = max(1, int(mine.sum()))
        ok = mine & (status == 200)
        served = latency[ok]
        rejected = int((mine & np.isin(status, (429, 503))).sum())
        met = int((served <= targets[name]).sum())
        met_total += met
        served_total += len(served)
        rows[name] = {
            "requests": int(mine.sum()),
            "p50_ms": round(float(np.percentile(served, 50)) * 1000, 1) if len(served) else None,
            "p99_ms": round(float(np.percentile(served, 99)) * 1000, 1) if len(served) else None,
            "within_target": round(met / n, 5),
            "rejected": round(rejected / n, 5),
            "late": round((len(served) - met) / n, 5),
            "admitted_within_target": round(met / len(served), 5) if len(served) else None,
            "unanswered": int((mine & ~np.isin(status, (200, 429, 503))).sum()),
        }
    refused = np.isin(status, (429, 503))
    queued = result["dropped"]
    rejection = result["service"][refused & ~queued]  # refused at admission
    drops = result["service"][refused & queued]  # admitted, queued, then refused
    lag = result["lag"][~np.isnan(result["lag"])]
    rows["served_over_arrivals"] = round(served_total / max(1, len(status)), 4)
    # Throughput counts what completed within the arrivals' window; a backlog served later is not.
    completed = result["arrivals"] + latency
    in_window = int(((status == 200) & (completed <= duration)).sum())
    rows["served_over_capacity"] = round(in_window / duration / cap, 4)
    rows["goodput_over_capacity"] = round(met_total / duration / cap, 4)
    rows["rejection_ms"] = quantiles_ms(rejection)
    rows["dropped_ms"] = quantiles_ms(drops)
    rows["client"] = {
        "lag_p50_ms": round(float(np.percentile(lag, 50)) * 1000, 2) if len(lag) else None,
        "lag_p99_ms": round(float(np.percentile(lag, 99)) * 1000, 2) if len(lag) else None,
        "cpu_ms_per_request": round(float(result["client_cpu_s"][0]) / max(1, len(status)) * 1000, 3),
    }
    return rows


async def metrics_text(server: Server) -> str:
    return (await snapshot(server)).metrics


def print_level(level: float, n: int, scheduling: str, summary: dict[str, Any]) -> None:
    print(
        f"\n{level}x capacity ({n} requests), scheduling={scheduling}: served/arrivals "
        f"{summary['served_over_arrivals']}, served/capacity {summary['served_over_capacity']}, "
        f"goodput/capacity {summary['goodput_over_capacity']}, mean batch {summary['mean_batch']}, "
        f"other load {summary['other_cores']} cores, rejection {summary['rejection_ms']}, "
        f"dropped after queueing {summary['dropped_ms']}, "
        f"client {summary['client']}"
    )
    for name in TIERS:
        row = summary[name]
        print(
            f"  {name:7} p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
            f"within target {row['within_target']:.2%}  rejected {row['rejected']:.2%}  "
            f"late {row['late']:.2%}  admitted in target {row['admitted_within_target']}  "
            f"unanswered {row['unanswered']}"
        )


def tiers_yaml(targets: dict[str, float]) -> str:
    policies = {"gold": "reject", "silver": "reject", "bronze": "best_effort"}
    rows = [
        f"  - {{name: {name}, target_ms: {targets[name] * 1000:g}, priority: {i}, "
        f"miss_policy: {policies[name]}}}"
        for i, name in enumerate(TIERS)
    ]
    return "tiers:\n" + "\n".join(rows) + "\n"


def one_run(
    args: argparse.Namespace,
    layout: str,
    scheduling: str,
    level: float,
    schedule: Path,
    bodies: Path,
    tiers: np.ndarray,
    cap: float,
    config: Path,
    scratch: Path,
    targets: dict[str, float],
) -> dict[str, Any]:
    server_cores, client_cores = LAYOUTS[layout]
    log = args.out.parent / f"tiers-{layout}-{scheduling}-{level}.log"
    extra = ["--scheduling", scheduling, "--config", str(config)]
    path = f"/v2/models/{args.model}/infer"
    with tierserve_server(args.model_repository, args.model, server_cores, log, extra) as server:
        before_text = asyncio.run(metrics_text(server))
        before = cpu_sample(server.pid)
        out = scratch / f"{layout}-{scheduling}-{level}.npz"
        tier_headers = ["--x-tier", *TIERS]  # the tier by header: cheap rejection applies
        result = run_loadgen(
            client_cores, server.port, path, bodies, out, "--schedule", str(schedule), *tier_headers
        )
        after = cpu_sample(server.pid)
        after_text = asyncio.run(metrics_text(server))
    batches = parse_histogram(after_text, "tierserve_batch_size", args.model).minus(
        parse_histogram(before_text, "tierserve_batch_size", args.model)
    )
    summary = summarise(result, tiers, args.duration, cap, targets)
    use = cpu_use(before, after)
    loadgen_cores = float(result["client_cpu_s"][0]) / (after.wall - before.wall)
    summary["mean_batch"] = round(batches.total / batches.count, 2) if batches.count else None
    summary["batch_sizes"] = batch_size_counts(batches)
    summary["server_cores"] = round(use.server, 3)
    summary["other_cores"] = round(max(0.0, use.other - loadgen_cores), 3)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals per level")
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
    parser.add_argument(
        "--capacity",
        type=float,
        help="requests/s to take as capacity instead of measuring it (to compare two builds at the "
        "same offered load: the closed-loop measurement moves a few percent from run to run)",
    )
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="multiples of capacity")
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    args = parser.parse_args()
    targets = dict(zip(TIERS, (ms / 1000 for ms in args.targets_ms), strict=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = args.out.parent / "tiers-server.yaml"
    config.write_text(tiers_yaml(targets))
    info = model_info(model_file(args.model_repository, args.model), args.tokens)
    feeds = sentence_feeds(info.inputs, args.tokens, 1)
    # A JSON body as most clients send it (the tier goes in the X-Tier header); the same for every tier.
    inputs = [
        {"name": name, "datatype": "INT64", "shape": list(array.shape), "data": array.ravel().tolist()}
        for name, array in feeds.items()
    ]
    body = orjson.dumps({"inputs": inputs})
    results: dict[str, Any] = {"targets_ms": args.targets_ms, "duration_s": args.duration, "layouts": {}}
    with tempfile.TemporaryDirectory(prefix="tiers-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        bodies = scratch / "bodies.npz"
        np.savez(bodies, **{f"body{i}": np.frombuffer(body, dtype=np.uint8) for i in range(len(TIERS))})
        for layout in args.layouts:
            server_cores, client_cores = LAYOUTS[layout]
            print(f"\n== {layout}: server on cores {server_cores}, load generator on {client_cores}; "
                  f"load average {load_average()}")  # fmt: skip
            log = args.out.parent / f"tiers-{layout}-capacity.log"
            path = f"/v2/models/{args.model}/infer"
            if args.capacity:
                cap = args.capacity
                print(f"capacity: {cap:.1f} requests/s (given with --capacity)")
            else:
                with tierserve_server(args.model_repository, args.model, server_cores, log) as server:
                    out = scratch / f"{layout}-capacity.npz"
                    closed = ["--closed", "32", "--duration", str(args.duration)]
                    cap = float(run_loadgen(client_cores, server.port, path, bodies, out, *closed)["rate"][0])
                print(f"capacity: {cap:.1f} requests/s (closed loop, 32 connections)")
            levels: dict[str, Any] = {}
            results["layouts"][layout] = {"capacity_per_s": round(cap, 1), "levels": levels}
            rng = np.random.default_rng(args.seed)
            for level in args.levels:
                n = rng.poisson(level * cap * args.duration)
                arrivals = np.sort(rng.uniform(0, args.duration, n))
                tiers = rng.choice(3, size=n, p=MIX)
                schedule = scratch / f"schedule-{layout}-{level}.npz"
                np.savez(schedule, arrivals=arrivals, tiers=tiers)
                row: dict[str, Any] = {"requests": int(n), "load_average": load_average()}
                for scheduling in ("tiers", "fifo"):
                    summary = one_run(args, layout, scheduling, level, schedule, bodies, tiers, cap, config,
                                      scratch, targets)  # fmt: skip
                    row[scheduling] = summary
                    print_level(level, n, scheduling, summary)
                fifo_served = row["fifo"]["served_over_capacity"]
                row["tiers_served_over_fifo"] = (
                    round(row["tiers"]["served_over_capacity"] / fifo_served, 4) if fifo_served else None
                )
                print(f"  tiers served / FIFO served: {row['tiers_served_over_fifo']}")
                levels[str(level)] = row
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    raise SystemExit(main())
