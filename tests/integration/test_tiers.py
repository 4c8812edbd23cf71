"""SLO tiers against a real server: backlog order, early rejection, dropping, per-tier stats.

The ``slow`` model's run time is chosen by the request (see ``support.models``), so a blocker
request holds the single replica while others queue behind it. Synchronisation is by polling
``/metrics`` for what the server has seen, never by sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.models import slow_input, write_slow_repository
from support.server import RunningServer, start_server
from support.v2 import assert_json_error, metric_samples, model_stats

pytestmark = pytest.mark.integration

BLOCKER_WORK = 20.0  # a couple of hundred ms: long enough to queue others behind it
QUICK_WORK = 1.0


def slow_request(index: float, work: float, **parameters: Any) -> dict[str, Any]:
    x = slow_input(index, work=work)
    return {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
        "parameters": parameters,
    }


@pytest.fixture(scope="module")
def tier_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One replica, one request per batch, and targets generous enough that order is all we see."""
    root = tmp_path_factory.mktemp("tiers")
    # No aging inside the test's time: on a slow machine the blocker may run past the default 1 s.
    repo = write_slow_repository(root / "models", max_batch_size=1, extra_config="aging_ms: 60000\n")
    config = root / "server.yaml"
    config.write_text(
        "tiers:\n"
        "  - {name: gold, target_ms: 50, priority: 0, miss_policy: reject}\n"
        "  - {name: silver, target_ms: 30000, priority: 1, miss_policy: reject}\n"
        "  - {name: bronze, target_ms: 60000, priority: 2, miss_policy: best_effort}\n"
    )
    with start_server(repo, extra_args=["--config", str(config)]) as server:
        yield server


@pytest.fixture
def http(tier_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tier_server.base_url, timeout=60.0) as client:
        yield client


def metric_sum(http: httpx.Client, name: str, **labels: str) -> float:
    samples = metric_samples(http.get("/metrics").text)
    return sum(v for n, lbl, v in samples if n == name and all(lbl.get(k) == w for k, w in labels.items()))


def wait_until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def started_batches(http: httpx.Client) -> float:
    return metric_sum(http, "tierserve_queue_duration_seconds_count", model="slow")


def test_queued_backlog_is_served_gold_then_silver_then_bronze(
    http: httpx.Client, tier_server: RunningServer
) -> None:
    finished: list[str] = []
    with (
        ThreadPoolExecutor(max_workers=4) as pool,
        httpx.Client(base_url=tier_server.base_url, timeout=60) as c,
    ):

        def send(name: str, work: float, headers: dict[str, str] | None = None, **params: Any) -> int:
            response = c.post(
                "/v2/models/slow/infer", json=slow_request(len(finished), work, **params), headers=headers
            )
            finished.append(name)
            return response.status_code

        def queued_depth() -> float:
            return metric_sum(http, "tierserve_tier_queue_depth", model="slow")

        before = started_batches(http)
        blocker = pool.submit(send, "blocker", BLOCKER_WORK, tier="bronze")
        wait_until(lambda: started_batches(http) > before, "the blocker to start")
        queued: list[Future[int]] = [
            pool.submit(send, "bronze", QUICK_WORK, tier="bronze"),
            pool.submit(send, "silver", QUICK_WORK, tier="silver"),
            # Gold by the X-Tier header, with its own generous deadline (Triton's timeout, in µs)
            # so that it queues rather than being rejected behind the blocker.
            pool.submit(send, "gold", QUICK_WORK, headers={"X-Tier": "gold"}, timeout=30_000_000),
        ]
        wait_until(lambda: queued_depth() >= 3, "three requests queued behind the blocker")
        assert blocker.result() == 200
        assert [f.result() for f in queued] == [200, 200, 200]
    assert finished == ["blocker", "gold", "silver", "bronze"]


def test_predicted_miss_is_rejected_at_once_with_tier_and_delay(http: httpx.Client) -> None:
    # Teach the estimator what a blocker-sized batch costs, then ask gold (50 ms) for one.
    assert http.post("/v2/models/slow/infer", json=slow_request(1, BLOCKER_WORK)).status_code == 200
    assert http.post("/v2/models/slow/infer", json=slow_request(1, BLOCKER_WORK)).status_code == 200
    rejected_before = metric_sum(
        http, "tierserve_tier_requests_total", model="slow", tier="gold", outcome="rejected"
    )
    response = http.post("/v2/models/slow/infer", json=slow_request(2, BLOCKER_WORK, tier="gold"))
    message = assert_json_error(response, 503)
    assert "gold" in message and "predicted completion in" in message
    assert int(response.headers["retry-after"]) >= 1
    after = metric_sum(http, "tierserve_tier_requests_total", model="slow", tier="gold", outcome="rejected")
    assert after == rejected_before + 1


