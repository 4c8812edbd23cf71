"""How close does ``tierserve serve`` come to what ONNX Runtime alone can do on the same cores, over
REST and over gRPC?

Run::

    .venv/bin/python benchmarks/serving.py --model-repository models [--duration 10] \
        [--model all-minilm-l6-v2 | simple] [--tokens 32] [--protocols rest,grpc] \
        [--out benchmarks/results/serving.json] [--retry-noisy N]

These are figures, not a pass/fail test. The run has three parts.

1. **Raw ONNX Runtime**, in this process, on the model file the server loads, with the server's
   session options (ORT_ENABLE_ALL, sequential, no spinning). For 1 intra-op thread (this process
   pinned to the first core) and for 2 threads (free on the first two cores) it measures batch-1
   latency (p50 of every call in its window) and items/s at batch sizes 1, 2, 4, 8, 16 and 32, each
   after a short warm-up. The best items/s over batch sizes is that thread count's *limit*: no server
   on those cores can beat it by more than noise.

2. **Served**: a ``tierserve serve --grpc-port ...`` subprocess, loaded by a closed-loop asyncio
   client at concurrency 1, 8 and 32, over each protocol in turn. REST: each worker owns one
   keep-alive HTTP/1.1 connection and sends one request (batch dimension 1: one sentence of exactly
   ``--tokens`` tokens for a text encoder, zeros of the input shape otherwise) with Triton's binary
   tensor extension, asking for binary outputs. gRPC: each worker owns one HTTP/2 connection and
   sends ``ModelInfer`` with ``raw_input_contents`` (as tritonclient.grpc and perf_analyzer do).
   Every response is checked (outputs of the size the raw run produced) and failures are counted.
   Each level warms up before its measured window. Twice:

   - *pinned*: the server under ``taskset -c <core 0>`` (so ONNX Runtime gets 1 thread and shares that
     core with the event loop), the client on core 1;
   - *unpinned*: server and client both free on both cores (the server picks 2 threads).

   The client's own CPU is in the ``cpu`` column (``client``): at 1.0 it is the bottleneck, and the
   served figures say more about it than about the server.

3. **Report**: a table, the ratios and a JSON file with every figure, the machine's load average
   (``uptime``) with every window:

   - pinned c=32 served / 1-thread limit (target >= 0.97);
   - unpinned c=32 served / 2-thread limit (target >= 0.95);
   - pinned c=1 p50 - raw 1-thread batch-1 p50 (target <= 0.5 ms), and unpinned c=1 p50 - raw
     2-thread batch-1 p50 (target <= 0.5 ms: an idle server gives a request every core);
   - gRPC / REST requests per second at each level (targets: >= 1.5 on ``simple``, >= 1 on MiniLM);
   - ``srv ms``: the server's CPU time per request (all its threads), the cost that decides how many
     requests a core can serve when the model is cheap.

How to read the other served columns (server-side ones come from the server's ``/metrics`` and
``/proc``, over the measured window):

- ``batch``: mean rows per executed batch; the histogram below the table gives the sizes.
- ``busy``: fraction of the window spent inside ONNX Runtime.
- ``inf ms``: mean time of one batch in ONNX Runtime; ``queue ms``: mean wait for a batch to start.
- ``proto ms``: mean latency seen by the client minus the mean time in the server's engine
  (``tierserve_request_duration_seconds``): the protocol, routing, decoding and encoding on both ends.
- ``loop ms``: CPU time of the server's main thread (the event loop) per request.
- ``cpu``: cores used by the server, the client, every *other* process, and stolen by the hypervisor.
  When ``other`` or ``steal`` is not near 0 the machine was not quiet and the figures are too low; on a
  shared machine ``--retry-noisy N`` measures such a window again (up to N times) and keeps the
  quietest attempt.

Exit status 1 means requests failed (the figures are then not valid); 2 that the server did not
start or did not load the model.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from loadgen import (
    NOISE_CORES,
    REQUEST_TIMEOUT_S,
    CpuSample,
    CpuUse,
    GrpcConnection,
    Histogram,
    HttpConnection,
    ModelInfo,
    RequestLog,
    Server,
    background_load,
    batch_size_counts,
    call_durations,
    closed_loop_worker,
    cpu_affinity,
    cpu_sample,
    cpu_use,
    exit_on_termination,
    free_port,
    get_request,
    grpc_closed_loop_worker,
    grpc_infer_request,
    infer_request,
    model_file,
    model_info,
    parse_histogram,
    quietest,
    quietest_async,
    run_async,
    server_like_session,
    tierserve_server,
)

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
CONCURRENCIES = (1, 8, 32)
PROTOCOLS = ("rest", "grpc")
TARGET_PINNED_RATIO = 0.97
TARGET_UNPINNED_RATIO = 0.95
TARGET_OVERHEAD_MS = 0.5
TARGET_GRPC_OVER_REST = {"simple": 1.5}  # other models: 1.0


# -- command line ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    model_repository: Path
    model: str
    tokens: int
    duration_s: float
    warmup_s: float
    out: Path
    retry_noisy: int
    protocols: tuple[str, ...] = PROTOCOLS


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True, help="the server's model repository")
    parser.add_argument("--model", default="all-minilm-l6-v2", help="model to measure")
    parser.add_argument(
        "--tokens", type=int, default=32, help="tokens per sentence, [CLS] and [SEP] included"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per concurrency level")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds before each window")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serving.json"))
    parser.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        metavar="N",
        help="on a shared machine: measure a window again, up to N times, when other processes "
        f"took more than {NOISE_CORES} cores in it; the quietest attempt is kept",
    )
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help="comma-separated: rest, grpc (default both)"
    )
    args = parser.parse_args(argv)
    protocols = tuple(p for p in args.protocols.split(",") if p)
    if not protocols or set(protocols) - set(PROTOCOLS):
        parser.error(f"--protocols: a comma-separated list of {', '.join(PROTOCOLS)}")
    if not 2 <= args.tokens <= 512:
        parser.error("--tokens must be between 2 and 512")
    if args.duration <= 0 or args.warmup < 0 or args.retry_noisy < 0:
        parser.error("--duration must be positive, --warmup and --retry-noisy not negative")
    return Options(
        args.model_repository,
        args.model,
        args.tokens,
        args.duration,
        args.warmup,
        args.out,
        args.retry_noisy,
        protocols,
    )


# -- raw ONNX Runtime --------------------------------------------------------------------------


@dataclass
class RawFigures:
    threads: int
    cores: list[int]
    batch1_p50_ms: float
    items_per_s: dict[int, float]
    limit_items_per_s: float
    cpu: CpuUse  # ``client`` is this process, running ONNX Runtime


def measure_raw(model: ModelInfo, threads: int, cores: list[int], tokens: int, seconds: float) -> RawFigures:
    with cpu_affinity(cores):  # set before the session exists, so its pool threads inherit it
        session = server_like_session(model.path, threads)
        before = cpu_sample()
        batch1_p50_ms, items_per_s = sweep_batch_sizes(session, model, tokens, seconds)
        after = cpu_sample()
        del session  # its threads go with it, before the served phases start
        gc.collect()
    limit = max(items_per_s.values())
    return RawFigures(threads, cores, batch1_p50_ms, items_per_s, limit, cpu_use(before, after))


def sweep_batch_sizes(
    session: ort.InferenceSession, model: ModelInfo, tokens: int, seconds: float
) -> tuple[float, dict[int, float]]:
    """Batch-1 p50 latency in ms, and items/s for each batch size."""
    items_per_s: dict[int, float] = {}
    batch1_p50_ms = math.nan
    for batch in BATCH_SIZES:
        window = seconds * 2 if batch == 1 else seconds  # batch 1 also gives the latency samples
        durations = call_durations(session, model.feeds(tokens, batch), window)
        items_per_s[batch] = batch * len(durations) / sum(durations)
        if batch == 1:
            batch1_p50_ms = float(np.percentile(durations, 50)) * 1000
    return batch1_p50_ms, items_per_s


# -- one concurrency level ---------------------------------------------------------------------


@dataclass
class LevelFigures:
    protocol: str
    concurrency: int
    requests: int
    errors: int
    items_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    engine_ms: float  # mean time inside the server's engine: validation, queue, inference, outputs
    mean_batch: float
    busy: float  # fraction of the window spent inside the backend
    mean_inference_ms: float  # per executed batch
    mean_queue_ms: float  # per request
    loop_ms_per_request: float  # CPU of the server's event loop thread per request
    server_ms_per_request: float  # CPU of the whole server (every thread) per request
    batch_sizes: dict[str, int]
    cpu: CpuUse
    load_average: tuple[float, float, float]  # ``uptime`` at the end of the window
    first_error: str | None


@dataclass(frozen=True)
class Snapshot:
    cpu: CpuSample
    metrics: str


async def snapshot(server: Server) -> Snapshot:
    """CPU counters and /metrics now (on a new connection: the server drops idle ones after 5 s)."""
    sample = cpu_sample(server.pid)
    connection = HttpConnection(server.port)
    try:
        response = await connection.request(get_request("/metrics"))
    finally:
        await connection.close()
    return Snapshot(sample, response.body.decode())


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.perf_counter()))


async def finish(tasks: list[asyncio.Task[None]]) -> None:
    """Let in-flight requests end (each has its own timeout) and re-raise a worker's unexpected error."""
    _, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
    for task in pending:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception):
            raise result


