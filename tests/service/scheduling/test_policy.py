"""The rung policy, the ladder and the cost model as pure functions."""

from __future__ import annotations

import math

import pytest

from model.rungs import Rung
from service.catalog.registry import ModelKey, ServedRung
from service.scheduling import policy
from service.scheduling.ladder import DOMINANCE_MARGIN, build_ladder
from service.scheduling.policy import (
    AUTO,
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
    Ask,
    CostModel,
    LaneView,
    RequestPlan,
    RungCost,
    allowed,
    lane_price,
    predicted_wait,
    retry_after,
)

Q, H, F = Rung(0.25), Rung(0.5), Rung(1.0)  # the fp32 rungs: quarter, half, full width
Q8, H8, F8 = Rung(0.25, "int8"), Rung(0.5, "int8"), Rung(1.0, "int8")
FP32 = (F, H, Q)  # a ladder without int8 rungs, best first
WORK = {Q: 0.1, H: 0.4, F: 1.5}  # seconds of this request's work at each rung


def decide(work, *, ladder, wait_s, target_s, queue_full, ask=AUTO, fixed=None, from_deadline=False, **lane):
    """``policy.decide`` with the request's plan and the lane's view spelled out as keywords."""
    plan = RequestPlan(ModelKey(), 0, target_s, ask, fixed, from_deadline=from_deadline)
    return policy.decide(plan, LaneView(work, ladder, wait_s, queue_full, **lane))


def choose(wait_s: float, target_s: float = 2.0, work=WORK, ladder=FP32, **kw) -> tuple[Rung | None, str]:
    d = decide(work, ladder=ladder, wait_s=wait_s, target_s=target_s, queue_full=kw.pop("queue_full", False), **kw)
    return d.rung, d.reason


def test_idle_gets_the_best_rung() -> None:
    assert choose(0.0) == (F, IDLE)


def test_work_ahead_that_still_fits_keeps_the_best_rung() -> None:
    assert choose(0.4) == (F, HEADROOM)


def test_load_steps_down_the_ladder() -> None:
    assert choose(0.6) == (H, LOAD)  # 0.6 + 1.5 > 2, 0.6 + 0.4 <= 2
    assert choose(1.7) == (Q, LOAD)
    assert choose(1.95) == (None, OVERLOADED)  # the cheapest would fit alone: the backlog is why, shed it


def test_large_image_or_tight_deadline_step_down_on_an_idle_server() -> None:
    assert choose(0.0, target_s=1.0) == (H, SIZE)
    assert choose(0.0, target_s=1.0, from_deadline=True) == (H, DEADLINE)
    assert choose(0.0, target_s=0.05, from_deadline=True) == (Q, BEST_EFFORT)


# int8 rungs at half the cost of their fp32 width, a little below it in quality (ladder best first).
MIXED = (F, F8, H, H8, Q, Q8)
MIXED_WORK = {F: 1.5, F8: 0.8, H: 0.4, H8: 0.22, Q: 0.1, Q8: 0.06}


def test_an_int8_rung_is_chosen_over_a_slower_fp32_rung() -> None:
    assert choose(0.0, work=MIXED_WORK, ladder=MIXED) == (F, IDLE)
    # full width fp32 misses the target behind 0.6 s of work, its int8 rung does not: better than width 0.5
    assert choose(0.6, work=MIXED_WORK, ladder=MIXED) == (F8, LOAD)
    assert choose(1.7, work=MIXED_WORK, ladder=MIXED) == (H8, LOAD)
    assert choose(0.0, target_s=1.0, work=MIXED_WORK, ladder=MIXED) == (F8, SIZE)
    assert choose(1.92, work=MIXED_WORK, ladder=MIXED) == (Q8, LOAD)  # the cheapest of all


def test_forced_width_picks_its_best_rung_that_fits_and_an_exact_rung_is_served_as_asked() -> None:
    mixed = dict(work=MIXED_WORK, ladder=MIXED)
    assert choose(0.0, ask=Ask(width=1.0), **mixed) == (F, FORCED)
    assert choose(1.0, ask=Ask(width=1.0), **mixed) == (F8, FORCED)  # fp32 would miss the target, int8 fits
    assert choose(10.0, ask=Ask(width=1.0), **mixed) == (F8, FORCED)  # neither fits: the cheapest, never shed
    assert choose(10.0, ask=Ask(width=1.0, precision="fp32"), **mixed) == (F, FORCED)
    assert choose(0.0, ask=Ask(width=0.5, precision="int8"), **mixed) == (H8, FORCED)


