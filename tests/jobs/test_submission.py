"""What ``POST /v1/jobs`` accepts: the checks run before a job is stored, with a real engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tierserve.engine.engine import Engine
from tierserve.errors import InvalidInput, ModelNotFound
from tierserve.examples.basic import build_simple
from tierserve.jobs.submission import MAX_ATTEMPTS_LIMIT, SubmitDefaults, build_spec
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.tiers import TierTable

DEFAULTS = SubmitDefaults(max_attempts=3)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    repo = tmp_path_factory.mktemp("repo")
    build_simple(repo / "simple" / "1" / "model.onnx")
    running = Engine(ModelRepository(repo), Metrics())
    running.load_all()
    yield running
    running.stop()


def body(**fields: Any) -> bytes:
    doc: dict[str, Any] = {
        "model": "simple",
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
        ],
    }
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def test_a_valid_job_gets_defaults_and_keeps_its_body_as_sent(engine: Engine) -> None:
    raw = body()
    spec = build_spec(raw, None, engine, DEFAULTS)
    assert (spec.model, spec.version, spec.tier, spec.max_attempts) == ("simple", None, "bronze", 3)
    assert spec.body == raw and spec.idempotency_key is None
    assert spec.id != build_spec(raw, None, engine, DEFAULTS).id


def test_tier_version_and_attempts_come_from_the_body(engine: Engine) -> None:
    spec = build_spec(body(tier="gold", version=1, max_attempts=7), None, engine, DEFAULTS)
    assert (spec.tier, spec.version, spec.max_attempts) == ("gold", "1", 7)
    from_parameters = build_spec(body(parameters={"tier": "silver"}), None, engine, DEFAULTS)
    assert from_parameters.tier == "silver"


def test_a_job_carries_its_tiers_priority_and_a_time_limit(engine: Engine) -> None:
    gold = build_spec(body(tier="gold", time_limit_s=2.5), None, engine, DEFAULTS)
    assert (gold.priority, gold.time_limit_s) == (0, 2.5)
    bronze = build_spec(body(), None, engine, DEFAULTS)
    assert (bronze.priority, bronze.time_limit_s) == (2, None)  # the default tiers set no limit
    for wrong in (0, -1, "10", True, 1e9):
        with pytest.raises(InvalidInput, match="time_limit_s"):
            build_spec(body(time_limit_s=wrong), None, engine, DEFAULTS)


def test_a_tier_sets_the_default_time_limit_of_its_jobs(tmp_path_factory: pytest.TempPathFactory) -> None:
    tiers = TierTable.from_config(
        {"tiers": [{"name": "batch", "target_ms": 1000, "priority": 0, "job_time_limit_ms": 30000}]}
    )
    repo = tmp_path_factory.mktemp("repo-limits")
    build_simple(repo / "simple" / "1" / "model.onnx")
    limited = Engine(ModelRepository(repo), Metrics(), tiers)
    limited.load_all()
    try:
        assert build_spec(body(tier="batch"), None, limited, DEFAULTS).time_limit_s == 30.0
        assert build_spec(body(tier="batch", time_limit_s=5), None, limited, DEFAULTS).time_limit_s == 5.0
    finally:
        limited.stop()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "failed to parse"),
        (b"[]", "JSON object"),
        (body(model=None), "needs 'model'"),
        (body(version=[1]), "'version'"),
        (body(tier="platinum"), "unknown tier"),
        (body(tier=3), "'tier'"),
        (body(max_attempts=0), "'max_attempts'"),
        (body(max_attempts=MAX_ATTEMPTS_LIMIT + 1), "'max_attempts'"),
        (body(max_attempts=True), "'max_attempts'"),
        (body(inputs=[]), "non-empty 'inputs'"),
        (
            body(inputs=[{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}]),
            "INPUT1",
        ),
        (body(inputs=[{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [1.0]}]), "datatype"),
    ],
)
def test_a_bad_job_is_refused_before_it_is_stored(engine: Engine, raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        build_spec(raw, None, engine, DEFAULTS)


def test_an_unknown_model_or_version_is_a_404(engine: Engine) -> None:
    with pytest.raises(ModelNotFound):
        build_spec(body(model="nope"), None, engine, DEFAULTS)
    with pytest.raises(ModelNotFound):
        build_spec(body(version="9"), None, engine, DEFAULTS)


def test_the_fingerprint_of_an_idempotent_request_ignores_key_order_and_spacing(engine: Engine) -> None:
    doc = orjson.loads(body(tier="gold"))
    reordered = orjson.dumps(dict(reversed(list(doc.items()))), option=orjson.OPT_INDENT_2)
    first = build_spec(orjson.dumps(doc), "k", engine, DEFAULTS)
    second = build_spec(reordered, "k", engine, DEFAULTS)
    other = build_spec(body(tier="silver"), "k", engine, DEFAULTS)
    assert first.fingerprint == second.fingerprint != other.fingerprint
    assert build_spec(body(), None, engine, DEFAULTS).fingerprint == ""


def test_an_idempotency_key_has_a_bounded_length(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="Idempotency-Key"):
        build_spec(body(), "k" * 256, engine, DEFAULTS)
    with pytest.raises(InvalidInput, match="Idempotency-Key"):
        build_spec(body(), "", engine, DEFAULTS)
