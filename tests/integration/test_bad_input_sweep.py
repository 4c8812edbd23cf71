"""A sweep of bad input against one real server: no case may answer 5xx (issue 10, item 5).

More than 254 requests, each malformed or invalid in one way (bodies, shapes, versions, cursors,
headers, encodings, job and admin fields), sent with a plain HTTP client to one server. Every
answer must be a 4xx (or a 2xx where the input turns out acceptable), never a 5xx, and the server
must serve a valid request at the end. The cases that caused 500s when the server was attacked are
all here: rank > 64, ``[2**63, 0]``, "²" as a version, job version, cursor or a key's limits,
``?cursor=99999999999999999999999`` on ``/v1/jobs`` and ``/v1/audit``.

Key-creation cases come last and are all invalid: a key that got created would turn
authentication on for the cases after it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from support.server import RunningServer, start_server
from support.v2 import assert_serves_simple

pytestmark = pytest.mark.integration

HEADER = "Inference-Header-Content-Length"
BIG = 2**63
ROW = list(range(16))


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.path[:60]} {self.label}"[:120]


def _json(method: str, path: str, doc: Any, label: str = "", **headers: str) -> Case:
    body = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    return Case(method, path, body, {"Content-Type": "application/json", **headers}, label=label)


def _simple_input(name: str = "INPUT0", **changes: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": name, "datatype": "INT32", "shape": [1, 16], "data": ROW}
    for key, value in changes.items():
        if value is _DELETE:
            tensor.pop(key, None)
        else:
            tensor[key] = value
    return tensor


_DELETE = object()


def _infer_doc(**changes: Any) -> dict[str, Any]:
    return {"inputs": [_simple_input(**changes), _simple_input("INPUT1")]}


# -- inference bodies ------------------------------------------------------------------------------

RAW_BODIES = [
    b"", b"{", b"[]", b"null", b"1", b'"x"', b"\xff\xfe\x00", b"{}", b'{"inputs": null}',
    b'{"inputs": {}}', b'{"inputs": []}', b'{"inputs": [1, 2]}', b"[" * 5000 + b"]" * 5000,
    b'{"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [1e400]}]}',
    b'{"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": NaN}]}',
    b'{"inputs": [' + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"]}",
    b'{"id": 5, "inputs": []}', b'{"inputs": [{}]}' + b" " * 10, b'{"inputs": [], "inputs": 1}',
]  # fmt: skip

SHAPES: list[Any] = [
    None, [], [-1], [1.5, 16], ["1", "16"], [True, 16], [BIG, 0], [0, BIG], [2**64, 0], [BIG - 1, 0],
    [2**62, 2**62, 0], [1] * 65, [1] * 64, [1] * 33, [0] * 70, [1, 16, 1], [16, 1], [2, 16], [0, 16],
    [1, 0], [10**30], "1,16", {"0": 1}, [1, -16], [1, 16.0],
]  # fmt: skip

DATA: list[Any] = [
    None, "abc", [["a"] * 16], [1.5] * 16, [2**40] * 16, [-(2**40)] * 16, [True] * 16, [None] * 16,
    [[1, 2], [3]], list(range(15)), list(range(17)), {"x": 1}, [[ROW]], [], [float("inf")] * 16,
    ["1"] * 16, [[1] * 8] * 2 + [[1] * 7],
]  # fmt: skip

DATATYPES: list[Any] = [None, "", "int32", "INT33", "STRING", 5, ["INT32"], "BYTES", "FP32", "BF16"]
NAMES: list[Any] = [None, "", 5, "INPUT9", "INPUT1", "x" * 10_000, ["INPUT0"]]
PARAMETERS: list[Any] = [
    [], "x", {"binary_data_output": "yes"}, {"tier": "platinum"}, {"tier": 5}, {"priority": "high"},
    {"priority": -1}, {"priority": 10**30}, {"timeout": -5}, {"timeout": "soon"}, {"timeout": 10**30},
    {"shared_memory_region": "r"}, {"tier": "²"},
]  # fmt: skip
OUTPUTS: list[Any] = [
    {}, "OUTPUT0", [5], [{"name": 5}], [{"name": "NOPE"}], [{"name": "OUTPUT0"}, {"name": "OUTPUT0"}],
    [{"name": "OUTPUT0", "parameters": {"binary_data": "yes"}}],
    [{"name": "OUTPUT0", "parameters": {"classification": 3}}],
    [{"name": "OUTPUT0", "parameters": []}],
    [{"name": "OUTPUT0", "parameters": {"shared_memory_region": "r"}}],
]  # fmt: skip


def _infer_cases() -> Iterator[Case]:
    path = "/v2/models/simple/infer"
    for number, body in enumerate(RAW_BODIES):
        yield _json("POST", path, body, f"raw{number}")
    for number, shape in enumerate(SHAPES):
        yield _json("POST", path, _infer_doc(shape=shape), f"shape{number}")
        yield _json("POST", "/v1/jobs", {"model": "simple", **_infer_doc(shape=shape)}, f"job-shape{number}")
    for number, data in enumerate(DATA):
        yield _json("POST", path, _infer_doc(data=data), f"data{number}")
    for number, datatype in enumerate(DATATYPES):
        yield _json("POST", path, _infer_doc(datatype=datatype), f"datatype{number}")
    for number, name in enumerate(NAMES):
        yield _json("POST", path, _infer_doc(name=name), f"name{number}")
    for number, parameters in enumerate(PARAMETERS):
        yield _json("POST", path, {**_infer_doc(), "parameters": parameters}, f"parameters{number}")
        yield _json("POST", path, _infer_doc(parameters=parameters), f"input-parameters{number}")
    for number, outputs in enumerate(OUTPUTS):
        yield _json("POST", path, {**_infer_doc(), "outputs": outputs}, f"outputs{number}")
    for tier in ("platinum", "²", "x" * 5000, ""):
        yield _json("POST", path, _infer_doc(), "x-tier", **{"X-Tier": quote(tier)})
    # Other models with data of the wrong kind.
    for model, datatype, data in (
        ("identity_bytes", "BYTES", [1, 2]),
        ("identity_bytes", "BYTES", [[["a"]], ["b"]]),
        ("identity_bool", "BOOL", [1, 0]),
        ("identity_fp16", "FP16", [1e10, 1.0]),
        ("identity_uint8", "UINT8", [-1, 300]),
        ("identity_int8", "INT8", [200, 1]),
        ("identity_fp32", "FP32", ["nan", "inf"]),
    ):
        doc = {"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": [1, 2], "data": data}]}
        yield _json("POST", f"/v2/models/{model}/infer", doc, datatype)


# -- the binary tensor extension and encodings ----------------------------------------------------


def _binary(header_length: str, size: object = 64, blob: bytes = bytes(64) * 2, **extra: str) -> Case:
    header = json.dumps(
        {
            "inputs": [
                {"name": n, "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": size}}
                for n in ("INPUT0", "INPUT1")
            ]
        }
    ).encode()
    return Case(
        "POST", "/v2/models/simple/infer", header + blob,
        {"Content-Type": "application/octet-stream", HEADER: header_length, **extra},
        label=f"binary {header_length[:20]} {size!r}"[:60],
    )  # fmt: skip


def _binary_cases() -> Iterator[Case]:
    for header_length in ("²", "-1", "abc", "99999999999999999999", "9" * 5000, "0", "1", "", "+5", "1e3"):
        yield _binary(header_length)
    for size in (-1, "64", 2**70, 0, 65, 1.5, True, None):
        yield _binary("110", size)
    header = json.dumps({"inputs": [_simple_input(), _simple_input("INPUT1")]}).encode()
    yield Case(
        "POST", "/v2/models/simple/infer", header + b"trailing", {HEADER: str(len(header))}, label="extra"
    )
    for encoding, body in (
        ("br", b"x"),
        ("gzip", b"not gzip at all"),
        ("deflate", zlib.compress(b'{"inputs": []}')[:-3]),
        ("gzip", gzip.compress(b"{")),
        ("gzip, br", gzip.compress(b"{}")),
        ("gzip", gzip.compress(b"\xff\xfe")),
        ("compress", b"x"),
    ):
        yield Case("POST", "/v2/models/simple/infer", body, {"Content-Encoding": encoding}, label=encoding)
    for content_type in ("text/plain", "application/json; charset=latin-1", "multipart/form-data", "\u00e9"):
        yield Case(
            "POST", "/v2/models/simple/infer", b"{", {"Content-Type": quote(content_type)}, label=content_type
        )


# -- names, versions and paths ---------------------------------------------------------------------

VERSIONS = ["²", "0", "-1", "1.0", "99999999999999999999999", "٣", "1 ", "%00", "a" * 300, "01", "+1", "0x1"]
MODEL_NAMES = ["..", "²", "a" * 1000, "simple%0A", "%00", "simple%2F1", ".hidden", "-x", "simple.", "%20"]


def _path_cases() -> Iterator[Case]:
    for version in VERSIONS:
        v = quote(version, safe="%")
        base = f"/v2/models/simple/versions/{v}"
        yield _json("POST", base + "/infer", _infer_doc(), f"version {version[:10]}")
        for suffix in ("", "/ready", "/config", "/stats"):
            yield Case("GET", base + suffix, label=f"version {version[:10]}")
        yield _json(
            "POST", "/v1/jobs", {"model": "simple", "version": version, **_infer_doc()}, "job version"
        )
    for name in MODEL_NAMES:
        for suffix in ("", "/ready", "/config", "/stats"):
            yield Case("GET", f"/v2/models/{name}{suffix}", label=f"model {name[:10]}")
        yield _json("POST", f"/v2/models/{name}/infer", _infer_doc(), f"model {name[:10]}")
        yield Case("POST", f"/v2/repository/models/{name}/load", b"{}", label=f"load {name[:10]}")
        yield Case("POST", f"/v2/repository/models/{name}/unload", b"{}", label=f"unload {name[:10]}")


# -- jobs ------------------------------------------------------------------------------------------

JOB_FIELDS: list[tuple[str, Any]] = [
    ("model", None), ("model", 5), ("model", ""), ("model", "nope"), ("model", ["simple"]),
    ("version", True), ("version", -1), ("version", 1.5), ("version", "²"), ("version", 10**30),
    ("version", {"v": 1}), ("tier", 5), ("tier", "platinum"), ("tier", ""), ("max_attempts", 0),
    ("max_attempts", 101), ("max_attempts", "3"), ("max_attempts", True), ("max_attempts", 2**70),
    ("max_attempts", -1), ("id", 5), ("parameters", "x"), ("time_limit_s", -1), ("time_limit_s", "x"),
]  # fmt: skip
CURSORS = ["²", "99999999999999999999999", "-1", "abc", "1e3", "0x10", "9" * 5000, "1.5", " 1", "٣"]
LIMITS = ["0", "-1", "1001", "x", str(2**70), "1.5", ""]
JOB_IDS = ["²", "a" * 1000, "%00", "..", "%2F", "x y", "NULL", "' OR 1=1 --"]


def _job_cases() -> Iterator[Case]:
    for key, value in JOB_FIELDS:
        yield _json(
            "POST", "/v1/jobs", {"model": "simple", **_infer_doc(), key: value}, f"{key}={value!r}"[:40]
        )
    for body in (b"", b"{", b"[]", b"null", b'{"model": "simple"}', b'{"model": "simple", "inputs": 5}'):
        yield _json("POST", "/v1/jobs", body, "raw")
    for key in ("x" * 300, "\u00e9t\u00e9", ""):
        yield _json(
            "POST", "/v1/jobs", {"model": "simple", **_infer_doc()}, "idempotency",
            **{"Idempotency-Key": quote(key)},
        )  # fmt: skip
    for cursor in CURSORS:
        yield Case("GET", "/v1/jobs", params={"cursor": cursor}, label=f"cursor {cursor[:10]}")
    for limit in LIMITS:
        yield Case("GET", "/v1/jobs", params={"limit": limit}, label=f"limit {limit[:10]}")
    for status in ("bogus", "QUEUED", "²", ""):
        yield Case("GET", "/v1/jobs", params={"status": status}, label=f"status {status}")
    for job_id in JOB_IDS:
        quoted = quote(job_id, safe="%")
        yield Case("GET", f"/v1/jobs/{quoted}", label="id")
        yield Case("DELETE", f"/v1/jobs/{quoted}", label="id")
        yield Case("GET", f"/v1/jobs/{quoted}/events", label="id")
        yield Case("POST", f"/v1/admin/jobs/{quoted}/requeue", label="id")


# -- admin and repository --------------------------------------------------------------------------

TIMES = ["²", "nan", "inf", "1e400", "-1e400", "9999-99-99", "yesterday", "2026-13-01T00:00:00Z", "1" * 400]


def _admin_cases() -> Iterator[Case]:
    for cursor in CURSORS:
        yield Case("GET", "/v1/audit", params={"cursor": cursor}, label=f"cursor {cursor[:10]}")
    for moment in TIMES:
        yield Case("GET", "/v1/audit", params={"since": moment}, label=f"since {moment[:10]}")
        yield Case("GET", "/v1/audit", params={"until": moment}, label=f"until {moment[:10]}")
    for limit in LIMITS:
        yield Case("GET", "/v1/audit", params={"limit": limit}, label=f"limit {limit[:10]}")
    yield Case("GET", "/v1/audit", params={"kind": "everything"}, label="kind")
    yield Case("GET", "/v1/admin/keys", params={"include_revoked": "maybe"}, label="include_revoked")
    for key_id in JOB_IDS:
        yield Case("DELETE", f"/v1/admin/keys/{quote(key_id, safe='%')}", label="key id")
    for body in (b"{", b"[]", b'{"ready": "yes"}', b"\xff", b'"x"'):
        yield _json("POST", "/v2/repository/index", body, "index")
    for body in (
        b"{",
        b"[]",
        b'{"parameters": 5}',
        b'{"parameters": {"config": "{"}}',
        b'{"parameters": []}',
    ):
        yield _json("POST", "/v2/repository/models/simple/load", body, "load")
    for body in (b"{", b"[]", b"5"):
        yield _json("POST", "/v2/repository/models/simple/unload", body, "unload")
    for body in (
        b"",
        b"{",
        b'{"input": 5}',
        b'{"model": "nope", "input": "x"}',
        b'{"input": ["a"], "model": 5}',
    ):
        yield _json("POST", "/v1/embeddings", body, "embeddings")


# Invalid key requests only: one that succeeded would turn authentication on for later cases.
KEY_FIELDS: list[dict[str, Any]] = [
    {"tenant": "acme\n", "role": "user"}, {"tenant": "", "role": "user"}, {"tenant": "a/b", "role": "user"},
    {"tenant": "a" * 129, "role": "user"}, {"tenant": 5, "role": "user"}, {"role": "user"},
    {"tenant": "acme", "role": "adm\u0131n"}, {"tenant": "acme", "role": "root"},
    {"tenant": "acme", "role": ""},
    {"tenant": "acme", "role": 1}, {"tenant": "acme"}, {"tenant": "acme", "role": "user", "tier": "platinum"},
    {"tenant": "acme", "role": "user", "rate": "²/s"}, {"tenant": "acme", "role": "user", "rate": "1e3/s"},
    {"tenant": "acme", "role": "user", "rate": "0/s"},
    {"tenant": "acme", "role": "user", "rate": "5/fortnight"},
    {"tenant": "acme", "role": "user", "rate": 10**30}, {"tenant": "acme", "role": "user", "rate": "-5/s"},
    {"tenant": "acme", "role": "user", "rate": "9" * 5000 + "/s"},
    {"tenant": "acme", "role": "user", "rate": "5/s", "burst": "²"},
    {"tenant": "acme", "role": "user", "rate": "5/s", "burst": -1},
    {"tenant": "acme", "role": "user", "rate": "5/s", "burst": 10**20},
    {"tenant": "acme", "role": "user", "burst": 5},
    {"tenant": "acme", "role": "user", "concurrency": "²"},
    {"tenant": "acme", "role": "user", "concurrency": 0},
    {"tenant": "acme", "role": "user", "concurrency": -1},
    {"tenant": "acme", "role": "user", "concurrency": 10**20},
    {"tenant": "acme", "role": "user", "concurrency": True},
    {"tenant": "acme", "role": "user", "description": "x" * 10_000},
    {"tenant": "acme", "role": "user", "x": 1},
]  # fmt: skip


def _key_cases() -> Iterator[Case]:
    for number, doc in enumerate(KEY_FIELDS):
        yield _json("POST", "/v1/admin/keys", doc, f"key{number}")
    for body in (b"", b"{", b"[]", b"null", b"\xff"):
        yield _json("POST", "/v1/admin/keys", body, "raw key")


CASES = [
    *_infer_cases(), *_binary_cases(), *_path_cases(), *_job_cases(), *_admin_cases(), *_key_cases(),
]  # fmt: skip


def test_the_sweep_is_at_least_as_large_as_the_attack() -> None:
    assert len(CASES) >= 254, len(CASES)


@pytest.fixture(scope="module")
def server(example_repo: Path) -> Iterator[RunningServer]:
    # No job workers: accepted jobs stay queued and cost nothing; the cases are about the answers.
    with start_server(example_repo, env={"TIERSERVE_JOB_WORKERS": "0"}) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_bad_input_gets_a_server_error(http: httpx.Client, case: Case) -> None:
    headers = {name: value.encode() for name, value in case.headers.items()}  # raw UTF-8 where not ASCII
    request = http.build_request(
        case.method, case.path, content=case.body, headers=headers, params=case.params
    )
    response = http.send(request)
    assert response.status_code < 500, f"{case.id}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        assert response.json().get("error") or response.json().get("detail"), response.text[:300]


def test_the_server_still_serves_after_the_sweep(http: httpx.Client, server: RunningServer) -> None:
    assert_serves_simple(http)
    assert http.get("/v2/health/ready").status_code == 200
    assert "Traceback" not in server.log_text(), server.log_tail()
