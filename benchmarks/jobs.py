"""How fast does ``tierserve serve`` accept durable jobs (``POST /v1/jobs`` -> 202)?

Run::

    .venv/bin/python benchmarks/jobs.py [--stores sqlite,postgres] [--duration 10] [--rate 2000] \
        [--database postgresql://...] [--out benchmarks/results/jobs.json]

Figures, not a pass/fail test. For each store, a ``tierserve serve`` subprocess on a free port (its
own state directory; PostgreSQL from ``scripts/postgres.sh start`` unless ``--database`` names one)
accepts jobs for the example ``simple`` model (two INT32 [1, 16] inputs, a 600-byte body). The server
runs with ``TIERSERVE_JOB_WORKERS=0`` by default, so the figures are the accept path alone: parse,
validate against the model, one INSERT, 202; ``--workers N`` runs the jobs as well. Two loads:

- *closed loop* at concurrency 1, 8 and 32: each client connection sends the next job as soon as
  the previous one is accepted. Throughput is the most this server accepts; latency grows with
  concurrency (Little's law), so read p99 at the rate that matters from the open loop.
- *open loop* at ``--rate`` jobs/s: sends are scheduled at fixed times whatever the answers, and a
  job's latency counts from its scheduled time (no coordinated omission). A server that cannot keep
  up shows it as a rate below the target and a growing p99.

Every response must be 202 with a job id; anything else is counted as an error and exits 1 (the
figures are then not valid). The client is a minimal HTTP/1.1 client over asyncio streams (uvloop)
that sends pre-encoded requests. ``cpu`` columns are cores used by the server process and by this
client during the window; on a 2-core machine they share the cores, so the client's share is
capacity the server did not have.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from loadgen import CLIENT_ERRORS, HOST, HttpConnection, RequestLog, answers_200, free_port, run_async

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCIES = (1, 8, 32)
OPEN_LOOP_CONNECTIONS = 64
TICK_S = 0.001
READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
TARGET_RATE = 2000.0
TARGET_P99_MS = 10.0


@dataclass(frozen=True)
class Options:
    stores: list[str]
    duration_s: float
    warmup_s: float
    rate: float
    workers: int
    database: str | None
    idempotency: bool
    out: Path


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per load")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each load")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="open-loop jobs/s")
    parser.add_argument("--workers", type=int, default=0, help="TIERSERVE_JOB_WORKERS of the server")
    parser.add_argument("--database", help="an existing PostgreSQL database instead of a throwaway one")
    parser.add_argument("--idempotency", action="store_true", help="send a unique Idempotency-Key each")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "jobs.json")
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or set(stores) - {"sqlite", "postgres"}:
        parser.error("--stores takes sqlite and/or postgres")
    return Options(
        stores, args.duration, args.warmup, args.rate, args.workers, args.database, args.idempotency, args.out
    )


# -- requests ------------------------------------------------------------------------------------


def job_body() -> bytes:
    a = np.arange(16, dtype=np.int32).tolist()
    b = np.ones(16, dtype=np.int32).tolist()
    doc = {
        "model": "simple",
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b},
        ],
    }
    return json.dumps(doc).encode()


class RequestMaker:
    """Pre-encoded ``POST /v1/jobs`` requests (with a fresh Idempotency-Key each, when asked)."""

    def __init__(self, port: int, idempotency: bool) -> None:
        body = job_body()
        self._head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        self._body = body
        self._fixed = self._head + b"\r\n" + body
        self._idempotency = idempotency
        self._count = 0
        self._prefix = os.urandom(6).hex()

    def next(self) -> bytes:
        if not self._idempotency:
            return self._fixed
        self._count += 1
        return b"%sIdempotency-Key: %s-%d\r\n\r\n%s" % (
            self._head,
            self._prefix.encode(),
            self._count,
            self._body,
        )


async def send(connection: HttpConnection, raw: bytes) -> str | None:
    """Send one job; why it was not accepted, or None."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            response = await connection.request(raw)
    except CLIENT_ERRORS as exc:
        await connection.close()
        return f"{type(exc).__name__}: {exc}"
    if response.status != 202 or b'"id"' not in response.body:
        return f"HTTP {response.status}: {response.body[:200]!r}"
    return None


async def closed_loop_worker(
    connection: HttpConnection, maker: RequestMaker, stop_at: float, log: RequestLog
) -> None:
    while (started := time.perf_counter()) < stop_at:
        problem = await send(connection, maker.next())
        log.add(started, time.perf_counter(), problem)


