"""The message classes: built from the committed descriptor set, which matches inference.proto,
and usable in the same process as Triton's own client stubs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from tritonclient.grpc import service_pb2

from tierserve.grpc_api import messages

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="needs grpcio-tools (test extra)")
def test_the_committed_descriptor_set_is_generated_from_inference_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "grpc_descriptor.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_messages_live_beside_tritonclients_stubs_and_speak_the_same_wire() -> None:
    ours = messages.ModelInferRequest(model_name="simple", id="7")
    tensor = ours.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 2])
    tensor.parameters["binary_data_size"].int64_param = 8
    ours.parameters["tier"].string_param = "gold"
    ours.raw_input_contents.append(b"\x01" * 8)
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.model_name == "simple" and theirs.id == "7"
    assert list(theirs.inputs[0].shape) == [1, 2]
    assert theirs.parameters["tier"].string_param == "gold"
    assert messages.ModelInferRequest.FromString(theirs.SerializeToString()) == ours


def test_every_rpc_of_the_service_is_served() -> None:
    from tierserve.grpc_api.service import ROLES

    assert set(messages.methods()) == set(ROLES)
    assert messages.SERVICE == "inference.GRPCInferenceService"
