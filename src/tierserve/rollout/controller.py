"""The rollout controller: a state machine over plain data, with the clock passed in.

A rollout moves a model's unversioned traffic from its ``stable`` version to a ``candidate``:

* **canary**: the candidate gets ``steps[0]`` percent (e.g. 5), then each step's share in turn
  (25, 50) whenever the judge says promote, and all of it at 100 (``promoted``). A judge's
  rollback at any step, or an operator's, sends everything back to stable at once (``rolled_back``).
* **ab**: a fixed split by header, tenant or API key (``AbSplit``); the judge reports and may roll
  back (``auto_rollback``), but only an operator promotes.
* **shadow**: every request is served by stable; ``weight`` percent are also sent to the candidate
  and its answers discarded, so the judge sees the candidate's latency and errors with no risk.
  Like A/B, it never promotes on its own.

``evaluate`` is one check: windows of both arms in, the next state and the verdict out. The error
rate's sequential test runs at every check. The other tests run when the candidate has
``min_samples`` requests, then whenever its sample has grown by a quarter, and once when the step's
minimum time is up (looks by information, not by the clock: a long step sees few looks, so each
keeps a usable share of the budget); look ``k`` of ``S`` judged steps may spend
``alpha / S * 6 / (pi^2 k^2)`` of the false-rollback budget (these sum to ``alpha`` over any number
of looks). Checking every few seconds thus stays valid: two identical versions are rolled back with
probability at most ``alpha``.

Example::

    plan = RolloutPlan.parse({"candidate": 2, "steps": [5, 25, 50, 100]})
    r = start("simple", plan, stable=1, now=0.0, rollout_id="r-1")
    r.weight                                               # 5.0
    r, verdict = evaluate(r, stable_window, candidate_window, now=40.0)
    r.phase, r.weight, verdict.reasons                      # stepping, 25.0, ("no regression", ...)
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tierserve.errors import Conflict, InvalidInput
from tierserve.rollout.judge import Action, Criteria, Gate, Verdict, error_check, judge
from tierserve.rollout.split import STICKY, RouteKeys, in_share, sticky_key
from tierserve.rollout.window import ArmWindow

HISTORY = 50  # decisions kept with a rollout (newest last)
LOOK_GROWTH = 1.25


class Mode(enum.StrEnum):
    CANARY = "canary"
    AB = "ab"
    SHADOW = "shadow"


class Phase(enum.StrEnum):
    STEPPING = "stepping"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class AbSplit:
    """How an A/B rollout assigns requests: by a ``header``'s value, the ``tenant`` or the API ``key``;
    the values in ``candidate_values`` go to the candidate, or, when none are listed, a hash of the
    value at the rollout's weight. Requests without the value go to stable."""

    by: str = "header"
    header: str = "x-rollout-arm"
    candidate_values: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: object) -> AbSplit:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InvalidInput("ab must be a mapping {by, header, candidate_values}")
        unknown = sorted(set(raw) - {"by", "header", "candidate_values"})
        if unknown:
            raise InvalidInput(f"ab: unknown keys {unknown}")
        by = raw.get("by", "header")
        if by not in ("header", "tenant", "key"):
            raise InvalidInput(f"ab.by must be header, tenant or key, got {by!r}")
        header = raw.get("header", "x-rollout-arm")
        values = raw.get("candidate_values", [])
        if not isinstance(header, str) or not header:
            raise InvalidInput("ab.header must be a header name")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidInput("ab.candidate_values must be a list of strings")
        return cls(by, header.lower(), tuple(values))

    def value(self, keys: RouteKeys) -> str | None:
        if self.by == "tenant":
            return keys.tenant
        if self.by == "key":
            return keys.key_id
        return keys.headers.get(self.header)


