"""Retrieval figures: vector collections and ``/v1/embeddings`` over HTTP against a real server.

Run::

    .venv/bin/python benchmarks/retrieval.py --model-repository models \
        [--vectors 1000000] [--dim 384] [--text-vectors 500000] [--text-dim 768] \
        [--duration 10] [--concurrency 8] [--parts vectors,filter,text,embeddings] \
        [--out benchmarks/results/retrieval.json]

Figures, not pass/fail. Seeded synthetic clustered vectors (``--clusters`` Gaussian clusters, unit
length), so every run sees the same data. Parts:

1. **vectors**: a ``--vectors`` x ``--dim`` collection with i8 storage, inserted over HTTP in batches
   of 1,000 (two uploads in flight): inserts/s. Index memory (``index_bytes``, usearch's own count)
   and the server's resident memory. Recall@10 of ``--recall-queries`` queries against exact search
   (float32, numpy), plain and with ``"rerank": "exact"``. Then closed-loop vector queries (k=10) at
   ``--concurrency`` for ``--duration`` s: queries/s, client p50/p99, and the server's own time per
   search (``took_ms`` in each answer) p50/p99.
2. **filter**: the same collection, queries with a 1%-selective filter (``{"bucket": b}``, 100
   buckets): how many answers held all k results, p50/p99 (client and server).
3. **text**: a ``--text-vectors`` x ``--text-dim`` collection (i8) and text queries embedded by the
   server on the way in: end-to-end p50/p99 at concurrency 4. The example MiniLM makes 384-d vectors,
   so for 768 this part serves ``minilm-768``: MiniLM followed by a fixed seeded projection to 768
   dimensions (re-normalised). The embedding costs what MiniLM costs; a real 768-d encoder (BERT-base
   size) costs several times more per text.
4. **embeddings**: ``/v1/embeddings`` (server-side tokenization, base64, one sentence per request)
   against V2 ``/infer`` with the same sentences tokenized by the client beforehand, same
   concurrency, alternating windows: the throughput ratio.

The server runs under ``taskset`` on ``--server-cores`` and this client on ``--client-cores``; the
client's own CPU use is reported per window so that a saturated load generator shows. ``uptime``'s
load average is recorded with every part: on a shared machine the figures are lower than alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
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
    CLOCK_TICKS,
    HttpConnection,
    cpu_affinity,
    exit_on_termination,
    get_request,
    process_ticks,
    tierserve_server,
)

MINILM = "all-minilm-l6-v2"
PROJECTED = "minilm-768"
K = 10
BUCKETS = 100  # {"bucket": b} matches 1% of the items
INSERT_BATCH = 1000
SENTENCES = [
    "tierserve routes every request to the cheapest pool that meets its deadline",
    "gold requests are served first and held to their latency target",
    "a quantized model answers faster at a small cost in accuracy",
    "where is the nearest train station from the city centre",
    "vector search finds the documents closest to a query in meaning",
    "the scheduler forms batches that keep every deadline feasible",
    "heavy rain is expected in Berlin tomorrow afternoon",
    "a cross-encoder reads the query and the document together",
]


@dataclass(frozen=True)
class Options:
    repository: Path
    vectors: int
    dim: int
    text_vectors: int
    text_dim: int
    clusters: int
    recall_queries: int
    duration: float
    concurrency: int
    parts: tuple[str, ...]
    server_cores: str
    client_cores: str
    out: Path
    seed: int
    text_insert_budget_s: float


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--text-vectors", type=int, default=500_000)
    p.add_argument("--text-dim", type=int, default=768)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--recall-queries", type=int, default=200)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--parts", default="vectors,filter,text,embeddings")
    p.add_argument("--server-cores", default="0,1")
    p.add_argument("--client-cores", default="1")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/retrieval.json"))
    p.add_argument("--seed", type=int, default=20261130)
    p.add_argument(
        "--text-insert-budget-s", type=float, default=float("inf"),
        help="stop inserting the text part's vectors after this long and measure on what went in",
    )  # fmt: skip
    a = p.parse_args(argv)
    parts = tuple(x for x in a.parts.split(",") if x)
    unknown = set(parts) - {"vectors", "filter", "text", "embeddings"}
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}")
    return Options(
        a.model_repository, a.vectors, a.dim, a.text_vectors, a.text_dim, a.clusters, a.recall_queries,
        a.duration, a.concurrency, parts, a.server_cores, a.client_cores, a.out, a.seed,
        a.text_insert_budget_s,
    )  # fmt: skip


# -- data ------------------------------------------------------------------------------------------


def clustered(
    count: int, dim: int, clusters: int, seed: int, point_seed: int, chunk: int = 100_000
) -> np.ndarray:
    """``count`` unit vectors around ``clusters`` centres (from ``seed``; the points from ``point_seed``),
    float32, made chunk by chunk."""
    centres = np.random.default_rng(seed).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(point_seed)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        rows = centres[rng.integers(clusters, size=n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
        out[start : start + n] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def exact_top(data: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k indices per query by cosine (the data are unit vectors)."""
    best = np.empty((len(queries), k), dtype=np.int64)
    for i, q in enumerate(queries):
        scores = data @ q
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        top = np.argpartition(-scores, k)[:k]
        best[i] = top[np.argsort(-scores[top])]
    return best


