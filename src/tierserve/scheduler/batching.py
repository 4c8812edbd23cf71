"""Priority + earliest-deadline-first queue that forms deadline-feasible, work-conserving batches.

Ordering: a request's ``priority`` (lower first), then its ``deadline`` (earliest first), then
arrival. A batch starts from the head and takes the following requests that share its
``batch_key`` (same non-batch shapes) while:

* the rows fit the replica's cap (below);
* the predicted service time of the larger batch still lets every deadline-bound member
  (``reject_late``) finish by its deadline less the routing margin (a batch filled right up to the
  deadline ends late whenever the prediction errs).

**The cap: work-conserving, per replica.** A request of a deadline tier (gold) that arrives while
every replica is busy waits for the first replica to free up. So what must hold at every instant
is one invariant over the replicas, not a limit on every batch: *some replica frees up within
gold's wait bound*. The bound is the tightest active tier's slack (its budget, less the routing
margin, less its own one-row service time) less one more row: room for one other gold request
queued ahead, so that a gold request arriving at the worst instant is still admitted rather than
rejected on a prediction that lands exactly on its deadline. A replica about to start a batch
checks the others (``others_free_at``): if one of them is idle or frees up within the bound, the
invariant already holds and this replica runs a full, throughput-sized batch (``full_rows``: the
smallest size within 3% of the best rows/s the estimate knows, at most ``max_batch_size``);
only when none does is this batch cut to what ends within the bound. The consequences, by fleet
size:

* 1 replica: every batch is cut to the bound while a deadline tier is active, as it must be (a gold
  request arriving just after a batch starts waits for all of it).
* 2 replicas: the roles alternate. While one replica runs a full batch, the other runs batches cut
  to the bound (it is the one gold finds free); once the full batch comes within the bound of its
  end, the other may start a full batch in turn.
* many replicas: ends are spread over time, so nearly every batch is full; capacity given up for
  gold is close to nothing.

A batch *headed* by the tightest deadline tier (gold), while other replicas cover the bound, ends
within gold's slack: a burst of gold is split over the replicas that free up next instead of
queueing into one long batch that ends at gold's deadline (without this cut, 16 simulated replicas
at 2x load rejected 15% of gold instead of none). Its batch is further limited by what its members'
deadlines allow (``_collect``). ``predict_finish`` assumes the same batch sizes, so admission
predicts what will run.

Why this rule and not the alternatives (figures: ``benchmarks/tiers_sim.py --slowdown 1.6``, the
example encoder's profile slowed to this machine's speed, and ``benchmarks/tiers.py`` live): the
first version capped *every* batch on every replica at 40% of gold's budget while gold was active,
and served a fifth less than FIFO at capacity. The second cut a batch, when no other replica
covered the slack, to end early enough for a *full* batch started later to stagger with it; when a
full batch lasts longer than twice the slack (MiniLM: 190 ms against 36 ms) that limit is below one
row, so live batches shrank to one row (mean 2.5 vs FIFO's 8-10; 0.85 of FIFO's throughput), and
gold-headed batches cut to half the slack made gold's batches one row too. Spreading the admission
prediction over the replicas freeing up next admitted more silver at 16 replicas but collapsed under
2x overload (admitted work near its deadline forced one-row batches: 0.83 of capacity instead of
0.95). Setting capacity aside per tier from the arrival mix needs a forecast and wastes the reserve
when gold is quiet. The invariant is checked from what is known at the decision (the other
replicas' predicted ends), costs O(replicas) per batch, and gives up capacity only when no other
replica covers gold.

A request that can no longer make its deadline (``now`` + its predicted service time is past it)
and whose tier rejects late work is dropped, never run late: ``Step.dropped`` hands it back to be
answered. Best-effort work is only ordered by its deadline, never dropped. Under overload, a
deadline-bound head that could still make its deadline, but only in a batch of less than a quarter
of a full one, is also dropped when a full batch of its tier waits behind it (``_shed_stale_heads``):
earliest-deadline-first otherwise collapses into one-row batches.

No starvation: when lower-priority work has waited ``aging_s``, one batch every ``aging_s`` is
started from the oldest such request, whatever waits above it. Lower tiers thus get a minimum
share of one batch per ``aging_s`` under sustained overload, and everything gold and silver leave
otherwise.

A lone request never waits for company: with one request queued, or ``max_queue_delay_s == 0``,
a batch is formed from what is queued now. Only when several wait and the batch is not full is
the head held for up to ``max_queue_delay_s``.

Example::

    q = BatchQueue(max_batch_size=8, max_queue_delay_s=0.0, capacity=100)
    q.push(Pending(payload="a", rows=1, batch_key=(16,), arrival=0.0), now=0.0)
    q.push(Pending(payload="b", rows=1, batch_key=(16,), arrival=0.0), now=0.0)
    q.next_batch(now=0.0).batch          # both items, rows == 2
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tierserve.scheduler.service_time import ServiceTimeEstimator
from tierserve.scheduler.tiers import ROUTING_MARGIN

T = TypeVar("T")


class QueueFull(Exception):
    """The queue is at its bound and holds nothing of lower priority to make room."""


@dataclass(eq=False)
class Pending(Generic[T]):
    """One queued request: its payload plus what the policy needs to order and batch it."""

    payload: T
    rows: int
    batch_key: Hashable
    arrival: float
    priority: int = 0
    deadline: float = math.inf
    reject_late: bool = False  # drop (to be answered 503) rather than run past the deadline
    seq: int = field(default=-1, init=False)
    cancelled: bool = field(default=False, init=False)
    queued: bool = field(default=False, init=False)  # in the queue now (not taken, dropped or withdrawn)


@dataclass(frozen=True)
class Batch(Generic[T]):
    items: list[Pending[T]]

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.items)


@dataclass
class Step(Generic[T]):
    """What a replica should do now: run ``batch``, answer ``dropped``; else ask again at ``wake_at``."""

    batch: Batch[T] | None = None
    dropped: list[Pending[T]] = field(default_factory=list)
    wake_at: float | None = None
    cap: int = 0  # the most rows ``batch`` could take
    limit: str = ""  # what set ``cap``: "full", "gold's wait bound" or "gold's slack"


@dataclass
class _Level(Generic[T]):
    heap: list[tuple[float, int, Pending[T]]] = field(default_factory=list)
    # Newest first, for eviction: entries of items no longer queued are skipped and, past twice the
    # live count, dropped in one rebuild (a full queue evicts in O(log n), not a scan of the queue).
    newest: list[tuple[int, Pending[T]]] = field(default_factory=list)
    live: int = 0
    rows: int = 0
    last_arrival: float = -math.inf
    budget_s: float = math.inf  # tightest deadline budget seen recently (reject_late work only)


@dataclass
class BatchCounts:
    """Batches formed so far: how many were cut to hold a deadline tier's slack, and their rows."""

    batches: int = 0
    rows: int = 0
    cut: int = 0