@dataclass(frozen=True)
class Target:
    """Where one protocol's requests go: the server, and for gRPC its port."""

    server: Server
    grpc_port: int


async def run_level(
    target: Target, protocol: str, concurrency: int, request: bytes, sizes: dict[str, int], options: Options
) -> LevelFigures:
    log = RequestLog()
    measure_from = time.perf_counter() + options.warmup_s
    stop_at = measure_from + options.duration_s
    connections: list[HttpConnection | GrpcConnection] = []
    tasks = []
    for _ in range(concurrency):
        if protocol == "grpc":
            grpc_connection = GrpcConnection(target.grpc_port)
            connections.append(grpc_connection)
            work = grpc_closed_loop_worker(grpc_connection, request, sizes, stop_at, log)
        else:
            http_connection = HttpConnection(target.server.port)
            connections.append(http_connection)
            work = closed_loop_worker(http_connection, request, sizes, stop_at, log)
        tasks.append(asyncio.create_task(work))
    try:
        await sleep_until(measure_from)
        before = await snapshot(target.server)
        await sleep_until(stop_at)
        after = await snapshot(target.server)
    finally:
        await finish(tasks)
        for connection in connections:
            await connection.close()
    return level_figures(protocol, concurrency, log, before, after, options.model)


def level_figures(
    protocol: str, concurrency: int, log: RequestLog, before: Snapshot, after: Snapshot, model: str
) -> LevelFigures:
    latencies = log.window(before.cpu.wall, after.cpu.wall)
    seconds = after.cpu.wall - before.cpu.wall
    cpu = cpu_use(before.cpu, after.cpu)

    def delta(family: str) -> Histogram:
        return parse_histogram(after.metrics, family, model).minus(
            parse_histogram(before.metrics, family, model)
        )

    batches = delta("tierserve_batch_size")
    inference = delta("tierserve_inference_duration_seconds")
    queue = delta("tierserve_queue_duration_seconds")
    engine = delta("tierserve_request_duration_seconds")
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else (math.nan, math.nan)
    per_second = len(latencies) / seconds
    return LevelFigures(
        protocol=protocol,
        concurrency=concurrency,
        requests=len(latencies),
        errors=log.errors,
        items_per_s=per_second,
        p50_ms=float(p50),
        p99_ms=float(p99),
        mean_ms=float(np.mean(latencies)) * 1000 if latencies else math.nan,
        engine_ms=ratio(engine.total, engine.count) * 1000,
        mean_batch=ratio(batches.total, batches.count),
        busy=inference.total / seconds,
        mean_inference_ms=ratio(inference.total, inference.count) * 1000,
        mean_queue_ms=ratio(queue.total, queue.count) * 1000,
        loop_ms_per_request=ratio(cpu.server_loop, per_second) * 1000,
        server_ms_per_request=ratio(cpu.server, per_second) * 1000,
        batch_sizes=batch_size_counts(batches),
        cpu=cpu,
        load_average=os.getloadavg(),
        first_error=log.first_error,
    )


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# -- one phase: a server, three levels per protocol --------------------------------------------