# -- HTTP ------------------------------------------------------------------------------------------


def post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


async def call(connection: HttpConnection, raw: bytes) -> dict[str, Any]:
    response = await connection.request(raw)
    if response.status not in (200, 201):
        raise RuntimeError(f"HTTP {response.status}: {response.body[:300]!r}")
    doc: dict[str, Any] = orjson.loads(response.body)
    return doc


@dataclass
class Window:
    """One closed-loop measurement."""

    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    short_answers: int = 0  # answers with fewer than k results
    seconds: float = 0.0
    client_cpu: float = 0.0  # cores this process used
    server_cpu: float = 0.0

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            return round(float(np.percentile(values, q)), 3) if values else None

        return {
            "requests": self.requests,
            "per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "errors": self.errors,
            "first_error": self.first_error,
            "client_p50_ms": pct(self.client_ms, 50),
            "client_p99_ms": pct(self.client_ms, 99),
            "server_p50_ms": pct(self.server_ms, 50),
            "server_p99_ms": pct(self.server_ms, 99),
            "short_answers": self.short_answers,
            "client_cores": round(self.client_cpu, 2),
            "server_cores": round(self.server_cpu, 2),
        }


def cpu_seconds(pid: int | str) -> float:
    return process_ticks(pid) / CLOCK_TICKS


async def closed_loop(
    port: int, server_pid: int, bodies: list[bytes], duration: float, concurrency: int, k: int | None = K
) -> Window:
    window = Window()
    connections = [HttpConnection(port) for _ in range(concurrency)]
    for connection, body in zip(connections, bodies, strict=False):  # warm each connection once
        with contextlib.suppress(*CLIENT_ERRORS, RuntimeError):
            await call(connection, body)
    stop_at = time.perf_counter() + duration
    started, client0, server0 = time.perf_counter(), cpu_seconds("self"), cpu_seconds(server_pid)

    async def worker(w: int, connection: HttpConnection) -> None:
        i = w
        while time.perf_counter() < stop_at:
            body = bodies[i % len(bodies)]
            i += concurrency
            t0 = time.perf_counter()
            try:
                if k is None:  # only the status matters (V2 answers carry binary outputs)
                    response = await connection.request(body)
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {response.body[:300]!r}")
                    doc: dict[str, Any] = {}
                else:
                    doc = await call(connection, body)
            except (*CLIENT_ERRORS, RuntimeError) as exc:
                window.errors += 1
                window.first_error = window.first_error or f"{type(exc).__name__}: {exc}"
                await connection.close()
                continue
            window.client_ms.append((time.perf_counter() - t0) * 1000)
            window.requests += 1
            if "took_ms" in doc:
                window.server_ms.append(float(doc["took_ms"]))
            if k is not None and "results" in doc and len(doc["results"]) < k:
                window.short_answers += 1

    await asyncio.gather(*(worker(w, c) for w, c in enumerate(connections)))
    window.seconds = time.perf_counter() - started
    window.client_cpu = (cpu_seconds("self") - client0) / window.seconds
    window.server_cpu = (cpu_seconds(server_pid) - server0) / window.seconds
    for connection in connections:
        await connection.close()
    return window


