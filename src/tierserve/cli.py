"""Command line: ``tierserve serve``, ``tierserve example-models``. Thin: parse, build, call."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tierserve import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tierserve",
        description="Serve ONNX models over the Open Inference Protocol, routing each request to the "
        "cheapest hardware that meets its latency target.",
    )
    parser.add_argument("--version", action="version", version=f"tierserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve a model repository over HTTP",
        description="Serve a Triton-style model repository over HTTP (KServe V2).",
    )
    serve.add_argument(
        "--model-repository",
        type=Path,
        help="directory of <model>/<version>/model.onnx (env TIERSERVE_MODEL_REPOSITORY)",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    serve.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default 64 MiB)")
    serve.add_argument(
        "--config",
        type=Path,
        dest="config_file",
        help="server YAML: tiers [{name, target_ms, priority, miss_policy}], default_tier",
    )
    serve.add_argument(
        "--scheduling",
        choices=["tiers", "fifo"],
        help="tiers: priority + deadlines (default); fifo: ignore tiers (a baseline)",
    )
    serve.set_defaults(handler=_serve)

    examples = commands.add_parser(
        "example-models",
        help="write the example model repository",
        description="Build the example models (simple, identity_<dtype>, "
        "all-minilm-l6-v2) into DIR, deterministically and offline.",
    )
    examples.add_argument("directory", type=Path, metavar="DIR")
    examples.add_argument("--no-minilm", action="store_true", help="skip the 90 MB sentence encoder")
    examples.set_defaults(handler=_example_models)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from tierserve.config import ServerSettings
    from tierserve.server import run

    settings = ServerSettings.from_env(
        model_repository=args.model_repository,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        max_body_bytes=args.max_body_bytes,
        config_file=args.config_file,
        scheduling=args.scheduling,
    )
    if not settings.model_repository.is_dir():
        print(f"tierserve: model repository {settings.model_repository} is not a directory", file=sys.stderr)
        return 2
    run(settings)
    return 0


def _example_models(args: argparse.Namespace) -> int:
    from tierserve.examples.repository import write_example_repository

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = write_example_repository(args.directory, include_minilm=not args.no_minilm)
    print(f"wrote {len(names)} models to {args.directory}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
