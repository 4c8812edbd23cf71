"""What the metadata, readiness and model-configuration endpoints answer, for both protocols.

REST sends these dictionaries as JSON; gRPC fills its messages from them (field names are the
protocol's in both), so the two can never disagree.
"""

from __future__ import annotations

from typing import Any

from tierserve import __version__
from tierserve.engine.engine import Engine
from tierserve.errors import ModelNotFound, Unavailable
from tierserve.repository.repository import parse_version

EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "statistics",
    "model_repository",
    "system_shared_memory",
]
# gRPC has no shared-memory RPCs here (REST's /v2/systemsharedmemory only): it does not claim them.
GRPC_EXTENSIONS = [name for name in EXTENSIONS if name != "system_shared_memory"]
PLATFORM = "onnxruntime_onnx"


def server_metadata(extensions: list[str] = EXTENSIONS) -> dict[str, Any]:
    return {"name": "tierserve", "version": __version__, "extensions": extensions}


def model_metadata(engine: Engine, model_name: str, model_version: str | None) -> dict[str, Any]:
    deployment = engine.deployment(model_name, model_version)
    versions = [str(deployment.version)] if model_version else [str(v) for v in engine.versions(model_name)]
    variants = {pool: variant.describe() for pool, variant in deployment.variants.items()}
    return {
        "name": model_name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [spec.metadata() for spec in deployment.signature.inputs],
        "outputs": [spec.metadata() for spec in deployment.signature.outputs],
        # tierserve's addition: the pools serving this version and how each variant was made.
        "pools": [
            {**runner.pool.describe(), **variants.get(pool, {})}
            for pool, runner in deployment.runners.items()
        ],
        "variants": variants,
    }


def check_model_ready(engine: Engine, model_name: str, model_version: str | None) -> None:
    """Returns if the model (version) serves; ModelNotFound (404) if it does not exist, Unavailable
    (503) if it exists but is not loaded."""
    try:
        engine.deployment(model_name, model_version)
    except ModelNotFound:
        repository = engine.repository
        if model_name not in repository.model_names():
            raise
        if model_version and parse_version(model_version) not in repository.versions(model_name):
            raise  # a version that does not exist is unknown (404), not "not ready" (503)
        raise Unavailable(f"model '{model_name}' is not ready") from None


def model_config(engine: Engine, model_name: str, model_version: str | None) -> dict[str, Any]:
    """Triton's model configuration extension (what perf_analyzer reads)."""
    deployment = engine.deployment(model_name, model_version)
    config = engine.config(model_name)
    batching = deployment.max_batch_size > 0

    def tensor(spec: Any) -> dict[str, Any]:
        dims = list(spec.shape[1:] if batching else spec.shape)
        return {"name": spec.name, "data_type": spec.datatype.triton_name, "dims": dims}

    def output(spec: Any) -> dict[str, Any]:
        label_file = config.label_files.get(spec.name)
        return {**tensor(spec), "label_filename": label_file} if label_file else tensor(spec)

    doc: dict[str, Any] = {
        "name": model_name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": deployment.max_batch_size,
        "input": [tensor(spec) for spec in deployment.signature.inputs],
        "output": [output(spec) for spec in deployment.signature.outputs],
        "instance_group": [
            {
                "name": f"{model_name}_{pool}",
                "kind": "KIND_GPU" if r.pool.gpu else "KIND_CPU",
                "count": r.replicas,  # retired replicas (autoscaled down) excluded
            }
            for pool, r in deployment.runners.items()
        ],
        "version_policy": config.version_policy.describe(),
    }
    if batching:
        doc["dynamic_batching"] = {"max_queue_delay_microseconds": int(config.max_queue_delay_ms * 1000)}
    return doc
