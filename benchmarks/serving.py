"""How close does ``tierserve serve`` come to what ONNX Runtime alone can do on the same cores?

Run::

    .venv/bin/python benchmarks/serving.py --model-repository models [--duration 10] \
        [--model all-minilm-l6-v2] [--tokens 32] [--out benchmarks/results/serving.json] \
        [--retry-noisy N]

These are figures, not a pass/fail test. The run has three parts.

1. **Raw ONNX Runtime**, in this process, on the model file the server loads, with the server's
   session options (ORT_ENABLE_ALL, sequential, no spinning). For 1 intra-op thread (this process
   pinned to the first core) and for 2 threads (free on the first two cores) it measures batch-1
   latency (p50 of every call in its window) and items/s at batch sizes 1, 2, 4, 8, 16 and 32, each
   after a short warm-up. The best items/s over batch sizes is that thread count's *limit*: no server
   on those cores can beat it by more than noise.

2. **Served**: a ``tierserve serve`` subprocess on a free port, loaded by a closed-loop asyncio
   client, at concurrency 1, 8 and 32. Each worker owns one keep-alive HTTP/1.1 connection and sends
   one sentence of exactly ``--tokens`` tokens (batch dimension 1) with Triton's binary tensor
   extension, asking for binary outputs; every response is checked (status 200, binary output of
   the size the raw run produced) and failures are counted. Each level warms up before its measured
   window. Twice:

   - *pinned*: the server under ``taskset -c <core 0>`` (so ONNX Runtime gets 1 thread and shares that
     core with the HTTP loop), the client on core 1;
   - *unpinned*: server and client both free on both cores (the server picks 2 threads).

   The client is a minimal HTTP/1.1 client over ``asyncio`` streams (uvloop when installed) that
   sends a pre-encoded request, so its cost per request is small next to the model's.

3. **Report**: a table, three ratios and a JSON file with every figure:

   - pinned c=32 served / 1-thread limit (target >= 0.95): the cost of HTTP, decoding and batching
     when they share the one core with inference;
   - unpinned c=32 served / 2-thread limit (target >= 0.85): the same with two cores to share;
   - pinned c=1 p50 - raw batch-1 p50 (target <= 1 ms): per-request overhead added to latency.

How to read the served columns (server-side ones come from the server's ``/metrics`` and
``/proc``, over the measured window):

- ``batch``: mean rows per executed batch; the histogram below the table gives the sizes.
- ``busy``: fraction of the window spent inside ONNX Runtime. At c=32, busy near 1.0 with a low ratio
  means the batches themselves ran slower than raw (smaller batches, or the event loop taking the core
  mid-batch); busy well below 1.0 means requests waited on Python rather than on the model.
- ``inf ms``: mean time of one batch in ONNX Runtime; ``queue ms``: mean wait for a batch to start.
- ``http ms``: mean latency seen by the client minus the mean time in the server's engine
  (``tierserve_request_duration_seconds``): HTTP, routing, decoding and encoding on both ends.
- ``loop ms``: CPU time of the server's event-loop thread per request. On one core every such
  millisecond is taken from inference, so at best ``pinned ratio = 1 / (1 + limit * loop ms / 1000)``.
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
import contextlib
import dataclasses
import functools
import gc
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
import orjson

HOST = "127.0.0.1"
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
CONCURRENCIES = (1, 8, 32)
TARGET_PINNED_RATIO = 0.95
TARGET_UNPINNED_RATIO = 0.85
TARGET_OVERHEAD_MS = 1.0
CLS_ID, SEP_ID = 101, 102
REQUEST_TIMEOUT_S = 30.0
ERROR_BACKOFF_S = 0.01
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 35.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOISE_CORES = 0.1  # more than this from other processes (or steal) in a window makes it suspect

Feeds = dict[str, np.ndarray]
T = TypeVar("T")


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
    args = parser.parse_args(argv)
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
    )


# -- model and request -------------------------------------------------------------------------


def model_file(repository: Path, model: str) -> Path:
    """The newest version's model.onnx: the one the server serves by default."""
    if not (repository / model).is_dir():
        raise SystemExit(f"no model {model!r} in {repository}")
    versions = [
        int(entry.name)
        for entry in (repository / model).iterdir()
        if entry.name.isdigit() and (entry / "model.onnx").is_file()
    ]
    if not versions:
        raise SystemExit(f"no <version>/model.onnx under {repository / model}")
    return repository / model / str(max(versions)) / "model.onnx"