@dataclass(frozen=True)
class RolloutPlan:
    """What is asked for (a POST body, or ``rollout:`` in the model's config.yaml)."""

    candidate: int
    stable: int | None = None  # None: the version serving the model's traffic when it starts
    mode: Mode = Mode.CANARY
    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)  # canary
    weight: float = 50.0  # ab: the hashed share; shadow: the share mirrored
    min_samples: int = 200  # candidate requests per step before it may be promoted
    min_step_s: float = 30.0
    check_interval_s: float = 5.0
    warmup_s: float = 2.0  # what each step serves first is not judged (cold caches and threads)
    sticky: str = "tenant"  # canary and shadow: tenant, key or request (falling back in that order)
    auto_rollback: bool = True  # ab and shadow (a canary always rolls back on a failed check)
    ab: AbSplit = field(default_factory=AbSplit)
    criteria: Criteria = field(default_factory=Criteria)

    KEYS = frozenset(
        {"candidate", "stable", "mode", "steps", "weight", "min_samples", "min_step_s", "check_interval_s",
         "warmup_s", "sticky", "auto_rollback", "ab", "criteria"}
    )  # fmt: skip

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, source: str = "rollout") -> RolloutPlan:
        try:
            return cls._parse(raw)
        except InvalidInput as exc:
            raise InvalidInput(f"{source}: {exc.message}") from None

    @classmethod
    def _parse(cls, raw: Mapping[str, Any]) -> RolloutPlan:
        if not isinstance(raw, Mapping):
            raise InvalidInput("must be a mapping")
        unknown = sorted(set(raw) - cls.KEYS)
        if unknown:
            raise InvalidInput(f"unknown keys {unknown}; known keys are {sorted(cls.KEYS)}")
        candidate = _version(raw.get("candidate"), "candidate", required=True)
        assert candidate is not None
        stable = _version(raw.get("stable"), "stable", required=False)
        if stable == candidate:
            raise InvalidInput("stable and candidate must be different versions")
        try:
            mode = Mode(raw.get("mode", "canary"))
        except ValueError:
            raise InvalidInput(f"mode must be canary, ab or shadow, got {raw.get('mode')!r}") from None
        steps = raw.get("steps", [5, 25, 50, 100])
        if (
            not isinstance(steps, list)
            or not steps
            or not all(_is_number(s) and 0 < s <= 100 for s in steps)
            or any(b <= a for a, b in itertools.pairwise(steps))
            or steps[-1] != 100
        ):
            raise InvalidInput(f"steps must be increasing percentages ending at 100, got {steps!r}")
        weight = raw.get("weight", 10.0 if mode is Mode.SHADOW else 50.0)
        if not _is_number(weight) or not 0 < weight <= 100:
            raise InvalidInput(f"weight must be a percentage in (0, 100], got {weight!r}")
        sticky = raw.get("sticky", "tenant")
        if sticky not in STICKY:
            raise InvalidInput(f"sticky must be one of {list(STICKY)}, got {sticky!r}")
        auto_rollback = raw.get("auto_rollback", True)
        if not isinstance(auto_rollback, bool):
            raise InvalidInput("auto_rollback must be true or false")
        return cls(
            candidate=candidate,
            stable=stable,
            mode=mode,
            steps=tuple(float(s) for s in steps),
            weight=float(weight),
            min_samples=_positive(raw, "min_samples", 200, integer=True),
            min_step_s=_positive(raw, "min_step_s", 30.0, zero=True),
            check_interval_s=_positive(raw, "check_interval_s", 5.0),
            warmup_s=_positive(raw, "warmup_s", 2.0, zero=True),
            sticky=sticky,
            auto_rollback=auto_rollback,
            ab=AbSplit.parse(raw.get("ab")),
            criteria=Criteria.parse(raw.get("criteria")),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "stable": self.stable,
            "mode": str(self.mode),
            "steps": list(self.steps),
            "weight": self.weight,
            "min_samples": self.min_samples,
            "min_step_s": self.min_step_s,
            "check_interval_s": self.check_interval_s,
            "warmup_s": self.warmup_s,
            "sticky": self.sticky,
            "auto_rollback": self.auto_rollback,
            "ab": {
                "by": self.ab.by,
                "header": self.ab.header,
                "candidate_values": list(self.ab.candidate_values),
            },
            "criteria": self.criteria.describe(),
        }

    @property
    def judged_steps(self) -> int:
        """Steps on which the judge may roll back, among which the false-rollback budget is shared."""
        return max(1, sum(1 for s in self.steps if s < 100)) if self.mode is Mode.CANARY else 1


@dataclass(frozen=True)
class Decision:
    """A change of a rollout's state, with who made it and why."""

    at: float
    action: str  # start, step, promote, rollback
    actor: str  # "judge", or the key id of the operator
    weight: float  # the candidate's share after the decision
    reasons: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"at": self.at, "action": self.action, "actor": self.actor, "weight": self.weight,
                "reasons": list(self.reasons)}  # fmt: skip

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Decision:
        return cls(float(doc["at"]), doc["action"], doc["actor"], float(doc["weight"]), tuple(doc["reasons"]))


