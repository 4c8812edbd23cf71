"""Property-based fuzzing with schemathesis against a real server: its own OpenAPI document, and the
Open Inference Protocol spec (tests/fixtures/open_inference_rest.yaml, copied from KServe's).

Every generated case must pass ``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance`` and ``response_schema_conformance``. Path parameters are pinned to
an example model (``simple`` version 1; load/unload to ``identity_int8``, which nothing else here
uses) so that cases reach the handlers instead of stopping at "unknown model". The server runs
with authentication on, and every case carries an admin key. Hypothesis runs derandomized: the
same cases on every run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from security.servers import Key, make_key
from support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "open_inference_rest.yaml"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 25  # per operation and generation mode
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
PINNED = {
    "model_name": "simple",
    "MODEL_NAME": "simple",
    "model_version": "1",
    "MODEL_VERSION": "1",
}
REPOSITORY_MODEL = "identity_int8"


@dataclass
class Fuzzer:
    server: RunningServer
    admin: Key


@dataclass
class Outcome:
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    by_status: dict[int, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def fuzzer(example_repo: Path) -> Iterator[Fuzzer]:
    state = Path(tempfile.mkdtemp(prefix="tierserve-fuzz-"))
    admin = make_key("fuzz", "admin", state_dir=state)
    try:
        with start_server(example_repo, extra_args=["--state-dir", str(state)]) as server:
            yield Fuzzer(server, admin)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def fuzz(schema: Any, base_url: str, headers: dict[str, str]) -> Outcome:
    outcome = Outcome()
    for result in schema.get_all_operations():
        operation = result.ok()
        pinned = {
            name: REPOSITORY_MODEL if "/repository/" in operation.path else value
            for name, value in PINNED.items()
            if any(p.name == name for p in operation.path_parameters)
        }
        for mode in MODES:
            run_operation(operation, mode, pinned, base_url, headers, outcome)
    return outcome


def run_operation(
    operation: Any,
    mode: schemathesis.GenerationMode,
    pinned: dict[str, str],
    base_url: str,
    headers: dict[str, str],
    outcome: Outcome,
) -> None:
    try:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned)
    except Exception as exc:  # e.g. no negative cases exist for an operation without inputs
        if mode is schemathesis.GenerationMode.NEGATIVE:
            return
        raise AssertionError(f"{operation.label}: {exc}") from exc

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        outcome.cases += 1
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        outcome.by_status[response.status_code] = outcome.by_status.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        # Negative mode of an operation that takes no input: there is nothing to get wrong.
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            outcome.failures.append(f"{operation.label} [{mode.value}]: no cases could be generated")
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports failures as a group
        outcome.failures.append(f"{operation.label} [{mode.value}]: {exc!r}"[:3000])


def report(name: str, outcome: Outcome, record: Callable[[str, object], None]) -> None:
    record(f"{name}_cases", outcome.cases)
    print(f"schemathesis {name}: {outcome.cases} cases, statuses {dict(sorted(outcome.by_status.items()))}")
    assert not outcome.failures, "\n\n".join(outcome.failures)


def test_the_servers_own_openapi_document(
    fuzzer: Fuzzer, record_property: Callable[[str, object], None]
) -> None:
    schema = schemathesis.openapi.from_url(
        f"{fuzzer.server.base_url}/openapi.json", headers=fuzzer.admin.headers
    )
    outcome = fuzz(schema, fuzzer.server.base_url, fuzzer.admin.headers)
    report("own-openapi", outcome, record_property)
    assert outcome.cases >= 500


def test_the_open_inference_protocol_spec(
    fuzzer: Fuzzer, record_property: Callable[[str, object], None]
) -> None:
    schema = schemathesis.openapi.from_path(SPEC)
    outcome = fuzz(schema, fuzzer.server.base_url, fuzzer.admin.headers)
    report("open-inference-protocol", outcome, record_property)
    assert outcome.cases >= 50
