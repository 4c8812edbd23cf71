"""The fleet planner: how many replicas each pool should have, at the lowest cost that meets the tiers.

Inputs: per pool what one replica sustains within its tightest target (``capacity_rps``, see
``autoscale.capacity``), its price (per hour, or per request for a rented endpoint), provisioning
delay, bounds and quota, whether it is spot (and how often it is interrupted), whether its variant is
approximate, and the host whose cores it shares; per tier its share of the load and whether it
accepts approximate results; and a load forecast (``autoscale.forecast``) fed with recent arrivals.

Rules, each visible in the plan's reasons:

1. **Load split**: the forecast per tier is split into *exact* demand (tiers that need the exact
   variant) and *approximate* demand (tiers that accept int8 and the like). Approximate pools carry
   only the second; exact pools carry both.
2. **Plan for load that lasts as long as the pool boots**: a pool with delay ``d`` is sized for
   ``forecast.sustained(d)``. Pools are planned in order of delay: at pool ``p``'s level, pools
   that boot no slower than ``p`` are free to choose, slower ones count with the replicas they have
   ready (a GPU that boots in 5 minutes cannot help with the next minute). So a burst shorter than
   a GPU's boot is carried by what is ready, faster pools, and the per-request endpoint, not by a
   new GPU; a load that fits one GPU keeps no idle CPU floor (``min_replicas`` 0).
3. **Cheapest cover**: at each level the planner searches replica counts (per pool: its floor, or
   enough to carry all remaining demand, or one fewer leaving the rest to later pools) in order of
   price per request, and prices what is left on per-request endpoints (up to their capacity).
   Load nobody can carry costs ``UNSERVED_PER_RPS_HOUR`` (exact) or a tenth of it (approximate),
   which makes any feasible fleet cheaper than an infeasible one.
4. **Headroom**: the deadline tiers' load ``d`` fluctuates (Poisson) over their tightest target ``T``
   by about ``sqrt(d / T)`` requests per second; the fleet carries ``d + burst_z * sqrt(d / T)``
   promptly, and all the load at ``utilisation``. Best-effort work waits out the fluctuation: tiers
   let a fleet run hot (one T4 at 3,100 of its 3,250 req/s still serves gold in 20 ms, simulated).
5. **Spot**: replicas under an interruption notice count as gone; their replacements are asked for
   at once. Exact demand must still be carried with one spot replica fewer (using per-request
   endpoints if need be), else the shortfall is priced as unserved: spot saves money, not gold.
6. **Hosts**: local pools on one host share its cores: replicas x ``cores_per_replica`` summed over
   the host's pools stays within its cores.
7. **Burst insurance**: over the last ``insurance_s``, what the deadline tiers' load above the
   planned fleet's full capacity would cost on per-request endpoints (best effort waits instead) is
   weighed against holding one more replica (cheapest first); while the replica costs less than the
   spend it saves, it is held. Rare bursts go to the endpoint; frequent ones buy headroom.
8. **Hysteresis**: more replicas at once; fewer only after the plan has asked for fewer for
   ``down_after_s`` (it then drops to the highest count asked for over that time).

Example::

    planner = FleetPlanner(
        [PlanPool("cpu", capacity_rps=200, cost_per_hour=0.1785, provisioning_delay_s=40),
         PlanPool("gpu", capacity_rps=2600, cost_per_hour=0.526, provisioning_delay_s=300)],
        [PlanTier("gold", approximate=False), PlanTier("bronze", approximate=True)],
        LoadForecast(interval_s=30),
    )
    for _ in range(20):
        planner.observe({"gold": 6000, "bronze": 24000})  # 1,000 req/s
    plan = planner.plan(now=600, status={"cpu": PoolStatus(ready=2), "gpu": PoolStatus(ready=1)})
    plan.desired  # {"cpu": 0, "gpu": 1} once down_after_s has passed: one GPU carries it all
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tierserve.autoscale.forecast import LoadForecast

UNSERVED_PER_RPS_HOUR = 100.0  # $ per hour per req/s of exact demand no pool can carry


@dataclass(frozen=True)
class PlanPool:
    name: str
    capacity_rps: float  # one replica (or one slot of a per-request endpoint), within its tightest target
    cost_per_hour: float = 0.0  # per replica
    cost_per_1k_requests: float = 0.0
    provisioning_delay_s: float = 0.0
    min_replicas: int = 0
    max_replicas: int = 1000  # also the quota
    approximate: bool = False  # carries only tiers that accept approximate results
    per_request: bool = False  # a rented endpoint: always warm, ``max_replicas`` slots, billed per request
    spot: bool = False
    interruptions_per_hour: float = 0.0  # per replica
    host: str | None = None  # local pools on one host share its cores
    cores_per_replica: float = 1.0

    @property
    def cost_per_request(self) -> float:
        hourly = self.cost_per_hour / (self.capacity_rps * 3600) if self.capacity_rps else math.inf
        return self.cost_per_1k_requests / 1000 + (0.0 if self.per_request else hourly)


@dataclass(frozen=True)
class PlanTier:
    name: str
    approximate: bool = False  # accepts approximate variants (int8)
    best_effort: bool = False  # may wait (served late rather than rejected)
    target_s: float = 1.0


@dataclass(frozen=True)
class PoolStatus:
    ready: int
    starting: int = 0
    interrupting: int = 0  # ready replicas under an interruption notice (spot): leaving soon

    @property
    def current(self) -> int:
        return self.ready + self.starting


@dataclass(frozen=True)
class PoolDecision:
    pool: str
    current: int  # ready + starting
    desired: int
    planned_rps: float  # load the plan puts on this pool
    reasons: tuple[str, ...]

    @property
    def change(self) -> int:
        return self.desired - self.current


@dataclass(frozen=True)
class FleetPlan:
    now: float
    forecast_rps: dict[str, float]  # per tier, at the slowest pool's horizon
    pools: dict[str, PoolDecision]
    cost_per_hour: float  # of the plan as decided (replicas + planned per-request load)
    reasons: tuple[str, ...]

    @property
    def desired(self) -> dict[str, int]:
        return {name: d.desired for name, d in self.pools.items()}


@dataclass
class _Level:
    counts: dict[str, int]
    load: dict[str, float]
    cost: float


@dataclass
class FleetPlanner:
    pools: Sequence[PlanPool]
    tiers: Sequence[PlanTier]
    forecast: LoadForecast
    hosts: Mapping[str, float] = field(default_factory=dict)  # host -> cores
    utilisation: float = 0.95
    burst_z: float = 2.0
    down_after_s: float = 300.0
    insurance_s: float = 4 * 3600.0
    _asked: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def observe(self, arrivals: Mapping[str, float]) -> None:
        """Arrivals per tier over the forecast's interval."""
        self.forecast.observe(arrivals)

    def plan(self, now: float, status: Mapping[str, PoolStatus]) -> FleetPlan:
        replica_pools = [p for p in self.pools if not p.per_request]
        # Level 0 (what arrives now, on what is ready) prices what only per-request endpoints can take.
        levels = sorted({0.0} | {p.provisioning_delay_s for p in replica_pools})
        chosen: dict[str, tuple[int, float, float]] = {}  # pool -> (count, planned load, horizon)
        level_cost = 0.0
        demand_rps: dict[str, float] = {}
        approx_tiers = {t.name for t in self.tiers if t.approximate}
        exact_now = sum(v for k, v in self.forecast.sustained(0.0).items() if k not in approx_tiers)
        for horizon in levels:
            demand_rps = self.forecast.sustained(horizon)
            fixed = {
                p.name: max(0, _status(status, p).ready - _status(status, p).interrupting)
                for p in replica_pools
                if p.provisioning_delay_s > horizon
            }
            current = {p.name: _status(status, p).current for p in replica_pools}
            level = self._cheapest(demand_rps, fixed, exact_now, current)
            level_cost = level.cost
            for p in replica_pools:
                if p.provisioning_delay_s == horizon:
                    chosen[p.name] = (level.counts[p.name], level.load.get(p.name, 0.0), horizon)
            for p in self.pools:
                if p.per_request:
                    before = chosen.get(p.name, (0, 0.0, 0.0))[1]
                    chosen[p.name] = (p.max_replicas, max(before, level.load.get(p.name, 0.0)), horizon)
        reasons = [f"forecast {sum(demand_rps.values()):,.0f} req/s at the slowest pool's horizon"]
        for name, (extra, why) in self._insure({n: c[0] for n, c in chosen.items()}).items():
            count, load, horizon = chosen[name]
            chosen[name] = (count + extra, load, horizon)
            reasons.append(why)
        decisions = {p.name: self._decide(p, chosen[p.name], status, now) for p in self.pools}
        overflow = {p.name: chosen[p.name][1] for p in self.pools if p.per_request and chosen[p.name][1] > 0}
        for name, rps in overflow.items():
            reasons.append(f"{rps:,.0f} req/s planned on per-request endpoint {name}")
        return FleetPlan(now, demand_rps, decisions, round(level_cost, 6), tuple(reasons))

    def _insure(self, counts: Mapping[str, int]) -> dict[str, tuple[int, str]]:
        """Rule 7: replicas held against bursts, when cheaper than sending the bursts to an endpoint."""
        endpoints = [p for p in self.pools if p.per_request and p.cost_per_1k_requests > 0]
        rates = self.forecast.recent(self.insurance_s)
        if not endpoints or not rates:
            return {}
        seen = len(rates)
        floor = sum(counts.get(p.name, 0) * p.capacity_rps for p in self.pools if not p.per_request)
        rates = [r for r in rates if r > floor]  # only rates above the whole fleet can overflow it
        price = min(p.cost_per_1k_requests for p in endpoints) / 1000
        mix = self.forecast.mix()
        # Only deadline tiers rent the endpoint (best effort waits); they come first on owned capacity.
        share = sum(mix.get(t.name, 0.0) for t in self.tiers if not t.best_effort)
        replica = [p for p in self.pools if not p.per_request]
        held = dict(counts)

        def spend() -> float:  # $ per hour the deadline load above capacity would have cost on the endpoint
            cap = sum(held.get(p.name, 0) * p.capacity_rps for p in replica if not p.approximate)
            return sum(max(0.0, r * share - cap) for r in rates) / seen * 3600 * price

        extra: dict[str, int] = {}
        for _ in range(8):
            base = spend()
            best: tuple[float, PlanPool] | None = None
            for p in replica:
                if p.approximate or held.get(p.name, 0) >= p.max_replicas or p.capacity_rps <= 0:
                    continue
                if self._no_room(p, held):
                    continue  # rule 6 holds for insurance too
                held[p.name] = held.get(p.name, 0) + 1
                saving = base - spend() - p.cost_per_hour
                held[p.name] -= 1
                if saving > 0 and (best is None or saving > best[0]):
                    best = (saving, p)
            if best is None:
                break
            held[best[1].name] = held.get(best[1].name, 0) + 1
            extra[best[1].name] = extra.get(best[1].name, 0) + 1
        return {
            name: (n, f"burst insurance: {n} more {name} replica(s); the last {self.insurance_s:.0f} s of "
                      f"rates above the fleet would cost more on the per-request endpoint")
            for name, n in extra.items()
        }  # fmt: skip

    def _no_room(self, pool: PlanPool, counts: Mapping[str, int]) -> bool:
        """One more replica of ``pool`` would not fit its host's cores."""
        if pool.host is None or pool.host not in self.hosts:
            return False
        used = sum(counts.get(p.name, 0) * p.cores_per_replica for p in self.pools if p.host == pool.host)
        return used + pool.cores_per_replica > self.hosts[pool.host]

    # -- the search --------------------------------------------------------------------------------

    def _cheapest(
        self,
        demand: Mapping[str, float],
        fixed: Mapping[str, int],
        exact_now: float,
        current: Mapping[str, int],
    ) -> _Level:
        exact, approx = self._needs(demand)
        # Planned capacity back to requests per second (the headroom taken off again).
        scale = sum(demand.values()) / (exact + approx) if exact + approx > 0 else 1.0
        order = sorted((p for p in self.pools if not p.per_request), key=lambda p: p.cost_per_request)
        endpoints = sorted((p for p in self.pools if p.per_request), key=lambda p: p.cost_per_request)
        best: list[tuple[float, dict[str, int]]] = []
        cores_left = dict(self.hosts)

        def search(i: int, rem_e: float, rem_a: float, counts: dict[str, int], hourly: float) -> None:
            if best and hourly >= best[0][0]:
                return
            if i == len(order):
                total = (
                    hourly
                    + self._leftover_cost(rem_e, rem_a, endpoints, scale)
                    + self._spot_risk(counts, exact_now)
                )
                if not best or total < best[0][0]:
                    best[:] = [(total, dict(counts))]
                return
            pool = order[i]
            for n in self._candidates(pool, rem_e, rem_a, fixed, cores_left, reserve):
                cap = n * pool.capacity_rps
                take_e = 0.0 if pool.approximate else min(rem_e, cap)
                take_a = min(rem_a, cap - take_e)
                counts[pool.name] = n
                if pool.host is not None:
                    cores_left[pool.host] -= n * pool.cores_per_replica
                # A replica started now pays for its boot: among fleets costing the same, keep this one.
                boot = (
                    max(0, n - current.get(pool.name, 0))
                    * pool.cost_per_hour
                    * pool.provisioning_delay_s
                    / 3600
                )
                search(i + 1, rem_e - take_e, rem_a - take_a, counts, hourly + n * pool.cost_per_hour + boot)
                if pool.host is not None:
                    cores_left[pool.host] += n * pool.cores_per_replica
            counts.pop(pool.name, None)

        # Rule 5: a non-spot exact pool may hold the exact demand alone, should a spot replica go.
        endpoint_exact = sum(p.max_replicas * p.capacity_rps for p in endpoints if not p.approximate)
        reserve = max(0.0, exact_now - endpoint_exact) if any(p.spot for p in self.pools) else 0.0
        search(0, exact, approx, {}, 0.0)
        cost, counts = best[0]
        return _Level(counts, self._loads(exact, approx, counts, order, endpoints, scale), cost)

    def _needs(self, demand: Mapping[str, float]) -> tuple[float, float]:
        """Rule 4: capacity to plan for the exact tiers, and on top of it what approximate pools may carry."""
        exact = sum(demand.get(t.name, 0.0) for t in self.tiers if not t.approximate)
        deadline = [t for t in self.tiers if not t.best_effort]
        load = sum(demand.get(t.name, 0.0) for t in deadline)
        tightest = min((t.target_s for t in deadline), default=1.0)
        swing = self.burst_z * math.sqrt(load / tightest) if load > 0 else 0.0
        if any(not t.approximate for t in deadline):
            exact += swing
        total = max(exact, sum(demand.values()) / self.utilisation)
        return exact, total - exact

    def _candidates(
        self,
        pool: PlanPool,
        rem_e: float,
        rem_a: float,
        fixed: Mapping[str, int],
        cores: Mapping[str, float],
        reserve: float,
    ) -> list[int]:
        if pool.name in fixed:
            return [fixed[pool.name]]
        top = pool.max_replicas
        if pool.host is not None and pool.host in cores:
            top = min(top, int(cores[pool.host] // pool.cores_per_replica))
        floor = min(pool.min_replicas, top)
        if pool.capacity_rps <= 0:
            return [floor]
        everything = math.ceil(((0.0 if pool.approximate else rem_e) + rem_a) / pool.capacity_rps - 1e-9)
        options = {floor, everything, everything - 1}
        if not pool.approximate:
            options.add(math.ceil(rem_e / pool.capacity_rps - 1e-9))
            if not pool.spot and reserve > 0:
                options.add(math.ceil(reserve / pool.capacity_rps - 1e-9))
        return sorted({min(top, max(floor, n)) for n in options}, reverse=True)

    def _leftover_cost(
        self, rem_e: float, rem_a: float, endpoints: Sequence[PlanPool], scale: float
    ) -> float:
        cost = 0.0
        for pool in endpoints:
            cap = pool.max_replicas * pool.capacity_rps
            take_e = 0.0 if pool.approximate else min(rem_e, cap)
            take_a = min(rem_a, cap - take_e)
            rem_e, rem_a = rem_e - take_e, rem_a - take_a
            cost += (take_e + take_a) * scale * 3600 * pool.cost_per_1k_requests / 1000
        return cost + (rem_e + rem_a / 10) * UNSERVED_PER_RPS_HOUR

    def _spot_risk(self, counts: Mapping[str, int], exact_now: float) -> float:
        """Rule 5: with the largest exact spot replica gone, today's exact demand is still carried."""
        spot = [p.capacity_rps for p in self.pools if p.spot and not p.approximate and counts.get(p.name, 0)]
        if not spot:
            return 0.0
        capacity = -max(spot)
        for p in self.pools:
            if not p.approximate:
                capacity += (p.max_replicas if p.per_request else counts.get(p.name, 0)) * p.capacity_rps
        return max(0.0, exact_now - capacity) * UNSERVED_PER_RPS_HOUR

    def _loads(
        self,
        exact: float,
        approx: float,
        counts: Mapping[str, int],
        order: Sequence[PlanPool],
        endpoints: Sequence[PlanPool],
        scale: float,
    ) -> dict[str, float]:
        loads = {}
        for pool in [*order, *endpoints]:
            n = pool.max_replicas if pool.per_request else counts.get(pool.name, 0)
            cap = n * pool.capacity_rps
            take_e = 0.0 if pool.approximate else min(exact, cap)
            take_a = min(approx, cap - take_e)
            exact, approx = exact - take_e, approx - take_a
            loads[pool.name] = (take_e + take_a) * scale
        return loads

    # -- hysteresis and reasons ----------------------------------------------------------------------

    def _decide(
        self, pool: PlanPool, chosen: tuple[int, float, float], status: Mapping[str, PoolStatus], now: float
    ) -> PoolDecision:
        st = _status(status, pool)
        count, load, horizon = chosen
        if pool.per_request:
            reason = f"always warm, billed per request: {load:,.0f} req/s planned here"
            return PoolDecision(pool.name, st.current, pool.max_replicas, load, (reason,))
        reasons = []
        wanted = count + st.interrupting
        if st.interrupting:
            reasons.append(
                f"{st.interrupting} replica(s) under an interruption notice: replacements asked for now"
            )
        asked = self._asked.setdefault(pool.name, [])
        asked.append((now, wanted))
        while len(asked) >= 2 and asked[1][0] <= now - self.down_after_s:
            asked.pop(0)
        held = max(n for _, n in asked)
        covered = asked[0][0] <= now - self.down_after_s
        desired = wanted
        if wanted < st.current:
            desired = max(wanted, min(st.current, held)) if covered else st.current
            if desired > wanted:
                reasons.append(f"plan asks for {wanted}; held at {desired} until it has asked for fewer "
                               f"for {self.down_after_s:.0f} s")  # fmt: skip
        if count:
            reasons.append(
                f"{count} replica(s) carry {load:,.0f} req/s of the load sustained over its "
                f"{horizon:.0f} s boot ({pool.capacity_rps:,.0f} req/s each within target)"
            )
        elif desired == 0:
            reasons.append(f"{'empty' if st.current == 0 else 'emptied'}: cheaper pools carry the load")
        if desired > st.current:
            reasons.append(f"{'opened from zero' if st.current == 0 else 'grows'}: {st.current} -> {desired}")
        if desired == pool.min_replicas and count <= pool.min_replicas and pool.min_replicas:
            reasons.append(f"at its floor of {pool.min_replicas}")
        return PoolDecision(pool.name, st.current, desired, load, tuple(reasons))


def _status(status: Mapping[str, PoolStatus], pool: PlanPool) -> PoolStatus:
    return status.get(pool.name, PoolStatus(0))
