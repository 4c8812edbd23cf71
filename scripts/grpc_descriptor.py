"""Regenerate src/tierserve/grpc_api/inference.binpb from inference.proto (needs grpcio-tools).

    .venv/bin/python scripts/grpc_descriptor.py          # write it
    .venv/bin/python scripts/grpc_descriptor.py --check  # exit 1 if the committed file is stale

The descriptor set is committed so that serving needs only grpcio and protobuf at run time;
tests/grpc_api/test_messages.py runs the check whenever grpcio-tools is installed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

PROTO_DIR = Path(__file__).resolve().parent.parent / "src" / "tierserve" / "grpc_api"
PROTO = "inference.proto"
DESCRIPTOR_SET = PROTO_DIR / "inference.binpb"


def generate() -> bytes:
    """The descriptor set of inference.proto, without source info (so comments do not change it)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "inference.binpb"
        code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", PROTO])
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        # Re-serialised deterministically: the bytes depend only on the descriptors.
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
        return files.SerializeToString(deterministic=True)


def main(argv: list[str]) -> int:
    fresh = generate()
    if "--check" in argv:
        current = DESCRIPTOR_SET.read_bytes() if DESCRIPTOR_SET.exists() else b""
        if current != fresh:
            print(f"{DESCRIPTOR_SET} is stale: run python scripts/grpc_descriptor.py", file=sys.stderr)
            return 1
        return 0
    DESCRIPTOR_SET.write_bytes(fresh)
    print(f"wrote {DESCRIPTOR_SET} ({len(fresh)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
