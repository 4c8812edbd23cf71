"""``tierserve profile`` writes profile files; ``tierserve serve`` seeds its estimates from them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from support.server import start_server, tierserve_command

pytestmark = pytest.mark.integration


def test_profile_then_serve_from_the_files(example_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    result = subprocess.run(
        [*tierserve_command(), "profile", "--model-repository", str(example_repo), "--model", "simple",
         "--out", str(out), "--reps", "3", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "simple v1 on cpu" in result.stdout
    doc = json.loads((out / "simple" / "1" / "cpu.json").read_text())
    assert doc["model"] == "simple" and sorted(int(b) for b in doc["batches"]) == [1, 2, 4, 8]
    assert {"mean_ms", "p50_ms", "p95_ms", "std_ms", "samples"} <= set(doc["batches"]["8"])

    args = ["--profiles", str(out), "--state-dir", str(tmp_path / "state")]
    with start_server(example_repo, extra_args=args) as server:
        profiles = httpx.get(f"{server.base_url}/v1/profiles").json()["profiles"]
    simple = next(p for p in profiles if p["model"] == "simple")
    assert simple["seeded_from"] == "profile file"
    assert simple["batches"]["8"]["mean_ms"] == pytest.approx(doc["batches"]["8"]["mean_ms"], rel=1e-3)
    identity = next(p for p in profiles if p["model"] == "identity_fp32")
    assert identity["seeded_from"] == "warm-up sweep"
