"""Admission and execution: a bounded FIFO in front of a fixed pool of worker threads.

The event loop admits (policy decision + enqueue, atomically under one lock) and
awaits; worker threads run the CPU-bound work (decode, tiles, encode), so the
loop stays free for health checks and metrics however saturated the workers are.
Predictions use the backend's lanes, not the workers: with one lane over all
cores (OpenVINO) two workers overlap one request's codec work with another's
tiles, but the tiles themselves take turns.

Several models (``service.catalog.registry``) share the queue and the lane: each request
names its ladder (its model at the output scale it asks, ``LadderKey``), which may
hold rungs of a larger model (``Registry.route``), each rung priced by its own
model's measured costs, while the lane price weighs the recent requests of every ladder.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import TypeVar

from model.rungs import Rung
from service.scheduling.ladder import EMPTY_LADDER, Ladder
from service.scheduling.policy import (
    MAX_UTILIZATION,
    CostModel,
    Decision,
    LaneView,
    RequestPlan,
    decide,
    lane_price,
    predicted_wait,
)

T = TypeVar("T")

RATE_WINDOW_S = 10.0  # arrivals this recent are the request sizes the lane price is set for
JOB_MIN_SHARE = 0.1  # a job waiting behind interactive requests still gets this share of the lane: it finishes
MAX_JOB_SHARE_LOST = 1 - JOB_MIN_SHARE  # so jobs plan on that share, however busy interactive requests keep it


class Aborted(Exception):
    """Work stopped before finishing: ``reason`` is ``timeout`` or ``cancelled`` (or a job's ``shutdown``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class Ticket:
    """An admitted interactive request: queued for a worker, then running."""

    rung: Rung  # a served rung (service.catalog.registry.ServedRung): the model's rung
    pixels: int
    predicted_s: float
    admitted_at: float
    expires_at: float
    started_at: float | None = None
    lane_wait_s: float = 0.0  # on a worker, waiting for the inference lane
    cancelled: bool = False

    @property
    def queue_wait_s(self) -> float:
        """Waiting for a worker, then for the inference lane."""
        return (self.started_at or time.monotonic()) - self.admitted_at + self.lane_wait_s

    def waited_for_lane(self, seconds: float) -> None:
        self.lane_wait_s += seconds

    def check(self) -> None:
        """Called before each tile: stop work nobody will receive."""
        if self.cancelled:
            raise Aborted("cancelled")
        if time.monotonic() > self.expires_at:
            raise Aborted("timeout")


@dataclass(frozen=True)
class Load:
    queued: int
    running: int
    wait_s: float


@dataclass(frozen=True)
class Limits:
    """How much the scheduler takes on: ``workers`` requests at once over ``lanes`` inference lanes,
    ``max_queue`` more waiting, none past ``timeout_s``; it plans to fill ``planning_fraction`` of a
    request's target, and a lane-second never costs more than ``max_lane_price``."""

    workers: int
    lanes: int
    max_queue: int
    timeout_s: float
    planning_fraction: float = 1.0
    max_lane_price: float = math.inf


class Scheduler:
    """Owns the worker pool, the queue accounting and the cost model's online updates."""

    def __init__(self, cost: CostModel, limits: Limits, init_worker: Callable[[], None] | None = None) -> None:
        self.cost = cost
        self.planning_fraction = limits.planning_fraction
        self.max_lane_price = limits.max_lane_price
        self.workers = limits.workers
        self.lanes = min(limits.lanes, limits.workers)
        self.max_queue = limits.max_queue
        self.timeout_s = limits.timeout_s
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="csd-sr-worker", initializer=init_worker)
        self._lock = threading.Lock()
        self._queued: deque[Ticket] = deque()
        self._running: set[Ticket] = set()
        self._arrivals: deque[tuple[float, Hashable, int]] = deque()  # (time, ladder key, pixels) of recent attempts
        self._served: deque[tuple[float, float]] = deque()  # (finished at, lane seconds) of recent requests
        self._idle = threading.Condition(self._lock)  # notified when no interactive request is in the system
        # per ladder key (service.catalog.registry.LadderKey: a model at an output scale), built once warm-up has
        # measured every rung
        self.ladders: dict[Hashable, Ladder] = {}

    def ladder(self, key: Hashable) -> Ladder:
        """The ladder of ``key`` (empty before warm-up)."""
        return self.ladders.get(key, EMPTY_LADDER)

    def _options(self, plan: RequestPlan) -> tuple[Ladder, dict[Rung, float]]:
        """The plan's ladder (its own model's rungs alone unless ``plan.others``) and each rung's predicted
        seconds."""
        ladder = self.ladder(plan.ladder) if plan.others else self.ladder(plan.ladder).own
        candidates = set(ladder.candidates)
        return ladder, {r: self.cost.predict(r, plan.pixels) for r in self.cost.rungs if r in candidates}

    def load(self) -> Load:
        with self._lock:
            return Load(len(self._queued), len(self._running), self._wait_locked(time.monotonic()))

    def admit(self, plan: RequestPlan) -> tuple[Decision, Ticket | None]:
        """Decide a rung of the plan's ladder and enqueue the request, or reject it (job ``None``)."""
        ladder, work = self._options(plan)
        with self._lock:
            now = time.monotonic()
            self._arrivals.append((now, plan.ladder, plan.pixels))
            decision = self._decide_locked(plan, ladder, work, now)
            if decision.rung is None:
                return decision, None
            job = Ticket(decision.rung, plan.pixels, work[decision.rung], now, now + self.timeout_s)
            self._queued.append(job)
            return decision, job

    def preview(self, plan: RequestPlan) -> Decision:
        """The decision ``admit`` would make now, the request neither counted nor enqueued (``/v1/model``)."""
        ladder, work = self._options(plan)
        with self._lock:
            return self._decide_locked(plan, ladder, work, time.monotonic())

    def _decide_locked(self, plan: RequestPlan, ladder: Ladder, work: dict[Rung, float], now: float) -> Decision:
        full = len(self._queued) + len(self._running) >= self.workers + self.max_queue
        planned = replace(plan, target_s=plan.target_s * self.planning_fraction)  # the rest absorbs prediction error
        wait_s = self._wait_locked(now)
        price = self._price_locked(now, plan.ladder, plan.pixels, planned.target_s, wait_s)
        return decide(planned, LaneView(work, ladder.rungs, wait_s, full, ladder.quality, price, self.timeout_s))

    async def run(self, job: Ticket, fn: Callable[[Ticket], T]) -> T:
        """Run ``fn(job)`` on a worker when its turn comes; cancelling the caller abandons the job."""
        future = self.executor.submit(self._execute, job, fn)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            job.cancelled = True  # a running job stops at its next tile
            if future.cancelled():  # never started, so it would never leave the queue itself
                with self._lock:
                    self._queued.remove(job)
                    self._notify_if_idle_locked()
            raise

    def shutdown(self) -> None:
        with self._lock:
            for job in [*self._queued, *self._running]:
                job.cancelled = True
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _execute(self, job: Ticket, fn: Callable[[Ticket], T]) -> T:
        with self._lock:
            self._queued.remove(job)
            job.started_at = time.monotonic()
            job.check()
            self._running.add(job)
        try:
            result = fn(job)
        finally:
            with self._lock:
                self._running.discard(job)
                self._notify_if_idle_locked()
        # The job's own work: the wait for the lane is the other jobs' work, predicted as wait, not cost.
        seconds = time.monotonic() - job.started_at - job.lane_wait_s
        self.cost.observe(job.rung, job.pixels, seconds)
        with self._lock:
            self._served.append((time.monotonic(), seconds))
        return result

    # Jobs (service.jobs) run beside the interactive queue, on the lane interactive requests leave free.

    def choose_for_job(self, plan: RequestPlan, timeout_s: float) -> Decision:
        """The best rung of the plan's ladder that finishes its work within ``plan.target_s`` (what is left of
        the job's deadline) on the share of the lane interactive requests leave it, and within ``timeout_s``."""
        share = 1.0 - self.interactive_utilization()
        ladder, alone = self._options(plan)
        work = {r: seconds / share for r, seconds in alone.items()}
        return decide(plan, LaneView(work, ladder.rungs, timeout_s=timeout_s))

    def interactive_utilization(self) -> float:
        """Share of the lanes interactive requests used over the last ``RATE_WINDOW_S`` (at most
        ``MAX_JOB_SHARE_LOST``)."""
        with self._lock:
            now = time.monotonic()
            while self._served and self._served[0][0] < now - RATE_WINDOW_S:
                self._served.popleft()
            busy = sum(seconds for _, seconds in self._served)
        return min(MAX_JOB_SHARE_LOST, busy / (RATE_WINDOW_S * self.lanes))

    @contextlib.contextmanager
    def job_turn(
        self, lane: Callable[[], AbstractContextManager[object]], check: Callable[[], None], last_tile_s: float = 0.0
    ) -> Iterator[float]:
        """Hold ``lane`` for one tile of a job once no interactive request is queued or running; yields the
        seconds it waited (interactive requests go first: a job yields the lane between its tiles).

        Not forever: after ``last_tile_s`` x (1 - JOB_MIN_SHARE) / JOB_MIN_SHARE (at least a second) it
        takes the lane anyway, so under closed-loop interactive load a job still gets a tenth of the lane
        and an interactive request waits for at most one of its tiles. ``check`` runs while it waits and
        may raise to give up (the job cancelled, the server stopping)."""
        asked = time.monotonic()
        give_up_at = asked + max(1.0, last_tile_s * (1 - JOB_MIN_SHARE) / JOB_MIN_SHARE)
        with self._lock:
            while (self._queued or self._running) and time.monotonic() < give_up_at:
                self._idle.wait(timeout=min(0.5, max(0.0, give_up_at - time.monotonic())))
                check()
        with lane():
            yield time.monotonic() - asked

    def observe_job(self, rung: Rung, pixels: int, seconds: float) -> None:
        """A job's own tile seconds: the cost model learns from large images too."""
        self.cost.observe(rung, pixels, seconds)

    def _notify_if_idle_locked(self) -> None:
        if not self._queued and not self._running:
            self._idle.notify_all()

    def _wait_locked(self, now: float) -> float:
        running = [j.predicted_s - (now - (j.started_at or now)) for j in self._running]
        return predicted_wait(running, [j.predicted_s for j in self._queued], self.lanes)

    def lane_price(self, key: Hashable, pixels: int, target_s: float) -> float:
        """What a lane-second costs now (expected quality per second) for a request of ``pixels`` to
        ladder ``key`` with ``target_s``."""
        with self._lock:
            now = time.monotonic()
            return self._price_locked(now, key, pixels, target_s * self.planning_fraction, self._wait_locked(now))

    def _price_locked(self, now: float, key: Hashable, pixels: int, target_s: float, wait_s: float) -> float:
        """The lane price at which the requests in the system (this one too), sized like the recent ones,
        would hold ``MAX_UTILIZATION`` of the target: by Little's law ``n`` requests each waiting for the
        others settle at ``n x mean work / lanes``. Free (0) with no work ahead, and before the ladder exists;
        at most ``max_lane_price``: above it a request keeps a better rung and, if that does not fit, the
        rungs that do are what is left (so past capacity fewer requests are admitted, not all narrowed).
        The requests in the system, not the arrival rate: clients that wait for each answer arrive exactly as
        fast as they are served, so at their rate only the rung being served ever looks affordable.
        """
        quality = {m: ladder.quality for m, ladder in self.ladders.items() if ladder.quality}
        if wait_s == 0 or key not in quality:
            return 0.0
        while self._arrivals and self._arrivals[0][0] < now - RATE_WINDOW_S:
            self._arrivals.popleft()
        sizes = Counter((m, p) for _, m, p in self._arrivals if m in quality) or Counter([(key, pixels)])
        in_system = len(self._queued) + len(self._running) + 1
        budget_s = MAX_UTILIZATION * target_s * self.lanes / in_system
        price = lane_price(self.cost.snapshot(), quality, sizes, budget_s, target_s)
        return min(price, self.max_lane_price)