@dataclass(frozen=True)
class Rollout:
    id: str
    model: str
    stable: int
    candidate: int
    plan: RolloutPlan
    phase: Phase
    step: int  # index into plan.steps (canary)
    step_started_at: float  # wall clock: a rollout outlives the process
    created_at: float
    looks: int = 0  # judged looks in this step
    last_look_at: float = 0.0
    decisions: tuple[Decision, ...] = ()

    @property
    def active(self) -> bool:
        return self.phase is Phase.STEPPING

    @property
    def weight(self) -> float:
        """The candidate's share of the model's unversioned traffic, in percent (shadow: mirrored)."""
        if self.phase is Phase.PROMOTED:
            return 100.0
        if self.phase is Phase.ROLLED_BACK:
            return 0.0
        return self.plan.steps[self.step] if self.plan.mode is Mode.CANARY else self.plan.weight

    @property
    def epoch(self) -> tuple[str, int, Phase]:
        """Changes whenever the arms' windows must start afresh."""
        return (self.id, self.step, self.phase)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "stable": self.stable,
            "candidate": self.candidate,
            "mode": str(self.plan.mode),
            "phase": str(self.phase),
            "step": self.step,
            "weight": self.weight,
            "step_started_at": self.step_started_at,
            "created_at": self.created_at,
            "looks": self.looks,
            "last_look_at": self.last_look_at,
            "plan": self.plan.describe(),
            "decisions": [d.describe() for d in self.decisions],
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Rollout:
        return cls(
            id=doc["id"],
            model=doc["model"],
            stable=int(doc["stable"]),
            candidate=int(doc["candidate"]),
            plan=RolloutPlan.parse(doc["plan"]),
            phase=Phase(doc["phase"]),
            step=int(doc["step"]),
            step_started_at=float(doc["step_started_at"]),
            created_at=float(doc["created_at"]),
            looks=int(doc.get("looks", 0)),
            last_look_at=float(doc.get("last_look_at", 0.0)),
            decisions=tuple(Decision.from_doc(d) for d in doc.get("decisions", [])),
        )


@dataclass(frozen=True)
class RouteChoice:
    version: int  # the version that answers
    shadow: int | None = None  # a version that also gets a copy, whose answer is discarded


def start(
    model: str, plan: RolloutPlan, *, stable: int, now: float, rollout_id: str, actor: str = "operator"
) -> Rollout:
    rollout = Rollout(rollout_id, model, stable, plan.candidate, plan, Phase.STEPPING, 0, now, now)
    return _decide(
        rollout, now, "start", actor, (f"{plan.mode} of version {plan.candidate} against {stable}",)
    )


def route(rollout: Rollout, keys: RouteKeys, fallback: str) -> RouteChoice:
    """The version for one request that names none. ``fallback`` keys requests that carry nothing
    to split on (no tenant, key or id): pass something unique per request."""
    if rollout.phase is Phase.PROMOTED:
        return RouteChoice(rollout.candidate)
    if rollout.phase is Phase.ROLLED_BACK:
        return RouteChoice(rollout.stable)
    plan = rollout.plan
    if plan.mode is Mode.AB:
        value = plan.ab.value(keys)
        if value is None:
            chosen = False
        elif plan.ab.candidate_values:
            chosen = value in plan.ab.candidate_values
        else:
            chosen = in_share(f"{plan.ab.by}:{value}", rollout.id, plan.weight)
        return RouteChoice(rollout.candidate if chosen else rollout.stable)
    chosen = in_share(sticky_key(keys, plan.sticky, fallback), rollout.id, rollout.weight)
    if plan.mode is Mode.SHADOW:
        return RouteChoice(rollout.stable, shadow=rollout.candidate if chosen else None)
    return RouteChoice(rollout.candidate if chosen else rollout.stable)


def next_look_at(min_samples: int, looks: int) -> int:
    """Candidate requests at which look ``looks + 1`` of a step falls due: ``min_samples``, then each
    time the sample has grown by a quarter."""
    return math.ceil(min_samples * LOOK_GROWTH**looks)


def look_alpha(alpha: float, judged_steps: int, look: int) -> float:
    """The false-rollback budget that look ``look`` (1, 2, ...) of a step may spend."""
    return alpha / judged_steps * 6.0 / (math.pi**2 * look**2)


