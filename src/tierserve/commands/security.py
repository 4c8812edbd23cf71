"""Command line: the security flags of ``tierserve serve``, and ``tierserve keys``.

    tierserve keys create --tenant acme --role user [--tier gold] [--rate 50/s --burst 100] [--concurrency 8]
    tierserve keys list [--all] [--json]
    tierserve keys revoke ID

``keys`` works on the store that ``serve`` uses (``--state-dir`` / ``--database``, or their
``TIERSERVE_*`` variables); running servers pick changes up within a few seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tierserve.commands.common import cli_actor, run_command
from tierserve.errors import TierserveError


def add_security_arguments(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("security")
    group.add_argument(
        "--insecure",
        action="store_const",
        const=True,
        help="serve without authentication on a non-loopback address while no API keys exist "
        "(otherwise every request but health checks needs a key)",
    )
    group.add_argument(
        "--redis", help="redis://host:port/db: rate and concurrency limits shared by every server using it"
    )
    group.add_argument(
        "--jwt-secret-file",
        type=Path,
        help="accept HS256 JWTs signed with this secret (or TIERSERVE_JWT_SECRET)",
    )
    group.add_argument("--jwt-public-key", type=Path, help="accept RS256 JWTs signed for this PEM public key")
    group.add_argument("--jwt-jwks", type=Path, help="accept RS256 JWTs signed for a key of this JWKS file")
    group.add_argument("--jwt-audience", help="JWTs must carry this 'aud'")
    group.add_argument("--jwt-issuer", help="JWTs must carry this 'iss'")
    group.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
    group.add_argument("--ssl-keyfile", type=Path, help="the certificate's private key (PEM)")


def security_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "insecure", "redis", "jwt_secret_file", "jwt_public_key", "jwt_jwks", "jwt_audience", "jwt_issuer",
        "ssl_certfile", "ssl_keyfile",
    )  # fmt: skip
    return {name: getattr(args, name) for name in names}


def add_keys_command(commands: Any) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="Manage the API keys of the servers that share a --state-dir or --database. "
        "A key is shown once, when it is made; only its SHA-256 is stored.",
    )
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--state-dir", type=Path, help="as for serve (default .state)")
    store.add_argument("--database", help="as for serve: sqlite:///PATH or postgresql://...")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="make a key and print it (once)", parents=[store])
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", required=True, choices=["reader", "user", "operator", "admin"])
    create.add_argument("--tier", help="default tier of its requests that name none")
    create.add_argument("--rate", help="requests per second (or /min, /h), e.g. 50/s")
    create.add_argument("--burst", type=int, help="requests at once after a quiet spell (default: the rate)")
    create.add_argument("--concurrency", type=int, help="inference requests in flight at once")
    create.add_argument("--description", default="")
    create.add_argument(
        "--config", type=Path, dest="config_file", help="server YAML, to check --tier against"
    )
    create.add_argument("--json", action="store_true", help="print the key and its record as JSON")

    listing = actions.add_parser("list", help="list keys (never the keys themselves)", parents=[store])
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.add_argument("--json", action="store_true")

    revoke = actions.add_parser("revoke", help="revoke a key by its id", parents=[store])
    revoke.add_argument("key_id", metavar="ID")
    keys.set_defaults(handler=run_keys)


def run_keys(args: argparse.Namespace) -> int:
    return run_command("keys", _keys(args))


async def _keys(args: argparse.Namespace) -> int:
    from tierserve.config import ServerSettings, load_server_config
    from tierserve.scheduler.tiers import TierTable
    from tierserve.security.audit_records import admin_record
    from tierserve.security.key_admin import create_key, revoke_key
    from tierserve.security.keys import KeySpec
    from tierserve.security.store import open_security_store

    settings = ServerSettings.from_env(state_dir=args.state_dir, database=args.database)
    store = open_security_store(settings.database, settings.state_dir)
    actor = cli_actor()
    await store.open()
    try:
        if args.keys_command == "create":
            tiers = TierTable.from_config(load_server_config(args.config_file or settings.config_file))
            spec = KeySpec.parse(
                {
                    "tenant": args.tenant,
                    "role": args.role,
                    "tier": args.tier,
                    "rate": args.rate,
                    "burst": args.burst,
                    "concurrency": args.concurrency,
                    "description": args.description,
                },
                list(tiers.by_name),
            )
            now = time.time()
            record, secret = await create_key(store, spec, actor=actor, now=now)
            await store.append(
                [
                    admin_record(
                        "keys.create", actor=actor, tenant=spec.tenant, status=201, now=now, target=record.id
                    )
                ]
            )
            if args.json:
                print(json.dumps({"key": secret, **record.describe()}))
            else:
                print(f"id:     {record.id}")
                print(f"tenant: {record.tenant}   role: {record.role}   tier: {record.tier or '-'}")
                print(f"key:    {secret}")
                print("The key is shown only now; store it safely. Send it as 'Authorization: Bearer <key>'.")
        elif args.keys_command == "list":
            records = await store.keys(include_revoked=args.all)
            if args.json:
                print(json.dumps([r.describe() for r in records]))
            else:
                for r in records:
                    revoked = " REVOKED" if r.revoked_at is not None else ""
                    limits = r.limits.describe()
                    print(
                        f"{r.id}  tenant={r.tenant} role={r.role} tier={r.tier or '-'} "
                        f"rate={limits['rate'] or '-'} burst={limits['burst'] or '-'} "
                        f"concurrency={limits['concurrency'] or '-'}{revoked}  {r.description}"
                    )
        else:
            now = time.time()
            try:
                record = await revoke_key(store, args.key_id, now=now)
            except TierserveError as exc:
                await store.append(
                    [
                        admin_record(
                            "keys.revoke",
                            actor=actor,
                            tenant=None,
                            status=exc.status_code,
                            now=now,
                            target=args.key_id,
                            detail=exc.message,
                        )
                    ]
                )
                raise
            await store.append(
                [
                    admin_record(
                        "keys.revoke",
                        actor=actor,
                        tenant=record.tenant,
                        status=200,
                        now=now,
                        target=record.id,
                    )
                ]
            )
            print(f"revoked {record.id} (tenant {record.tenant}, role {record.role})")
    finally:
        await store.close()
    return 0