def test_forced_and_fixed_rungs_win_over_load() -> None:
    assert choose(10.0, ask=Ask(width=1.0)) == (F, FORCED)
    assert choose(0.0, fixed=Q) == (Q, FIXED)
    assert choose(0.0, ask=Ask(width=0.5), fixed=Q) == (H, FORCED)
    # a fixed rung off the ladder (the operator's choice) is still served
    assert choose(0.0, work=MIXED_WORK, ladder=(F, H, Q), fixed=F8) == (F8, FIXED)


def test_precision_restricts_auto() -> None:
    mixed = dict(work=MIXED_WORK, ladder=MIXED)
    assert choose(0.0, ask=Ask(precision="int8"), **mixed) == (F8, IDLE)
    assert choose(0.6, ask=Ask(precision="fp32"), **mixed) == (H, LOAD)


def test_min_width_is_a_floor_load_sheds_rather_than_steps_below_it() -> None:
    mixed = dict(work=MIXED_WORK, ladder=MIXED)
    floor = Ask(min_width=0.5)
    assert choose(0.0, ask=floor, **mixed) == (F, IDLE)
    assert choose(1.7, ask=floor, **mixed) == (H8, LOAD)  # the cheapest allowed
    d = decide(MIXED_WORK, ladder=MIXED, wait_s=1.9, target_s=2.0, queue_full=False, ask=floor)
    assert (d.rung, d.reason, d.retry_after_s) == (None, OVERLOADED, 1)  # 0.25 would fit: 503, not narrower
    d = decide(MIXED_WORK, ladder=MIXED, wait_s=3.0, target_s=2.0, queue_full=False, ask=floor)
    assert (d.rung, d.reason, d.retry_after_s) == (None, OVERLOADED, 2)  # ceil(3.0 - (2.0 - 0.22))
    # idle, but the allowed rungs exceed the target by size alone: best effort at the cheapest allowed
    assert choose(0.0, target_s=0.1, ask=floor, **mixed) == (H8, BEST_EFFORT)
    # an explicit width is served as asked; the floor bounds the policy's own choice
    assert choose(0.0, ask=Ask(width=0.25, min_width=0.5), **mixed) == (Q, FORCED)


def test_what_an_ask_allows() -> None:
    assert allowed(MIXED, Ask()) == MIXED
    assert allowed(MIXED, Ask(min_width=0.5)) == (F, F8, H, H8)
    assert allowed(MIXED, Ask(min_width=0.5, precision="int8")) == (F8, H8)
    assert allowed(MIXED, Ask(width=0.25)) == (Q, Q8)
    assert allowed(FP32, Ask(precision="int8")) == ()  # nothing: the route answers 422
    assert allowed(FP32, Ask(), fixed=Q) == (Q,)
    assert allowed(FP32, Ask(min_width=0.5), fixed=Q) == ()  # the server's fixed rung is below the floor
    assert allowed(FP32, Ask(width=1.0), fixed=Q) == (F,)
    with pytest.raises(ValueError, match="no rung"):
        decide(WORK, ladder=FP32, wait_s=0.0, target_s=2.0, queue_full=False, ask=Ask(precision="int8"))


def test_full_queue_rejects_with_retry_after() -> None:
    d = decide(WORK, ladder=FP32, wait_s=5.0, target_s=2.0, queue_full=True)
    assert d.rung is None and d.reason == QUEUE_FULL
    assert d.retry_after_s == retry_after(5.0, 2.0, 0.1) == 4  # ceil(5.0 - (2.0 - 0.1))
    # asking for full width: retry once the backlog lets full width meet the target
    d = decide(WORK, ladder=FP32, wait_s=5.0, target_s=2.0, queue_full=True, ask=Ask(width=1.0))
    assert (d.reason, d.retry_after_s) == (QUEUE_FULL, 5)  # ceil(5.0 - (2.0 - 1.5))


