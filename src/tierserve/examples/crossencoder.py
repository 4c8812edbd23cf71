"""``tiny-cross-encoder``: a small deterministic cross-encoder for testing re-ranking.

No cross-encoder ships on PyPI, so this one is built here: it reads a (query, document) pair the
way BERT cross-encoders do (``input_ids``, ``attention_mask``, ``token_type_ids`` from the MiniLM
WordPiece tokenizer) and scores it by the cosine between the bag of the query's token vectors and
the bag of the document's (segment 0 and segment 1). The token vectors are seeded random unit
vectors (special tokens zero), so a document that shares more words with the query scores higher:
lexical overlap, not meaning, which is what a test needs to tell a re-ranked order apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 64
SEED = 20261130
SPECIAL_TOKENS = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK] in the MiniLM vocabulary
_OPSET = 17
_IR_VERSION = 8


def build_cross_encoder(path: Path, vocab_size: int) -> None:
    """Write the model (``score`` FP32 [batch, 1]) to ``path``."""
    rng = np.random.default_rng(SEED)
    table = rng.standard_normal((vocab_size, WIDTH)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    table[list(SPECIAL_TOKENS)] = 0.0
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),  # [b, s, W]
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["token_type_ids"], ["second_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mask_f", "second_f"], ["doc_mask"]),
        helper.make_node("Sub", ["mask_f", "doc_mask"], ["query_mask"]),
        helper.make_node("Unsqueeze", ["doc_mask", "axis2"], ["doc_mask3"]),
        helper.make_node("Unsqueeze", ["query_mask", "axis2"], ["query_mask3"]),
        helper.make_node("Mul", ["tokens", "doc_mask3"], ["doc_tokens"]),
        helper.make_node("Mul", ["tokens", "query_mask3"], ["query_tokens"]),
        helper.make_node("ReduceSum", ["doc_tokens", "axis1"], ["doc"], keepdims=0),  # [b, W]
        helper.make_node("ReduceSum", ["query_tokens", "axis1"], ["query"], keepdims=0),
        helper.make_node("Mul", ["doc", "query"], ["product"]),
        helper.make_node("ReduceSum", ["product", "axis1"], ["dot"], keepdims=1),  # [b, 1]
        helper.make_node("ReduceL2", ["doc"], ["doc_norm"], axes=[1], keepdims=1),
        helper.make_node("ReduceL2", ["query"], ["query_norm"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["doc_norm", "query_norm"], ["norms"]),
        helper.make_node("Max", ["norms", "epsilon"], ["safe_norms"]),
        helper.make_node("Div", ["dot", "safe_norms"], ["score"]),
    ]
    initializers = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "epsilon"),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-cross-encoder",
        inputs,
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