async def insert(
    port: int, name: str, data: np.ndarray, uploads: int = 2, budget_s: float = float("inf")
) -> dict[str, Any]:
    """Upsert the rows (metadata: its bucket) in batches, ``uploads`` requests in flight, until all
    are in or ``budget_s`` has passed (then the figures say how many went in)."""
    encode_s = 0.0
    batches = iter(range(0, len(data), INSERT_BATCH))
    started = time.perf_counter()
    inserted = 0

    async def uploader() -> None:
        nonlocal encode_s, inserted
        connection = HttpConnection(port)
        for start in batches:
            if time.perf_counter() - started > budget_s:
                break
            t0 = time.perf_counter()
            rows = data[start : start + INSERT_BATCH]
            items = [
                {"id": str(start + i), "vector": row, "metadata": {"bucket": (start + i) % BUCKETS}}
                for i, row in enumerate(rows)
            ]
            body = orjson.dumps({"items": items}, option=orjson.OPT_SERIALIZE_NUMPY)
            encode_s += time.perf_counter() - t0
            await call(connection, post(f"/v1/collections/{name}/upsert", body))
            inserted += len(rows)
        await connection.close()

    await asyncio.gather(*(uploader() for _ in range(uploads)))
    seconds = time.perf_counter() - started
    return {"vectors": inserted, "of": len(data), "seconds": round(seconds, 1),
            "per_s": round(inserted / seconds, 1), "client_encode_s": round(encode_s, 1)}  # fmt: skip


async def create(port: int, name: str, dim: int, model: str | None = None) -> None:
    connection = HttpConnection(port)
    body: dict[str, Any] = {"name": name, "dimension": dim, "precision": "i8"}
    if model:
        body["model"] = model
    await call(connection, post("/v1/collections", orjson.dumps(body)))
    await connection.close()


async def describe(port: int, name: str) -> dict[str, Any]:
    connection = HttpConnection(port)
    doc = await call(connection, get_request(f"/v1/collections/{name}"))
    await connection.close()
    return doc


def search_body(name: str, query: np.ndarray, **extra: Any) -> bytes:
    body = orjson.dumps({"vector": query, "k": K, **extra}, option=orjson.OPT_SERIALIZE_NUMPY)
    return post(f"/v1/collections/{name}/search", body)


async def recall(port: int, name: str, queries: np.ndarray, truth: np.ndarray, **extra: Any) -> float:
    connection = HttpConnection(port)
    hits = 0
    for q, expected in zip(queries, truth, strict=True):
        doc = await call(connection, search_body(name, q, **extra))
        got = {int(r["id"]) for r in doc["results"]}
        hits += len(got & set(expected.tolist()))
    await connection.close()
    return round(hits / (len(queries) * K), 4)


# -- the server and its models -----------------------------------------------------------------------


