"""Safe rollouts under load: does the judge roll a bad candidate back fast, promote a good one, and do
version swaps lose requests?

Run::

    .venv/bin/python benchmarks/rollout.py [--scenarios slow,failing,identical,swaps] [--out FILE]

Figures, not a pass/fail test. Each scenario starts its own ``tierserve serve`` (pinned with
``taskset`` to core 0; this client runs on core 1) on a repository built here: model ``canary``
with version 1 = ``simple`` and version 2 = a variant of it (``tierserve.examples.variants``).

- **slow**: the candidate does extra work per request (rounds of a 128x128 MatMul), sized here so
  that its server-side p95 is about 1.5x version 1's: a shadow rollout mirrors every request of 15 s
  of traffic to a version with 10 rounds, the judge reports both versions' p95 on the same requests,
  the rounds are scaled to add half of version 1's p95, and a second shadow measures the result
  (version 3, the candidate then rolled out); the ratio it got is reported. (The client's own p95 on
  a loaded machine is mostly scheduling noise, so the server's figures size it.)
- **failing**: version 2 fails 2% of requests (``fail_every=50``; the i-th request carries i).
- **identical**: version 2 is ``simple`` again.

For these three, an open loop of ``--rate`` (50) requests/s, mixed tiers (20/30/50 gold, silver,
bronze), each with its own id, runs while a canary of version 2 (steps 10 -> 50 -> 100%, 100
requests and 30 s per step at least, checked every 5 s) is judged. Reported: the time from the
first answer by version 2 to the rollback (goal: within 60 s), or to the promotion; the decisions
with their reasons.

- **swaps**: model ``swap`` (``simple``, ``version_policy: latest``) under ``--swap-rate`` (200)
  requests/s of mixed tiers: a quiet window first (no swaps), then 10 swaps through
  ``POST /v2/repository/models/swap/load`` (odd ones add a new version, so the one serving goes away;
  even ones reload the same version), one every ``--swap-every-s`` (2) seconds, each once the
  previous has returned. Reported: failed
  requests (any answer but 200) during the swaps, and the share of gold requests within their 50 ms
  target in both windows. ``--server-src DIR`` runs the server from another checkout's ``src`` (e.g.
  the commit before the drain fix) for a before/after comparison.

Every figure comes with the machine's load average (``/proc/loadavg``) at its start and end, and the
client's own CPU time; the machine may be shared with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from loadgen import HOST, HttpConnection, run_async, tierserve_server

from tierserve.examples.basic import build_simple
from tierserve.examples.variants import build_simple_variant

TIERS = ("gold", "silver", "bronze")
MIX = (0.2, 0.3, 0.5)
GOLD_TARGET_S = 0.050
SERVER_CORES = [0]
CLIENT_CORES = {1}
CANARY = {"steps": [10, 50, 100], "min_samples": 100, "min_step_s": 30, "check_interval_s": 5}
MAX_IN_FLIGHT = 512


@dataclass
class Sent:
    index: int
    tier: str
    at_wall: float  # time.time() when sent
    latency_s: float = float("nan")
    status: int = 0  # 0: no answer
    version: str = ""
    error: str = ""


@dataclass
class Load:
    sent: list[Sent] = field(default_factory=list)

    def window(self, start: float, end: float) -> list[Sent]:
        return [s for s in self.sent if start <= s.at_wall < end]


def request_bytes(model: str, i: int, tier: str, version: int | None = None) -> bytes:
    a = np.full((1, 16), i % 1_000_000, dtype=np.int32)  # INPUT0[0, 0] = i: fail_every picks 1 in N
    body = orjson.dumps(
        {
            "id": f"r{i}",
            "inputs": [
                {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.ravel().tolist()},
                {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
            ],
        }
    )
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"X-Tier: {tier}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def open_loop(port: int, model: str, rate: float, seconds: float, load: Load, *, first: int = 0,
                    version: int | None = None, seed: int = 0) -> None:  # fmt: skip
    """Poisson arrivals at ``rate``/s for ``seconds``; every request is sent when due, on a free
    keep-alive connection (or a new one), whatever happened to earlier ones."""
    rng = np.random.default_rng(seed)
    free: list[HttpConnection] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(record: Sent, raw: bytes) -> None:
        reused = bool(free)
        connection = free.pop() if reused else HttpConnection(port)
        started = time.perf_counter()
        try:
            response = await connection.request(raw)
        except Exception as exc:
            await connection.close()
            if not reused:
                record.error = f"{type(exc).__name__}: {exc}"
                return
            # the server closed an idle kept-alive connection (as HTTP clients do, send again once)
            connection = HttpConnection(port)
            try:
                response = await connection.request(raw)
            except Exception as again:
                await connection.close()
                record.error = f"{type(again).__name__}: {again}"
                return
        record.latency_s = time.perf_counter() - started
        record.status = response.status
        if response.status == 200:
            record.version = orjson.loads(response.body)["model_version"]
        else:
            record.error = response.body[:200].decode(errors="replace")
        free.append(connection)

    start = time.perf_counter()
    due = start
    i = first
    while due - start < seconds:
        due += rng.exponential(1.0 / rate)
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tier = TIERS[int(rng.choice(3, p=MIX))]
        record = Sent(i, tier, time.time())
        load.sent.append(record)
        if len(tasks) < MAX_IN_FLIGHT:
            task = asyncio.create_task(one(record, request_bytes(model, i, tier, version)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)
    for connection in free:
        await connection.close()


def http_json(port: int, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read() or b"null")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def write_repo(root: Path, model: str, config: str) -> Path:
    repo = root / "models"
    build_simple(repo / model / "1" / "model.onnx")
    (repo / model / "config.yaml").write_text(config)
    return repo


@contextlib.contextmanager
def client_cores() -> Iterator[None]:
    before = os.sched_getaffinity(0)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, CLIENT_CORES)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- the rollout scenarios -----------------------------------------------------------------------

_P95 = re.compile(r"^bronze p95 ([0-9.]+) ms vs stable ([0-9.]+) ms")


def shadow_p95s(port: int, rate: float, candidate: int) -> tuple[float, float]:
    """The server-side p95 (ms) of version 1 and ``candidate`` on the same requests (bronze, the
    largest tier): a shadow rollout mirroring every request for 15 s, read from the judge's checks."""
    probe = {"mode": "shadow", "weight": 100, "min_samples": 100, "min_step_s": 3600, "check_interval_s": 2,
             "warmup_s": 1, "auto_rollback": False}  # fmt: skip
    http_json(port, "POST", "/v1/rollouts", {"model": "canary", "candidate": candidate, "stable": 1, **probe})
    run_async(lambda: open_loop(port, "canary", rate, 15, Load(), seed=candidate))
    doc = http_json(port, "GET", "/v1/rollouts/canary")
    http_json(port, "DELETE", "/v1/rollouts/canary")  # rolled back: the canary that follows archives it
    for check in (doc.get("last_judged") or {}).get("checks", []):
        if (match := _P95.match(check["detail"])) is not None:
            return float(match.group(2)), float(match.group(1))
    raise RuntimeError(f"the shadow probe judged nothing: {doc}")