@dataclass
class PhaseFigures:
    name: str
    server_cores: list[int]
    client_cores: list[int]
    levels: list[LevelFigures]

    def level(self, concurrency: int, protocol: str = "rest") -> LevelFigures | None:
        found = [lv for lv in self.levels if lv.concurrency == concurrency and lv.protocol == protocol]
        return found[0] if found else None


def measure_phase(
    name: str, server_cores: list[int], client_cores: list[int], model: ModelInfo, options: Options
) -> PhaseFigures:
    print(f"served, {name}: server on cores {server_cores}, client on {client_cores} ...", flush=True)
    feeds = model.feeds(options.tokens, 1)
    requests = {"rest": infer_request(options.model, feeds), "grpc": grpc_infer_request(options.model, feeds)}
    sizes = model.output_bytes
    log_path = options.out.with_name(f"{options.out.stem}-server-{name}.log")
    grpc_port = free_port()

    async def levels(target: Target) -> PhaseFigures:
        figures = []
        for protocol in options.protocols:
            for concurrency in CONCURRENCIES:
                figures.append(
                    await quietest_async(
                        functools.partial(
                            run_level, target, protocol, concurrency, requests[protocol], sizes, options
                        ),
                        lambda level: level.cpu,
                        options.retry_noisy,
                    )
                )
                print(f"  {row(name, figures[-1])}", flush=True)
        return PhaseFigures(name, server_cores, client_cores, figures)

    extra = ["--grpc-port", str(grpc_port)] if "grpc" in options.protocols else []
    with (
        tierserve_server(options.model_repository, options.model, server_cores, log_path, extra) as server,
        cpu_affinity(client_cores),
    ):
        return run_async(lambda: levels(Target(server, grpc_port)))


