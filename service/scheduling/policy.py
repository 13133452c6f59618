"""The rung policy: a cost model per rung and the per-request decision. Pure logic, no I/O.

A rung is a width of the shared weights at a precision (``model.rungs``). The
ladder (``service.scheduling.ladder``) orders the rungs by expected quality. A request's
predicted completion is the wait until an inference lane is free (list
scheduling of the running and queued work over the backend's parallel lanes)
plus its own work at rung ``r``. On an idle lane the rung of highest expected
quality whose completion meets the target wins. Work predicted to outlast the
request timeout is refused up front instead of computed and thrown away.

With work ahead, lane time is scarce and has a price (``lane_price``, expected
dB per lane-second): the lowest price at which the requests in the system, sized
like the recent ones, would each finish within the target on average (Little's
law). Each request then takes the rung of highest ``quality - price * seconds``
among those that fit: a second of lane time buys more expected quality on a
small image than on a large one (every answer counts the same), so under load
small images keep wide rungs and large ones step down first, and a rung that is
dominated in quality per second (0.25 fp32 next to 0.25/0.5 int8) is skipped.
Without a price, each request would take the best rung that fits behind the
queue ahead of it and the requests behind it would pay: a burst served at the
best rung until the queue is full, the rest shed, instead of cheaper for everyone.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from model.rungs import Rung

# Why a rung was chosen (bounded label values of csd_sr_width_decisions_total).
IDLE = "idle"  # best rung, a worker is free for it now
HEADROOM = "headroom"  # best rung, work ahead but the target is still met
LOAD = "load"  # lower: the best alone would meet the target, not with the work ahead
SIZE = "size"  # lower: the image is too large for the configured target even on an idle server
DEADLINE = "deadline"  # lower: the client's deadline is too tight even on an idle server
BEST_EFFORT = "best_effort"  # the request alone is too big for the target at any rung: cheapest
FORCED = "forced"  # the client asked for this width (or rung)
FIXED = "fixed"  # the server runs a fixed:<rung> policy
MAX_UTILIZATION = 0.9  # share of the target the sustained latency of the requests in the system may take
REASONS = (IDLE, HEADROOM, LOAD, SIZE, DEADLINE, BEST_EFFORT, FORCED, FIXED)

QUEUE_FULL = "queue_full"  # rejection reason: no room in the bounded queue
OVERLOADED = "target_unreachable"  # rejection reason: the backlog makes even the cheapest rung miss the target
EXCEEDS_TIMEOUT = "exceeds_timeout"  # rejection reason: the rung would not finish within the request timeout


@dataclass(frozen=True)
class RungCost:
    """Worker seconds of one request at a rung: ``overhead_s + s_per_megapixel * megapixels``."""

    overhead_s: float
    s_per_megapixel: float

    def seconds(self, pixels: int) -> float:
        return self.overhead_s + self.s_per_megapixel * pixels / 1e6


class CostModel:
    """Per-rung cost, fitted at warm-up and updated online by an EWMA of the per-megapixel slope.

    A timing moves the slope by ``alpha`` scaled down for images smaller than
    ``ref_pixels``: on small images the fixed overhead dominates and the slope
    they imply is noise. Thread-safe: workers observe, the event loop predicts.
    """

    def __init__(self, rungs: Sequence[Rung], alpha: float, ref_pixels: int) -> None:
        self.rungs = tuple(sorted(rungs))
        self.alpha = alpha
        self.ref_pixels = ref_pixels
        self._costs: dict[Rung, RungCost] = {}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return all(r in self._costs for r in self.rungs)

    def fit(self, rung: Rung, samples: Iterable[tuple[int, float]]) -> RungCost:
        """Least-squares line through (pixels, seconds); overhead and slope kept non-negative."""
        pts = [(p / 1e6, s) for p, s in samples]
        n = len(pts)
        mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
        var = sum((x - mx) ** 2 for x, _ in pts)
        slope = sum((x - mx) * (y - my) for x, y in pts) / var if var else 0.0
        overhead = my - slope * mx
        if overhead < 0 or slope <= 0:  # noisy timings: the line through the origin and the mean instead
            overhead, slope = 0.0, my / mx
        cost = RungCost(overhead, slope)
        with self._lock:
            self._costs[rung] = cost
        return cost

    def copy(self, sources: Sequence[Rung], targets: Sequence[Rung]) -> None:
        """Start ``targets`` at the fitted cost of ``sources`` (pairwise): rungs of the same network and
        precision cost the same whatever their weights. Each then follows its own timings."""
        with self._lock:
            for source, target in zip(sources, targets, strict=True):
                self._costs[target] = self._costs[source]

    def observe(self, rung: Rung, pixels: int, seconds: float) -> None:
        with self._lock:
            cost = self._costs[rung]
            implied = (seconds - cost.overhead_s) / (pixels / 1e6)
            weight = self.alpha * min(1.0, pixels / self.ref_pixels)
            slope = max(cost.s_per_megapixel + weight * (implied - cost.s_per_megapixel), 1e-6)
            self._costs[rung] = RungCost(cost.overhead_s, slope)

    def predict(self, rung: Rung, pixels: int) -> float:
        with self._lock:
            return self._costs[rung].seconds(pixels)

    def snapshot(self) -> dict[Rung, RungCost]:
        with self._lock:
            return dict(self._costs)


def predicted_wait(running_remaining_s: Sequence[float], queued_s: Sequence[float], lanes: int) -> float:
    """Seconds until a lane is free for a new request behind the FIFO queue (list scheduling).

    Running jobs beyond the lane count share the lanes: their remaining work stacks up.
    """
    slots = [0.0] * lanes
    for work in [max(r, 0.0) for r in running_remaining_s] + list(queued_s):
        heapq.heappush(slots, heapq.heappop(slots) + work)
    return slots[0]


@dataclass(frozen=True)
class Ask:
    """What the client asked for: a width (``None``: auto), a precision (``None``: auto), a floor on the width.

    ``min_width`` bounds the policy's own choice (``width`` auto): with an explicit
    width, that width is served.
    """

    width: float | None = None
    precision: str | None = None
    min_width: float | None = None

    def allows(self, rung: Rung) -> bool:
        return (
            (self.width is None or rung.width == self.width)
            and (self.precision is None or rung.precision == self.precision)
            and (self.width is not None or self.min_width is None or rung.width >= self.min_width)
        )


AUTO = Ask()


def allowed(ladder: Sequence[Rung], ask: Ask, fixed: Rung | None = None) -> tuple[Rung, ...]:
    """The rungs ``ask`` may be served at, best expected quality first; empty: the ask cannot be met.

    An explicit width picks among the ladder's rungs of that width, whatever the
    server's policy; otherwise a ``fixed`` policy serves its one rung (on the
    ladder or not: the operator chose it), else the whole ladder is the choice.
    """
    if ask.width is None and fixed is not None:
        return (fixed,) if ask.allows(fixed) else ()
    return tuple(r for r in ladder if ask.allows(r))


@dataclass(frozen=True)
class RequestPlan:
    """One request as admission and the decision read it: its ladder, its work, its target, the client's ask."""

    ladder: Hashable  # the key of the ladder it is served from (service.catalog.registry.LadderKey)
    pixels: int  # LR pixels the network processes for it, tile margins included
    target_s: float  # the latency target, the client's deadline, or what is left of a job's deadline
    ask: Ask = AUTO
    fixed: Rung | None = None  # the server's fixed:<rung> policy, as a rung of the request's own model
    others: bool = True  # a larger model's rungs on the ladder may serve it (false: its input is too large)
    from_deadline: bool = False  # target_s is a deadline the client set: a rung it forces down is "deadline"