def test_queued_request_that_can_no_longer_make_it_is_dropped_not_run(tmp_path: Path) -> None:
    # A fresh server: its estimator knows only the zero-cost warm-up, so it admits a silver request
    # with a 100 ms deadline behind a blocker it believes short; once the blocker ends, it is too late.
    repo = write_slow_repository(tmp_path / "models", max_batch_size=1)
    with start_server(repo) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        with ThreadPoolExecutor(max_workers=2) as pool:
            blocker = pool.submit(http.post, "/v2/models/slow/infer", json=slow_request(0, BLOCKER_WORK))
            wait_until(lambda: started_batches(http) >= 1, "the blocker to start")
            late = http.post(
                "/v2/models/slow/infer", json=slow_request(1, QUICK_WORK, tier="silver", timeout=100_000)
            )
            assert blocker.result().status_code == 200
        message = assert_json_error(late, 503)
        assert "silver" in message and "dropped" in message
        stats = model_stats(http, "slow")
        assert stats["inference_count"] == 1  # only the blocker ran
        assert stats["tier_stats"]["silver"]["rejected"]["count"] == 1


def test_stats_and_metrics_count_per_tier(http: httpx.Client) -> None:
    for tier in ("gold", "silver", "bronze"):
        http.post("/v2/models/slow/infer", json=slow_request(3, 0.0, tier=tier, timeout=30_000_000))
    tiers = model_stats(http, "slow")["tier_stats"]
    assert {"gold", "silver", "bronze"} <= set(tiers)
    assert tiers["silver"]["met"]["count"] >= 1
    text = http.get("/metrics").text
    assert "tierserve_tier_request_duration_seconds_bucket" in text
    assert "tierserve_queue_oldest_age_seconds" in text


def test_unknown_tier_is_a_400(http: httpx.Client) -> None:
    response = http.post("/v2/models/slow/infer", json=slow_request(4, 0.0, tier="platinum"))
    assert "platinum" in assert_json_error(response, 400)


def test_a_tier_known_from_the_header_is_rejected_before_its_body_is_decoded(http: httpx.Client) -> None:
    # Teach the estimator what a blocker-sized batch costs: gold (50 ms) cannot be admitted now.
    for _ in range(2):
        assert http.post("/v2/models/slow/infer", json=slow_request(1, BLOCKER_WORK)).status_code == 200
    undecodable = b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [not json'
    headers = {"Content-Type": "application/json"}
    response = http.post("/v2/models/slow/infer", content=undecodable, headers={**headers, "X-Tier": "gold"})
    message = assert_json_error(response, 503)  # not the 400 that decoding it would give
    assert "gold" in message and int(response.headers["retry-after"]) >= 1
    # Without the header the tier is the body's business: it is decoded, and found malformed.
    assert_json_error(http.post("/v2/models/slow/infer", content=undecodable, headers=headers), 400)
    # A body that names its own tier is decoded first, whatever the header says.
    own = slow_request(1, QUICK_WORK, tier="bronze")
    assert http.post("/v2/models/slow/infer", json=own, headers={"X-Tier": "gold"}).status_code == 200


def test_best_effort_request_past_its_own_timeout_is_answered_504_and_never_runs(
    http: httpx.Client, tier_server: RunningServer
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        before = started_batches(http)
        blocker = pool.submit(http.post, "/v2/models/slow/infer", json=slow_request(0, BLOCKER_WORK))
        wait_until(lambda: started_batches(http) > before, "the blocker to start")
        late = http.post(
            "/v2/models/slow/infer", json=slow_request(5, QUICK_WORK, tier="bronze", timeout=20_000)
        )
        assert "timeout" in assert_json_error(late, 504)
        assert blocker.result().status_code == 200
    # The timed-out request was withdrawn from the queue: nothing started after the blocker.
    assert started_batches(http) == before + 1
    timed_out = metric_sum(
        http, "tierserve_tier_requests_total", model="slow", tier="bronze", outcome="timed_out"
    )
    assert timed_out >= 1
