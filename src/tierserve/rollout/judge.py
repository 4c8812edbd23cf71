"""The judge: compares a candidate version with the stable one on the same window and says promote,
hold or roll back, with its reasons.

Checks (each one-sided: "is the candidate worse?"):

1. **error rate**: a sequential test of the two arms' rates of failed requests (a mixture SPRT,
   valid however often it is checked; the client's invalid requests are not counted, and a tier's
   503 rejection is an SLO miss, not an error);
2. **latency per tier**, on the tiers both arms served at least ``min_tier_samples`` times:
   the median by Mann-Whitney's U (tolerance: a p50 ``latency_tolerance`` higher), and the tail by
   a test of two proportions on the share of requests slower than the stable arm's p95 (about 5%
   for a version no slower; tolerance: ``tail_tolerance`` more);
3. **SLO attainment per tier**: two-proportion test on the share of requests that missed their
   tier's target (rejected, or answered late; failed ones are the error check's);
4. **cost per request**: the candidate's mean cost may exceed the stable one's by ``cost_tolerance``.

A check fails only when its difference is both significant (p below its share of the budget:
half of the step's for the sequential error test, half of this look's shared by the others) and
larger than its tolerance, so a tiny but real difference on heavy traffic does not roll a version
back. Any failed check: **roll back**. Else,
while the candidate has fewer than ``min_samples`` requests, the step is younger than
``min_duration_s``, or a difference is larger than its tolerance without being significant yet
(a candidate failing 2% of 150 requests is not yet proof, nor fit to promote): **hold**.
Else: **promote** (to the next step).

The alpha of one look comes from the controller (see ``controller.look_alpha``), which spends the
rollout's false-rollback budget over its steps and looks so that checking every few seconds keeps
the overall rate of false rollbacks under ``Criteria.alpha``. Example::

    verdict = judge(stable_window, candidate_window, Criteria(), Gate(200, 30.0, 41.0, alpha=2e-4))
    verdict.action, verdict.reasons      # (Action.ROLLBACK, ("error rate 2.00% (6/300) vs ...",))
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from tierserve.errors import InvalidInput
from tierserve.rollout.stats import (
    TestResult,
    mann_whitney_greater,
    quantile,
    rate_ratio_evalue,
    two_proportions_greater,
)
from tierserve.rollout.window import ArmWindow, TierWindow


class Action(enum.StrEnum):
    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Criteria:
    alpha: float = 0.01  # the whole rollout's budget of false rollbacks (two identical versions)
    max_error_increase: float = 0.005  # absolute: 0.5 percentage points
    latency_tolerance: float = 0.10  # relative: the candidate's p50 10% above the stable one's
    # absolute: the share of the candidate's requests slower than the stable p95 (5% for an equal
    # version) may exceed the stable's by 5 points. A share, not a ratio of p95s: the p95 of a
    # few hundred requests sits where latencies are sparse and moves by tens of percent by chance.
    tail_tolerance: float = 0.05
    # and either latency difference must also exceed this many milliseconds: a tenth of a millisecond
    # between two versions is scheduling noise (which deployment's threads were awake), not a
    # regression. 0.5 ms let a candidate 0.4 ms (38%) slower at p50 through on a 1 ms model.
    latency_floor_ms: float = 0.2
    slo_tolerance: float = 0.02  # absolute drop of a tier's SLO attainment
    cost_tolerance: float = 0.20  # relative increase of the cost per request
    min_tier_samples: int = 50  # per arm, for a tier's latency and SLO checks

    @classmethod
    def parse(cls, raw: object, *, source: str = "criteria") -> Criteria:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"{source} must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"{source}: unknown keys {unknown}; known keys are {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidInput(f"{source}.{key} must be a number >= 0, got {value!r}")
            values[key] = int(value) if key == "min_tier_samples" else float(value)
        criteria = cls(**values)
        if not 0 < criteria.alpha < 1:
            raise InvalidInput(f"{source}.alpha must be between 0 and 1, got {criteria.alpha}")
        return criteria

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Gate:
    """When a verdict may promote, and this look's share of the false-rollback budget."""

    min_samples: int  # candidate requests in the step
    min_duration_s: float
    elapsed_s: float  # since the step started
    alpha: float  # for every fixed-sample test of this look together
    sequential_alpha: float = 0.0  # for the error rate's sequential test over the whole step