def sentence_feeds(input_names: Iterable[str], tokens: int, batch: int) -> Feeds:
    """``batch`` copies of one sentence of ``tokens`` tokens: [CLS] words [SEP], nothing padded."""
    words = [1000 + (i * 7919) % 20000 for i in range(tokens - 2)]  # fixed, arbitrary vocabulary ids
    ids = np.tile(np.array([CLS_ID, *words, SEP_ID], dtype=np.int64), (batch, 1))
    values = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {name: values.get(name, ids) for name in input_names}


def infer_request(model: str, feeds: Feeds, parameters: dict[str, Any] | None = None) -> bytes:
    """A complete HTTP/1.1 request: binary inputs in feed order, binary outputs asked for; any
    ``parameters`` (e.g. ``{"tier": "gold"}``) join the request's."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "INT64",
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": array.nbytes},
                }
                for name, array in feeds.items()
            ],
            "parameters": {"binary_data_output": True, **(parameters or {})},
        }
    )
    body = header + b"".join(array.astype("<i8").tobytes() for array in feeds.values())
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\n"
        f"Host: {HOST}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode("ascii")


# -- CPU accounting: who used the cores during a window ----------------------------------------


@dataclass(frozen=True)
class CpuSample:
    wall: float
    busy_ticks: int  # all CPUs of the machine, not idle
    steal_ticks: int  # taken by the hypervisor
    server_ticks: int
    server_loop_ticks: int  # the server's main thread: the event loop (HTTP, decoding, encoding)
    client_ticks: int  # this process


def process_ticks(pid: int | str, thread: int | None = None) -> int:
    """User + system clock ticks of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_sample(server_pid: int | None = None) -> CpuSample:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return CpuSample(
        time.perf_counter(),
        user + nice + system + irq + softirq,
        steal,
        0 if server_pid is None else process_ticks(server_pid),
        0 if server_pid is None else process_ticks(server_pid, thread=server_pid),
        process_ticks("self"),
    )


@dataclass
class CpuUse:
    """Cores used on average over a window; ``other`` is every process but server and client."""

    server: float
    server_loop: float  # part of ``server``: its event loop thread; the rest is mostly inference
    client: float
    other: float
    steal: float


def cpu_use(before: CpuSample, after: CpuSample) -> CpuUse:
    def cores(ticks: int) -> float:
        return ticks / CLOCK_TICKS / (after.wall - before.wall)

    server = after.server_ticks - before.server_ticks
    client = after.client_ticks - before.client_ticks
    other = after.busy_ticks - before.busy_ticks - server - client
    steal = after.steal_ticks - before.steal_ticks
    loop = after.server_loop_ticks - before.server_loop_ticks
    return CpuUse(cores(server), cores(loop), cores(client), max(0.0, cores(other)), cores(steal))


def background_load(seconds: float = 1.0) -> CpuUse:
    """What the machine does without us: should be about 0 for trustworthy figures."""
    before = cpu_sample()
    time.sleep(seconds)
    return cpu_use(before, cpu_sample())


def noise(cpu: CpuUse) -> float:
    """Cores taken from the measured processes by everything else."""
    return cpu.other + cpu.steal


def quietest(measure: Callable[[], T], cpu_of: Callable[[T], CpuUse], retries: int) -> T:
    """``measure()``, repeated up to ``retries`` times while its window was noisy; the quietest result."""
    results = [measure()]
    while noise(cpu_of(results[-1])) > NOISE_CORES and len(results) <= retries:
        print(f"  noisy window ({noise(cpu_of(results[-1])):.2f} cores elsewhere), measuring again")
        results.append(measure())
    return min(results, key=lambda result: noise(cpu_of(result)))


async def quietest_async(
    measure: Callable[[], Awaitable[T]], cpu_of: Callable[[T], CpuUse], retries: int
) -> T:
    """``quietest`` for a coroutine function."""
    results = [await measure()]
    while noise(cpu_of(results[-1])) > NOISE_CORES and len(results) <= retries:
        print(f"  noisy window ({noise(cpu_of(results[-1])):.2f} cores elsewhere), measuring again")
        results.append(await measure())
    return min(results, key=lambda result: noise(cpu_of(result)))


# -- raw ONNX Runtime --------------------------------------------------------------------------


@dataclass
class RawFigures:
    threads: int
    cores: list[int]
    batch1_p50_ms: float
    items_per_s: dict[int, float]
    limit_items_per_s: float
    cpu: CpuUse  # ``client`` is this process, running ONNX Runtime