async def open_loop(
    port: int, maker: RequestMaker, rate: float, start: float, stop_at: float, log: RequestLog
) -> None:
    """Send at ``rate`` per second from ``start``; each latency counts from its scheduled time."""
    due: asyncio.Queue[float | None] = asyncio.Queue()

    async def worker() -> None:
        connection = HttpConnection(port)
        try:
            while (scheduled := await due.get()) is not None:
                problem = await send(connection, maker.next())
                log.add(scheduled, time.perf_counter(), problem)
        finally:
            await connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(OPEN_LOOP_CONNECTIONS)]
    sent = 0
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            break
        while start + sent / rate <= now:
            due.put_nowait(start + sent / rate)
            sent += 1
        # Ticks of at least 1 ms, each sending what fell due: a shorter sleep spins the client's
        # core (the loop's timers have millisecond resolution), which the server needs.
        await asyncio.sleep(max(TICK_S, start + sent / rate - time.perf_counter()))
    for _ in workers:
        due.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), REQUEST_TIMEOUT_S + 5)


# -- measuring -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU seconds of ``root_pid`` and its children (a PostgreSQL server and its backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(stat.parent.name)
        if pid == root_pid or int(fields[1]) == root_pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (all processes, plus time stolen by the hypervisor)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadFigures:
    load: str
    accepted: int
    errors: int
    jobs_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: float
    client_cpu: float
    db_cpu: float  # the PostgreSQL server's processes (0 for SQLite: it runs inside the server)
    other_cpu: float  # everything else on the machine: near 0 on a quiet machine
    first_error: str | None


async def measure(server: ServerProcess, load: str, options: Options, concurrency: int = 0) -> LoadFigures:
    maker = RequestMaker(server.port, options.idempotency)
    log = RequestLog()
    measure_from = time.perf_counter() + options.warmup_s
    stop_at = measure_from + options.duration_s
    if concurrency:
        connections = [HttpConnection(server.port) for _ in range(concurrency)]
        work = asyncio.gather(*(closed_loop_worker(c, maker, stop_at, log) for c in connections))
    else:
        work = asyncio.gather(open_loop(server.port, maker, options.rate, time.perf_counter(), stop_at, log))
    task = asyncio.ensure_future(work)
    await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
    machine_before, server_before = machine_cpu_seconds(), cpu_seconds(server.pid)
    db_before = tree_cpu_seconds(server.db_pid) if server.db_pid else 0.0
    client_before, wall_before = own_cpu_seconds(), time.perf_counter()
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    machine_after, server_after = machine_cpu_seconds(), cpu_seconds(server.pid)
    db_after = tree_cpu_seconds(server.db_pid) if server.db_pid else 0.0
    client_after, wall_after = own_cpu_seconds(), time.perf_counter()
    used = (server_after - server_before) + (client_after - client_before) + (db_after - db_before)
    await asyncio.wait_for(task, REQUEST_TIMEOUT_S + 10)
    if concurrency:
        for connection in connections:
            await connection.close()
    latencies = np.array(log.window(wall_before, wall_after)) * 1000
    seconds = wall_after - wall_before
    p50, p99, top = np.percentile(latencies, [50, 99, 100]) if latencies.size else (math.nan,) * 3
    return LoadFigures(
        load=load,
        accepted=int(latencies.size),
        errors=log.errors,
        jobs_per_s=latencies.size / seconds,
        p50_ms=float(p50),
        p99_ms=float(p99),
        max_ms=float(top),
        server_cpu=(server_after - server_before) / seconds,
        client_cpu=(client_after - client_before) / seconds,
        db_cpu=(db_after - db_before) / seconds,
        other_cpu=max(0.0, (machine_after - machine_before - used) / seconds),
        first_error=log.first_error,
    )


# -- servers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerProcess:
    pid: int
    port: int
    db_pid: int | None = None  # the PostgreSQL postmaster, when there is one