def test_retry_after_is_at_least_one_second() -> None:
    assert retry_after(0.0, 2.0, 0.1) == 1
    assert retry_after(0.5, 2.0, 3.0) == 1
    assert retry_after(7.2, 2.0, 3.0) == 8  # the cheapest alone misses: wait for the whole backlog


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
    slow = {Q: 5.0, H: 20.0, F: 80.0}  # seconds alone; request timeout 60 s
    d = decide(slow, ladder=FP32, wait_s=0.0, target_s=2.0, queue_full=False, ask=Ask(width=1.0), timeout_s=60.0)
    assert (d.rung, d.reason, d.fits) == (None, EXCEEDS_TIMEOUT, (Q, H))  # 422: never in time
    assert d.predicted_s == 80.0
    d = decide(slow, ladder=FP32, wait_s=50.0, target_s=2.0, queue_full=False, ask=Ask(width=0.5), timeout_s=60.0)
    assert (d.rung, d.reason, d.retry_after_s, d.fits) == (None, OVERLOADED, 10, (Q,))  # 503: the backlog
    kw = dict(ladder=FP32, target_s=2.0, queue_full=False, timeout_s=60.0)
    assert decide(slow, wait_s=0.0, ask=Ask(width=0.5), **kw).rung == H
    # auto: the cheapest alone outlasts the timeout -> refused, not computed for a minute
    huge = {r: 61.0 * r.width / 0.25 for r in slow}
    assert decide(huge, wait_s=0.0, **kw).reason == EXCEEDS_TIMEOUT
    assert decide(slow, wait_s=0.0, **kw).reason == BEST_EFFORT


def test_cost_model_fits_overhead_and_slope() -> None:
    cost = CostModel([H, F], alpha=0.2, ref_pixels=10_000)
    assert not cost.ready
    fitted = cost.fit(F, [(1_000, 0.01 + 2.0 * 0.001), (10_000, 0.01 + 2.0 * 0.01)])
    assert fitted.overhead_s == pytest.approx(0.01) and fitted.s_per_megapixel == pytest.approx(2.0)
    cost.fit(H, [(1_000, 0.001), (10_000, 0.0005)])  # noisy: bigger was faster
    assert cost.ready
    assert cost.snapshot()[H] == RungCost(0.0, pytest.approx(0.00075 / 0.0055))  # line through the mean
    assert cost.predict(F, 1_000_000) == pytest.approx(2.01)


def test_cost_model_ewma_weights_large_images_fully_and_small_ones_little() -> None:
    cost = CostModel([F8], alpha=0.5, ref_pixels=1_000_000)
    cost.fit(F8, [(100_000, 0.2), (1_000_000, 2.0)])
    assert cost.snapshot()[F8].s_per_megapixel == pytest.approx(2.0)
    cost.observe(F8, 1_000_000, 4.0)  # twice as slow as predicted: half-way there
    assert cost.snapshot()[F8].s_per_megapixel == pytest.approx(3.0)
    cost.observe(F8, 10_000, 1.0)  # a tiny image implying 100 s/MP barely moves it (weight 0.005)
    assert cost.snapshot()[F8].s_per_megapixel == pytest.approx(3.0 + 0.005 * (100.0 - 3.0))
    frozen = CostModel([F], alpha=0.0, ref_pixels=1)
    frozen.fit(F, [(1, 1.0), (2, 2.0)])
    frozen.observe(F, 10, 100.0)
    assert frozen.snapshot()[F] == RungCost(pytest.approx(0.0), pytest.approx(1e6))


def test_shedding_says_when_to_retry_and_big_requests_are_still_served() -> None:
    d = decide(WORK, ladder=FP32, wait_s=3.0, target_s=2.0, queue_full=False)
    assert (d.rung, d.reason, d.retry_after_s) == (None, OVERLOADED, 2)  # 3 s of backlog, 1.9 s of slack
    big = {Q: 3.0, H: 6.0, F: 12.0}  # too big for the target even alone: served cheapest, not shed
    assert decide(big, ladder=FP32, wait_s=1.0, target_s=2.0, queue_full=False).reason == BEST_EFFORT


PSNR = {F: 31.30, F8: 31.25, H: 31.08, H8: 31.03, Q: 30.53, Q8: 30.48}  # Set5, as in a card


# Seconds per megapixel of each rung as the service measures them (codec work included: int8 gains less on
# the narrow rungs); 0.25 fp32 is dominated in quality per second by a mix of 0.25-int8 and 0.5-int8.
SLOPE = {F: 14.6, F8: 5.2, H: 4.3, H8: 2.1, Q: 1.7, Q8: 1.3}
COSTS = {r: RungCost(0.0, s) for r, s in SLOPE.items()}