@contextlib.contextmanager
def cpu_affinity(cores: Iterable[int]) -> Iterator[None]:
    """Pin the calling thread (and the threads it starts) to ``cores`` for the block."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cores))
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def server_like_session(path: Path, threads: int) -> ort.InferenceSession:
    """A session with the options ``tierserve.backends.onnx`` uses."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def call_durations(session: ort.InferenceSession, feeds: Feeds, seconds: float) -> list[float]:
    """Seconds per ``session.run``, for as many calls as fit in ``seconds`` (after a warm-up)."""
    warm_until = time.perf_counter() + min(0.3, seconds / 4)
    while time.perf_counter() < warm_until:
        session.run(None, feeds)
    durations: list[float] = []
    end = time.perf_counter() + seconds
    while (started := time.perf_counter()) < end:
        session.run(None, feeds)
        durations.append(time.perf_counter() - started)
    return durations


def measure_raw(path: Path, threads: int, cores: list[int], tokens: int, seconds: float) -> RawFigures:
    with cpu_affinity(cores):  # set before the session exists, so its pool threads inherit it
        session = server_like_session(path, threads)
        before = cpu_sample()
        batch1_p50_ms, items_per_s = sweep_batch_sizes(session, tokens, seconds)
        after = cpu_sample()
        del session  # its threads go with it, before the served phases start
        gc.collect()
    limit = max(items_per_s.values())
    return RawFigures(threads, cores, batch1_p50_ms, items_per_s, limit, cpu_use(before, after))


def sweep_batch_sizes(
    session: ort.InferenceSession, tokens: int, seconds: float
) -> tuple[float, dict[int, float]]:
    """Batch-1 p50 latency in ms, and items/s for each batch size."""
    names = [arg.name for arg in session.get_inputs()]
    items_per_s: dict[int, float] = {}
    batch1_p50_ms = math.nan
    for batch in BATCH_SIZES:
        window = seconds * 2 if batch == 1 else seconds  # batch 1 also gives the latency samples
        durations = call_durations(session, sentence_feeds(names, tokens, batch), window)
        items_per_s[batch] = batch * len(durations) / sum(durations)
        if batch == 1:
            batch1_p50_ms = float(np.percentile(durations, 50)) * 1000
    return batch1_p50_ms, items_per_s


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    inputs: list[str]
    output_bytes: dict[str, int]  # per output, for one sentence: what every response must carry


def model_info(path: Path, tokens: int) -> ModelInfo:
    session = server_like_session(path, 1)
    inputs = [arg.name for arg in session.get_inputs()]
    outputs = [arg.name for arg in session.get_outputs()]
    results = session.run(outputs, sentence_feeds(inputs, tokens, 1))
    return ModelInfo(path, inputs, {name: a.nbytes for name, a in zip(outputs, results, strict=True)})


# -- minimal HTTP/1.1 client -------------------------------------------------------------------


class ProtocolError(Exception):
    """The server's response is not one this client can read."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class HttpConnection:
    """One keep-alive connection; requests are pre-encoded bytes, responses need Content-Length."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> HttpResponse:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self._port)
        self._writer.write(raw)
        await self._writer.drain()
        status, headers = parse_head(await self._reader.readuntil(b"\r\n\r\n"))
        if "content-length" not in headers:
            raise ProtocolError("response without Content-Length")
        body = await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpResponse(status, headers, body)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {status_line!r}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def response_problem(response: HttpResponse, sizes: dict[str, int]) -> str | None:
    """Why ``response`` is not a valid binary inference answer, or None when it is."""
    if response.status != 200:
        return f"HTTP {response.status}: {response.body[:200]!r}"
    header_length = response.headers.get("inference-header-content-length")
    if header_length is None:
        return "outputs are not binary (no Inference-Header-Content-Length)"
    try:
        length = int(header_length)
        outputs = orjson.loads(response.body[:length])["outputs"]
        got = {out["name"]: out.get("parameters", {}).get("binary_data_size") for out in outputs}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable response header ({type(exc).__name__}: {exc}): {response.body[:200]!r}"
    if got != sizes or len(response.body) - length != sum(sizes.values()):
        return f"binary output sizes {got} (body {len(response.body) - length} bytes), expected {sizes}"
    return None


# -- load generation ---------------------------------------------------------------------------

CLIENT_ERRORS = (OSError, EOFError, ValueError, TimeoutError, ProtocolError, asyncio.LimitOverrunError)