class BatchQueue(Generic[T]):
    """See the module docstring."""

    def __init__(
        self,
        max_batch_size: int,
        max_queue_delay_s: float,
        capacity: int,
        *,
        estimator: ServiceTimeEstimator | None = None,
        margin_share: float = ROUTING_MARGIN,
        activity_window_s: float = 2.0,
        aging_s: float = 1.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.capacity = capacity
        self.estimator = estimator or ServiceTimeEstimator()
        self.margin_share = margin_share
        self.activity_window_s = activity_window_s
        self.aging_s = aging_s
        self._levels: dict[int, _Level[T]] = {}
        self._live = 0
        self._seq = itertools.count()
        self._last_aged_batch = -math.inf
        self._cap_cache: tuple[tuple[float, int] | None, int] = (None, 0)
        self.counts = BatchCounts()

    def __len__(self) -> int:
        return self._live

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    # -- queueing ------------------------------------------------------------------------------

    def push(self, item: Pending[T], now: float) -> Pending[T] | None:
        """Queue ``item``. When full, evict the newest request of the lowest priority below it and
        return it (to be answered); raise QueueFull if there is none."""
        if self.batching and item.rows > self.max_batch_size:
            raise ValueError(f"{item.rows} rows exceed max_batch_size {self.max_batch_size}")
        evicted = None
        if self._live >= self.capacity:
            evicted = self._evict_below(item.priority)
            if evicted is None:
                raise QueueFull(f"queue is full ({self.capacity} requests)")
        item.seq = next(self._seq)
        level = self._levels.setdefault(item.priority, _Level())
        heapq.heappush(level.heap, (item.deadline, item.seq, item))
        heapq.heappush(level.newest, (-item.seq, item))
        self._count(level, item, +1)
        if len(level.newest) > 2 * level.live + 64:
            level.newest = [(-i.seq, i) for *_, i in level.heap if i.queued]
            heapq.heapify(level.newest)
        if item.reject_late:
            self._cap_cache = (None, 0)  # the slack may tighten
            budget = item.deadline - item.arrival
            recent = now - level.last_arrival <= self.activity_window_s
            level.budget_s = min(level.budget_s, budget) if recent else budget
        level.last_arrival = max(level.last_arrival, item.arrival)
        return evicted

    def cancel(self, item: Pending[T]) -> bool:
        """Withdraw a queued item; False if it already left the queue (or was cancelled)."""
        level = self._levels.get(item.priority)
        if item.cancelled or level is None or not item.queued:
            return False
        item.cancelled = True
        self._count(level, item, -1)
        return True

    def oldest_arrival(self) -> float | None:
        arrivals = [i.arrival for level in self._levels.values() for *_, i in level.heap if not i.cancelled]
        return min(arrivals) if arrivals else None

    def depth_by_priority(self) -> dict[int, int]:
        return {priority: level.live for priority, level in sorted(self._levels.items())}

    # -- prediction ----------------------------------------------------------------------------

    def batch_rows_cap(self, now: float, others_free_at: Iterable[float] = ()) -> int:
        """The most rows a batch started now may take, given when the *other* replicas free up
        (``-inf`` or ``now``: idle). See the module docstring: full unless no other replica frees up
        within gold's wait bound (``wait_s``), else what ends within it."""
        if not self.batching:
            return 1
        slack = self.slack_s(now)
        if slack is None or not self.estimator.known:
            return self.full_rows
        wait = self._wait_s(slack)
        soonest = min(others_free_at, default=math.inf)
        if soonest <= now + wait:
            return self.full_rows
        return self._cut_rows(wait)

    def wait_s(self, now: float) -> float | None:
        """Gold's wait bound: how soon some replica must always free up while the tightest deadline
        tier is active (its slack less one more row's service time); None when no such tier is."""
        slack = self.slack_s(now)
        return None if slack is None else self._wait_s(slack)

    def _wait_s(self, slack: float) -> float:
        return max(0.0, slack - self.estimator.predict(1))

    @property
    def full_rows(self) -> int:
        """A full batch: the throughput-sized one the estimate knows (``efficient_rows``), at most
        ``max_batch_size``; a single request larger than it still runs, alone."""
        if not self.batching or not self.estimator.known:
            return max(1, self.max_batch_size)
        return self.estimator.efficient_rows(self.max_batch_size)

    def slack_s(self, now: float) -> float | None:
        """How long the tightest deadline tier active in the last ``activity_window_s`` may wait for a
        replica: its budget less the routing margin and its own one-row service time. None when no
        such tier is active, or none has any slack (one row alone misses it: no cut would help)."""
        one_row = self.estimator.predict(1)
        slacks = [
            level.budget_s * (1 - self.margin_share) - one_row
            for level in self._levels.values()
            if now - level.last_arrival <= self.activity_window_s and math.isfinite(level.budget_s)
        ]
        positive = [s for s in slacks if s > 0]
        return min(positive) if positive else None

    def predict_finish(self, item: Pending[Any], now: float, replicas_free_at: Sequence[float]) -> float:
        """When ``item`` would finish if queued now: the work of its priority or higher ahead of
        it, in batches on the replicas as they free up (full batches with several replicas, cut to the
        slack with one: see the module docstring), then its own batch."""
        if not self.estimator.known:
            return now
        ahead = sum(level.rows for p, level in self._levels.items() if p <= item.priority)
        if not self.batching:
            ahead = sum(level.live for p, level in self._levels.items() if p <= item.priority)
        full = self.full_rows
        cap = full if len(replicas_free_at) > 1 else self.batch_rows_cap(now)
        if item.reject_late and cap == full:
            cap = self._deadline_rows(item, now, cap)
        remaining = ahead + item.rows
        # Only the replicas that free up first can take the batches up to this one: with many replicas
        # (the simulator's fleets), looking at those few keeps a prediction cheap.
        batches = -(-remaining // cap)
        free = [max(now, t) for t in heapq.nsmallest(batches, replicas_free_at)] or [now]
        heapq.heapify(free)
        finish, take = now, 0
        if batches > 4 * len(free):
            # A long queue: replicas take full batches in turn, so each replica's share of them runs
            # back to back. Skipping ahead keeps this O(replicas) per request instead of O(queue).
            rounds = batches // len(free) - 2
            batch_s = self.estimator.mean(cap)
            free = [t + rounds * batch_s for t in free]
            remaining -= rounds * len(free) * cap
        while remaining > 0:
            take = min(cap, remaining)
            finish = heapq.heappop(free) + self.estimator.mean(take)
            heapq.heappush(free, finish)
            remaining -= take
        # Means for the batches ahead, and the spread once: deviations of independent batches do not
        # all fall on the same side, so adding a pessimistic figure per batch would over-reject.
        return finish + self.estimator.predict(take) - self.estimator.mean(take)

    # -- batch formation -----------------------------------------------------------------------

    def next_batch(self, now: float, others_free_at: Iterable[float] = ()) -> Step[T]:
        """What the replica asking now should do. ``others_free_at``: when each *other* replica of
        this queue frees up (``-inf`` or ``now`` for an idle one); empty for a single replica."""
        step: Step[T] = Step(dropped=self._drop_infeasible(now))
        head = self._take_head(now)
        if head is None:
            return step
        if not self.batching:
            step.batch = Batch([head])
            return step
        full = self.full_rows
        head = self._shed_stale_heads(head, now, full, step.dropped)
        cap = self.batch_rows_cap(now, others_free_at)
        step.limit = "full" if cap >= full else "gold's wait bound"
        if head.reject_late and cap == full:
            cap = self._deadline_rows(head, now, cap)
            step.limit = "full" if cap >= full else "gold's slack"
        step.cap = cap
        items, skipped = self._collect(head, now, cap)
        rows = sum(item.rows for item in items)
        release_at = head.arrival + self.max_queue_delay_s
        alone = len(items) == 1 and not skipped and self._live == 0
        if rows >= cap or alone or now >= release_at:
            self._restore(skipped)
            step.batch = Batch(items)
            self.counts.batches += 1
            self.counts.rows += rows
            self.counts.cut += cap < full
        else:
            self._restore(items + skipped)
            step.wake_at = release_at
        return step

    def _shed_stale_heads(
        self, head: Pending[T], now: float, full: int, dropped: list[Pending[T]]
    ) -> Pending[T]:
        """Overload: a deadline-bound head so close to its deadline that its batch could hold less
        than a quarter of a full batch, while a full batch of its tier waits behind it, is dropped
        (answered 503) instead of forcing a tiny batch. Otherwise every later request reaches the
        head just as late, every batch is tiny, and throughput collapses: earliest-deadline-first's
        failure under overload (16 simulated replicas at 2x: silver-headed batches of one row, 0.83
        of capacity served; shedding: 0.90, goodput 0.82 -> 0.90). Below overload a tier never has a
        full batch queued behind a late head, so nothing is shed."""
        for _ in range(full):
            if not head.reject_late:
                return head
            level = self._levels[head.priority]
            if level.rows < full:
                return head
            fits = self.estimator.max_rows_within(self._fill_deadline(head) - now, full)
            if fits * 4 >= full:
                return head
            following = self._pop(level)
            if following is None:  # cannot happen (rows remain), but never drop without a successor
                return head
            dropped.append(head)
            head = following
        return head

    # -- internals -----------------------------------------------------------------------------

    def _count(self, level: _Level[T], item: Pending[T], sign: int) -> None:
        item.queued = sign > 0
        level.live += sign
        level.rows += sign * item.rows
        self._live += sign

    def _deadline_rows(self, head: Pending[Any], now: float, cap: int) -> int:
        """Rows of a batch headed by the tightest active deadline tier (gold) while other replicas
        cover the wait bound: what ends within gold's slack, so that a burst of gold is split over the
        replicas freeing up next rather than queued into one long batch that ends at its deadline.
        Other tiers' batches stay full: cutting silver's too cost a tenth of the throughput at 2x in
        the simulator (its batches shrank to a few rows)."""
        tightest = self.slack_s(now)
        if tightest is None or not self.estimator.known:
            return cap
        budget = head.deadline - head.arrival
        own = budget * (1 - self.margin_share) - self.estimator.predict(1)
        if own <= 0 or own > tightest + 1e-9:
            return cap  # not the tightest tier: its batches need not end early for gold's sake
        return min(cap, self._cut_rows(own))

    def _cut_rows(self, seconds: float) -> int:
        key = (seconds, self.estimator.version)
        if self._cap_cache[0] != key:  # asked several times per request at one instant: compute once
            self._cap_cache = (key, self.estimator.max_rows_within(seconds, self.full_rows))
        return self._cap_cache[1]

    def _feasible(self, item: Pending[T], rows: int, now: float) -> bool:
        return not item.reject_late or now + self.estimator.predict(rows) <= item.deadline

    def _drop_infeasible(self, now: float) -> list[Pending[T]]:
        dropped: list[Pending[T]] = []
        for level in self._levels.values():
            while level.heap:
                item = level.heap[0][2]
                if item.cancelled:
                    heapq.heappop(level.heap)
                elif not self._feasible(item, item.rows, now):
                    heapq.heappop(level.heap)
                    self._count(level, item, -1)
                    dropped.append(item)
                else:
                    break
        return dropped

    def _pop(self, level: _Level[T]) -> Pending[T] | None:
        while level.heap:
            item = heapq.heappop(level.heap)[2]
            if not item.cancelled:
                self._count(level, item, -1)
                return item
        return None

    def _levels_in_order(self) -> list[_Level[T]]:
        return [level for _, level in sorted(self._levels.items()) if level.live]

    def _take_head(self, now: float) -> Pending[T] | None:
        levels = self._levels_in_order()
        if not levels:
            return None
        if len(levels) > 1 and now - self._last_aged_batch >= self.aging_s:
            starved = [lv for lv in levels[1:] if now - self._peek(lv).arrival >= self.aging_s]
            if starved:
                self._last_aged_batch = now
                return self._pop(min(starved, key=lambda lv: self._peek(lv).arrival))
        return self._pop(levels[0])

    @staticmethod
    def _peek(level: _Level[T]) -> Pending[T]:
        while level.heap[0][2].cancelled:
            heapq.heappop(level.heap)
        return level.heap[0][2]

    def _collect(self, head: Pending[T], now: float, cap: int) -> tuple[list[Pending[T]], list[Pending[T]]]:
        """Pop, in order, the items that join ``head``'s batch; return them and the ones passed over."""
        items: list[Pending[T]] = [head]
        skipped: list[Pending[T]] = []
        rows = head.rows
        batch_deadline = self._fill_deadline(head)
        # Bound the scan so that a queue full of incompatible shapes costs O(batch), not O(queue).
        for level in self._levels_in_order():
            while rows < cap and len(skipped) < 4 * self.max_batch_size:
                item = self._pop(level)
                if item is None:
                    break
                grown = rows + item.rows
                deadline = min(batch_deadline, self._fill_deadline(item))
                fits = item.batch_key == head.batch_key and grown <= cap
                if fits and now + self.estimator.predict(grown) <= deadline:
                    items.append(item)
                    rows, batch_deadline = grown, deadline
                else:
                    skipped.append(item)
        return items, skipped

    def _fill_deadline(self, item: Pending[T]) -> float:
        """By when a batch holding ``item`` must be predicted to end for it to grow further: the
        deadline less the margin (a batch filled up to the deadline itself ends late half the time
        the prediction errs); no limit for best-effort work."""
        if not item.reject_late:
            return math.inf
        return item.deadline - self.margin_share * (item.deadline - item.arrival)

    def _restore(self, items: list[Pending[T]]) -> None:
        for item in items:
            level = self._levels[item.priority]
            heapq.heappush(level.heap, (item.deadline, item.seq, item))
            self._count(level, item, +1)

    def _evict_below(self, priority: int) -> Pending[T] | None:
        lower = [p for p, level in self._levels.items() if p > priority and level.live]
        if not lower:
            return None
        level = self._levels[max(lower)]
        while True:  # level.live > 0: a queued entry is there
            victim = heapq.heappop(level.newest)[1]
            if victim.queued:
                break
        victim.cancelled = True
        self._count(level, victim, -1)
        return victim