def work_for(pixels: int) -> dict[Rung, float]:
    return {r: c.seconds(pixels) for r, c in COSTS.items()}


def test_under_load_lane_time_goes_where_it_buys_the_most_quality() -> None:
    small, large = work_for(20_000), work_for(175_000)

    def under(price: float, work: dict[Rung, float]) -> Rung | None:
        return choose(0.3, work=work, ladder=MIXED, quality=PSNR, price=price)[0]

    # at 10 dB per lane-second the small image is worth 0.5 int8 (+0.55 dB for 0.016 s), the large one is not
    assert under(10.0, small) == H8 and under(10.0, large) == Q8
    assert under(2.0, small) == F8 and under(2.0, large) == H8  # cheaper time: a rung up for both
    assert under(0.0, large) == F8  # free lane time: the best rung that fits behind the work ahead
    # full width fp32 is too slow for the large image even alone (size); the step below 1-int8 is the price's
    assert choose(0.3, work=large, ladder=MIXED, quality=PSNR, price=0.0)[1] == SIZE
    assert choose(0.3, work=large, ladder=MIXED, quality=PSNR, price=2.0)[1] == LOAD
    assert under(math.inf, small) == Q8  # priceless: the cheapest
    # 0.25 fp32 is never worth its cost next to the int8 rungs around it, whatever the price
    assert all(under(p, work) != Q for p in (0.0, 0.5, 1, 2, 5, 10, 20, 50, 100, 1e3) for work in (small, large))
    # an idle lane ignores the price: a lone request gets the best rung that fits
    assert choose(0.0, work=small, ladder=MIXED, quality=PSNR, price=10.0) == (F, IDLE)


def test_lane_price_is_the_lowest_that_keeps_the_mean_work_within_budget() -> None:
    counts = {10_000: 3, 50_000: 2, 175_000: 1}
    sizes = {("x4", p): n for p, n in counts.items()}  # one model's requests by pixels
    quality = {r: PSNR[r] for r in MIXED}
    ladders = {"x4": quality}

    def mean_work(price: float) -> float:
        picks = {p: choose(0.3, work=work_for(p), ladder=MIXED, quality=quality, price=price)[0] for p in counts}
        return sum(n * COSTS[picks[p]].seconds(p) for p, n in counts.items()) / sum(counts.values())

    assert lane_price(COSTS, ladders, sizes, budget_s=10.0, target_s=2.0) == 0.0  # every one its best rung
    assert lane_price(COSTS, ladders, sizes, budget_s=0.01, target_s=2.0) == math.inf  # not even the cheapest
    for budget in (0.07, 0.1, 0.15, 0.25, 0.4):
        price = lane_price(COSTS, ladders, sizes, budget_s=budget, target_s=2.0)
        assert 0 < price < math.inf
        assert mean_work(price) <= budget < mean_work(price * 0.999)  # the lowest such price
    # equal quality: the cheaper rung, at any price
    assert lane_price(COSTS, {0: {Q: 30.5, Q8: 30.5}}, {(0, 50_000): 1}, budget_s=0.07, target_s=2.0) == 0.0
    # a rung that cannot meet the target alone is not an option for that size (full width fp32 at 175 kpx)
    assert lane_price(COSTS, ladders, {("x4", 175_000): 1}, budget_s=2.0, target_s=2.0) == 0.0


def test_one_lane_price_weighs_every_models_requests() -> None:
    # Two models with the same rungs' costs: a request only chooses among its own model's ladder, and the
    # lane price is set for the requests of both (x2's ladder 6 dB higher changes nothing: differences count).
    x2 = {r: q + 6.0 for r, q in PSNR.items() if r in MIXED}
    x4 = {r: PSNR[r] for r in MIXED}
    one = lane_price(COSTS, {"x4": x4}, {("x4", 50_000): 2}, budget_s=0.1, target_s=2.0)
    both = lane_price(COSTS, {"x4": x4, "x2": x2}, {("x4", 50_000): 1, ("x2", 50_000): 1}, budget_s=0.1, target_s=2.0)
    assert 0 < one < math.inf and both == pytest.approx(one)
    # a model whose ladder is only its cheapest rung leaves the other's requests more of the budget
    cheap = {Q8: PSNR[Q8]}
    mixed = lane_price(COSTS, {"x4": x4, "q": cheap}, {("x4", 50_000): 1, ("q", 50_000): 1}, budget_s=0.1, target_s=2.0)
    assert mixed < one


