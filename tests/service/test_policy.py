"""The width policy and cost model as pure functions."""

from __future__ import annotations

import pytest

from service.policy import (
    BEST_EFFORT,
    DEADLINE,
    EXCEEDS_TIMEOUT,
    FIXED,
    FORCED,
    HEADROOM,
    IDLE,
    LOAD,
    OVERLOADED,
    QUEUE_FULL,
    SIZE,
    CostModel,
    WidthCost,
    decide,
    offered_utilization,
    predicted_wait,
    retry_after,
)

WORK = {0.25: 0.1, 0.5: 0.4, 1.0: 1.5}  # seconds of this request's work at each width


def choose(wait_s: float, target_s: float = 2.0, **kw) -> tuple[float | None, str]:
    d = decide(WORK, wait_s=wait_s, target_s=target_s, queue_full=kw.pop("queue_full", False), **kw)
    return d.width, d.reason


def test_idle_gets_full_width() -> None:
    assert choose(0.0) == (1.0, IDLE)


def test_work_ahead_that_still_fits_keeps_full_width() -> None:
    assert choose(0.4) == (1.0, HEADROOM)


def test_load_narrows_step_by_step() -> None:
    assert choose(0.6) == (0.5, LOAD)  # 0.6 + 1.5 > 2, 0.6 + 0.4 <= 2
    assert choose(1.7) == (0.25, LOAD)
    assert choose(1.95) == (None, OVERLOADED)  # the narrowest would fit alone: the backlog is why, shed it


def test_large_image_or_tight_deadline_narrow_an_idle_server() -> None:
    assert choose(0.0, target_s=1.0) == (0.5, SIZE)
    assert choose(0.0, target_s=1.0, from_deadline=True) == (0.5, DEADLINE)
    assert choose(0.0, target_s=0.05, from_deadline=True) == (0.25, BEST_EFFORT)


def test_forced_and_fixed_widths_win_over_load() -> None:
    assert choose(10.0, forced=1.0) == (1.0, FORCED)
    assert choose(0.0, fixed=0.25) == (0.25, FIXED)
    assert choose(0.0, forced=0.5, fixed=0.25) == (0.5, FORCED)


def test_full_queue_rejects_with_retry_after() -> None:
    d = decide(WORK, wait_s=5.0, target_s=2.0, queue_full=True, forced=1.0)
    assert d.width is None and d.reason == QUEUE_FULL
    assert d.retry_after_s == retry_after(5.0, 2.0, 0.1) == 4  # ceil(5.0 - (2.0 - 0.1))


def test_retry_after_is_at_least_one_second() -> None:
    assert retry_after(0.0, 2.0, 0.1) == 1
    assert retry_after(0.5, 2.0, 3.0) == 1
    assert retry_after(7.2, 2.0, 3.0) == 8  # the narrowest alone misses: wait for the whole backlog


def test_predicted_wait_is_list_scheduling_over_lanes() -> None:
    assert predicted_wait([], [], lanes=2) == 0.0
    assert predicted_wait([1.0], [], lanes=2) == 0.0  # a lane is free
    assert predicted_wait([1.0, 3.0], [], lanes=2) == 1.0
    assert predicted_wait([1.0, 3.0], [2.0], lanes=2) == 3.0  # the queued job takes the first free lane
    assert predicted_wait([1.0, 3.0], [2.0, 0.5], lanes=2) == 3.0
    assert predicted_wait([4.0], [1.0, 1.0], lanes=1) == 6.0
    assert predicted_wait([-0.5], [], lanes=1) == 0.0  # overran its prediction: counted as finishing now
    # two workers on one lane (OpenVINO over all cores): their tiles take turns, so their work adds up
    assert predicted_wait([1.0, 3.0], [], lanes=1) == 4.0
    assert predicted_wait([1.0, 3.0], [0.5], lanes=1) == 4.5


