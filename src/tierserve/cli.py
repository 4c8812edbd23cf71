"""Command line: ``tierserve serve``, ``example-models``, ``profile``, ``simulate``, ``keys``,
``rollout``. Thin: parse, build, call."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierserve import __version__
from tierserve.commands.rollout import add_rollout_command
from tierserve.commands.security import add_keys_command, add_security_arguments, security_overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result: int = args.handler(args)
    except UsageError as exc:  # bad input from the command line or its files: one line, exit 2
        print(f"tierserve: {exc}", file=sys.stderr)
        return 2
    return result


class UsageError(Exception):
    """What ``main`` reports as one line with exit status 2."""


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {raw!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def _on_off(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {raw!r}")
    return value in ("true", "1", "yes", "on")


def _explained(fn: Any) -> Any:
    """Run ``fn``; the errors that bad input causes become one ``UsageError`` line."""
    import yaml

    from tierserve.errors import TierserveError

    try:
        return fn()
    except TierserveError as exc:
        raise UsageError(exc.message) from None
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise UsageError(f"{type(exc).__name__}: {exc}") from None


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
    serve.add_argument("--port", type=_port, help="port to bind, 0..65535 (default 8000)")
    serve.add_argument(
        "--metrics-port",
        type=_port,
        help="also serve /metrics on this port, without authentication (Triton's is 8002; default off)",
    )
    serve.add_argument("--metrics-host", help="address of the metrics port (default: --host)")
    serve.add_argument(
        "--grpc-port",
        type=_port,
        help="also serve Triton's GRPCInferenceService on this port, e.g. 8001 (default: no gRPC)",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    serve.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default 64 MiB)")
    serve.add_argument(
        "--max-decoding-bytes",
        type=int,
        help="memory for request bodies being decoded at once, JSON counted at 24x its size; a body "
        "needing more is refused with 413, one finding it taken waits, then 503 (default 512 MiB)",
    )
    serve.add_argument(
        "--header-timeout", type=float, dest="header_timeout_s", help="seconds for a request's headers (10)"
    )
    serve.add_argument(
        "--body-timeout", type=float, dest="body_timeout_s", help="longest silence inside a body, s (30)"
    )
    serve.add_argument(
        "--max-connections", type=int, help="open connections at most (default: open-file limit - 64)"
    )
    serve.add_argument(
        "--strict-readiness",
        type=_on_off,
        metavar="BOOL",
        help="true (default): /v2/health/ready is 503 while a model the server started with failed to "
        "load; false: ready once started, whatever the models",
    )
    serve.add_argument(
        "--exit-on-error",
        type=_on_off,
        metavar="BOOL",
        help="true: exit (status 2) when a model fails to load at start-up; "
        "false (default): serve the others",
    )
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
    serve.add_argument(
        "--autoscale",
        choices=["off", "recommend", "local"],
        help="recommend (default): publish tierserve_desired_replicas and GET /v1/autoscale; "
        "local: also grow and shrink local CPU pools within this host's cores",
    )
    serve.add_argument(
        "--profiles",
        type=Path,
        dest="profiles_dir",
        help="profile files from `tierserve profile` (default <state-dir>/profiles)",
    )
    serve.add_argument(
        "--state-dir", type=Path, help="directory of the embedded stores, e.g. jobs.db (default .state)"
    )
    serve.add_argument(
        "--database",
        help="job store: postgresql://... to share jobs between servers, or sqlite:///PATH "
        "(default: SQLite in --state-dir)",
    )
    serve.add_argument(
        "--cache-bytes", type=int, help="result cache: bytes of this process's LRU layer (default 256 MiB)"
    )
    serve.add_argument(
        "--cache-redis",
        help="result cache: redis://... layer shared by every server (default: the --redis URL, if any)",
    )
    add_security_arguments(serve)
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

    profile = commands.add_parser(
        "profile",
        help="measure service time per batch size on every pool",
        description="Sweep batch sizes 1, 2, 4, ... max_batch_size of each model version on each pool "
        "of the server config and write <out>/<model>/<version>/<pool>.json (mean, p50, p95, std). "
        "`tierserve serve` seeds its estimates from these files and refines them online.",
    )
    profile.add_argument("--model-repository", type=Path, required=True)
    profile.add_argument("--model", action="append", default=[], help="profile only this model (repeatable)")
    profile.add_argument("--config", type=Path, dest="config_file", help="server YAML with the pools")
    profile.add_argument("--state-dir", type=Path, help="where int8 variants are cached (default .state)")
    profile.add_argument("--out", type=Path, help="profile directory (default <state-dir>/profiles)")
    profile.add_argument("--reps", type=int, default=20, help="timed runs per batch size (default 20)")
    profile.set_defaults(handler=_profile)

    simulate = commands.add_parser(
        "simulate",
        help="run the routing, scheduling and autoscaling policy over a simulated fleet",
        description="Drive the server's own scheduler, router and fleet planner with a virtual clock over "
        "a scenario (trace + pools with profiles, costs and provisioning delays), beside baselines (each "
        "pool kind as a fixed fleet sized for gold, reactive autoscaling). Day-scale scenarios "
        "(trace kind 'day', e.g. deploy/sim/fleet-day.yaml) run on the fluid model per tick. Writes "
        "simulation.json and simulation.html to --out.",
    )
    simulate.add_argument("--scenario", type=Path, required=True, help="scenario YAML (see deploy/sim/)")
    simulate.add_argument("--out", type=Path, default=Path("sim-results"), help="report directory")
    simulate.add_argument("--seed", type=int, help="override the scenario's seed")
    simulate.add_argument("--no-baselines", action="store_true", help="simulate tierserve's policy only")
    simulate.set_defaults(handler=_simulate)
    add_keys_command(commands)
    add_rollout_command(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    settings = _explained(lambda: _serve_settings(args))
    if not settings.model_repository.is_dir():
        print(f"tierserve: model repository {settings.model_repository} is not a directory", file=sys.stderr)
        return 2
    from tierserve.server import run

    status: int = _explained(lambda: run(settings))
    return status


def _serve_settings(args: argparse.Namespace) -> Any:
    from tierserve.config import ServerSettings, check_settings

    settings = ServerSettings.from_env(
        model_repository=args.model_repository,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        grpc_port=args.grpc_port,
        log_level=args.log_level,
        max_body_bytes=args.max_body_bytes,
        max_decoding_bytes=args.max_decoding_bytes,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
        max_connections=args.max_connections,
        strict_readiness=args.strict_readiness,
        exit_on_error=args.exit_on_error,
        config_file=args.config_file,
        scheduling=args.scheduling,
        state_dir=args.state_dir,
        database=args.database,
        profiles_dir=args.profiles_dir,
        autoscale=args.autoscale,
        cache_bytes=args.cache_bytes,
        cache_redis=args.cache_redis,
        **security_overrides(args),
    )
    check_settings(settings)
    return settings


def _profile(args: argparse.Namespace) -> int:
    from tierserve.commands.profile import run_profile
    from tierserve.config import ServerSettings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = _explained(
        lambda: ServerSettings.from_env(
            model_repository=args.model_repository, config_file=args.config_file, state_dir=args.state_dir
        )
    )
    out = args.out or settings.state_dir / "profiles"
    for p in _explained(lambda: list(run_profile(settings, args.model, out, args.reps))):
        sizes = ", ".join(f"{rows}: {t.p50_ms:.2f}" for rows, t in sorted(p.batches.items()))
        print(f"{p.model} v{p.version} on {p.pool} ({p.kind}) p50 ms by batch size: {sizes}")
    print(f"profiles written to {out}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import time

    from tierserve.sim import report
    from tierserve.sim.scenario import load_scenario, run_all

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scenario = _explained(lambda: load_scenario(args.scenario, seed=args.seed))
    started = time.perf_counter()
    outcome = _explained(
        lambda: run_all(scenario, baselines=not args.no_baselines, progress=report.ProgressBar())
    )
    doc = report.summarise(outcome["results"], outcome["fixed_sizes"])
    doc["notes"] = outcome.get("notes", [])
    doc["scenario"] = str(args.scenario)
    doc["seed"] = scenario.seed
    doc["wall_s"] = round(time.perf_counter() - started, 2)
    paths = report.write(
        args.out, doc, outcome["results"]["tierserve"].timeline, f"tierserve simulate: {args.scenario}"
    )
    print(report.table(doc))
    written = ", ".join(map(str, paths))
    requests = scenario.counts.requests if scenario.counts is not None else len(scenario.trace)
    print(f"{requests} requests per run, {doc['wall_s']} s in all; wrote {written}")
    return 0


def _example_models(args: argparse.Namespace) -> int:
    from tierserve.examples.repository import write_example_repository

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = write_example_repository(args.directory, include_minilm=not args.no_minilm)
    print(f"wrote {len(names)} models to {args.directory}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