@contextlib.contextmanager
def tierserve_server(
    repository: Path,
    state_dir: Path,
    database: str | None,
    workers: int,
    log_path: Path,
    db_pid: int | None = None,
) -> Iterator[ServerProcess]:
    port = free_port()
    command = [sys.executable, "-m", "tierserve.cli", "serve", "--model-repository", str(repository)]
    command += ["--host", HOST, "--port", str(port), "--state-dir", str(state_dir), "--log-level", "warning"]
    if database:
        command += ["--database", database]
    env = {**os.environ, "TIERSERVE_JOB_WORKERS": str(workers)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not answers_200(port, "/v2/health/ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exit status {process.returncode}" if process.poll() is not None else "not ready in time"
                )
                raise RuntimeError(
                    f"the server did not start ({why}):\n{log_path.read_text(errors='replace')}"
                )
            time.sleep(0.1)
        yield ServerProcess(process.pid, port, db_pid)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Postgres:
    dsn: str
    pid: int | None  # of the postmaster (for its CPU use)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    """``scripts/postgres.sh start``: a fresh server, removed on the way out."""
    started = subprocess.run(
        ["bash", str(ROOT / "scripts" / "postgres.sh"), "start"], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh start failed:\n{started.stderr}")
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    pid_file = Path(values["DIR"]) / "data" / "postmaster.pid"
    try:
        yield Postgres(values["DSN"], int(pid_file.read_text().split()[0]))
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", values["DIR"]], check=False)


def write_repository(root: Path) -> Path:
    from tierserve.examples.basic import build_simple

    build_simple(root / "simple" / "1" / "model.onnx")
    (root / "simple" / "config.yaml").write_text("max_batch_size: 8\n")
    return root


# -- report --------------------------------------------------------------------------------------


def row(store: str, figures: LoadFigures) -> str:
    return (
        f"{store:<9} {figures.load:<14} {figures.jobs_per_s:>8.0f} {figures.p50_ms:>7.2f} "
        f"{figures.p99_ms:>7.2f} {figures.max_ms:>7.1f} {figures.errors:>6} "
        f"{figures.server_cpu:>6.2f} {figures.client_cpu:>6.2f} {figures.db_cpu:>6.2f} "
        f"{figures.other_cpu:>6.2f}"
    )


HEADER = (
    f"{'store':<9} {'load':<14} {'jobs/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6} "
    f"{'server':>6} {'client':>6} {'db':>6} {'other':>6}   (cpu: cores used)"
)


def run_store(store: str, repository: Path, options: Options) -> list[LoadFigures]:
    with contextlib.ExitStack() as stack:
        database, db_pid = None, None
        if store == "postgres" and options.database:
            database = options.database  # its CPU use shows under "other"
        elif store == "postgres":
            postgres = stack.enter_context(throwaway_postgres())
            database, db_pid = postgres.dsn, postgres.pid
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tierserve-bench-state-")))
        log_path = options.out.with_name(f"{options.out.stem}-server-{store}.log")
        server = stack.enter_context(
            tierserve_server(repository, state, database, options.workers, log_path, db_pid)
        )

        async def loads() -> list[LoadFigures]:
            figures = []
            for concurrency in CONCURRENCIES:
                figures.append(await measure(server, f"closed c={concurrency}", options, concurrency))
                print(row(store, figures[-1]), flush=True)
            figures.append(await measure(server, f"open {options.rate:.0f}/s", options))
            print(row(store, figures[-1]), flush=True)
            return figures

        return run_async(loads)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    results: dict[str, list[LoadFigures]] = {}
    print(f"accept path of POST /v1/jobs, {os.cpu_count()} cores, server job workers: {options.workers}")
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="tierserve-bench-repo-") as repo:
        repository = write_repository(Path(repo))
        for store in options.stores:
            results[store] = run_store(store, repository, options)
    errors = sum(f.errors for figures in results.values() for f in figures)
    for store, figures in results.items():
        fixed_rate = figures[-1]
        met = fixed_rate.jobs_per_s >= 0.98 * options.rate and fixed_rate.p99_ms <= TARGET_P99_MS
        best = max(figures[:-1], key=lambda f: f.jobs_per_s)
        print(
            f"{store}: at {options.rate:.0f} jobs/s offered, {fixed_rate.jobs_per_s:.0f} accepted/s with p99 "
            f"{fixed_rate.p99_ms:.2f} ms (target: {TARGET_RATE:.0f}/s at p99 <= {TARGET_P99_MS:.0f} ms: "
            f"{'met' if met else 'not met'}); most accepted: {best.jobs_per_s:.0f}/s ({best.load}, "
            f"p99 {best.p99_ms:.2f} ms)"
        )
    noisy = [f"{s} {f.load}" for s, figures in results.items() for f in figures if f.other_cpu > 0.1]
    if noisy:
        print(f"warning: other processes used > 0.1 core during {', '.join(noisy)}: figures are low")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(
        json.dumps({store: [asdict(f) for f in figures] for store, figures in results.items()}, indent=2)
    )
    print(f"wrote {options.out}")
    if errors:
        first = next(f.first_error for figures in results.values() for f in figures if f.first_error)
        print(f"{errors} job(s) were not accepted; first: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