@dataclass
class RequestLog:
    ended: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def add(self, started: float, ended: float, problem: str | None) -> None:
        if problem is None:
            self.ended.append(ended)
            self.latencies.append(ended - started)
            return
        self.errors += 1
        self.first_error = self.first_error or problem

    def window(self, start: float, end: float) -> list[float]:
        """Latencies of the successful requests that finished inside [start, end]."""
        return [lat for done, lat in zip(self.ended, self.latencies, strict=True) if start <= done <= end]


async def closed_loop_worker(
    connection: HttpConnection, raw: bytes, sizes: dict[str, int], stop_at: float, log: RequestLog
) -> None:
    """Send, wait for the answer, repeat until ``stop_at``: one request in flight at a time."""
    while (started := time.perf_counter()) < stop_at:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                problem = response_problem(await connection.request(raw), sizes)
        except CLIENT_ERRORS as exc:
            await connection.close()
            problem = f"{type(exc).__name__}: {exc}"
        log.add(started, time.perf_counter(), problem)
        if problem is not None:
            await asyncio.sleep(ERROR_BACKOFF_S)


# -- server process and its metrics -----------------------------------------------------------


@dataclass(frozen=True)
class Server:
    pid: int
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def tierserve_server(
    repository: Path, model: str, cores: list[int], log_path: Path, extra_args: Sequence[str] = ()
) -> Iterator[Server]:
    """``tierserve serve`` under ``taskset`` on ``cores``; stopped on the way out, whatever happens."""
    port = free_port()
    command = ["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-m", "tierserve.cli", "serve"]
    command += ["--model-repository", str(repository), "--host", HOST, "--port", str(port), *extra_args]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    state = tempfile.TemporaryDirectory(prefix="tierserve-bench-")  # its job store, thrown away after
    env = {**os.environ, "TIERSERVE_STATE_DIR": state.name}
    with log_path.open("wb") as log:
        process = subprocess.Popen([*command, "--log-level", "warning"], stdout=log, stderr=log, env=env)
    try:
        wait_until_ready(process, port, log_path)
        if not answers_200(port, f"/v2/models/{model}/ready"):
            raise RuntimeError(f"model {model!r} is not ready on the server:\n{log_tail(log_path)}")
        yield Server(process.pid, port)
    finally:
        stop_process(process)
        state.cleanup()


def wait_until_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_tail(log_path)}")
        if answers_200(port, "/v2/health/ready"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S:.0f} s:\n{log_tail(log_path)}")