def rollout_scenario(kind: str, rate: float, work: Path, record: Path | None = None) -> dict[str, Any]:
    repo = write_repo(work / kind, "canary", "version_policy: all\n")
    figures: dict[str, Any] = {"scenario": kind, "rate": rate, "loadavg_start": loadavg()}
    with tierserve_server(repo, "canary", SERVER_CORES, work / f"{kind}.log") as server:
        candidate = 2
        if kind == "slow":
            # Size the extra work on the server's own latencies: a shadow rollout mirrors every request
            # to the candidate and the judge reports both versions' p95 on the same requests.
            rounds = 10
            build_simple_variant(repo / "canary" / "2" / "model.onnx", extra_rounds=rounds)
            http_json(server.port, "POST", "/v2/repository/models/canary/load", {})
            first_probe = shadow_p95s(server.port, rate, 2)
            extra = max(1e-3, first_probe[1] - first_probe[0])
            rounds = max(1, round(rounds * 0.5 * first_probe[0] / extra))
            candidate = 3
            build_simple_variant(repo / "canary" / "3" / "model.onnx", extra_rounds=rounds)
            http_json(server.port, "POST", "/v2/repository/models/canary/load", {})
            stable_p95, candidate_p95 = shadow_p95s(server.port, rate, 3)
            figures["calibration"] = {
                "first_probe_p95_ms": {"stable": first_probe[0], "10_rounds": first_probe[1]},
                "rounds": rounds,
                "server_p95_ms": {"stable": stable_p95, "candidate": candidate_p95},
                "server_p95_ratio": candidate_p95 / stable_p95,
            }
        else:
            if kind == "failing":
                build_simple_variant(repo / "canary" / "2" / "model.onnx", fail_every=50)
            else:
                build_simple(repo / "canary" / "2" / "model.onnx")
            http_json(server.port, "POST", "/v2/repository/models/canary/load", {})
        created = http_json(
            server.port,
            "POST",
            "/v1/rollouts",
            {"model": "canary", "candidate": candidate, "stable": 1, **CANARY},
        )
        load = Load()
        horizon = 300.0 if kind == "identical" else 150.0
        cpu_before = os.times()

        async def drive() -> dict[str, Any]:
            traffic = asyncio.create_task(open_loop(server.port, "canary", rate, horizon, load, seed=3))
            doc: dict[str, Any] = created
            while not traffic.done():
                await asyncio.sleep(1.0)
                doc = await asyncio.to_thread(http_json, server.port, "GET", "/v1/rollouts/canary")
                if doc["phase"] != "stepping":
                    await asyncio.sleep(3.0)  # a little traffic after the decision: where does it go?
                    traffic.cancel()
                    break
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
            return doc

        doc = run_async(drive)
        cpu_after = os.times()
    if record is not None:  # both versions' latencies while the rollout stepped (the judge's fixture)
        stepping = [s for s in load.sent if s.status == 200 and s.at_wall < doc["decisions"][-1]["at"]]
        record.write_text(
            json.dumps(
                {
                    v: [round(s.latency_s, 6) for s in stepping if s.version == v]
                    for v in ("1", str(candidate))
                }
            )
        )
    first_candidate = min((s.at_wall for s in load.sent if s.version == str(candidate)), default=None)
    decided = doc["decisions"][-1]
    statuses = Counter(s.status for s in load.sent)
    failures = Counter(s.error[:120] for s in load.sent if s.status != 200)
    figures.update(
        {
            "phase": doc["phase"],
            "errors": dict(failures.most_common(5)),
            "requests": len(load.sent),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "first_candidate_answer_wall": first_candidate,
            "decision": decided,
            # every check of the deciding verdict: the judge's own (server-side) p50 and p95 per tier
            "judge_checks": [c["detail"] for c in (doc.get("last_judged") or {}).get("checks", [])],
            "decisions": doc["decisions"],
            "seconds_from_first_candidate_request": None
            if first_candidate is None
            else decided["at"] - first_candidate,
            "after_decision_versions": dict(
                Counter(s.version for s in load.sent if s.at_wall > decided["at"] + 0.5)
            ),
            "client_cpu_s": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
            "loadavg_end": loadavg(),
        }
    )
    return figures


