"""How fast the simulators run: the fleet-day scenario (fluid model, tierserve and every baseline) and
10^6 event-level requests over 1,000 replicas.

Run (pinned to one core, as the targets are stated)::

    taskset -c 1 .venv/bin/python benchmarks/simulation.py [--skip-day] [--skip-events]

Figures, not a pass/fail test; the machine's load average is printed with each (other sessions
share it), and so is the process's CPU time beside the wall time: on a shared core the CPU time is
what the run costs one core. Targets from issue 13: the 24 h scenario in <= 5 minutes on one
core; 10^6 event-level requests over 1,000 replicas in <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tierserve.profiler.profile import load_profile
from tierserve.scheduler.tiers import DEFAULT_TIERS
from tierserve.sim import report
from tierserve.sim.fleet import SimPoolSpec
from tierserve.sim.scenario import load_scenario, run_all
from tierserve.sim.simulator import SimConfig, simulate
from tierserve.sim.traces import poisson

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def day(out: Path) -> dict[str, object]:
    scenario = load_scenario(ROOT / "deploy/sim/fleet-day.yaml")
    started, cpu = time.perf_counter(), time.process_time()
    outcome = run_all(scenario, progress=report.ProgressBar())
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    doc = report.summarise(outcome["results"], outcome["fixed_sizes"])
    doc["notes"] = outcome["notes"]
    print(report.table(doc))
    runs = len(outcome["results"])
    requests = scenario.counts.requests if scenario.counts is not None else 0
    print(f"fleet-day: {wall:.1f} s wall, {cpu:.1f} s CPU for {runs} runs of {requests:,} requests "
          f"(load {load()})")  # fmt: skip
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "runs": runs, "requests_per_run": requests,
            "load": load(), "summary": doc}  # fmt: skip


def events() -> dict[str, object]:
    profile = load_profile(ROOT / "deploy/sim/profiles/cpu-minilm.json").batches
    spec = SimPoolSpec(
        "cpu", profile, cost_per_hour=0.1785, replicas=1000, min_replicas=1000, max_replicas=1000
    )
    # 1,000 replicas of ~257 req/s each at full batches: 10^6 requests in 10 s is about 40% load.
    trace = poisson(100_000, 10.0, [0.2, 0.3, 0.5], ("gold", "silver", "bronze"), seed=1)
    started, cpu = time.perf_counter(), time.process_time()
    result = simulate(SimConfig([spec], list(DEFAULT_TIERS), autoscale="fixed"), trace)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    gold = result.summary()["tiers"]["gold"]["attainment"]
    print(f"event level: {len(trace):,} requests over 1,000 replicas in {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(gold {gold:.4%}; load {load()})")  # fmt: skip
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "requests": len(trace), "load": load()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-day", action="store_true")
    parser.add_argument("--skip-events", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulation.json"))
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    print(f"cores available to this process: {cores}; load {load()}")
    results: dict[str, object] = {"cores": cores}
    if not args.skip_events:
        results["events"] = events()
    if not args.skip_day:
        results["day"] = day(args.out.parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
