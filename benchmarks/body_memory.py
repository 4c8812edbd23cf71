"""Memory and responsiveness under huge JSON bodies: the attack of issue 10, item 1, measured.

For each setting of ``--max-decoding-bytes`` (the default 512 MiB, and 64 GiB, which is as good as
no bound), a fresh server on ``identity_fp32`` gets, in turn:

- ``one``: one JSON body of N float values (``--mb`` MB of JSON);
- ``four``: four such bodies at once.

While they are sent, a separate connection asks ``/v2/health/live`` every 50 ms. Per phase: the
statuses, the server's peak RSS growth (``VmHWM`` after minus ``VmRSS`` before, from /proc), its RSS
growth once the phase is over (memory kept), and the health check's p50 and worst latency. The
client runs in this process (it only sends pre-built bytes); pin it away from the server with
``--client-core`` on a machine with more than one core. The load average is recorded with the figures.

    .venv/bin/python benchmarks/body_memory.py --model-repository models [--mb 62] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from loadgen import tierserve_server

MiB = 1 << 20
SETTINGS = {"bounded (default 512 MiB)": None, "unbounded (64 GiB)": str(64 << 30)}


def memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def body_of(megabytes: float) -> bytes:
    values = int(megabytes * 1e6 / 5)  # "0.5, " is five bytes
    doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, values], "data": [0.5] * values}]}
    return json.dumps(doc).encode()


_PROBE = """
import sys, time, httpx
period, out = float(sys.argv[2]), []
with httpx.Client(base_url=sys.argv[1], timeout=120) as client:
    while sys.stdin.readline().strip() != "stop":
        started = time.perf_counter()
        client.get("/v2/health/live")
        print((time.perf_counter() - started) * 1000, flush=True)
"""


class HealthProbe:
    """GET /v2/health/live about every ``period_s`` from a process of its own (so that the senders'
    GIL does not delay it), on its own connection; the latencies, in ms."""

    def __init__(self, base_url: str, period_s: float = 0.05) -> None:
        self.base_url, self.period_s = base_url, period_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        probe = subprocess.Popen(
            [sys.executable, "-c", _PROBE, self.base_url, str(self.period_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert probe.stdin is not None and probe.stdout is not None
        while True:
            stopping = self._stop.wait(self.period_s)
            probe.stdin.write("stop\n" if stopping else "go\n")
            probe.stdin.flush()
            if stopping:
                break
            self.latencies.append(float(probe.stdout.readline()))
        probe.wait(60)


def phase(base_url: str, pid: int, body: bytes, senders: int) -> dict[str, Any]:
    time.sleep(1.0)  # let the previous phase's memory settle (a figure, not synchronisation)
    before = memory(pid)["VmRSS"]
    hwm_before = memory(pid)["VmHWM"]

    def send(_: int) -> int:
        with httpx.Client(base_url=base_url, timeout=600) as client:
            response = client.post(
                "/v2/models/identity_fp32/infer", content=body, headers={"Content-Type": "application/json"}
            )
            return response.status_code

    with HealthProbe(base_url) as probe, ThreadPoolExecutor(senders) as pool:
        started = time.perf_counter()
        statuses = list(pool.map(send, range(senders)))
        wall = time.perf_counter() - started
    time.sleep(1.0)
    after = memory(pid)
    health = sorted(probe.latencies)
    return {
        "senders": senders,
        "statuses": statuses,
        "wall_s": round(wall, 2),
        # VmHWM is the process's peak since it started: growth is only measurable if this phase
        # went above every earlier peak; otherwise it is reported as at most the earlier peak.
        "peak_rss_growth_mib": round((max(after["VmHWM"], hwm_before) - before) / MiB, 1),
        "new_peak": after["VmHWM"] > hwm_before,
        "rss_kept_mib": round((after["VmRSS"] - before) / MiB, 1),
        "health_p50_ms": round(statistics.median(health), 1) if health else None,
        "health_max_ms": round(health[-1], 1) if health else None,
        "health_probes": len(health),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--mb", type=float, default=62.0, help="MB of JSON per body (default 62)")
    parser.add_argument("--server-cores", default="0", help="taskset list for the server (default 0)")
    parser.add_argument("--client-core", type=int, help="pin this process to this core")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/body_memory.json"))
    args = parser.parse_args()
    if args.client_core is not None:
        os.sched_setaffinity(0, {args.client_core})
    body = body_of(args.mb)
    results: dict[str, Any] = {"body_mb": round(len(body) / 1e6, 1), "load_before": os.getloadavg()}
    cores = [int(c) for c in args.server_cores.split(",")]
    for name, budget in SETTINGS.items():
        extra = [] if budget is None else ["--max-decoding-bytes", budget]
        log = args.out.with_suffix(f".{name.split()[0]}.log")
        with tierserve_server(args.model_repository, "identity_fp32", cores, log, extra) as server:
            base_url = f"http://127.0.0.1:{server.port}"
            results[name] = {
                "start_rss_mib": round(memory(server.pid)["VmRSS"] / MiB, 1),
                "one": phase(base_url, server.pid, body, 1),
                "four": phase(base_url, server.pid, body, 4),
            }
        print(name, json.dumps(results[name], indent=1))
    results["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"load average before {results['load_before']}, after {results['load_after']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