def test_work_that_cannot_finish_before_the_timeout_is_refused_up_front() -> None:
    slow = {0.25: 5.0, 0.5: 20.0, 1.0: 80.0}  # seconds alone; request timeout 60 s
    d = decide(slow, wait_s=0.0, target_s=2.0, queue_full=False, forced=1.0, timeout_s=60.0)
    assert (d.width, d.reason, d.fits) == (None, EXCEEDS_TIMEOUT, (0.25, 0.5))  # 422: never in time
    assert d.predicted_s == 80.0
    d = decide(slow, wait_s=50.0, target_s=2.0, queue_full=False, forced=0.5, timeout_s=60.0)
    assert (d.width, d.reason, d.retry_after_s, d.fits) == (None, OVERLOADED, 10, (0.25,))  # 503: the backlog
    assert decide(slow, wait_s=0.0, target_s=2.0, queue_full=False, forced=0.5, timeout_s=60.0).width == 0.5
    # auto: the narrowest alone outlasts the timeout -> refused, not computed for a minute
    huge = {w: 61.0 * w / 0.25 for w in slow}
    assert decide(huge, wait_s=0.0, target_s=2.0, queue_full=False, timeout_s=60.0).reason == EXCEEDS_TIMEOUT
    assert decide(slow, wait_s=0.0, target_s=2.0, queue_full=False, timeout_s=60.0).reason == BEST_EFFORT


def test_cost_model_fits_overhead_and_slope() -> None:
    cost = CostModel([0.5, 1.0], alpha=0.2, ref_pixels=10_000)
    assert not cost.ready
    fitted = cost.fit(1.0, [(1_000, 0.01 + 2.0 * 0.001), (10_000, 0.01 + 2.0 * 0.01)])
    assert fitted.overhead_s == pytest.approx(0.01) and fitted.s_per_megapixel == pytest.approx(2.0)
    cost.fit(0.5, [(1_000, 0.001), (10_000, 0.0005)])  # noisy: bigger was faster
    assert cost.ready
    assert cost.snapshot()[0.5] == WidthCost(0.0, pytest.approx(0.00075 / 0.0055))  # line through the mean
    assert cost.predict(1.0, 1_000_000) == pytest.approx(2.01)


def test_cost_model_ewma_weights_large_images_fully_and_small_ones_little() -> None:
    cost = CostModel([1.0], alpha=0.5, ref_pixels=1_000_000)
    cost.fit(1.0, [(100_000, 0.2), (1_000_000, 2.0)])
    assert cost.snapshot()[1.0].s_per_megapixel == pytest.approx(2.0)
    cost.observe(1.0, 1_000_000, 4.0)  # twice as slow as predicted: half-way there
    assert cost.snapshot()[1.0].s_per_megapixel == pytest.approx(3.0)
    cost.observe(1.0, 10_000, 1.0)  # a tiny image implying 100 s/MP barely moves it (weight 0.005)
    assert cost.snapshot()[1.0].s_per_megapixel == pytest.approx(3.0 + 0.005 * (100.0 - 3.0))
    frozen = CostModel([1.0], alpha=0.0, ref_pixels=1)
    frozen.fit(1.0, [(1, 1.0), (2, 2.0)])
    frozen.observe(1.0, 10, 100.0)
    assert frozen.snapshot()[1.0] == WidthCost(pytest.approx(0.0), pytest.approx(1e6))


def test_shedding_says_when_to_retry_and_big_requests_are_still_served() -> None:
    d = decide(WORK, wait_s=3.0, target_s=2.0, queue_full=False)
    assert (d.width, d.reason, d.retry_after_s) == (None, OVERLOADED, 2)  # 3 s of backlog, 1.9 s of slack
    big = {0.25: 3.0, 0.5: 6.0, 1.0: 12.0}  # too big for the target even alone: served narrowest, not shed
    assert decide(big, wait_s=1.0, target_s=2.0, queue_full=False).reason == BEST_EFFORT


def test_widths_the_arrival_rate_cannot_sustain_are_skipped() -> None:
    busy = {0.25: 0.2, 0.5: 0.95, 1.0: 3.0}  # offered load per lane at the recent arrival rate
    d = decide(WORK, wait_s=0.1, target_s=2.0, queue_full=False, utilization=busy)
    assert (d.width, d.reason) == (0.25, LOAD)
    # no backlog: a high rate alone (a closed-loop client served fast) does not narrow
    assert decide(WORK, wait_s=0.0, target_s=2.0, queue_full=False, utilization=busy).width == 1.0
    swamped = {0.25: 1.5, 0.5: 6.0, 1.0: 20.0}  # the narrowest is still served: shedding is for the backlog
    assert decide(WORK, wait_s=0.1, target_s=2.0, queue_full=False, utilization=swamped).width == 0.25


def test_offered_utilization() -> None:
    costs = {0.25: WidthCost(0.01, 1.0), 1.0: WidthCost(0.02, 10.0)}
    u = offered_utilization(costs, requests_per_s=10.0, megapixels_per_s=0.1, lanes=2)
    assert u == pytest.approx({0.25: (0.1 + 0.1) / 2, 1.0: (0.2 + 1.0) / 2})
