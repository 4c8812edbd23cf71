"""Tiers vs FIFO on fleets larger than this machine: the simulator, which runs the server's own
admission, batching and routing (``tierserve.scheduler``) in virtual time.

Run::

    .venv/bin/python benchmarks/tiers_sim.py [--replicas 16 256] [--levels 0.5 1 1.5 2] [--duration 20] \
        [--slowdown 1.6]

For each fleet size, a fixed pool of replicas with the measured CPU profile of the example sentence
encoder (``deploy/sim/profiles/cpu-minilm.json``), capacity = replicas x the best rows/s of the
profile (full batches), and seeded Poisson arrivals at each multiple of capacity with the 20/30/50
gold/silver/bronze mix, simulated twice: tiers (priorities, deadlines, early rejection,
work-conserving batches) and FIFO (tiers ignored), the same trace. ``tierserve simulate`` runs the
same simulator over scenario files against fleet baselines; this script compares scheduling alone.
Figures, not pass/fail; virtual time, so the machine's load does not move them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from tierserve.profiler.profile import load_profile
from tierserve.scheduler.tiers import DEFAULT_TIERS
from tierserve.sim.fleet import SimPoolSpec
from tierserve.sim.simulator import SimConfig, SimResult, simulate
from tierserve.sim.traces import poisson

PROFILE = Path(__file__).parent.parent / "deploy" / "sim" / "profiles" / "cpu-minilm.json"
MIX = (0.2, 0.3, 0.5)
NAMES = ("gold", "silver", "bronze")


def figures(
    result: SimResult, trace_arrivals: np.ndarray, duration: float, capacity: float
) -> dict[str, Any]:
    summary = result.summary()["tiers"]
    served = int((~np.isnan(result.latency)).sum())
    # Throughput counts what completed within the arrivals' window; a backlog served later is not.
    in_window = int((trace_arrivals + result.latency <= duration).sum())
    met = sum(
        int((result.latency[result.tiers == i] <= t.target_s).sum()) for i, t in enumerate(DEFAULT_TIERS)
    )
    rows: dict[str, Any] = {
        name: {k: (round(v, 5) if isinstance(v, float) else v) for k, v in summary[name].items()}
        for name in NAMES
    }
    rows["served_over_arrivals"] = round(served / max(1, result.requests), 4)
    rows["served_over_capacity"] = round(in_window / duration / capacity, 4)
    rows["goodput_over_capacity"] = round(met / duration / capacity, 4)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--duration", type=float, default=20.0, help="virtual seconds of arrivals")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--slowdown",
        type=float,
        default=1.0,
        help="multiply the profile's batch times (e.g. 1.6 to mimic a slower or busier processor)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tiers-sim.json"))
    args = parser.parse_args()
    profile = {
        rows: dataclasses.replace(
            t,
            mean_ms=t.mean_ms * args.slowdown,
            p50_ms=t.p50_ms * args.slowdown,
            p95_ms=t.p95_ms * args.slowdown,
            std_ms=t.std_ms * args.slowdown,
        )
        for rows, t in load_profile(PROFILE).batches.items()
    }
    per_replica = max(rows / (t.mean_ms / 1000) for rows, t in profile.items())
    results: dict[str, Any] = {
        "profile": str(PROFILE),
        "slowdown": args.slowdown,
        "per_replica_per_s": round(per_replica, 1),
    }
    for replicas in args.replicas:
        spec = SimPoolSpec("cpu", profile, replicas=replicas, min_replicas=replicas, max_replicas=replicas)
        capacity = replicas * per_replica
        fleet: dict[str, Any] = {"capacity_per_s": round(capacity, 1)}
        results[str(replicas)] = fleet
        for level in args.levels:
            trace = poisson(level * capacity, args.duration, MIX, NAMES, seed=args.seed)
            row: dict[str, Any] = {"requests": len(trace)}
            for scheduling in ("tiers", "fifo"):
                config = SimConfig(
                    [spec],
                    list(DEFAULT_TIERS),
                    honour_tiers=scheduling == "tiers",
                    autoscale="fixed",
                    seed=args.seed,
                )
                started = time.perf_counter()
                row[scheduling] = figures(simulate(config, trace), trace.arrivals, args.duration, capacity)
                row[scheduling]["wall_s"] = round(time.perf_counter() - started, 1)
            fifo = row["fifo"]["served_over_capacity"]
            row["tiers_served_over_fifo"] = (
                round(row["tiers"]["served_over_capacity"] / fifo, 4) if fifo else None
            )
            fleet[str(level)] = row
            t, f = row["tiers"], row["fifo"]
            print(
                f"{replicas} replicas, {level}x ({len(trace)} requests): tiers/FIFO served "
                f"{row['tiers_served_over_fifo']}; tiers gold {t['gold']['attainment']:.4%} silver "
                f"{t['silver']['attainment']:.4%} bronze {t['bronze']['attainment']:.4%} (rejected gold "
                f"{t['gold']['rejected']:.2%} silver {t['silver']['rejected']:.2%}), goodput/capacity "
                f"{t['goodput_over_capacity']}; FIFO gold {f['gold']['attainment']:.4%}, goodput/capacity "
                f"{f['goodput_over_capacity']}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
