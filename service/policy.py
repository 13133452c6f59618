"""The width policy: a cost model per width and the per-request decision. Pure logic, no I/O.

A request's predicted completion is the wait until an inference lane is free
(list scheduling of the running and queued work over the backend's parallel
lanes) plus its own work at width ``w``; the widest ``w`` whose completion meets
the target wins. Work predicted to outlast the request timeout is refused up
front instead of computed and thrown away.
When requests are already waiting, widths the workers could not sustain at the
recent arrival rate (offered utilisation above ``MAX_UTILIZATION``) are skipped
too: otherwise a burst is served wide until the queue is full and the rest is
shed, instead of narrower for everyone.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

# Why a width was chosen (bounded label values of csd_sr_width_decisions_total).
IDLE = "idle"  # widest width, a worker is free for it now
HEADROOM = "headroom"  # widest width, work ahead but the target is still met
LOAD = "load"  # narrower: the widest alone would meet the target, not with the work ahead
SIZE = "size"  # narrower: the image is too large for the configured target even on an idle server
DEADLINE = "deadline"  # narrower: the client's deadline is too tight even on an idle server
BEST_EFFORT = "best_effort"  # the request alone is too big for the target at any width: narrowest
FORCED = "forced"  # the client asked for this width
FIXED = "fixed"  # the server runs a fixed:<width> policy
MAX_UTILIZATION = 0.9  # above this offered load per lane, queues grow faster than they drain
REASONS = (IDLE, HEADROOM, LOAD, SIZE, DEADLINE, BEST_EFFORT, FORCED, FIXED)

QUEUE_FULL = "queue_full"  # rejection reason: no room in the bounded queue
OVERLOADED = "target_unreachable"  # rejection reason: the backlog makes even the narrowest width miss the target
EXCEEDS_TIMEOUT = "exceeds_timeout"  # rejection reason: the width would not finish within the request timeout


@dataclass(frozen=True)
class WidthCost:
    """Worker seconds of one request at a width: ``overhead_s + s_per_megapixel * megapixels``."""

    overhead_s: float
    s_per_megapixel: float

    def seconds(self, pixels: int) -> float:
        return self.overhead_s + self.s_per_megapixel * pixels / 1e6


class CostModel:
    """Per-width cost, fitted at warm-up and updated online by an EWMA of the per-megapixel slope.

    A timing moves the slope by ``alpha`` scaled down for images smaller than
    ``ref_pixels``: on small images the fixed overhead dominates and the slope
    they imply is noise. Thread-safe: workers observe, the event loop predicts.
    """

    def __init__(self, widths: Sequence[float], alpha: float, ref_pixels: int) -> None:
        self.widths = tuple(sorted(widths))
        self.alpha = alpha
        self.ref_pixels = ref_pixels
        self._costs: dict[float, WidthCost] = {}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return all(w in self._costs for w in self.widths)

    def fit(self, width: float, samples: Iterable[tuple[int, float]]) -> WidthCost:
        """Least-squares line through (pixels, seconds); overhead and slope kept non-negative."""
        pts = [(p / 1e6, s) for p, s in samples]
        n = len(pts)
        mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
        var = sum((x - mx) ** 2 for x, _ in pts)
        slope = sum((x - mx) * (y - my) for x, y in pts) / var if var else 0.0
        overhead = my - slope * mx
        if overhead < 0 or slope <= 0:  # noisy timings: the line through the origin and the mean instead
            overhead, slope = 0.0, my / mx
        cost = WidthCost(overhead, slope)
        with self._lock:
            self._costs[width] = cost
        return cost

    def observe(self, width: float, pixels: int, seconds: float) -> None:
        with self._lock:
            cost = self._costs[width]
            implied = (seconds - cost.overhead_s) / (pixels / 1e6)
            weight = self.alpha * min(1.0, pixels / self.ref_pixels)
            slope = max(cost.s_per_megapixel + weight * (implied - cost.s_per_megapixel), 1e-6)
            self._costs[width] = WidthCost(cost.overhead_s, slope)

    def predict(self, width: float, pixels: int) -> float:
        with self._lock:
            return self._costs[width].seconds(pixels)

    def snapshot(self) -> dict[float, WidthCost]:
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
class Decision:
    """A width (``None``: rejected) and why, with the prediction behind it."""

    width: float | None
    reason: str
    wait_s: float
    predicted_s: float
    target_s: float
    retry_after_s: int | None = None
    fits: tuple[float, ...] = ()  # with EXCEEDS_TIMEOUT: the widths that would finish in time now


def decide(
    work_s: Mapping[float, float],
    *,
    wait_s: float,
    target_s: float,
    queue_full: bool,
    from_deadline: bool = False,
    forced: float | None = None,
    fixed: float | None = None,
    utilization: Mapping[float, float] | None = None,
    timeout_s: float = math.inf,
) -> Decision:
    """Choose a width for one request, or refuse it.

    ``work_s`` maps each width to this request's predicted seconds; ``wait_s`` is
    the predicted wait for a lane; ``target_s`` the client's deadline when it
    sent one (``from_deadline``), else the configured latency target;
    ``utilization`` the lanes' offered load per width at the recent arrival rate.
    A width predicted to finish after ``timeout_s`` is never started: refused as
    ``EXCEEDS_TIMEOUT`` when it alone takes that long, else as ``OVERLOADED``
    (the backlog is why; it may fit later).
    """
    decision = _choose(work_s, wait_s, target_s, queue_full, from_deadline, forced, fixed, utilization)
    if decision.width is None or decision.predicted_s <= timeout_s:
        return decision
    fits = tuple(w for w in sorted(work_s) if wait_s + work_s[w] <= timeout_s)
    if work_s[decision.width] > timeout_s:
        return replace(decision, width=None, reason=EXCEEDS_TIMEOUT, fits=fits)
    retry = max(1, math.ceil(decision.predicted_s - timeout_s))
    return replace(decision, width=None, reason=OVERLOADED, retry_after_s=retry, fits=fits)


def _choose(
    work_s: Mapping[float, float],
    wait_s: float,
    target_s: float,
    queue_full: bool,
    from_deadline: bool,
    forced: float | None,
    fixed: float | None,
    utilization: Mapping[float, float] | None,
) -> Decision:
    widths = sorted(work_s, reverse=True)
    narrowest = widths[-1]
    if queue_full:
        retry = retry_after(wait_s, target_s, work_s[narrowest])
        return Decision(None, QUEUE_FULL, wait_s, wait_s + work_s[narrowest], target_s, retry)
    for width, reason in ((forced, FORCED), (fixed, FIXED)):
        if width is not None:
            return Decision(width, reason, wait_s, wait_s + work_s[width], target_s)
    for width in widths:
        predicted = wait_s + work_s[width]
        # Only with a queue: a closed-loop client that waits for each answer raises the arrival rate
        # whenever it is served faster, so a rate with no backlog behind it is no sign of overload.
        sustainable = wait_s == 0 or utilization is None or utilization[width] <= MAX_UTILIZATION
        sustainable = sustainable or width == narrowest
        if predicted <= target_s and sustainable:
            reason = _reason(width, widths[0], wait_s, work_s, target_s, from_deadline)
            return Decision(width, reason, wait_s, predicted, target_s)
    if work_s[narrowest] <= target_s:  # it would fit on an idle server: the backlog is why, so shed it
        retry = retry_after(wait_s, target_s, work_s[narrowest])
        return Decision(None, OVERLOADED, wait_s, wait_s + work_s[narrowest], target_s, retry)
    return Decision(narrowest, BEST_EFFORT, wait_s, wait_s + work_s[narrowest], target_s)


def _reason(
    width: float, widest: float, wait_s: float, work_s: Mapping[float, float], target_s: float, from_deadline: bool
) -> str:
    if width == widest:
        return IDLE if wait_s == 0 else HEADROOM
    if work_s[widest] <= target_s:
        return LOAD
    return DEADLINE if from_deadline else SIZE


def retry_after(wait_s: float, target_s: float, narrowest_work_s: float) -> int:
    """Whole seconds until the backlog has drained enough for the narrowest width to meet the target (>= 1)."""
    return max(1, math.ceil(wait_s - max(target_s - narrowest_work_s, 0.0)))


def offered_utilization(
    costs: Mapping[float, WidthCost], requests_per_s: float, megapixels_per_s: float, lanes: int
) -> dict[float, float]:
    """Share of the lanes' time the recent arrivals would take if all were served at each width."""
    return {w: (requests_per_s * c.overhead_s + megapixels_per_s * c.s_per_megapixel) / lanes for w, c in costs.items()}