# -- report ------------------------------------------------------------------------------------


@dataclass
class Ratios:
    """Per protocol: served / raw ratios; and gRPC / REST requests per second per phase and level."""

    pinned_c32_over_1_thread_limit: dict[str, float]
    unpinned_c32_over_2_thread_limit: dict[str, float]
    pinned_c1_p50_minus_raw_1_thread_batch1_p50_ms: dict[str, float]
    unpinned_c1_p50_minus_raw_2_thread_batch1_p50_ms: dict[str, float]
    grpc_over_rest: dict[str, float]  # "pinned c=32" -> ratio


def ratios(raw: dict[int, RawFigures], phases: list[PhaseFigures], protocols: Sequence[str]) -> Ratios:
    pinned, unpinned = phases

    def of(
        phase: PhaseFigures, concurrency: int, protocol: str, value: Callable[[LevelFigures], float]
    ) -> float:
        level = phase.level(concurrency, protocol)
        return value(level) if level is not None else math.nan

    rest_grpc = {}
    if {"rest", "grpc"} <= set(protocols):
        for phase in phases:
            for concurrency in CONCURRENCIES:
                rest = of(phase, concurrency, "rest", lambda lv: lv.items_per_s)
                rest_grpc[f"{phase.name} c={concurrency}"] = ratio(
                    of(phase, concurrency, "grpc", lambda lv: lv.items_per_s), rest
                )
    return Ratios(
        {p: of(pinned, 32, p, lambda lv: lv.items_per_s) / raw[1].limit_items_per_s for p in protocols},
        {p: of(unpinned, 32, p, lambda lv: lv.items_per_s) / raw[2].limit_items_per_s for p in protocols},
        {p: of(pinned, 1, p, lambda lv: lv.p50_ms) - raw[1].batch1_p50_ms for p in protocols},
        {p: of(unpinned, 1, p, lambda lv: lv.p50_ms) - raw[2].batch1_p50_ms for p in protocols},
        rest_grpc,
    )


def raw_table(raw: Iterable[RawFigures]) -> list[str]:
    header = " ".join(f"{f'b={b}':>7}" for b in BATCH_SIZES)
    lines = [f"{'threads':>7} {'cores':>5} {'b1 p50 ms':>9}  {header}  {'limit':>7}  cpu other/steal"]
    for fig in raw:
        rates = " ".join(rate(fig.items_per_s[b]) for b in BATCH_SIZES)
        cores = ",".join(map(str, fig.cores))
        lines.append(
            f"{fig.threads:>7} {cores:>5} {fig.batch1_p50_ms:9.2f}  {rates}  {rate(fig.limit_items_per_s)}"
            f"  {fig.cpu.other:.2f}/{fig.cpu.steal:.2f}"
        )
    return lines