@dataclass(frozen=True)
class LaneView:
    """What the lane offers one request now: each rung's predicted seconds for it (``work_s``, at least those
    of ``ladder``), the rungs ``auto`` serves best first, the predicted wait for a lane, whether the queue is
    full, the expected quality of each ladder rung with the price of a lane-second in it (``lane_price``,
    counted only with work ahead), and the timeout no rung may be predicted to outlast."""

    work_s: Mapping[Rung, float]
    ladder: Sequence[Rung]
    wait_s: float = 0.0
    queue_full: bool = False
    quality: Mapping[Rung, float] | None = None
    price: float = 0.0
    timeout_s: float = math.inf

    @property
    def value(self) -> Value | None:
        """Only with work ahead is lane time priced: a lone request on an idle lane gets the best rung that fits."""
        return None if self.quality is None or self.wait_s == 0 else Value(self.quality, self.price)


@dataclass(frozen=True)
class Decision:
    """A rung (``None``: rejected) and why, with the prediction behind it."""

    rung: Rung | None
    reason: str
    wait_s: float
    predicted_s: float
    target_s: float
    retry_after_s: int | None = None
    fits: tuple[Rung, ...] = ()  # with EXCEEDS_TIMEOUT: the ladder's rungs that would finish in time now


def decide(plan: RequestPlan, lane: LaneView) -> Decision:
    """Choose a rung for one request, or refuse it.

    ``plan.ask`` must leave some rung of ``lane.ladder`` (``allowed``); ``plan.target_s`` is the target the
    decision plans for. A rung predicted to finish after ``lane.timeout_s`` is never started: refused as
    ``EXCEEDS_TIMEOUT`` when it alone takes that long, else as ``OVERLOADED`` (the backlog is why; it may
    fit later).
    """
    rungs = allowed(lane.ladder, plan.ask, plan.fixed)
    if not rungs:
        raise ValueError(f"no rung for {plan.ask} on the ladder {[r.key for r in lane.ladder]}")
    decision = _choose(plan, lane, rungs)
    work_s, wait_s, timeout_s = lane.work_s, lane.wait_s, lane.timeout_s
    if decision.rung is None or decision.predicted_s <= timeout_s:
        return decision
    fits = tuple(r for r in reversed(lane.ladder) if wait_s + work_s[r] <= timeout_s)
    if work_s[decision.rung] > timeout_s:
        return replace(decision, rung=None, reason=EXCEEDS_TIMEOUT, fits=fits)
    retry = max(1, math.ceil(decision.predicted_s - timeout_s))
    return replace(decision, rung=None, reason=OVERLOADED, retry_after_s=retry, fits=fits)