@dataclass(frozen=True)
class Check:
    name: str  # error_rate, latency_p50:<tier>, latency_p95:<tier>, slo:<tier>, cost
    status: str  # pass, fail, unsure (worse than tolerated but not significant), skip
    detail: str
    p_value: float | None = None

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: tuple[str, ...]
    checks: tuple[Check, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "reasons": list(self.reasons),
            "checks": [c.describe() for c in self.checks],
        }


def judge(stable: ArmWindow, candidate: ArmWindow, criteria: Criteria, gate: Gate) -> Verdict:
    if candidate.requests < gate.min_samples:
        return Verdict(
            Action.HOLD,
            (f"candidate served {candidate.requests} of the {gate.min_samples} requests a step needs",),
        )
    tests = _tests(stable, candidate, criteria)
    others = sum(1 for t in tests[1:] if t.result is not None)
    # The error rate's sequential test spends half of the step's budget once, whatever the number of
    # looks; the fixed-sample tests share the other half of this look's share.
    checks = tuple(
        t.check(gate.sequential_alpha / 2 if i == 0 else gate.alpha / 2 / max(1, others))
        for i, t in enumerate(tests)
    )
    failed = [c.detail for c in checks if c.status == "fail"]
    if failed:
        return Verdict(Action.ROLLBACK, tuple(failed), checks)
    if gate.elapsed_s < gate.min_duration_s:
        return Verdict(
            Action.HOLD,
            (f"step has run {gate.elapsed_s:.0f} of its {gate.min_duration_s:.0f} s; no regression so far",),
            checks,
        )
    unsure = [c.detail for c in checks if c.status == "unsure"]
    if unsure:
        return Verdict(Action.HOLD, tuple(["worse than tolerated, not yet significant:", *unsure]), checks)
    passed = [c.detail for c in checks if c.status == "pass"]
    return Verdict(Action.PROMOTE, tuple(["no regression", *passed]), checks)


def error_check(
    stable: ArmWindow, candidate: ArmWindow, criteria: Criteria, sequential_alpha: float
) -> Verdict | None:
    """The error rate's sequential test alone, which may run at every check from the first request
    (it spends no budget per look): a rollback verdict when it fails, else None."""
    check = _error_rate(stable, candidate, criteria).check(sequential_alpha / 2)
    return Verdict(Action.ROLLBACK, (check.detail,), (check,)) if check.status == "fail" else None


@dataclass(frozen=True)
class _Test:
    name: str
    result: TestResult | None  # None: not tested (too few samples, or a threshold check)
    worse_by: float  # the observed difference, in the unit of ``tolerance``
    tolerance: float
    detail: str
    failed_without_test: bool = False  # threshold checks (cost) fail on the difference alone

    def check(self, alpha: float) -> Check:
        if self.result is None:
            if self.failed_without_test:
                return Check(self.name, "fail", self.detail)
            status = "skip" if self.worse_by != self.worse_by else "pass"  # NaN: not enough data
            return Check(self.name, status, self.detail)
        p = self.result.p_value
        worse = self.worse_by > self.tolerance
        if p < alpha:
            status, verdict = ("fail", "worse") if worse else ("pass", "within tolerance")
        else:
            status, verdict = (
                ("unsure", "not yet significant") if worse else ("pass", "no significant difference")
            )
        return Check(self.name, status, f"{self.detail}: p={p:.2g} (alpha {alpha:.2g}), {verdict}", p)


def _tests(stable: ArmWindow, candidate: ArmWindow, criteria: Criteria) -> list[_Test]:
    tests = [_error_rate(stable, candidate, criteria)]
    for tier in sorted(set(stable.tiers) & set(candidate.tiers)):
        tests.extend(_tier_tests(tier, stable.tiers[tier], candidate.tiers[tier], criteria))
    tests.append(_cost(stable, candidate, criteria))
    return tests


