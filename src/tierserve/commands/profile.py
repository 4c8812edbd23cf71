"""``tierserve profile``: sweep batch sizes of every model version on every pool, write profile files."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from pathlib import Path

from tierserve.backends.wide import own_session
from tierserve.config import ServerSettings, load_server_config
from tierserve.engine.factory import build_engine
from tierserve.observability.metrics import Metrics
from tierserve.profiler.profile import Profile, save_profile
from tierserve.profiler.sweep import sweep

log = logging.getLogger(__name__)


def run_profile(settings: ServerSettings, models: Sequence[str], out: Path, reps: int) -> list[Profile]:
    server_config = load_server_config(settings.config_file)
    # Measure afresh: never seed from the files being rewritten.
    engine = build_engine(settings, server_config, Metrics(), profiles_dir=out / ".none")
    profiles: list[Profile] = []
    measured = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        for name in models or engine.repository.model_names():
            engine.load(name)
            config = engine.config(name)
            for deployment in (engine.deployment(name, str(v)) for v in engine.versions(name)):
                for pool, runner in deployment.runners.items():
                    log.info("profiling %s v%d on %s", name, deployment.version, pool)
                    backend = own_session(runner.backends[0])  # under load, not the idle-time wide session
                    batches = sweep(backend, runner.max_batch_size, config.warmup_shape, reps=reps)
                    profile = Profile(
                        model=name,
                        version=deployment.version,
                        pool=pool,
                        kind=runner.pool.kind,
                        batches=batches,
                        measured=measured,
                        input_shape={k: list(v) for k, v in config.warmup_shape.items()},
                    )
                    save_profile(out, profile)
                    profiles.append(profile)
    finally:
        engine.stop()
    return profiles