# -- version swaps under load --------------------------------------------------------------------


def swaps_scenario(rate: float, swaps: int, quiet_s: float, every_s: float, work: Path) -> dict[str, Any]:
    repo = write_repo(work / "swaps", "swap", "version_policy: latest\n")
    figures: dict[str, Any] = {"scenario": "swaps", "rate": rate, "swaps": swaps, "loadavg_start": loadavg()}
    with tierserve_server(repo, "swap", SERVER_CORES, work / "swaps.log") as server:
        load = Load()
        marks: dict[str, float] = {}

        async def drive() -> None:
            traffic = asyncio.create_task(open_loop(server.port, "swap", rate, 3600, load, seed=4))
            await asyncio.sleep(quiet_s)
            marks["swaps_start"] = time.time()
            version = 1
            durations = []
            for n in range(swaps):
                if n % 2 == 0:  # a new version: the one serving goes away once drained
                    version += 1
                    build_simple(repo / "swap" / str(version) / "model.onnx")
                started = time.perf_counter()
                await asyncio.to_thread(http_json, server.port, "POST", "/v2/repository/models/swap/load", {})
                durations.append(time.perf_counter() - started)
                await asyncio.sleep(max(0.0, every_s - (time.perf_counter() - started)))
            marks["swaps_end"] = time.time()
            figures["load_call_s"] = {"mean": statistics.mean(durations), "max": max(durations)}
            figures["last_version"] = version
            await asyncio.sleep(2.0)
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic

        cpu_before = os.times()
        run_async(drive)
        cpu_after = os.times()
    start = load.sent[0].at_wall if load.sent else 0.0
    quiet = load.window(start + 2.0, marks["swaps_start"])  # the first 2 s warm the connections
    during = load.window(marks["swaps_start"], marks["swaps_end"] + 1.0)

    def summary(records: list[Sent]) -> dict[str, Any]:
        gold = [r for r in records if r.tier == "gold"]
        on_time = [r for r in gold if r.status == 200 and r.latency_s <= GOLD_TARGET_S]
        return {
            "requests": len(records),
            "seconds": (records[-1].at_wall - records[0].at_wall) if records else 0.0,
            "failed": sum(1 for r in records if r.status != 200),
            "statuses": {str(k): v for k, v in sorted(Counter(r.status for r in records).items())},
            "gold": len(gold),
            "gold_within_target": len(on_time) / len(gold) if gold else float("nan"),
            "gold_p99_ms": float(np.percentile([r.latency_s for r in gold if r.status == 200], 99)) * 1000
            if gold
            else float("nan"),
            "versions": dict(Counter(r.version for r in records)),
            "errors": dict(Counter(r.error[:120] for r in records if r.status != 200).most_common(5)),
        }

    figures.update(
        {
            "quiet": summary(quiet),
            "during_swaps": summary(during),
            "client_cpu_s": (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system),
            "loadavg_end": loadavg(),
        }
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="slow,failing,identical,swaps")
    parser.add_argument("--rate", type=float, default=50.0, help="rollout scenarios: requests/s (default 50)")
    parser.add_argument("--swap-rate", type=float, default=200.0, help="swaps: requests/s (default 200)")
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--quiet-s", type=float, default=20.0, help="swaps: seconds of load before the first")
    parser.add_argument("--swap-every-s", type=float, default=2.0, help="swaps: one swap this often at most")
    parser.add_argument("--server-src", type=Path, help="run the server from this checkout's src directory")
    parser.add_argument(
        "--record-latencies",
        type=Path,
        help="identical: write both versions' latencies (s) to this JSON file",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rollout.json"))
    args = parser.parse_args()
    if args.server_src is not None:
        os.environ["PYTHONPATH"] = str(args.server_src.resolve())
    results = []
    with tempfile.TemporaryDirectory(prefix="tierserve-rollout-bench-") as tmp, client_cores():
        work = Path(tmp)
        for scenario in args.scenarios.split(","):
            if scenario == "swaps":
                result = swaps_scenario(args.swap_rate, args.swaps, args.quiet_s, args.swap_every_s, work)
            else:
                record = args.record_latencies if scenario == "identical" else None
                result = rollout_scenario(scenario, args.rate, work, record)
            print(json.dumps(result, indent=1, default=str), flush=True)
            results.append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
