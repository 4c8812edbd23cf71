"""What the result cache buys on all-MiniLM-L6-v2, and what it costs when it does not hit.

Run::

    .venv/bin/python benchmarks/cache.py --model-repository models [--duration 8] [--rounds 3] \
        [--tokens 32] [--concurrency 32] [--out benchmarks/results/cache.json]

Figures, not a pass/fail test. One ``tierserve serve`` pinned to the first core (one ONNX Runtime
replica, one thread) serves three copies of the same model file, differing only in ``cache:``:

- ``minilm``: no cache (the baseline);
- ``minilm_cached``: ``cache: {tiers: [local, redis]}``;
- ``minilm_local``: ``cache: {tiers: [local]}`` (measured at 0 % hits only: the miss path without Redis);
- ``minilm_l2``: ``cache: {tiers: [redis]}`` (every hit comes from Redis: its latency alone).

Redis (``scripts/redis.sh start``) and this client are pinned to the second core, so the load
generator does not take the server's core (its own CPU use is printed). Each closed-loop worker
keeps one keep-alive connection and sends one sentence of ``--tokens`` tokens with binary tensors.

1. **Throughput at 0, 50, 90, 100 % hits**: a request is *hot* (one of 64 sentences sent once
   before the window, so cached) or *cold* (a sentence never sent before), in exact proportion.
   The same request stream goes to ``minilm`` and to ``minilm_cached``, back to back, ``--rounds``
   times; the table gives the median items/s of each and their ratio, and the same per second of
   CPU the server got (steadier on a shared machine). The hit ratio actually seen
   comes from the server's ``tierserve_cache_lookups_total``. Targets: >= 8x at 100 %, and at 0 %
   the cached model within 3 % of the uncached one.
2. **Server-side hit latency**: ``tierserve_cache_hit_duration_seconds`` (arrival at the engine to
   the response object, per layer) over 100 %-hit windows at concurrency 1 and ``--concurrency``:
   p50/p99 interpolated in the histogram's buckets, and the share of hits within the targets
   (local <= 0.5 ms, redis <= 2 ms), which is exact at the bucket bounds 0.0005 and 0.002.
3. **Single flight**: 10 connections send one new sentence at the same moment; the inferences run
   (``inference_count``) should be 1.
4. **Stale answers after a version swap under load**: 16 workers loop over 16 cached sentences of
   ``minilm_cached`` while its version 1 is replaced by a model that answers 7.0 everywhere and
   reloaded (``POST /v2/repository/models/minilm_cached/load``). Every answer to a request sent
   after the load returned must be the new model's; the old model's answers then are *stale*
   (target 0).

The machine's load average (``uptime``) and the cores used by the server, the client and every
other process are recorded with every window: on a shared machine the absolute figures move, the
ratios (measured back to back in the same run) much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from loadgen import (
    CLIENT_ERRORS,
    REQUEST_TIMEOUT_S,
    CpuUse,
    HttpConnection,
    HttpResponse,
    Server,
    cpu_sample,
    cpu_use,
    get_request,
    infer_request,
    model_file,
    parse_histogram,
    response_problem,
    run_async,
    sentence_feeds,
    tierserve_server,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "minilm": "",
    "minilm_cached": "cache: {tiers: [local, redis]}\n",
    "minilm_local": "cache: {tiers: [local]}\n",
    "minilm_l2": "cache: {tiers: [redis]}\n",
}
HIT_RATIOS = (0.0, 0.5, 0.9, 1.0)
HOT_SENTENCES = 64
EMBEDDING = 384
SIZES = {"sentence_embedding": EMBEDDING * 4}
NEW_VALUE = 7.0  # what the swapped-in model answers
TARGETS = {"speedup_at_100": 8.0, "overhead_at_0": 0.03, "local_p99_ms": 0.5, "redis_p99_ms": 2.0}


@dataclass(frozen=True)
class Options:
    model_repository: Path
    tokens: int
    duration_s: float
    warmup_s: float
    rounds: int
    concurrency: int
    out: Path


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True, help="holds all-minilm-l6-v2")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per sentence")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per window")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds before each window")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of the throughput comparison")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop workers")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cache.json"))
    a = parser.parse_args(argv)
    return Options(a.model_repository, a.tokens, a.duration, a.warmup, a.rounds, a.concurrency, a.out)


# -- requests ----------------------------------------------------------------------------------


def sentence(index: int, tokens: int, model: str) -> bytes:
    """A request for sentence ``index`` (distinct indexes: distinct token ids, so distinct keys)."""
    feeds = sentence_feeds(["input_ids", "attention_mask"], tokens, 1)
    ids = feeds["input_ids"]
    ids[0, 1:-1] = 1000 + (np.arange(tokens - 2) * 104729 + index * 7919) % 28000
    # The first words spell ``index`` in base 20,000: distinct for any index below 20,000 ** 4.
    for place in range(min(4, tokens - 2)):
        ids[0, 1 + place] = 1000 + (index // 20_000**place) % 20_000
    return infer_request(model, {"input_ids": ids, "attention_mask": feeds["attention_mask"]})


class Stream:
    """Hot and cold requests in an exact proportion, shared by the workers of one window."""

    def __init__(self, model: str, hit_ratio: float, tokens: int, cold_from: int) -> None:
        self.hot = [sentence(i, tokens, model) for i in range(HOT_SENTENCES)]
        self.model, self.ratio, self.tokens = model, hit_ratio, tokens
        self.cold = cold_from
        self.sent = 0

    def next(self) -> bytes:
        n = self.sent
        self.sent += 1
        if math.floor((n + 1) * self.ratio) > math.floor(n * self.ratio):
            return self.hot[n % HOT_SENTENCES]
        self.cold += 1
        return sentence(self.cold, self.tokens, self.model)


@dataclass
class Window:
    model: str
    hit_ratio: float
    concurrency: int
    requests: int
    errors: int
    items_per_s: float
    client_p50_ms: float
    client_p99_ms: float
    seen_hit_ratio: float
    cpu: dict[str, float]
    load_average: str
    first_error: str | None = None
    hit_latency: dict[str, dict[str, float]] = field(default_factory=dict)
    mean_batch: float = math.nan  # rows per batch the server ran in the window


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def fetch(port: int, raw: bytes) -> HttpResponse:
    connection = HttpConnection(port)
    try:
        return await connection.request(raw)
    finally:
        await connection.close()


async def metrics_text(server: Server) -> str:
    return (await fetch(server.port, get_request("/metrics"))).body.decode()


async def stats(server: Server, model: str) -> dict[str, Any]:
    doc = orjson.loads((await fetch(server.port, get_request(f"/v2/models/{model}/stats"))).body)
    result: dict[str, Any] = doc["model_stats"][0]
    return result


def lookups(text: str, model: str) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("tierserve_cache_lookups_total{") and f'model="{model}"' in line:
            labels = dict(part.split("=") for part in line[line.index("{") + 1 : line.index("}")].split(","))
            key = (labels["layer"].strip('"'), labels["result"].strip('"'))
            found[key] = float(line.rsplit(" ", 1)[1])
    return found


def hit_latency(before: str, after: str, model: str) -> dict[str, dict[str, float]]:
    """Per layer: hits, p50/p99 (ms, interpolated in the buckets) and the share within the target."""
    result = {}
    for layer, target_s in (("local", 0.0005), ("redis", 0.002)):
        family = "tierserve_cache_hit_duration_seconds"
        h_after = parse_histogram(_layer_only(after, layer), family, model)
        h_before = parse_histogram(_layer_only(before, layer), family, model)
        h = h_after.minus(h_before)
        if not h.count:
            continue
        result[layer] = {
            "hits": h.count,
            "p50_ms": quantile(h.buckets, h.count, 0.50) * 1000,
            "p99_ms": quantile(h.buckets, h.count, 0.99) * 1000,
            "within_target": h.buckets.get(target_s, 0.0) / h.count,
            "target_ms": target_s * 1000,
        }
    return result


def _layer_only(text: str, layer: str) -> str:
    return "\n".join(line for line in text.splitlines() if f'layer="{layer}"' in line)


def quantile(buckets: dict[float, float], count: float, q: float) -> float:
    """Linear interpolation inside the bucket where the cumulative count crosses ``q``."""
    wanted, lower, below = q * count, 0.0, 0.0
    for le in sorted(buckets):
        if buckets[le] >= wanted:
            if math.isinf(le):
                return lower
            share = (wanted - below) / max(buckets[le] - below, 1e-9)
            return lower + share * (le - lower)
        lower, below = le, buckets[le]
    return lower


async def worker(
    port: int, stream: Stream, stop_at: float, latencies: list[tuple[float, float]], errors: list[str]
) -> None:
    connection = HttpConnection(port)
    try:
        while (started := time.perf_counter()) < stop_at:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    problem = response_problem(await connection.request(stream.next()), SIZES)
            except CLIENT_ERRORS as exc:
                await connection.close()
                problem = f"{type(exc).__name__}: {exc}"
            ended = time.perf_counter()
            if problem is None:
                latencies.append((ended, ended - started))
            else:
                errors.append(problem)
    finally:
        await connection.close()


async def window(
    server: Server, stream: Stream, concurrency: int, options: Options, duration_s: float
) -> Window:
    latencies: list[tuple[float, float]] = []
    errors: list[str] = []
    measure_from = time.perf_counter() + options.warmup_s
    stop_at = measure_from + duration_s
    tasks = [
        asyncio.create_task(worker(server.port, stream, stop_at, latencies, errors))
        for _ in range(concurrency)
    ]
    await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
    text_before, cpu_before = await metrics_text(server), cpu_sample(server.pid)
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    cpu_after, text_after = cpu_sample(server.pid), await metrics_text(server)
    await asyncio.gather(*tasks)
    inside = [lat for done, lat in latencies if cpu_before.wall <= done <= cpu_after.wall]
    seconds = cpu_after.wall - cpu_before.wall
    got, was = lookups(text_after, stream.model), lookups(text_before, stream.model)
    seen = {k: got.get(k, 0.0) - was.get(k, 0.0) for k in got}
    first = seen.get(("local", "hit"), 0) + seen.get(("local", "miss"), 0)
    if not first:  # a Redis-only model looks there first
        first = seen.get(("redis", "hit"), 0) + seen.get(("redis", "miss"), 0)
    hits = seen.get(("local", "hit"), 0) + seen.get(("redis", "hit"), 0)
    p50, p99 = (np.percentile(inside, [50, 99]) * 1000).tolist() if inside else (math.nan, math.nan)
    cpu: CpuUse = cpu_use(cpu_before, cpu_after)
    return Window(
        model=stream.model,
        hit_ratio=stream.ratio,
        concurrency=concurrency,
        requests=len(inside),
        errors=len(errors),
        items_per_s=len(inside) / seconds,
        client_p50_ms=p50,
        client_p99_ms=p99,
        seen_hit_ratio=hits / first if first else math.nan,
        cpu={k: round(v, 3) for k, v in asdict(cpu).items()},
        load_average=load_average(),
        first_error=errors[0] if errors else None,
        hit_latency=hit_latency(text_before, text_after, stream.model),
        mean_batch=mean_batch(text_before, text_after, stream.model),
    )


def mean_batch(before: str, after: str, model: str) -> float:
    batches = parse_histogram(after, "tierserve_batch_size", model).minus(
        parse_histogram(before, "tierserve_batch_size", model)
    )
    return batches.total / batches.count if batches.count else math.nan


async def warm(server: Server, stream: Stream) -> None:
    for raw in stream.hot:
        problem = response_problem(await fetch(server.port, raw), SIZES)
        if problem is not None:
            raise RuntimeError(f"warming {stream.model}: {problem}")


# -- phases ------------------------------------------------------------------------------------


async def throughput(server: Server, options: Options) -> list[Window]:
    windows, cold = [], 1_000_000
    for model in ("minilm", "minilm_cached"):
        await warm(server, Stream(model, 1.0, options.tokens, 0))
    for round_ in range(options.rounds):
        for ratio in HIT_RATIOS:
            for model in (
                ("minilm", "minilm_cached", "minilm_local") if ratio == 0 else ("minilm", "minilm_cached")
            ):
                cold += 1_000_000  # never a sentence sent before, in any window
                stream = Stream(model, ratio, options.tokens, cold)
                result = await window(server, stream, options.concurrency, options, options.duration_s)
                windows.append(result)
                print(
                    f"  round {round_ + 1} hits {ratio:>4.0%} {model:<14} {result.items_per_s:8.1f} items/s "
                    f"(seen hit ratio {result.seen_hit_ratio:.2f}, errors {result.errors}, "
                    f"server {result.cpu['server']:.2f} client {result.cpu['client']:.2f} "
                    f"other {result.cpu['other']:.2f} cores, mean batch {result.mean_batch:.1f}, "
                    f"load {result.load_average})",
                    flush=True,
                )
    return windows


async def latency(server: Server, options: Options, redis_url: str) -> tuple[list[Window], dict[str, float]]:
    """Hit latency per layer; and, during the Redis-only c=1 window, the round trip of a PING from
    this (client) core to Redis: what an L2 hit cannot go below on this machine right now."""
    from tierserve.cache.resp import RespClient

    windows: list[Window] = []
    ping: dict[str, float] = {}
    for model in ("minilm_cached", "minilm_l2"):
        await warm(server, Stream(model, 1.0, options.tokens, 0))
        for concurrency in (1, options.concurrency):
            stream = Stream(model, 1.0, options.tokens, 0)
            measure = window(server, stream, concurrency, options, options.duration_s / 2)
            if model == "minilm_l2" and concurrency == 1:
                pinger = ping_round_trips(RespClient.from_url(redis_url), options)
                result, ping = await asyncio.gather(measure, pinger)
            else:
                result = await measure
            windows.append(result)
            print(f"  {model} c={concurrency}: {json.dumps(result.hit_latency)}", flush=True)
    print(f"  Redis PING round trip from the client core meanwhile: {ping}", flush=True)
    return windows, ping


async def ping_round_trips(client: Any, options: Options) -> dict[str, float]:
    times = []
    stop_at = time.perf_counter() + options.warmup_s + options.duration_s / 2
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await client.command(b"PING")
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
    finally:
        await client.close()
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    return {"pings": len(times), "p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


async def single_flight(server: Server, options: Options) -> dict[str, Any]:
    raw = sentence(999_999_999, options.tokens, "minilm_cached")
    before = await stats(server, "minilm_cached")
    connections = [HttpConnection(server.port) for _ in range(10)]
    try:
        responses = await asyncio.gather(*(c.request(raw) for c in connections))
    finally:
        for c in connections:
            await c.close()
    after = await stats(server, "minilm_cached")
    result = {
        "requests": 10,
        "ok": sum(r.status == 200 for r in responses),
        "identical_answers": len({r.body for r in responses}) == 1,
        "inferences": after["inference_count"] - before["inference_count"],
        "cache_hits": after["inference_stats"]["cache_hit"]["count"]
        - before["inference_stats"]["cache_hit"]["count"],
        "load_average": load_average(),
    }
    print(f"  {result}", flush=True)
    return result


def build_constant_model(path: Path) -> None:
    """Same signature as MiniLM (input_ids, attention_mask -> sentence_embedding [-1, 384]), every
    value ``NEW_VALUE``: unmistakable for the old model's answers."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "width"], ["out_shape"], axis=0),
        helper.make_node("Expand", ["value", "out_shape"], ["expanded"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask_f"], ["mask_sum"], keepdims=1),
        helper.make_node("Mul", ["mask_sum", "zero_f"], ["nothing"]),
        helper.make_node("Add", ["expanded", "nothing"], ["sentence_embedding"]),
    ]
    initializers = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("width", TensorProto.INT64, [1], [EMBEDDING]),
        helper.make_tensor("value", TensorProto.FLOAT, [1, EMBEDDING], [NEW_VALUE] * EMBEDDING),
        helper.make_tensor("zero_f", TensorProto.FLOAT, [], [0.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", EMBEDDING])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def first_value(response: HttpResponse) -> float:
    length = int(response.headers["inference-header-content-length"])
    return float(np.frombuffer(response.body[length : length + 4], dtype="<f4")[0])


async def swap_under_load(server: Server, repo: Path, options: Options) -> dict[str, Any]:
    model = "minilm_cached"
    stream = Stream(model, 1.0, options.tokens, 0)
    stream.hot = stream.hot[:16]
    await warm(server, stream)
    answers: list[tuple[float, float]] = []  # (sent at, first embedding value)
    errors: list[str] = []
    stop = asyncio.Event()

    async def loop() -> None:
        connection = HttpConnection(server.port)
        index = 0
        try:
            while not stop.is_set():
                raw = stream.hot[index % len(stream.hot)]
                index += 1
                sent = time.perf_counter()
                try:
                    response = await connection.request(raw)
                except CLIENT_ERRORS as exc:
                    await connection.close()
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status != 200:
                    errors.append(f"HTTP {response.status}: {response.body[:120]!r}")
                    continue
                answers.append((sent, first_value(response)))
        finally:
            await connection.close()

    tasks = [asyncio.create_task(loop()) for _ in range(16)]
    await asyncio.sleep(2.0)
    version_dir = repo / model / "1"
    build_constant_model(version_dir / "new.onnx")
    os.replace(version_dir / "new.onnx", version_dir / "model.onnx")
    swap_started = time.perf_counter()
    body = b"{}"
    load = (
        f"POST /v2/repository/models/{model}/load HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loaded = await fetch(server.port, load)
    loaded_at = time.perf_counter()
    await asyncio.sleep(3.0)
    stop.set()
    await asyncio.gather(*tasks)
    after = [value for sent, value in answers if sent > loaded_at]
    result = {
        "load_status": loaded.status,
        "load_s": round(loaded_at - swap_started, 3),
        "answers_before_swap": sum(sent < swap_started for sent, _ in answers),
        "answers_during_load": sum(swap_started <= sent <= loaded_at for sent, _ in answers),
        "answers_after_load": len(after),
        "stale_after_load": sum(value != NEW_VALUE for value in after),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "load_average": load_average(),
    }
    print(f"  {result}", flush=True)
    return result


# -- set-up and report -------------------------------------------------------------------------


def write_repository(root: Path, source: Path) -> None:
    config = source.parent.parent / "config.yaml"
    base = config.read_text() if config.is_file() else ""
    for name, cache in MODELS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").symlink_to(source.resolve())
        (root / name / "config.yaml").write_text(base + cache)


def start_redis(core: int) -> dict[str, str]:
    started = subprocess.run(
        ["bash", str(ROOT / "scripts" / "redis.sh"), "start"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    subprocess.run(["taskset", "-pc", str(core), values["PID"]], capture_output=True, check=False)
    return values


def summarise(windows: list[Window]) -> dict[str, Any]:
    """Per hit ratio: median items/s of each model and their ratio; and the same per second of CPU
    the server actually got (steadier on a shared machine, where the server's share of its core
    moves from window to window)."""
    summary: dict[str, Any] = {}

    def of(model: str, ratio: float, per_cpu: bool) -> float:
        chosen = [w for w in windows if w.model == model and w.hit_ratio == ratio]
        return statistics.median(
            w.items_per_s / w.cpu["server"] if per_cpu and w.cpu["server"] else w.items_per_s for w in chosen
        )

    def batch(model: str, ratio: float) -> list[float]:
        found = [w.mean_batch for w in windows if w.model == model and w.hit_ratio == ratio]
        return [b for b in found if not math.isnan(b)] or [math.nan]

    for ratio in HIT_RATIOS:
        uncached, cached = of("minilm", ratio, False), of("minilm_cached", ratio, False)
        uncached_cpu, cached_cpu = of("minilm", ratio, True), of("minilm_cached", ratio, True)
        seen = [w.seen_hit_ratio for w in windows if w.model == "minilm_cached" and w.hit_ratio == ratio]
        summary[f"{ratio:.0%}"] = {
            "uncached_items_per_s": round(uncached, 1),
            "cached_items_per_s": round(cached, 1),
            "ratio": round(cached / uncached, 3),
            "uncached_items_per_server_cpu_s": round(uncached_cpu, 1),
            "cached_items_per_server_cpu_s": round(cached_cpu, 1),
            "ratio_per_server_cpu": round(cached_cpu / uncached_cpu, 3),
            "seen_hit_ratio": round(statistics.median(seen), 3),
            "mean_batch_uncached": round(statistics.median(batch("minilm", ratio)), 2),
            "mean_batch_cached": round(statistics.median(batch("minilm_cached", ratio)), 2),
        }
    local = [w for w in windows if w.model == "minilm_local"]
    if local:
        per_cpu = statistics.median(w.items_per_s / w.cpu["server"] for w in local if w.cpu["server"])
        summary["0%"]["local_only_items_per_s"] = round(statistics.median(w.items_per_s for w in local), 1)
        summary["0%"]["local_only_items_per_server_cpu_s"] = round(per_cpu, 1)
        summary["0%"]["local_only_ratio_per_server_cpu"] = round(
            per_cpu / summary["0%"]["uncached_items_per_server_cpu_s"], 3
        )
        summary["0%"]["mean_batch_local_only"] = round(statistics.median(batch("minilm_local", 0.0)), 2)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("this benchmark needs 2 cores (server on one; client and Redis on the other)", file=sys.stderr)
        return 2
    server_core, client_core = cores[0], cores[1]
    source = model_file(options.model_repository, "all-minilm-l6-v2")
    print(f"load average at start: {load_average()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="tierserve-cache-bench-"))
    redis = start_redis(client_core)
    os.sched_setaffinity(0, {client_core})
    results: dict[str, Any] = {"options": {k: str(v) for k, v in asdict(options).items()}, "targets": TARGETS}
    try:
        repo = work / "models"
        write_repository(repo, source)
        log = options.out.with_name("cache-server.log")
        args = ["--cache-redis", redis["URL"], "--log-level", "warning"]
        with tierserve_server(repo, "minilm_cached", [server_core], log, args) as server:

            async def run() -> None:
                print("throughput (items/s) by hit ratio, uncached vs cached:", flush=True)
                results["throughput_windows"] = [asdict(w) for w in await throughput(server, options)]
                print("server-side hit latency:", flush=True)
                latency_windows, ping = await latency(server, options, redis["URL"])
                results["latency_windows"] = [asdict(w) for w in latency_windows]
                results["redis_ping"] = ping
                print("single flight:", flush=True)
                results["single_flight"] = await single_flight(server, options)
                print("version swap under load:", flush=True)
                results["swap"] = await swap_under_load(server, repo, options)

            run_async(run)  # type: ignore[arg-type]  # serving.run_async is typed for its own phases
    finally:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "redis.sh"), "stop", redis["DIR"]],
            capture_output=True,
            check=False,
        )
        subprocess.run(["rm", "-rf", str(work)], check=False)
    windows = [Window(**w) for w in results["throughput_windows"]]
    results["summary"] = summarise(windows)
    results["load_average_at_end"] = load_average()
    print(
        "\nhit ratio | uncached items/s | cached items/s | ratio "
        "| per server CPU-s: uncached, cached, ratio | seen"
    )
    for ratio, row in results["summary"].items():
        print(
            f"{ratio:>9} | {row['uncached_items_per_s']:16.1f} | {row['cached_items_per_s']:14.1f} | "
            f"{row['ratio']:5.2f} | {row['uncached_items_per_server_cpu_s']:8.1f} "
            f"{row['cached_items_per_server_cpu_s']:8.1f} {row['ratio_per_server_cpu']:6.2f} | "
            f"{row['seen_hit_ratio']:.2f}"
        )
    zero = results["summary"]["0%"]
    if "local_only_items_per_s" in zero:
        print(
            f"0% hits, local layer only: {zero['local_only_items_per_s']} items/s, "
            f"{zero['local_only_items_per_server_cpu_s']} per server CPU-s "
            f"(ratio {zero['local_only_ratio_per_server_cpu']}); mean batch uncached "
            f"{zero['mean_batch_uncached']}, local+redis {zero['mean_batch_cached']}, local "
            f"{zero['mean_batch_local_only']}"
        )
    for w in results["latency_windows"]:
        for layer, figures in w["hit_latency"].items():
            print(
                f"{w['model']} c={w['concurrency']} {layer} hits: p50 {figures['p50_ms']:.3f} ms, "
                f"p99 {figures['p99_ms']:.3f} ms, "
                f"within {figures['target_ms']} ms: {figures['within_target']:.2%}"
            )
    print(f"Redis PING from the client core during the L2 c=1 window: {results['redis_ping']}")
    print(f"single flight: {results['single_flight']}")
    print(f"swap: {results['swap']}")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
