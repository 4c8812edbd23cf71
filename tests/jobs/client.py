"""Helpers for the job integration tests: a repository (``simple`` + ``slow``) and an HTTP client
that submits jobs and waits for them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from support.models import slow_input, write_slow_repository
from support.v2 import simple_json_request, simple_rows
from tierserve.examples.basic import build_simple

FINAL = {"succeeded", "failed", "dead", "cancelled"}

# Fast retries and polling so that tests take seconds; every other setting is the server's default.
FAST_JOBS_ENV = {
    "TIERSERVE_JOB_RETRY_BASE_S": "0.05",
    "TIERSERVE_JOB_RETRY_MAX_S": "0.2",
    "TIERSERVE_JOB_POLL_INTERVAL_S": "0.05",
}


def write_jobs_repository(root: Path) -> Path:
    """``simple`` (example model, max batch 8) and the test-only ``slow`` model."""
    write_slow_repository(root)
    build_simple(root / "simple" / "1" / "model.onnx")
    (root / "simple" / "config.yaml").write_text("max_batch_size: 8\n")
    return root


def simple_job(seed: int = 0, **extra: Any) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    a, b = simple_rows(1, seed=seed)
    return {"model": "simple", **simple_json_request(a, b), **extra}, a, b


def slow_job(index: float, work: float, **extra: Any) -> dict[str, Any]:
    x = slow_input(index, work=work)
    return {
        "model": "slow",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
        **extra,
    }


def submit(http: httpx.Client, doc: dict[str, Any], key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else {}
    response = http.post("/v1/jobs", json=doc, headers=headers)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def wait_final(http: httpx.Client, job_ids: list[str], limit_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Each job once it is final; fails the test after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    done: dict[str, dict[str, Any]] = {}
    while True:
        for job_id in [j for j in job_ids if j not in done]:
            doc = job(http, job_id)
            if doc["status"] in FINAL:
                done[job_id] = doc
        if len(done) == len(job_ids):
            return done
        if time.monotonic() > deadline:
            pending = {j: job(http, j)["status"] for j in job_ids if j not in done}
            raise AssertionError(f"{len(pending)} job(s) not final after {limit_s} s: {pending}")
        time.sleep(0.05)  # polling interval of a bounded wait


def wait_status(http: httpx.Client, job_id: str, status: str, limit_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while (doc := job(http, job_id))["status"] != status:
        assert doc["status"] not in FINAL, f"job {job_id} ended {doc['status']} before {status}: {doc}"
        assert time.monotonic() < deadline, f"job {job_id} still {doc['status']}, not {status}"
        time.sleep(0.02)  # polling interval of a bounded wait
    return doc


def output(doc: dict[str, Any], name: str) -> list[Any]:
    data: list[Any] = next(o["data"] for o in doc["result"]["outputs"] if o["name"] == name)
    return data
