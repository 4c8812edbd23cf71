"""config.yaml's ``cache:`` block (the result-cache opt-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierserve.errors import InvalidInput
from tierserve.repository.config import CacheSettings, ModelConfig


def load(tmp_path: Path, text: str) -> ModelConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return ModelConfig.load(path)


def test_cache_is_off_unless_a_model_opts_in(tmp_path: Path) -> None:
    assert load(tmp_path, "max_batch_size: 4\n").cache is None
    assert load(tmp_path, "cache: false\n").cache is None
    assert load(tmp_path, "cache: {enable: false}\n").cache is None
    assert load(tmp_path, "cache: true\n").cache == CacheSettings()


def test_cache_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, "cache: {ttl_s: 60, max_bytes: 4096, tiers: [local], shared: true}\n").cache
    assert settings == CacheSettings(ttl_s=60.0, max_bytes=4096, tiers=("local",), shared=True)
    assert CacheSettings().tiers == ("local", "redis")


@pytest.mark.parametrize(
    "text",
    [
        "cache: 3",
        "cache: {ttl: 5}",
        "cache: {ttl_s: 0}",
        "cache: {ttl_s: yes}",
        "cache: {max_bytes: 0}",
        "cache: {tiers: [disk]}",
        "cache: {tiers: []}",
        "cache: {tiers: [local, local]}",
        "cache: {shared: 1}",
    ],
)
def test_bad_cache_settings_fail_the_load_with_a_clear_message(tmp_path: Path, text: str) -> None:
    with pytest.raises(InvalidInput, match="cache"):
        load(tmp_path, text + "\n")
