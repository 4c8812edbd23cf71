"""Triton's perf_analyzer drives the gRPC service unchanged (unary and streaming). It is installed
by ``scripts/perf_analyzer.sh install`` (which .ci/run calls); without it the test skips."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from grpc_api.conftest import GrpcServer

pytestmark = pytest.mark.integration

WRAPPER = Path(__file__).resolve().parents[2] / ".cache" / "perf_analyzer" / "perf_analyzer"


@pytest.mark.skipif(not WRAPPER.exists(), reason="run scripts/perf_analyzer.sh install")
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_perf_analyzer_over_grpc(grpc_server: GrpcServer, streaming: bool) -> None:
    command = [
        str(WRAPPER), "-m", "simple", "-i", "grpc", "-u", grpc_server.grpc_url,
        "--concurrency-range", "2",
        # A fixed number of requests per window, and any spread accepted: the machine is shared,
        # and this checks that it works, not how fast (benchmarks/serving.py measures that).
        "--measurement-mode", "count_windows", "--measurement-request-count", "100",
        "-s", "1000", "--max-trials", "3",
        *(["--streaming"] if streaming else []),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    found = re.search(r"Concurrency: 2, throughput: ([\d.]+) infer/sec", output)
    assert found is not None and float(found.group(1)) > 0, output
    assert "error" not in output.lower(), output
