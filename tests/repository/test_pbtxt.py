"""Protobuf text format, and Triton's ModelConfig mapped onto tierserve's settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tierserve.errors import InvalidInput
from tierserve.repository.config import DeclaredTensor
from tierserve.repository.loading import load_config
from tierserve.repository.pbtxt import parse_text_proto, triton_settings


def test_text_format_values_lists_and_messages() -> None:
    doc = parse_text_proto(
        """
        # a comment
        name: "a\\tb" 'c'
        count: -3, ratio: 1.5e3f; hex: 0x1F
        flag: true
        kind: KIND_CPU
        dims: [ 1, -1 ]
        empty: []
        input [ { name: "x" dims: [ 2 ] }, < name: "y" > ]
        group { count: 1 }
        group: { count: 2 }
        single { inner { deep: nan } }
        """
    )
    assert doc["name"] == "a\tbc"  # adjacent strings concatenate
    assert (doc["count"], doc["ratio"], doc["hex"], doc["flag"], doc["kind"]) == (
        -3,
        1500.0,
        31,
        True,
        "KIND_CPU",
    )
    assert doc["dims"] == [1, -1] and doc["empty"] == []
    assert doc["input"] == [{"name": "x", "dims": [2]}, {"name": "y"}]
    assert doc["group"] == [{"count": 1}, {"count": 2}]  # repeated by appearing twice
    assert doc["single"]["inner"]["deep"] != doc["single"]["inner"]["deep"]  # NaN


@pytest.mark.parametrize(
    "text, message",
    [
        ('input [ { name: "x" ', "line 1: the text ends"),
        ("name: @", "line 1: unexpected character '@'"),
        ("a: 1\nb {\n c: [1 2] }", "line 3: expected ',' or ']'"),
        ("a 5", "expected ':' or '{' after 'a'"),
        ('name: "bad \\q escape"', "unknown escape"),
    ],
)
def test_unparsable_text_names_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_text_proto(text)


def test_the_mapping_of_every_honoured_field() -> None:
    config = parse_text_proto(
        """
        name: "m" backend: "onnxruntime" max_batch_size: 16
        input [ { name: "x" data_type: TYPE_STRING dims: [ 1 ] reshape { shape: [ ] } } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" } ]
        dynamic_batching {
          max_queue_delay_microseconds: 1500 priority_levels: 3 default_priority_level: 2
          default_queue_policy {
            max_queue_size: 64 default_timeout_microseconds: 20000 timeout_action: REJECT
          }
        }
        instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 } ]
        version_policy { specific { versions: [ 1, 3 ] } }
        response_cache { enable: true }
        """
    )
    mapped = triton_settings(config, "m", source="test")
    assert mapped.settings == {
        "max_batch_size": 16,
        "label_files": {"y": "labels.txt"},
        "max_queue_delay_ms": 1.5,
        "default_priority_level": 2,
        "max_queue_size": 64,
        "default_timeout_us": 20000,
        "instances": 3,
        "version_policy": {"specific": [1, 3]},
        "response_cache": True,
    }
    assert mapped.inputs == (DeclaredTensor("x", "BYTES", (1,), ()),)
    assert mapped.outputs == (DeclaredTensor("y", "FP32", (10,)),)
    assert mapped.unhonoured == []


def test_unhonoured_fields_are_named() -> None:
    config = parse_text_proto(
        """
        platform: "tensorrt_plan" max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] format: FORMAT_NCHW } ]
        dynamic_batching { preferred_batch_size: [ 2 ] default_queue_policy { timeout_action: DELAY } }
        instance_group [ { count: 1 kind: KIND_GPU gpus: [ 0 ] } ]
        sequence_batching { }
        """
    )
    unhonoured = triton_settings(config, "m", source="test").unhonoured
    assert unhonoured == [
        "sequence_batching",
        "platform (tensorrt_plan: tierserve serves <version>/model.onnx with ONNX Runtime)",
        "input.format",
        "dynamic_batching.preferred_batch_size",
        "dynamic_batching.default_queue_policy.timeout_action",
        "instance_group.kind (KIND_GPU: GPU placement follows tierserve's pools)",
        "instance_group.gpus",
    ]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "other"}, "does not match the model's directory 'm'"),
        ({"max_batch_size": -1}, "max_batch_size must be an integer >= 0"),
        ({"input": [{"name": "x", "data_type": "TYPE_BF16", "dims": [1]}]}, "not supported by tierserve"),
        ({"input": [{"name": "x", "reshape": {"shape": [1]}}]}, "has a reshape but no dims"),
        ({"version_policy": {"newest": {}}}, "one of latest, all, specific"),
    ],
)
def test_configurations_tierserve_cannot_serve_are_refused(config: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        triton_settings(config, "m", source="test")


def test_the_json_form_of_a_load_request_maps_the_same() -> None:
    json_form = {"max_batch_size": "8", "input": [{"name": "x", "data_type": "TYPE_INT32", "dims": ["16"]}]}
    mapped = triton_settings(json_form, "m", source="test")
    assert mapped.settings == {"max_batch_size": 8}
    assert mapped.inputs == (DeclaredTensor("x", "INT32", (16,)),)


def test_declared_tensors_without_max_batch_size_do_not_batch() -> None:
    mapped = triton_settings(
        {"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 4]}]}, "m", source="t"
    )
    assert mapped.settings == {"max_batch_size": 0}


def test_load_config_layers_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = tmp_path / "layered"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(
        'max_batch_size: 4\noutput [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "l.txt" } ]'
        "\n"
        "model_warmup [ { name: 'w' } ]\n"
    )
    (model_dir / "config.yaml").write_text("max_batch_size: 2\ninstances: 1\n")
    (model_dir / "l.txt").write_text("no\nyes\n")
    with caplog.at_level(logging.WARNING):
        config = load_config(model_dir, "layered")
        load_config(model_dir, "layered")
    assert (config.max_batch_size, config.instances) == (2, 1)  # config.yaml wins
    assert config.labels == {"y": ("no", "yes")}
    assert config.outputs == (DeclaredTensor("y", "FP32", (2,)),)
    assert sum("model_warmup" in record.message for record in caplog.records) == 1
    override = load_config(model_dir, "layered", {"max_batch_size": 8})
    assert (override.max_batch_size, override.instances, override.outputs) == (8, 1, ())  # the request wins


def test_a_broken_config_pbtxt_fails_with_its_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.pbtxt").write_text("max_batch_size: 4\ninput [ {")
    with pytest.raises(InvalidInput, match=r"config.pbtxt: not valid protobuf text format: line 2"):
        load_config(tmp_path / "b", "b")


def test_a_partial_declaration_leaves_the_rest_to_the_graph() -> None:
    """Triton's autofill configurations name tensors with only some of their fields."""
    config = parse_text_proto('input [ { name: "A" data_type: TYPE_FP32 }, { name: "B" dims: [ 16 ] } ]')
    mapped = triton_settings(config, "m", source="test")
    assert mapped.inputs == (DeclaredTensor("A", "FP32", None), DeclaredTensor("B", None, (16,)))
