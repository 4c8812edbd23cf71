"""A model repository for the text tests: the example repository with MiniLM (built by the CLI),
plus ``minilm-matryoshka``, the same model declared to allow truncated ``dimensions``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.server import tierserve_command

MINILM = "all-minilm-l6-v2"
MATRYOSHKA = "minilm-matryoshka"


def write_text_repository(root: Path) -> Path:
    repo = root / "models"
    result = subprocess.run(
        [*tierserve_command(), "example-models", str(repo)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"example-models failed:\n{result.stdout}\n{result.stderr}"
    # Only what the text tests use: fewer models load faster.
    for entry in repo.iterdir():
        if entry.is_dir() and entry.name.startswith("identity_"):
            for path in sorted(entry.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            entry.rmdir()
    twin = repo / MATRYOSHKA
    twin.mkdir()
    (twin / "1").symlink_to(repo / MINILM / "1", target_is_directory=True)
    (twin / "config.yaml").write_text(
        "max_batch_size: 8\ninstances: 1\n"
        "warmup_shape: {input_ids: [8], attention_mask: [8]}\n"
        "embedding: {tokenizer: tokenizer.json, max_length: 16, dimensions: [64, 128]}\n"
    )
    return repo