def rate(items_per_s: float) -> str:
    """Seven characters wide: one decimal for model-sized rates, exponent form for trivial models."""
    return f"{items_per_s:7.1f}" if items_per_s < 1e5 else f"{items_per_s:7.1e}"


SERVED_HEADER = (
    f"{'phase':<8} {'proto':<5} {'c':>3} {'items/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
    f"{'batch':>5} {'busy':>5} {'inf ms':>7} {'queue ms':>8} {'proto ms':>8} {'loop ms':>7} {'srv ms':>6}  "
    "cpu server/client/other/steal  load"
)


def row(phase: str, level: LevelFigures) -> str:
    cpu = level.cpu
    return (
        f"{phase:<8} {level.protocol:<5} {level.concurrency:>3} {level.items_per_s:8.1f} {level.p50_ms:7.2f} "
        f"{level.p99_ms:7.2f} {level.errors:>6} {level.mean_batch:5.1f} {level.busy:5.2f} "
        f"{level.mean_inference_ms:7.2f} {level.mean_queue_ms:8.2f} {level.mean_ms - level.engine_ms:8.2f} "
        f"{level.loop_ms_per_request:7.3f} {level.server_ms_per_request:6.3f}  "
        f"{cpu.server:.2f}/{cpu.client:.2f}/{cpu.other:.2f}/{cpu.steal:.2f}  {level.load_average[0]:.1f}"
    )


def ratio_lines(r: Ratios, model: str) -> list[str]:
    def verdict(ok: bool) -> str:
        return "meets target" if ok else "BELOW TARGET"

    lines = []
    for protocol, value in r.pinned_c32_over_1_thread_limit.items():
        lines.append(
            f"{protocol:<5} pinned c=32 / 1-thread limit          {value:6.3f}  (target >= "
            f"{TARGET_PINNED_RATIO})  {verdict(value >= TARGET_PINNED_RATIO)}"
        )
    for protocol, value in r.unpinned_c32_over_2_thread_limit.items():
        lines.append(
            f"{protocol:<5} unpinned c=32 / 2-thread limit        {value:6.3f}  (target >= "
            f"{TARGET_UNPINNED_RATIO})  {verdict(value >= TARGET_UNPINNED_RATIO)}"
        )
    for protocol, value in r.pinned_c1_p50_minus_raw_1_thread_batch1_p50_ms.items():
        lines.append(
            f"{protocol:<5} pinned c=1 p50 - raw 1-thread b=1 (ms) {value:6.3f}  (target <= "
            f"{TARGET_OVERHEAD_MS})  {verdict(value <= TARGET_OVERHEAD_MS)}"
        )
    for protocol, value in r.unpinned_c1_p50_minus_raw_2_thread_batch1_p50_ms.items():
        lines.append(
            f"{protocol:<5} unpinned c=1 p50 - raw 2-thread b=1 (ms) {value:6.3f}  (target <= "
            f"{TARGET_OVERHEAD_MS})  {verdict(value <= TARGET_OVERHEAD_MS)}"
        )
    target = TARGET_GRPC_OVER_REST.get(model, 1.0)
    for where, value in r.grpc_over_rest.items():
        lines.append(
            f"grpc/rest requests/s, {where:<14}         {value:6.3f}  (target >= {target})  "
            f"{verdict(value >= target)}"
        )
    return lines


def noise_warnings(background: CpuUse, raw: Iterable[RawFigures], phases: list[PhaseFigures]) -> list[str]:
    """One line per window in which other processes or the hypervisor took a noticeable share."""
    windows = [("before the run", background)]
    windows += [(f"raw {fig.threads}-thread", fig.cpu) for fig in raw]
    windows += [(f"{p.name} {lv.protocol} c={lv.concurrency}", lv.cpu) for p in phases for lv in p.levels]
    return [
        f"{name}: other processes used {cpu.other:.2f} cores, steal {cpu.steal:.2f}"
        for name, cpu in windows
        if cpu.other > NOISE_CORES or cpu.steal > NOISE_CORES
    ]