def _error_rate(stable: ArmWindow, candidate: ArmWindow, criteria: Criteria) -> _Test:
    rc = candidate.errors / candidate.requests if candidate.requests else 0.0
    rs = stable.errors / stable.requests if stable.requests else 0.0
    detail = (
        f"error rate {rc:.2%} ({candidate.errors}/{candidate.requests}) vs stable {rs:.2%} "
        f"({stable.errors}/{stable.requests})"
    )
    if stable.requests == 0:
        return _Test(
            "error_rate", None, math.nan, criteria.max_error_increase, detail + ": no stable traffic"
        )
    evalue = rate_ratio_evalue(candidate.errors, candidate.requests, stable.errors, stable.requests)
    z = two_proportions_greater(
        candidate.errors, candidate.requests, stable.errors, stable.requests
    ).statistic
    # 1 / e is a p-value valid at any stopping time (Ville's inequality)
    result = TestResult(z, min(1.0, 1.0 / evalue))
    return _Test("error_rate", result, rc - rs, criteria.max_error_increase, detail)


def _tier_tests(tier: str, s: TierWindow, c: TierWindow, criteria: Criteria) -> list[_Test]:
    tests: list[_Test] = []
    enough = criteria.min_tier_samples
    if len(s.latencies) >= enough and len(c.latencies) >= enough:
        stable, cand = np.sort(s.latencies), np.sort(c.latencies)
        floor_s = criteria.latency_floor_ms / 1000
        p50s, p50c = quantile(stable, 0.5, ordered=True), quantile(cand, 0.5, ordered=True)
        tests.append(
            _Test(
                f"latency_p50:{tier}",
                mann_whitney_greater(cand, stable),
                p50c / p50s - 1 if p50s > 0 and p50c - p50s > floor_s else 0.0,
                criteria.latency_tolerance,
                f"{tier} p50 {p50c * 1000:.2f} ms vs stable {p50s * 1000:.2f} ms",
            )
        )
        p95s, p95c = quantile(stable, 0.95, ordered=True), quantile(cand, 0.95, ordered=True)
        slower_c = len(cand) - int(np.searchsorted(cand, p95s, side="right"))
        slower_s = len(stable) - int(np.searchsorted(stable, p95s, side="right"))
        tests.append(
            _Test(
                f"latency_p95:{tier}",
                two_proportions_greater(slower_c, len(cand), slower_s, len(stable)),
                slower_c / len(cand) - slower_s / len(stable) if p95c - p95s > floor_s else 0.0,
                criteria.tail_tolerance,
                f"{tier} p95 {p95c * 1000:.2f} ms vs stable {p95s * 1000:.2f} ms "
                f"({slower_c / len(cand):.1%} of the candidate's requests slower than the stable p95)",
            )
        )
    else:
        tests.append(
            _Test(
                f"latency:{tier}",
                None,
                math.nan,
                criteria.latency_tolerance,
                f"{tier}: too few served requests to compare latency ({len(c.latencies)} candidate, "
                f"{len(s.latencies)} stable; {enough} each needed)",
            )
        )
    if s.total >= enough and c.total >= enough:
        att_s, att_c = s.met / s.total, c.met / c.total
        tests.append(
            _Test(
                f"slo:{tier}",
                two_proportions_greater(c.total - c.met, c.total, s.total - s.met, s.total),
                att_s - att_c,
                criteria.slo_tolerance,
                f"{tier} SLO attainment {att_c:.1%} vs stable {att_s:.1%}",
            )
        )
    return tests


def _cost(stable: ArmWindow, candidate: ArmWindow, criteria: Criteria) -> _Test:
    cs, cc = stable.cost_per_request, candidate.cost_per_request
    if cs <= 0.0 or candidate.requests == 0:
        return _Test(
            "cost", None, 0.0, criteria.cost_tolerance, f"cost per request {cc:.3g} (stable {cs:.3g})"
        )
    ratio = cc / cs - 1
    return _Test(
        "cost",
        None,
        ratio,
        criteria.cost_tolerance,
        f"cost per request {cc:.3g} vs stable {cs:.3g} "
        f"({ratio:+.0%}, tolerance +{criteria.cost_tolerance:.0%})",
        failed_without_test=ratio > criteria.cost_tolerance,
    )