def answers_200(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:  # refused while starting; HTTPError (4xx, 5xx) otherwise
        return False


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class Histogram:
    buckets: dict[float, float]  # upper bound -> cumulative count
    total: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.total - earlier.total,
            self.count - earlier.count,
        )


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_histogram(text: str, family: str, model: str) -> Histogram:
    """One model's series of a Prometheus histogram family (all versions summed)."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for name, labels_text, value in _samples(text):
        labels = dict(_LABEL.findall(labels_text))
        if labels.get("model") != model:
            continue
        if name == f"{family}_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + float(value)
        elif name == f"{family}_sum":
            total += float(value)
        elif name == f"{family}_count":
            count += float(value)
    return Histogram(buckets, total, count)


def _samples(text: str) -> Iterator[tuple[str, str, str]]:
    for line in text.splitlines():
        if (match := _SAMPLE.match(line)) is not None:
            yield match.group(1), match.group(2), match.group(3)


def batch_size_counts(histogram: Histogram) -> dict[str, int]:
    """Batches per size range ("1", "2", "3-4", ...) from a cumulative histogram; empty ranges left out."""
    counts: dict[str, int] = {}
    below, below_count = 0, 0.0
    for le in sorted(histogram.buckets):
        n = histogram.buckets[le] - below_count
        if math.isinf(le):
            label = f">{below}"
        else:
            label = str(int(le)) if int(le) == below + 1 else f"{below + 1}-{int(le)}"
        if n > 0:
            counts[label] = round(n)
        below, below_count = (below if math.isinf(le) else int(le)), histogram.buckets[le]
    return counts


# -- one concurrency level ---------------------------------------------------------------------


@dataclass
class LevelFigures:
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
    batch_sizes: dict[str, int]
    cpu: CpuUse
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


async def run_level(
    server: Server, concurrency: int, raw: bytes, sizes: dict[str, int], options: Options
) -> LevelFigures:
    connections = [HttpConnection(server.port) for _ in range(concurrency)]
    log = RequestLog()
    measure_from = time.perf_counter() + options.warmup_s
    stop_at = measure_from + options.duration_s
    tasks = [
        asyncio.create_task(closed_loop_worker(connection, raw, sizes, stop_at, log))
        for connection in connections
    ]
    try:
        await sleep_until(measure_from)
        before = await snapshot(server)
        await sleep_until(stop_at)
        after = await snapshot(server)
    finally:
        await finish(tasks)
        for connection in connections:
            await connection.close()
    return level_figures(concurrency, log, before, after, options.model)


def level_figures(
    concurrency: int, log: RequestLog, before: Snapshot, after: Snapshot, model: str
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
    return LevelFigures(
        concurrency=concurrency,
        requests=len(latencies),
        errors=log.errors,
        items_per_s=len(latencies) / seconds,
        p50_ms=float(p50),
        p99_ms=float(p99),
        mean_ms=float(np.mean(latencies)) * 1000 if latencies else math.nan,
        engine_ms=ratio(engine.total, engine.count) * 1000,
        mean_batch=ratio(batches.total, batches.count),
        busy=inference.total / seconds,
        mean_inference_ms=ratio(inference.total, inference.count) * 1000,
        mean_queue_ms=ratio(queue.total, queue.count) * 1000,
        loop_ms_per_request=ratio(cpu.server_loop, len(latencies) / seconds) * 1000,
        batch_sizes=batch_size_counts(batches),
        cpu=cpu,
        first_error=log.first_error,
    )


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# -- one phase: a server, three levels ---------------------------------------------------------


@dataclass
class PhaseFigures:
    name: str
    server_cores: list[int]
    client_cores: list[int]
    levels: list[LevelFigures]

    def level(self, concurrency: int) -> LevelFigures:
        return next(level for level in self.levels if level.concurrency == concurrency)


def run_async(main: Callable[[], Coroutine[Any, Any, PhaseFigures]]) -> PhaseFigures:
    """Run on uvloop when it is installed (cheaper per request), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def measure_phase(
    name: str, server_cores: list[int], client_cores: list[int], model: ModelInfo, options: Options
) -> PhaseFigures:
    print(f"served, {name}: server on cores {server_cores}, client on {client_cores} ...", flush=True)
    raw = infer_request(options.model, sentence_feeds(model.inputs, options.tokens, 1))
    sizes = model.output_bytes
    log_path = options.out.with_name(f"{options.out.stem}-server-{name}.log")

    async def levels(server: Server) -> PhaseFigures:
        figures = []
        for concurrency in CONCURRENCIES:
            figures.append(
                await quietest_async(
                    functools.partial(run_level, server, concurrency, raw, sizes, options),
                    lambda level: level.cpu,
                    options.retry_noisy,
                )
            )
            print(f"  {row(name, figures[-1])}", flush=True)
        return PhaseFigures(name, server_cores, client_cores, figures)

    with (
        tierserve_server(options.model_repository, options.model, server_cores, log_path) as server,
        cpu_affinity(client_cores),
    ):
        return run_async(lambda: levels(server))


# -- report ------------------------------------------------------------------------------------


@dataclass
class Ratios:
    pinned_c32_over_1_thread_limit: float
    unpinned_c32_over_2_thread_limit: float
    pinned_c1_p50_minus_raw_batch1_p50_ms: float


def ratios(raw: dict[int, RawFigures], pinned: PhaseFigures, unpinned: PhaseFigures) -> Ratios:
    return Ratios(
        pinned.level(32).items_per_s / raw[1].limit_items_per_s,
        unpinned.level(32).items_per_s / raw[2].limit_items_per_s,
        pinned.level(1).p50_ms - raw[1].batch1_p50_ms,
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
    f"{'phase':<8} {'c':>3} {'items/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
    f"{'batch':>5} {'busy':>5} {'inf ms':>7} {'queue ms':>8} {'http ms':>7} {'loop ms':>7}  "
    "cpu server/client/other/steal"
)


def row(phase: str, level: LevelFigures) -> str:
    cpu = level.cpu
    return (
        f"{phase:<8} {level.concurrency:>3} {level.items_per_s:8.1f} {level.p50_ms:7.2f} "
        f"{level.p99_ms:7.2f} {level.errors:>6} {level.mean_batch:5.1f} {level.busy:5.2f} "
        f"{level.mean_inference_ms:7.2f} {level.mean_queue_ms:8.2f} {level.mean_ms - level.engine_ms:7.2f} "
        f"{level.loop_ms_per_request:7.2f}  "
        f"{cpu.server:.2f}/{cpu.client:.2f}/{cpu.other:.2f}/{cpu.steal:.2f}"
    )


