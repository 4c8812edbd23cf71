"""Cost-aware routing on real pools: fp32 only vs int8 only vs routed fp32 + int8 + remote burst.

Run::

    .venv/bin/python benchmarks/routing.py --model-repository models [--rate 180] [--duration 20]

Figures, not a pass/fail test. The same seeded open-loop Poisson load (20/30/50 gold/silver/bronze,
one 32-token sentence per request, the tier in ``X-Tier``; the load generator is
``tiers_client.py`` in a process of its own on core 1) goes to three set-ups of ``tierserve serve``,
each with its local pools pinned to core 0:

* ``fp32``: one ``onnx-cpu`` pool;
* ``int8``: one ``onnx-cpu-int8`` pool (every tier allowed approximate results, or gold and silver
  would have no pool);
* ``routed``: ``onnx-cpu`` + ``onnx-cpu-int8`` + a ``remote`` burst pool: a second ``tierserve
  serve`` pinned to core 1, i.e. rented capacity. Gold and silver must be exact; bronze may be int8.

Prices: the local pools' host is one core of a c7i.xlarge ($0.1785/h on demand for 2 cores, so
$0.08925 per core-hour), paid for the whole run whatever the routing: **cost per 1,000 served
counts the cores actually allocated** (1 core x the run's duration) plus every request sent to the
burst endpoint ($0.05 per 1,000, an assumption, see deploy/sim/README.md); the server's own
``tierserve_cost_dollars_total`` (each item's replica time) is printed beside it. Per tier:
share served within target, rejected, late; throughput; where requests went, and how many went to
the burst endpoint by tier (the router sends a request there only when no local pool is predicted
to meet its deadline).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from loadgen import HOST, model_file, model_info, sentence_feeds, tierserve_server
from tiers import MIX, TARGET_S, TIERS, run_loadgen, summarise

TIERS_YAML = """tiers:
  - {{name: gold, target_ms: 50, priority: 0, miss_policy: reject, approximate: {exact_off}}}
  - {{name: silver, target_ms: 150, priority: 1, miss_policy: reject, approximate: {exact_off}}}
  - {{name: bronze, target_ms: 1000, priority: 2, miss_policy: best_effort, approximate: true}}
