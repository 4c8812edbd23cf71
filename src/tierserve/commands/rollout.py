"""``tierserve rollout``: start, inspect, promote, roll back and delete rollouts.

    tierserve rollout start simple --candidate 2 --stable 1 [--steps 5,25,50,100] [--mode canary|ab|shadow]
    tierserve rollout list [--json]
    tierserve rollout show simple [--json]
    tierserve rollout promote simple [--reason TEXT]
    tierserve rollout rollback simple [--reason TEXT]
    tierserve rollout delete simple

Like ``tierserve keys``, it works on the store that ``serve`` uses (``--state-dir`` / ``--database``);
running servers pick a change up within a second (their rollout loop's tick). Every change is in
the audit log.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

from tierserve.commands.common import cli_actor, run_command
from tierserve.errors import Conflict, InvalidInput, NotFound


def add_rollout_command(commands: Any) -> None:
    rollout = commands.add_parser(
        "rollout",
        help="canary, A/B and shadow rollouts of a model version",
        description="Manage the rollouts of the servers that share a --state-dir or --database.",
    )
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--state-dir", type=Path, help="as for serve (default .state)")
    store.add_argument("--database", help="as for serve: sqlite:///PATH or postgresql://...")
    actions = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    start = actions.add_parser("start", help="start a rollout of a candidate version", parents=[store])
    start.add_argument("model")
    start.add_argument("--candidate", type=int, required=True, help="the new version")
    start.add_argument("--stable", type=int, required=True, help="the version serving the model now")
    start.add_argument("--mode", choices=["canary", "ab", "shadow"], default="canary")
    start.add_argument(
        "--steps", default="5,25,50,100", help="canary: candidate percentages (default 5,25,50,100)"
    )
    start.add_argument("--weight", type=float, help="ab: hashed share; shadow: mirrored share (percent)")
    start.add_argument(
        "--min-samples", type=int, default=200, help="candidate requests per step (default 200)"
    )
    start.add_argument(
        "--min-step-s", type=float, default=30.0, help="seconds per step at least (default 30)"
    )
    start.add_argument(
        "--check-interval-s", type=float, default=5.0, help="seconds between checks (default 5)"
    )
    start.add_argument("--sticky", choices=["tenant", "key", "request"], default="tenant")
    start.add_argument("--ab-by", choices=["header", "tenant", "key"], help="ab: what assigns a request")
    start.add_argument("--ab-header", help="ab: the header (default x-rollout-arm)")
    start.add_argument("--ab-value", action="append", default=[], help="ab: a value sent to the candidate")
    start.add_argument("--no-auto-rollback", action="store_true", help="ab/shadow: report, never roll back")
    start.add_argument("--json", action="store_true")

    listing = actions.add_parser("list", help="the current rollout of every model", parents=[store])
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="a model's rollout: state, decisions and reasons", parents=[store])
    show.add_argument("model")
    show.add_argument("--json", action="store_true")
    for name, text in (
        ("promote", "all traffic to the candidate now"),
        ("rollback", "all traffic to stable now"),
    ):
        action = actions.add_parser(name, help=text, parents=[store])
        action.add_argument("model")
        action.add_argument("--reason")
    delete = actions.add_parser(
        "delete", help="roll back a stepping rollout, or archive a finished one", parents=[store]
    )
    delete.add_argument("model")
    rollout.set_defaults(handler=run_rollout)


def run_rollout(args: argparse.Namespace) -> int:
    return run_command("rollout", _rollout(args))


async def _rollout(args: argparse.Namespace) -> int:
    from tierserve.config import ServerSettings
    from tierserve.releases.store import open_rollout_store
    from tierserve.rollout import RolloutPlan, promote, rollback, start
    from tierserve.security.store import open_security_store

    settings = ServerSettings.from_env(state_dir=args.state_dir, database=args.database)
    store = open_rollout_store(settings.database, settings.state_dir)
    audit = open_security_store(settings.database, settings.state_dir)
    actor = cli_actor()
    command = args.rollout_command
    await store.open()
    await audit.open()
    try:
        now = time.time()
        if command == "list":
            rollouts = [s.rollout.describe() for s in await store.current()]
            print(json.dumps(rollouts) if args.json else "\n".join(_line(r) for r in rollouts))
            return 0
        if command == "start":
            plan = RolloutPlan.parse(_plan(args))
            rollout = start(
                args.model, plan, stable=args.stable, now=now, rollout_id=uuid.uuid4().hex, actor=actor
            )
            stored = await store.create(rollout, now)
        else:
            found = await store.find(args.model)
            if found is None:
                raise NotFound(f"no rollout of '{args.model}'")
            stored = found
            if command == "show":
                doc = stored.rollout.describe()
                print(json.dumps(doc) if args.json else _details(doc))
                return 0
            if command == "delete" and not stored.rollout.active:
                if not await store.archive(stored, now):
                    raise Conflict("the rollout changed meanwhile; try again")
                await _audit(audit, "rollout.archive", actor, args.model, f"rollout {stored.rollout.id}", now)
                print(f"archived the rollout of {args.model}")
                return 0
            reasons = (getattr(args, "reason", None) or f"{command} by {actor}",)
            change = promote if command == "promote" else rollback
            updated = await store.update(stored, change(stored.rollout, now, actor, reasons), now)
            if updated is None:
                raise Conflict("the rollout changed meanwhile (a server decided); try again")
            stored = updated
        decision = stored.rollout.decisions[-1]
        detail = f"rollout {stored.rollout.id}: {decision.action} to {decision.weight:g}%: " + "; ".join(
            decision.reasons
        )
        await _audit(audit, f"rollout.{decision.action}", actor, args.model, detail, now)
        doc = stored.rollout.describe()
        print(json.dumps(doc) if getattr(args, "json", False) else _line(doc))
    finally:
        await store.close()
        await audit.close()
    return 0


async def _audit(store: Any, action: str, actor: str, model: str, detail: str, now: float) -> None:
    from tierserve.security.audit_records import admin_record

    await store.append(
        [admin_record(action, actor=actor, tenant=None, status=200, now=now, target=model, detail=detail)]
    )


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    try:
        steps = [float(s) for s in args.steps.split(",")]
    except ValueError:
        raise InvalidInput(f"--steps must be comma-separated percentages, got {args.steps!r}") from None
    plan: dict[str, Any] = {
        "candidate": args.candidate,
        "stable": args.stable,
        "mode": args.mode,
        "steps": steps,
        "min_samples": args.min_samples,
        "min_step_s": args.min_step_s,
        "check_interval_s": args.check_interval_s,
        "sticky": args.sticky,
        "auto_rollback": not args.no_auto_rollback,
    }
    if args.weight is not None:
        plan["weight"] = args.weight
    if args.ab_by or args.ab_header or args.ab_value:
        ab: dict[str, Any] = {"candidate_values": args.ab_value}
        if args.ab_by:
            ab["by"] = args.ab_by
        if args.ab_header:
            ab["header"] = args.ab_header
        plan["ab"] = ab
    return plan


def _line(doc: dict[str, Any]) -> str:
    return (
        f"{doc['model']}  {doc['mode']} v{doc['stable']} -> v{doc['candidate']}  {doc['phase']}  "
        f"candidate {doc['weight']:g}%  (rollout {doc['id']})"
    )


def _details(doc: dict[str, Any]) -> str:
    lines = [_line(doc)]
    for d in doc["decisions"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["at"]))
        lines.append(
            f"  {when}Z  {d['action']:<8} {d['weight']:>5g}%  by {d['actor']}: " + "; ".join(d["reasons"])
        )
    return "\n".join(lines)