def ratio_lines(r: Ratios) -> list[str]:
    def verdict(ok: bool) -> str:
        return "meets target" if ok else "BELOW TARGET"

    return [
        f"pinned c=32 / 1-thread limit        {r.pinned_c32_over_1_thread_limit:6.3f}  (target >= "
        f"{TARGET_PINNED_RATIO})  {verdict(r.pinned_c32_over_1_thread_limit >= TARGET_PINNED_RATIO)}",
        f"unpinned c=32 / 2-thread limit      {r.unpinned_c32_over_2_thread_limit:6.3f}  (target >= "
        f"{TARGET_UNPINNED_RATIO})  {verdict(r.unpinned_c32_over_2_thread_limit >= TARGET_UNPINNED_RATIO)}",
        f"pinned c=1 p50 - raw b=1 p50 (ms)   {r.pinned_c1_p50_minus_raw_batch1_p50_ms:6.3f}  (target <= "
        f"{TARGET_OVERHEAD_MS})  {verdict(r.pinned_c1_p50_minus_raw_batch1_p50_ms <= TARGET_OVERHEAD_MS)}",
    ]


def noise_warnings(background: CpuUse, raw: Iterable[RawFigures], phases: list[PhaseFigures]) -> list[str]:
    """One line per window in which other processes or the hypervisor took a noticeable share."""
    windows = [("before the run", background)]
    windows += [(f"raw {fig.threads}-thread", fig.cpu) for fig in raw]
    windows += [(f"{p.name} c={lv.concurrency}", lv.cpu) for p in phases for lv in p.levels]
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
    print("\nserved (1 sentence per request, binary in and out)")
    print(SERVED_HEADER)
    for phase in phases:
        print("\n".join(row(phase.name, level) for level in phase.levels))
    print("\nbatch sizes executed in each window (rows: batches)")
    for phase in phases:
        for level in phase.levels:
            sizes = "  ".join(f"{size}: {n}" for size, n in level.batch_sizes.items())
            print(f"{phase.name:<8} c={level.concurrency:<3} {sizes}")
    errors = [(p.name, lv) for p in phases for lv in p.levels if lv.errors]
    for name, level in errors:
        print(f"\n{name} c={level.concurrency}: {level.errors} failed requests, first: {level.first_error}")
    print("\nratios")
    print("\n".join(ratio_lines(r)))
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
        "machine": {
            "cpu_count": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "background_load": dataclasses.asdict(background),
        },
        "onnxruntime": ort.__version__,
        "raw": [dataclasses.asdict(fig) for fig in raw.values()],
        "served": [dataclasses.asdict(phase) for phase in phases],
        "ratios": dataclasses.asdict(r),
        "noise_warnings": warnings,
        "targets": {
            "pinned_c32_over_1_thread_limit": TARGET_PINNED_RATIO,
            "unpinned_c32_over_2_thread_limit": TARGET_UNPINNED_RATIO,
            "pinned_c1_p50_minus_raw_batch1_p50_ms": TARGET_OVERHEAD_MS,
        },
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")
    print(f"\nwrote {options.out}")


# -- main --------------------------------------------------------------------------------------


def exit_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so that the server is stopped on the way out."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    exit_on_termination()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("this benchmark needs at least 2 cores (pinned server and client)", file=sys.stderr)
        return 2
    first, pair = cores[:1], cores[:2]
    background = background_load()
    if background.other > NOISE_CORES:
        print(f"warning: other processes are using {background.other:.2f} cores; figures will be low")
    model = model_info(model_file(options.model_repository, options.model), options.tokens)
    path = model.path
    raw_seconds = max(0.5, options.duration_s / 10)
    print(f"raw ONNX Runtime on {path} ...", flush=True)
    raw = {
        threads: quietest(
            functools.partial(measure_raw, path, threads, on, options.tokens, raw_seconds),
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
    r = ratios(raw, phases[0], phases[1])
    warnings = noise_warnings(background, raw.values(), phases)
    report(options, raw, phases, r, warnings)
    write_json(options, raw, phases, r, background, warnings)
    return 1 if any(level.errors for phase in phases for level in phase.levels) else 0


if __name__ == "__main__":
    sys.exit(main())