def projected_repository(source: Path, dest: Path, dim: int, seed: int) -> Path:
    """A repository with MiniLM, the cross-encoder-free minimum, and ``minilm-768``: MiniLM's output
    through a fixed seeded projection to ``dim`` dimensions, re-normalised."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / MINILM, dest / MINILM, dirs_exist_ok=True)
    model = onnx.load(str(source / MINILM / "1" / "model.onnx"))
    graph = model.graph
    out = graph.output[0].name
    rng = np.random.default_rng(seed)
    projection = (rng.standard_normal((384, dim)) / np.sqrt(dim)).astype(np.float32)
    graph.initializer.append(numpy_helper.from_array(projection, "projection"))
    graph.node.extend(
        [
            helper.make_node("MatMul", [out, "projection"], ["projected"]),
            helper.make_node("ReduceL2", ["projected"], ["projected_norm"], axes=[1], keepdims=1),
            helper.make_node("Div", ["projected", "projected_norm"], ["embedding"]),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim]))
    target = dest / PROJECTED / "1"
    target.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target / "model.onnx"))
    shutil.copy(source / MINILM / "1" / "tokenizer.json", target / "tokenizer.json")
    (dest / PROJECTED / "config.yaml").write_text(
        (source / MINILM / "config.yaml")
        .read_text()
        .replace("output: sentence_embedding", "output: embedding")
    )
    return dest


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# -- parts -------------------------------------------------------------------------------------------


async def vector_parts(opts: Options, port: int, pid: int, results: dict[str, Any]) -> None:
    print(f"generating {opts.vectors} x {opts.dim} clustered vectors ...", flush=True)
    data = clustered(opts.vectors, opts.dim, opts.clusters, opts.seed, opts.seed + 1)
    queries = clustered(max(opts.recall_queries, 1000), opts.dim, opts.clusters, opts.seed, opts.seed + 2)
    await create(port, "bench", opts.dim)
    print("inserting ...", flush=True)
    results["insert"] = {**await insert(port, "bench", data), "load": load_average()}
    print(f"  {results['insert']}", flush=True)
    described = await describe(port, "bench")
    results["memory"] = {"index_mb": round(described["index_bytes"] / 2**20, 1), "server_rss_mb": rss_mb(pid),
                         "vectors_f32_mb": round(data.nbytes / 2**20, 1)}  # fmt: skip
    print(f"  memory {results['memory']}", flush=True)
    sample = queries[: opts.recall_queries]
    truth = exact_top(data, sample, K)
    results["recall_at_10"] = {
        "plain": await recall(port, "bench", sample, truth),
        "rerank_exact": await recall(port, "bench", sample, truth, rerank="exact"),
    }
    print(f"  recall@10 {results['recall_at_10']}", flush=True)
    if "vectors" in opts.parts:
        bodies = [search_body("bench", q) for q in queries]
        window = await closed_loop(port, pid, bodies, opts.duration, opts.concurrency)
        results["vector_queries"] = {
            **window.summary(),
            "concurrency": opts.concurrency,
            "load": load_average(),
        }
        print(f"  vector queries {results['vector_queries']}", flush=True)
    if "filter" in opts.parts:
        bodies = [search_body("bench", q, filter={"bucket": i % BUCKETS}) for i, q in enumerate(queries)]
        mask = np.arange(opts.vectors) % BUCKETS == 0
        filtered_truth = exact_top(data, sample[:50], K, mask)
        filtered_recall = await recall(port, "bench", sample[:50], filtered_truth, filter={"bucket": 0})
        window = await closed_loop(port, pid, bodies, opts.duration, opts.concurrency)
        results["filtered_1pct"] = {**window.summary(), "recall_at_10": filtered_recall,
                                    "concurrency": opts.concurrency, "load": load_average()}  # fmt: skip
        print(f"  1% filter {results['filtered_1pct']}", flush=True)


async def text_part(opts: Options, port: int, pid: int, results: dict[str, Any]) -> None:
    print(f"generating {opts.text_vectors} x {opts.text_dim} vectors ...", flush=True)
    data = clustered(opts.text_vectors, opts.text_dim, opts.clusters, opts.seed + 3, opts.seed + 4)
    await create(port, "texts", opts.text_dim, model=PROJECTED if opts.text_dim != 384 else MINILM)
    print("inserting ...", flush=True)
    inserted = await insert(port, "texts", data, budget_s=opts.text_insert_budget_s)
    results["text_insert"] = {**inserted, "load": load_average()}
    print(f"  {results['text_insert']}", flush=True)
    bodies = [post("/v1/collections/texts/search", orjson.dumps({"text": f"{s} {i}", "k": K}))
              for i, s in enumerate(SENTENCES * 16)]  # fmt: skip
    window = await closed_loop(port, pid, bodies, opts.duration, 4)
    results["text_queries"] = {**window.summary(), "concurrency": 4, "load": load_average(),
                               "collection": f"{opts.text_vectors} x {opts.text_dim} i8"}  # fmt: skip
    print(f"  text queries {results['text_queries']}", flush=True)


async def embeddings_part(opts: Options, port: int, pid: int, results: dict[str, Any]) -> None:
    from tierserve.examples.minilm import tokenize

    texts = [f"{s} number {i}" for i, s in enumerate(SENTENCES * 8)]
    openai_bodies = [
        post("/v1/embeddings", orjson.dumps({"model": MINILM, "input": t, "encoding_format": "base64"}))
        for t in texts
    ]
    v2_bodies = []
    for t in texts:
        ids, mask = tokenize([t])
        inputs = [
            {"name": name, "datatype": "INT64", "shape": list(array.shape), "data": array.ravel().tolist()}
            for name, array in (("input_ids", ids), ("attention_mask", mask))
        ]
        doc = {"inputs": inputs, "parameters": {"binary_data_output": True}}
        v2_bodies.append(post(f"/v2/models/{MINILM}/infer", orjson.dumps(doc)))
    windows: dict[str, list[Window]] = {"v2": [], "openai": []}
    for _ in range(2):  # alternate, so drifting load hits both alike
        windows["v2"].append(
            await closed_loop(port, pid, v2_bodies, opts.duration / 2, opts.concurrency, None)
        )
        windows["openai"].append(
            await closed_loop(port, pid, openai_bodies, opts.duration / 2, opts.concurrency, None)
        )

    def rate(ws: list[Window]) -> float:
        return sum(w.requests for w in ws) / sum(w.seconds for w in ws)

    results["embeddings"] = {
        "v2_per_s": round(rate(windows["v2"]), 1),
        "openai_per_s": round(rate(windows["openai"]), 1),
        "ratio": round(rate(windows["openai"]) / rate(windows["v2"]), 3),
        "errors": sum(w.errors for ws in windows.values() for w in ws),
        "v2_p99_ms": windows["v2"][-1].summary()["client_p99_ms"],
        "openai_p99_ms": windows["openai"][-1].summary()["client_p99_ms"],
        "concurrency": opts.concurrency,
        "load": load_average(),
    }
    print(f"  embeddings {results['embeddings']}", flush=True)


async def run(opts: Options, port: int, pid: int, results: dict[str, Any]) -> None:
    if {"vectors", "filter"} & set(opts.parts):
        await vector_parts(opts, port, pid, results)
    if "embeddings" in opts.parts:
        await embeddings_part(opts, port, pid, results)
    if "text" in opts.parts:
        await text_part(opts, port, pid, results)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    exit_on_termination()  # SIGTERM stops the server too
    options = {**asdict(opts), "repository": str(opts.repository), "out": str(opts.out)}
    results: dict[str, Any] = {"options": options, "load_at_start": load_average()}
    print(f"load average at start: {results['load_at_start']}", flush=True)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tierserve-retrieval-bench-") as scratch:
        repo = projected_repository(opts.repository, Path(scratch) / "models", opts.text_dim, opts.seed)
        cores = [int(c) for c in opts.server_cores.split(",")]
        log_path = opts.out.with_name("retrieval-server.log")
        started = time.perf_counter()
        with (
            tierserve_server(repo, MINILM, cores, log_path) as server,
            cpu_affinity(int(c) for c in opts.client_cores.split(",")),
        ):
            asyncio.run(run(opts, server.port, server.pid, results))
        results["wall_s"] = round(time.perf_counter() - started, 1)
    results["client_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    opts.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"written to {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