def _choose(plan: RequestPlan, lane: LaneView, rungs: tuple[Rung, ...]) -> Decision:
    work_s, wait_s, target_s = lane.work_s, lane.wait_s, plan.target_s
    cheapest = min(rungs, key=work_s.__getitem__)
    if lane.queue_full:
        retry = retry_after(wait_s, target_s, work_s[cheapest])
        return Decision(None, QUEUE_FULL, wait_s, wait_s + work_s[cheapest], target_s, retry)
    pinned = FORCED if plan.ask.width is not None else FIXED if plan.fixed is not None else None
    if pinned is not None:  # the client's width or the server's rung: the best of it that fits, never shed
        rung = next((r for r in rungs if wait_s + work_s[r] <= target_s), cheapest)
        return Decision(rung, pinned, wait_s, wait_s + work_s[rung], target_s)
    fitting = [r for r in rungs if wait_s + work_s[r] <= target_s]
    if fitting:
        value = lane.value
        rung = fitting[0] if value is None else value.best(fitting, work_s)
        reason = _reason(plan, lane, rung, rungs)
        return Decision(rung, reason, wait_s, wait_s + work_s[rung], target_s)
    if work_s[cheapest] <= target_s:  # it would fit on an idle server: the backlog is why, so shed it
        retry = retry_after(wait_s, target_s, work_s[cheapest])
        return Decision(None, OVERLOADED, wait_s, wait_s + work_s[cheapest], target_s, retry)
    return Decision(cheapest, BEST_EFFORT, wait_s, wait_s + work_s[cheapest], target_s)