"""
CPU = "  - {name: cpu, kind: onnx-cpu, cost_per_hour: 0.1785}\n"
INT8 = "  - {name: cpu-int8, kind: onnx-cpu-int8, cost_per_hour: 0.1785}\n"
BURST = "  - {{name: burst, kind: remote, endpoints: ['http://{host}:{port}'], cost_per_1k_requests: 0.05, rtt_ms: 1, concurrency: 8}}\n"  # noqa: E501


def config(path: Path, pools: str, *, approximate_everywhere: bool) -> Path:
    path.write_text(TIERS_YAML.format(exact_off=str(approximate_everywhere).lower()) + "pools:\n" + pools)
    return path


CORE_PRICE_PER_HOUR = 0.1785 / 2  # one core of a c7i.xlarge
BURST_PRICE = 0.05 / 1000
LOCAL_CORES = [0]  # the local pools' host
BURST_CORES = [1]  # the rented endpoint (another tierserve)
LOADGEN_CORES = [1]  # the load generator, a process of its own (benchmarks/tiers_client.py)


def scrape(port: int, family: str, label: str = "pool") -> dict[str, float]:
    """Sum of a counter family by one of its labels."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(family + "{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        key = labels.get(label, "")
        totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def scrape_burst_by_tier(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.findall(
        r'^tierserve_pool_requests_total\{[^}]*pool="burst"[^}]*tier="(\w+)"[^}]*\} (\S+)$', text, re.M
    )
    totals: dict[str, int] = {}
    for tier, n in found:  # one series per tenant
        totals[tier] = totals.get(tier, 0) + int(float(n))
    return totals


def run(label: str, args: argparse.Namespace, cfg: Path, bodies: Path, schedule: Path, tiers: np.ndarray,
        scratch: Path) -> dict[str, Any]:  # fmt: skip
    extra = ["--config", str(cfg)]
    log = args.out.parent / f"routing-{label}.log"
    with tierserve_server(args.model_repository, args.model, LOCAL_CORES, log, extra) as server:
        path = f"/v2/models/{args.model}/infer"
        result = run_loadgen(LOADGEN_CORES, server.port, path, bodies, scratch / f"{label}.npz",
                             "--schedule", str(schedule), "--x-tier", *TIERS)  # fmt: skip
        item_cost = scrape(server.port, "tierserve_cost_dollars_total")
        routed = scrape(server.port, "tierserve_pool_requests_total")
        burst_by_tier = scrape_burst_by_tier(server.port)
    summary = summarise(result, tiers, args.duration, args.rate, TARGET_S)
    served = sum(routed.values())
    burst = routed.get("burst", 0.0)
    allocated = len(LOCAL_CORES) * CORE_PRICE_PER_HOUR * args.duration / 3600 + burst * BURST_PRICE
    summary["throughput_per_s"] = round(served / args.duration, 1)
    summary["cost_per_1k_served"] = round(allocated / served * 1000, 7) if served else None
    summary["item_cost_per_1k_served"] = round(sum(item_cost.values()) / served * 1000, 7) if served else None
    summary["requests_by_pool"] = {k: int(v) for k, v in routed.items()}
    summary["burst_by_tier"] = burst_by_tier
    print(f"\n{label} ({len(tiers)} requests at {args.rate}/s; load average {load_average()}):")
    for name in TIERS:
        row = summary[name]
        print(f"  {name:7} within target {row['within_target']:.2%}  rejected {row['rejected']:.2%}  "
              f"late {row['late']:.2%}  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms")  # fmt: skip
    print(f"  throughput {summary['throughput_per_s']}/s, ${summary['cost_per_1k_served']} per 1,000 served "
          f"(cores allocated + burst; per-item replica time: ${summary['item_cost_per_1k_served']}), "
          f"by pool {summary['requests_by_pool']}, burst by tier {burst_by_tier}")  # fmt: skip
    return summary


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rate", type=float, default=180.0, help="arrivals per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/routing.json"))
    args = parser.parse_args()
    info = model_info(model_file(args.model_repository, args.model), args.tokens)
    feeds = sentence_feeds(info.inputs, args.tokens, 1)
    inputs = [
        {"name": name, "datatype": "INT64", "shape": list(array.shape), "data": array.ravel().tolist()}
        for name, array in feeds.items()
    ]
    body = orjson.dumps({"inputs": inputs})  # the tier goes in the X-Tier header
    rng = np.random.default_rng(args.seed)
    n = rng.poisson(args.rate * args.duration)
    arrivals = np.sort(rng.uniform(0, args.duration, n))
    tiers = rng.choice(3, size=n, p=MIX)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"rate": args.rate, "duration_s": args.duration, "requests": int(n)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bodies, schedule = work / "bodies.npz", work / "schedule.npz"
        np.savez(bodies, **{f"body{i}": np.frombuffer(body, dtype=np.uint8) for i in range(len(TIERS))})
        np.savez(schedule, arrivals=arrivals, tiers=tiers)
        results["fp32"] = run("fp32", args, config(work / "a.yaml", CPU, approximate_everywhere=False),
                              bodies, schedule, tiers, work)  # fmt: skip
        results["int8"] = run("int8", args, config(work / "b.yaml", INT8, approximate_everywhere=True),
                              bodies, schedule, tiers, work)  # fmt: skip
        burst_log = args.out.parent / "routing-burst-server.log"
        with tierserve_server(args.model_repository, args.model, BURST_CORES, burst_log) as burst:
            pools = CPU + INT8 + BURST.format(host=HOST, port=burst.port)
            cfg = config(work / "c.yaml", pools, approximate_everywhere=False)
            results["routed"] = run("routed", args, cfg, bodies, schedule, tiers, work)
    results["load_average"] = load_average()
    cheaper = min(("fp32", "int8"), key=lambda k: results[k]["cost_per_1k_served"] or float("inf"))
    ours, theirs = results["routed"], results[cheaper]
    print(f"\nrouted vs the cheaper single pool ({cheaper}): ${ours['cost_per_1k_served']} vs "
          f"${theirs['cost_per_1k_served']} per 1,000 served; gold within target "
          f"{ours['gold']['within_target']:.2%} vs {theirs['gold']['within_target']:.2%}; "
          f"burst requests {ours['requests_by_pool'].get('burst', 0)}; "
          f"load average {results['load_average']}")  # fmt: skip
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
