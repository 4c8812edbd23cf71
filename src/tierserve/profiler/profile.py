"""Profile files: ``<dir>/<model>/<version>/<pool>.json``, service time per batch size with spread.

Example::

    {"model": "all-minilm-l6-v2", "version": 1, "pool": "cpu", "kind": "onnx-cpu",
     "measured": "2026-11-22T12:00:00Z", "input_shape": {"input_ids": [32]},
     "batches": {"1": {"mean_ms": 8.1, "p50_ms": 8.0, "p95_ms": 8.9, "std_ms": 0.3, "samples": 20}, ...}}

The simulator reads the same files, so hand-written ones (for hardware you do not have) work too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tierserve.errors import InvalidInput


@dataclass(frozen=True)
class BatchTiming:
    mean_ms: float
    p50_ms: float
    p95_ms: float
    std_ms: float
    samples: int


@dataclass
class Profile:
    model: str
    version: int
    pool: str
    kind: str
    batches: dict[int, BatchTiming]
    measured: str = ""
    input_shape: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["batches"] = {str(rows): asdict(t) for rows, t in sorted(self.batches.items())}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Profile:
        try:
            return cls(
                model=str(doc["model"]),
                version=int(doc["version"]),
                pool=str(doc["pool"]),
                kind=str(doc.get("kind", "")),
                batches={int(rows): BatchTiming(**t) for rows, t in doc["batches"].items()},
                measured=str(doc.get("measured", "")),
                input_shape=dict(doc.get("input_shape", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"invalid profile: {exc}") from None


def profile_path(directory: Path, model: str, version: int, pool: str) -> Path:
    return directory / model / str(version) / f"{pool.replace(':', '_')}.json"


def save_profile(directory: Path, profile: Profile) -> Path:
    path = profile_path(directory, profile.model, profile.version, profile.pool)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile.to_json(), indent=1) + "\n")
    return path


def load_profile(path: Path) -> Profile:
    try:
        return Profile.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read profile {path}: {exc}") from None