def report(
    options: Options,
    raw: dict[int, RawFigures],
    phases: list[PhaseFigures],
    r: Ratios,
    warnings: list[str],
) -> None:
    print(f"\n== {options.model}, {options.tokens} tokens, {options.duration_s:g} s per level ==")
    print("\nraw ONNX Runtime (items/s by batch size)")
    print("\n".join(raw_table(raw.values())))
    print("\nserved (1 item per request, binary in and out)")
    print(SERVED_HEADER)
    for phase in phases:
        print("\n".join(row(phase.name, level) for level in phase.levels))
    print("\nbatch sizes executed in each window (rows: batches)")
    for phase in phases:
        for level in phase.levels:
            sizes = "  ".join(f"{size}: {n}" for size, n in level.batch_sizes.items())
            print(f"{phase.name:<8} {level.protocol:<5} c={level.concurrency:<3} {sizes}")
    errors = [(p.name, lv) for p in phases for lv in p.levels if lv.errors]
    for name, level in errors:
        print(
            f"\n{name} {level.protocol} c={level.concurrency}: {level.errors} failed requests, "
            f"first: {level.first_error}"
        )
    print("\nratios (served and raw measured in this run)")
    print("\n".join(ratio_lines(r, options.model)))
    if warnings:
        print("\nWARNING: the machine was not quiet; the figures understate what tierserve can do:")
        print("\n".join(f"  {line}" for line in warnings))


def write_json(
    options: Options,
    raw: dict[int, RawFigures],
    phases: list[PhaseFigures],
    r: Ratios,
    background: CpuUse,
    warnings: list[str],
) -> None:
    document: dict[str, Any] = {
        "model": options.model,
        "tokens": options.tokens,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "protocols": list(options.protocols),
        "machine": {
            "cpu_count": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "background_load": dataclasses.asdict(background),
            "load_average_at_end": os.getloadavg(),
        },
        "onnxruntime": ort.__version__,
        "raw": [dataclasses.asdict(fig) for fig in raw.values()],
        "served": [dataclasses.asdict(phase) for phase in phases],
        "ratios": dataclasses.asdict(r),
        "noise_warnings": warnings,
        "targets": {
            "pinned_c32_over_1_thread_limit": TARGET_PINNED_RATIO,
            "unpinned_c32_over_2_thread_limit": TARGET_UNPINNED_RATIO,
            "c1_p50_minus_raw_batch1_p50_ms": TARGET_OVERHEAD_MS,
            "grpc_over_rest": TARGET_GRPC_OVER_REST.get(options.model, 1.0),
        },
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")
    print(f"\nwrote {options.out}")


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    exit_on_termination()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("this benchmark needs at least 2 cores (pinned server and client)", file=sys.stderr)
        return 2
    first, pair = cores[:1], cores[:2]
    background = background_load()
    print(f"load average {os.getloadavg()[0]:.2f}")
    if background.other > NOISE_CORES:
        print(f"warning: other processes are using {background.other:.2f} cores; figures will be low")
    model = model_info(model_file(options.model_repository, options.model), options.tokens)
    raw_seconds = max(0.5, options.duration_s / 10)
    print(f"raw ONNX Runtime on {model.path} ...", flush=True)
    raw = {
        threads: quietest(
            functools.partial(measure_raw, model, threads, on, options.tokens, raw_seconds),
            lambda fig: fig.cpu,
            options.retry_noisy,
        )
        for threads, on in ((1, first), (2, pair))
    }
    try:
        phases = [
            measure_phase("pinned", first, pair[1:], model, options),
            measure_phase("unpinned", pair, pair, model, options),
        ]
    except RuntimeError as exc:  # the server did not start or did not load the model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    r = ratios(raw, phases, options.protocols)
    warnings = noise_warnings(background, raw.values(), phases)
    report(options, raw, phases, r, warnings)
    write_json(options, raw, phases, r, background, warnings)
    return 1 if any(level.errors for phase in phases for level in phase.levels) else 0


if __name__ == "__main__":
    sys.exit(main())