def evaluate(
    rollout: Rollout, stable: ArmWindow, candidate: ArmWindow, now: float
) -> tuple[Rollout, Verdict]:
    """One check of a stepping rollout on its arms' windows since the step began."""
    if not rollout.active:
        return rollout, Verdict(Action.HOLD, (f"rollout is {rollout.phase}",))
    plan = rollout.plan
    elapsed = now - rollout.step_started_at
    milestone = next_look_at(plan.min_samples, rollout.looks)
    timed_out = rollout.step_started_at + plan.min_step_s
    due = candidate.requests >= milestone or (
        now >= timed_out and rollout.last_look_at < timed_out and candidate.requests >= plan.min_samples
    )
    if not due:
        failing = error_check(stable, candidate, plan.criteria, plan.criteria.alpha / plan.judged_steps)
        if failing is not None:
            return _judged_rollback(rollout, failing, now)
        wait = (
            f"step has run {elapsed:.0f} of its {plan.min_step_s:.0f} s"
            if candidate.requests >= plan.min_samples
            else f"candidate served {candidate.requests} of the {plan.min_samples} requests a step needs"
        )
        return rollout, Verdict(Action.HOLD, (f"{wait}; next check at {milestone} candidate requests",))
    looks = rollout.looks + 1
    gate = Gate(
        plan.min_samples,
        plan.min_step_s,
        elapsed,
        look_alpha(plan.criteria.alpha, plan.judged_steps, looks),
        plan.criteria.alpha / plan.judged_steps,
    )
    verdict = judge(stable, candidate, plan.criteria, gate)
    rollout = replace(rollout, looks=looks, last_look_at=now)
    if verdict.action is Action.ROLLBACK:
        return _judged_rollback(rollout, verdict, now)
    if verdict.action is Action.HOLD:
        return rollout, verdict
    if plan.mode is not Mode.CANARY:
        reasons = (
            f"{plan.mode} never promotes on its own; the candidate passes every check",
            *verdict.reasons,
        )
        return rollout, Verdict(Action.HOLD, reasons, verdict.checks)
    if rollout.step + 1 >= len(plan.steps) or plan.steps[rollout.step + 1] >= 100:
        return promote(rollout, now, "judge", verdict.reasons), verdict
    stepped = replace(rollout, step=rollout.step + 1, step_started_at=now, looks=0)
    return _decide(stepped, now, "step", "judge", verdict.reasons), verdict


def _judged_rollback(rollout: Rollout, verdict: Verdict, now: float) -> tuple[Rollout, Verdict]:
    if rollout.plan.mode is not Mode.CANARY and not rollout.plan.auto_rollback:
        reasons = ("auto_rollback is off; the judge would roll back:", *verdict.reasons)
        return rollout, Verdict(Action.HOLD, reasons, verdict.checks)
    return rollback(rollout, now, "judge", verdict.reasons), verdict


def promote(
    rollout: Rollout, now: float, actor: str, reasons: Sequence[str] = ("promoted by an operator",)
) -> Rollout:
    """All traffic to the candidate, now."""
    _require_active(rollout)
    promoted = replace(rollout, phase=Phase.PROMOTED, step_started_at=now, looks=0)
    return _decide(promoted, now, "promote", actor, tuple(reasons))


def rollback(
    rollout: Rollout, now: float, actor: str, reasons: Sequence[str] = ("rolled back by an operator",)
) -> Rollout:
    """All traffic to stable, now (requests already on the candidate finish there)."""
    _require_active(rollout)
    back = replace(rollout, phase=Phase.ROLLED_BACK, step_started_at=now, looks=0)
    return _decide(back, now, "rollback", actor, tuple(reasons))


def _require_active(rollout: Rollout) -> None:
    if not rollout.active:
        raise Conflict(f"the rollout of '{rollout.model}' is already {rollout.phase}")


def _decide(rollout: Rollout, now: float, action: str, actor: str, reasons: tuple[str, ...]) -> Rollout:
    decision = Decision(now, action, actor, rollout.weight, reasons)
    return replace(rollout, decisions=(*rollout.decisions, decision)[-HISTORY:])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _version(value: object, key: str, *, required: bool) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{key} must be a model version (an integer >= 1), got {value!r}")
    return value


def _positive(
    raw: Mapping[str, Any], key: str, default: float, *, integer: bool = False, zero: bool = False
) -> Any:
    value = raw.get(key, default)
    ok = _is_number(value) and (value >= 0 if zero else value > 0) and (not integer or isinstance(value, int))
    if not ok:
        kind = "an integer" if integer else "a number"
        raise InvalidInput(f"{key} must be {kind} {'>= 0' if zero else '> 0'}, got {value!r}")
    return int(value) if integer else float(value)