def test_the_ladder_is_ordered_by_expected_quality() -> None:
    cost = {F: 1.5, F8: 0.8, H: 0.4, H8: 0.22, Q: 0.1, Q8: 0.06}
    ladder = build_ladder(PSNR, cost)
    assert ladder.rungs == MIXED and ladder.dropped == {}
    assert ladder.widths == (0.25, 0.5, 1.0)


def test_slower_and_not_better_rungs_are_dropped() -> None:
    # 0.25 fp32 costs more than 0.5 int8, which is better: never worth serving. 1 fp32 is slower than 1-int8 but
    # better, so kept; 0.5 fp32 is within the timing-noise margin of 0.5-int8, kept too.
    cost = {F: 1.5, F8: 0.8, H: 0.4, H8: 0.39, Q: 0.5, Q8: 0.06}
    ladder = build_ladder(PSNR, cost)
    assert ladder.rungs == (F, F8, H, H8, Q8)
    assert set(ladder.dropped) == {Q} and ladder.dropped[Q].startswith("slower than 0.5-int8")
    assert build_ladder(PSNR, {**cost, H: 0.39 * (1 + DOMINANCE_MARGIN) + 0.01}).rungs == (F, F8, H, H8, Q8)
    # equal quality: the slower one goes
    same = build_ladder({F: 31.3, F8: 31.3}, {F: 1.5, F8: 0.8})
    assert same.rungs == (F8,) and "slower than 1-int8" in same.dropped[F]
    # a narrower rung measured slower than a wider one of its precision is timing noise: kept
    assert build_ladder({F: 31.3, H: 31.1, Q: 30.5}, {F: 1.5, H: 0.4, Q: 0.6}).rungs == (F, H, Q)
    # a wider rung that is not better than a narrower one of its precision (a quantization gone wrong) goes
    assert build_ladder({F8: 30.9, H8: 31.0}, {F8: 0.8, H8: 0.22}).rungs == (H8,)


def test_rungs_without_quality_are_dropped_and_a_card_without_any_ranks_fp32_by_width() -> None:
    ladder = build_ladder({F: 31.3, F8: None, H: 31.1}, {F: 1.5, F8: 0.8, H: 0.4})
    assert ladder.rungs == (F, H) and "no Set5 PSNR" in ladder.dropped[F8]
    unscored = build_ladder({F: None, F8: None, H: None, Q: None}, {F: 1.5, F8: 0.8, H: 0.4, Q: 0.1})
    assert unscored.rungs == (F, H, Q) and set(unscored.dropped) == {F8}


def test_a_ladder_spanning_two_models_keeps_the_own_models_ladder_whole() -> None:
    # x3 requests: the x3 model's rungs, and the x4 model's with a downscale (better at narrow widths here,
    # and dearer: a larger upsampler). Set5 x3 figures of the shipped files, costs in their proportion.
    x3, x4 = ModelKey(3), ModelKey()
    own = {ServedRung(x3, 1.0): 33.64, ServedRung(x3, 0.5): 33.36, ServedRung(x3, 0.25): 32.76}
    other = {ServedRung(x4, 1.0): 33.57, ServedRung(x4, 0.5): 33.39, ServedRung(x4, 0.25): 32.85}
    cost = {r: {1.0: 1.5, 0.5: 0.4, 0.25: 0.1}[r.width] * (1.25 if r.model == x4 else 1) for r in {**own, **other}}
    ladder = build_ladder({**own, **other}, cost, native=x3)
    assert [str(r) for r in ladder.rungs] == ["x3/1", "x4/0.5", "x3/0.5", "x4/0.25", "x3/0.25"]
    assert ladder.dropped[ServedRung(x4, 1.0)].startswith("slower than x3/1 ")  # worse and dearer
    assert ladder.own.rungs == build_ladder(own, cost).rungs == tuple(own)
    # another model's rung never drops one of the request's own (a large input may not take it)
    cheap = {r: c / 10 if r.model == x4 else c for r, c in cost.items()}
    cheaper = build_ladder({**own, **other}, cheap, native=x3)
    assert set(cheaper.own.rungs) == set(own)
    assert ServedRung(x3, 0.5) in cheaper.rungs and "x4/" in "".join(map(str, cheaper.rungs))
