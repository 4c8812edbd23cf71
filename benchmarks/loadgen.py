"""What the benchmark scripts share: a load generator for REST (a minimal HTTP/1.1 client) and gRPC
(ModelInfer over grpc.aio), closed-loop workers and their request log, a ``tierserve serve``
subprocess pinned with ``taskset``, CPU accounting from /proc (server, its event loop, client, the
rest of the machine, steal), raw ONNX Runtime sessions configured as the server's, and Prometheus
histogram parsing. ``serving.py`` is the main user; ``tiers.py``, ``routing.py``, ``jobs.py`` and
``cache.py`` reuse it.

Example::

    model = model_info(model_file(repo, "simple"), tokens=32)
    raw = infer_request("simple", model.feeds(32, 1))
    with tierserve_server(repo, "simple", [0], log_path) as server:
        response = await HttpConnection(server.port).request(raw)
"""

from __future__ import annotations

import asyncio
import contextlib
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


CLS_ID, SEP_ID = 101, 102


REQUEST_TIMEOUT_S = 30.0


ERROR_BACKOFF_S = 0.01


READY_TIMEOUT_S = 120.0


STOP_TIMEOUT_S = 35.0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


NOISE_CORES = 0.1  # more than this from other processes (or steal) in a window makes it suspect


Feeds = dict[str, np.ndarray]


T = TypeVar("T")


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
                    "datatype": datatype_of(array),
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": array.nbytes},
                }
                for name, array in feeds.items()
            ],
            "parameters": {"binary_data_output": True, **(parameters or {})},
        }
    )
    body = header + b"".join(little_endian(array) for array in feeds.values())
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\n"
        f"Host: {HOST}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


_DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}  # fmt: skip


def datatype_of(array: np.ndarray) -> str:
    return _DATATYPES[array.dtype.name]


def little_endian(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode("ascii")


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


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    inputs: list[str]
    output_bytes: dict[str, int]  # per output, for one request: what every response must carry
    input_specs: dict[str, tuple[np.dtype[Any], tuple[int | None, ...]]] = field(default_factory=dict)

    def feeds(self, tokens: int, batch: int) -> Feeds:
        """One request's inputs, ``batch`` rows: a sentence for text encoders (token id inputs),
        zeros of the declared shape (free dimensions: ``batch`` first, then 1) for other models."""
        return model_feeds(self.inputs, self.input_specs, tokens, batch)


TOKEN_INPUTS = {"input_ids", "attention_mask", "token_type_ids"}
_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
              "tensor(double)": np.float64, "tensor(float16)": np.float16, "tensor(bool)": np.bool_,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}  # fmt: skip


def model_feeds(
    names: list[str], specs: dict[str, tuple[np.dtype[Any], tuple[int | None, ...]]], tokens: int, batch: int
) -> Feeds:
    if not specs or set(names) <= TOKEN_INPUTS:
        return sentence_feeds(names, tokens, batch)
    feeds: Feeds = {}
    for name in names:
        dtype, shape = specs[name]
        dims = [batch if i == 0 and d is None else (1 if d is None else d) for i, d in enumerate(shape)]
        feeds[name] = np.zeros(dims, dtype=dtype)
    return feeds


def model_info(path: Path, tokens: int) -> ModelInfo:
    session = server_like_session(path, 1)
    specs = {
        arg.name: (
            np.dtype(_ORT_TYPES[arg.type]),
            tuple(d if isinstance(d, int) else None for d in arg.shape),
        )
        for arg in session.get_inputs()
    }
    inputs = list(specs)
    outputs = [arg.name for arg in session.get_outputs()]
    results = session.run(outputs, model_feeds(inputs, specs, tokens, 1))
    return ModelInfo(path, inputs, {name: a.nbytes for name, a in zip(outputs, results, strict=True)}, specs)


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


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run on uvloop when it is installed (cheaper per request), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def exit_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so that the server is stopped on the way out."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


# -- gRPC client -------------------------------------------------------------------------------

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def grpc_infer_request(model: str, feeds: Feeds) -> bytes:
    """A serialised ``ModelInferRequest``: raw input contents in feed order (what tritonclient.grpc
    and perf_analyzer send)."""
    from tierserve.grpc_api import messages

    message = messages.ModelInferRequest(model_name=model)
    for name, array in feeds.items():
        message.inputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
        message.raw_input_contents.append(little_endian(array))
    data: bytes = message.SerializeToString()
    return data


def grpc_response_problem(body: bytes, sizes: dict[str, int]) -> str | None:
    """Why ``body`` is not a valid ``ModelInferResponse`` with these output sizes, or None."""
    from tierserve.grpc_api import messages

    response = messages.ModelInferResponse.FromString(body)
    got = {
        out.name: len(raw) for out, raw in zip(response.outputs, response.raw_output_contents, strict=False)
    }
    if got != sizes:
        return f"raw output sizes {got}, expected {sizes}"
    return None


class GrpcConnection:
    """One HTTP/2 connection of its own (a channel with a local subchannel pool) that sends
    pre-encoded ``ModelInfer`` requests and returns the response bytes."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._channel: Any = None
        self._call: Any = None

    async def infer(self, raw: bytes) -> bytes:
        if self._channel is None:
            import grpc

            self._channel = grpc.aio.insecure_channel(
                f"{HOST}:{self._port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            self._call = self._channel.unary_unary(GRPC_INFER)
        body: bytes = await self._call(raw, timeout=REQUEST_TIMEOUT_S)
        return body

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


def grpc_errors() -> tuple[type[BaseException], ...]:
    import grpc

    return (*CLIENT_ERRORS, grpc.aio.AioRpcError)


async def grpc_closed_loop_worker(
    connection: GrpcConnection, raw: bytes, sizes: dict[str, int], stop_at: float, log: RequestLog
) -> None:
    """``closed_loop_worker`` over gRPC."""
    errors = grpc_errors()
    while (started := time.perf_counter()) < stop_at:
        try:
            problem = grpc_response_problem(await connection.infer(raw), sizes)
        except errors as exc:
            problem = f"{type(exc).__name__}: {str(exc)[:300]}"
        log.add(started, time.perf_counter(), problem)
        if problem is not None:
            await asyncio.sleep(ERROR_BACKOFF_S)