def _reason(plan: RequestPlan, lane: LaneView, rung: Rung, rungs: Sequence[Rung]) -> str:
    if rung == rungs[0]:
        return IDLE if lane.wait_s == 0 else HEADROOM
    alone = next((r for r in rungs if lane.work_s[r] <= plan.target_s), None)  # the best an idle server serves
    if rung == alone:
        return DEADLINE if plan.from_deadline else SIZE
    return LOAD  # below what the request alone allows: the work ahead (or its price) is why


def retry_after(wait_s: float, target_s: float, cheapest_work_s: float) -> int:
    """Whole seconds until the backlog has drained enough for the cheapest rung to meet the target (>= 1)."""
    return max(1, math.ceil(wait_s - max(target_s - cheapest_work_s, 0.0)))


@dataclass(frozen=True)
class Value:
    """Expected quality per rung and the price of a lane-second in it: what a rung is worth for one request."""

    quality: Mapping[Rung, float]
    price: float

    def best(self, rungs: Sequence[Rung], work_s: Mapping[Rung, float]) -> Rung:
        """The rung of highest ``quality - price * seconds``, the cheaper on a tie (infinite price: the cheapest)."""
        if math.isinf(self.price):
            return min(rungs, key=work_s.__getitem__)
        return max(rungs, key=lambda r: (self.quality[r] - self.price * work_s[r], -work_s[r]))


@np.errstate(invalid="ignore")  # other models' rungs cost inf for a request: inf - inf and 0 * inf are masked out
def lane_price(
    costs: Mapping[Rung, RungCost],
    quality: Mapping[Hashable, Mapping[Rung, float]],
    sizes: Mapping[tuple[Hashable, int], int],
    budget_s: float,
    target_s: float,
) -> float:
    """The lowest price of a lane-second (expected quality per second) that keeps the mean work within budget.

    ``quality`` holds each model's ladder (its rungs' expected quality); ``sizes``
    counts recent requests by (model, pixels). Each is served, at a price, the rung of
    its model's ladder worth most among those that meet ``target_s`` alone (the
    cheapest if none does): one price for the lane, so a second is worth the same dB
    to a x2 request as to a x4 one. ``budget_s`` is the mean work per request the lanes
    can afford. 0: every request may have its best rung; ``inf``: even the cheapest
    rung for all exceeds the budget. The mean work falls as the price rises and only
    changes where two rungs are worth the same for some request: the answer is just
    above one of those break-even prices, so the request at the margin takes the cheaper rung.
    """
    rungs = [(m, r) for m, ladder in quality.items() for r in ladder]
    q = np.array([quality[m][r] for m, r in rungs])
    weights = np.array(list(sizes.values()), dtype=float)
    work = np.array([[costs[r].seconds(p) if m == g else np.inf for m, r in rungs] for g, p in sizes])  # sizes x rungs
    fits = work <= target_s
    fits[np.arange(len(work)), work.argmin(axis=1)] |= ~fits.any(axis=1)

    def mean_work(price: float) -> float:
        value = np.where(fits, -work if math.isinf(price) else q - price * work, -np.inf)
        chosen = np.where(value == value.max(axis=1, keepdims=True), work, np.inf).min(axis=1)  # ties: cheaper
        return float(weights @ chosen / weights.sum())

    if mean_work(0.0) <= budget_s:
        return 0.0
    if mean_work(math.inf) > budget_s:
        return math.inf
    dq = q[:, None] - q[None, :]  # rung a over rung b
    dw = work[:, :, None] - work[:, None, :]
    pairs = fits[:, :, None] & fits[:, None, :] & (dq > 0) & (dw > 0)
    prices = np.unique(np.broadcast_to(dq, dw.shape)[pairs] / dw[pairs]) * (1 + 1e-9)
    lo, hi = 0, len(prices) - 1  # above the highest break-even price every size takes its cheapest rung
    while lo < hi:
        mid = (lo + hi) // 2
        if mean_work(prices[mid]) <= budget_s:
            hi = mid
        else:
            lo = mid + 1
    return float(prices[lo])
