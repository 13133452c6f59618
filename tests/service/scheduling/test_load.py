"""The policy under real load: one worker, a model wide enough that full width costs ~10x the narrowest.

Decisions depend on the server's *predicted* costs, which the tests read from
/v1/model and size their images by, so the outcomes do not hinge on how fast
this machine happens to be.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.catalog.registry import ModelKey, ServedRung
from service.scheduling.ladder import Ladder
from service.scheduling.policy import CostModel, RequestPlan
from service.scheduling.scheduler import Aborted, Limits, Scheduler, Ticket
from tests.conftest import synthetic_image
from tests.service.conftest import client_for, encode, png_bytes, running_server, settings

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def busy_server(heavy_weights: Path) -> Iterator[str]:
    s = settings(
        heavy_weights,
        workers=1,
        max_queue=2,
        tile_size=2048,
        max_pixels=4_000_000,
        max_body_bytes=20_000_000,
        planning_fraction=1.0,  # plan to the whole target: the tests' arithmetic below is exact
    )
    with running_server(s) as url:
        yield url


def cost(client: httpx.Client, width: float) -> dict[str, float]:
    row = next(r for r in client.get("/v1/model").json()["per_width"] if r["width"] == width)
    return row["cost"]


def side_for(client: httpx.Client, seconds: float) -> int:
    """LR side of a square image whose predicted full-width work is ``seconds``."""
    c = cost(client, 1.0)
    return max(48, min(1500, int(math.sqrt(max(seconds - c["overhead_s"], 0.01) / c["s_per_megapixel"] * 1e6))))


def predicted(client: httpx.Client, width: float, side: int) -> float:
    c = cost(client, width)
    return c["overhead_s"] + c["s_per_megapixel"] * side * side / 1e6


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def policy(client: httpx.Client) -> dict:
    return client.get("/v1/model").json()["policy"]


def test_burst_narrows_later_requests(busy_server: str) -> None:
    with client_for(busy_server) as c:
        side = side_for(c, 1.0)
        full, narrow = predicted(c, 1.0, side), predicted(c, 0.25, side)
        assert narrow < 0.3 * full  # the premise: narrow is much cheaper
        # A deadline of 1.5x the full-width work: the first request fits at full width,
        # any request queued behind it cannot.
        headers = {**PNG, "x-deadline-ms": str(int(1500 * full))}
        data = encode(synthetic_image(side, side))
        with ThreadPoolExecutor(3) as pool:  # one runs, two wait: the server holds workers + max_queue = 3
            responses = list(pool.map(lambda _: c.post("/v1/upscale", content=data, headers=headers), range(3)))
    served = [r for r in responses if r.status_code == 200]
    shed = [r for r in responses if r.status_code != 200]
    # The third may be shed: behind two requests even the narrowest width can miss the deadline.
    assert len(served) >= 2 and all(r.status_code == 503 and r.json()["error"] == "overloaded" for r in shed)
    order = sorted(served, key=lambda r: float(r.headers["x-queue-wait-ms"]))  # = admission order
    widths = [float(r.headers["x-width"]) for r in order]
    reasons = [r.headers["x-width-reason"] for r in order]
    assert (widths[0], reasons[0]) == (1.0, "idle")
    assert all(w < 1.0 for w in widths[1:]), list(zip(widths, reasons, strict=True))
    assert set(reasons[1:]) == {"load"}
    assert widths == sorted(widths, reverse=True)


def test_a_width_floor_sheds_under_load_rather_than_narrows(busy_server: str) -> None:
    with client_for(busy_server) as c, ThreadPoolExecutor(1) as pool:
        side = side_for(c, 1.0)  # full width alone: 1 s; the narrowest far less
        data = encode(synthetic_image(side, side))
        big = encode(synthetic_image(side_for(c, 3.0), side_for(c, 3.0)))
        running: Future = pool.submit(c.post, "/v1/upscale", params={"width": "1"}, content=big, headers=PNG)
        wait_for(lambda: policy(c)["running"] == 1)
        # A deadline that the narrowest meets behind the backlog, full width does not.
        wait = policy(c)["predicted_wait_s"]
        assert predicted(c, 0.25, side) < 0.4
        headers = {**PNG, "x-deadline-ms": str(int(1000 * (wait + 0.5)))}
        r = c.post("/v1/upscale", params={"min_width": "1"}, content=data, headers=headers)
        assert r.status_code == 503 and r.json()["error"] == "overloaded", r.text
        assert int(r.headers["retry-after"]) >= 1
        r = c.post("/v1/upscale", content=data, headers=headers)  # no floor: served narrower
        assert r.status_code == 200 and float(r.headers["x-width"]) < 1.0 and r.headers["x-width-reason"] == "load"
        assert running.result().status_code == 200


def test_full_queue_gets_503_with_retry_after_while_health_stays_fast(busy_server: str) -> None:
    with client_for(busy_server) as c, ThreadPoolExecutor(3) as pool:
        side = side_for(c, 3.0)
        big = encode(synthetic_image(side, side))
        # One long forced full-width request occupies the only worker...
        running: Future = pool.submit(c.post, "/v1/upscale", params={"width": "1"}, content=big, headers=PNG)
        wait_for(lambda: policy(c)["running"] == 1)
        # ...two more fill the queue (max_queue=2)...
        small = png_bytes(16, 16)
        queued = [
            pool.submit(c.post, "/v1/upscale", params={"width": "0.25"}, content=small, headers=PNG) for _ in range(2)
        ]
        wait_for(lambda: policy(c)["queued"] == 2)
        # ...so the next is refused at once, with a Retry-After from the backlog.
        r = c.post("/v1/upscale", content=small, headers=PNG)
        assert r.status_code == 503 and r.json()["error"] == "overloaded", r.text
        assert "queue full" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        assert policy(c)["running"] == 1, "the long request must still be running for this test to mean anything"
        # The event loop is free while the worker is saturated.
        start = time.monotonic()
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
        assert time.monotonic() - start < 2.0
        first = running.result()
        assert (first.status_code, first.headers["x-width"], first.headers["x-width-reason"]) == (200, "1", "forced")
        assert all(f.result().status_code == 200 for f in queued)
        metrics = c.get("/metrics").text
    assert 'csd_sr_rejections_total{reason="queue_full"} 1.0' in metrics


def test_a_client_that_leaves_while_queued_costs_no_work(busy_server: str) -> None:
    with client_for(busy_server) as c, ThreadPoolExecutor(1) as pool:
        side = side_for(c, 2.0)
        data = encode(synthetic_image(side, side))
        before = c.get("/metrics").text
        running = pool.submit(c.post, "/v1/upscale", params={"width": "1"}, content=data, headers=PNG)
        wait_for(lambda: policy(c)["running"] == 1)
        with client_for(busy_server) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.post("/v1/upscale", content=png_bytes(), headers=PNG, timeout=0.3)
        wait_for(lambda: policy(c)["queued"] == 0)  # dropped from the queue without running
        assert policy(c)["running"] == 1
        assert running.result().status_code == 200
        after = c.get("/metrics").text
    assert served(after) - served(before) == 1
    assert closed(after) - closed(before) == 1


def served(metrics: str) -> float:
    return sum(s.value for s in samples(metrics, "csd_sr_inference_duration_seconds_count"))


def closed(metrics: str) -> float:
    return sum(s.value for s in samples(metrics, "csd_sr_http_requests_total") if s.labels["status"] == "499")


def samples(metrics: str, name: str) -> list:
    return [s for f in text_string_to_metric_families(metrics) for s in f.samples if s.name == name]


def test_fixed_policy(tiny_weights: Path) -> None:
    with running_server(settings(tiny_weights, policy="fixed:0.25")) as url, client_for(url) as c:
        r = c.post("/v1/upscale", content=png_bytes(), headers=PNG)
        assert (r.headers["x-width"], r.headers["x-precision"]) == ("0.25", "fp32")
        assert r.headers["x-width-reason"] == "fixed"
        r = c.post("/v1/upscale", params={"width": "1"}, content=png_bytes(), headers=PNG)
        assert (r.headers["x-width"], r.headers["x-width-reason"]) == ("1", "forced")
        assert policy(c)["mode"] == "fixed:0.25"


def test_a_job_past_its_deadline_stops_at_its_next_tile() -> None:
    """The safety net behind the up-front refusal: a job that overruns its prediction is still abandoned."""
    full = ServedRung(X4, 1.0)
    cost = CostModel([full], alpha=0.0, ref_pixels=1)
    cost.fit(full, [(1_000, 0.001), (2_000, 0.002)])  # predicts far less than the job will take
    scheduler = Scheduler(cost, Limits(workers=1, lanes=1, max_queue=1, timeout_s=0.05))
    scheduler.ladders[X4] = Ladder((full,), {})
    tiles = []

    def slow_tiles(job: Ticket) -> None:
        for _ in range(100):
            job.check()
            tiles.append(1)
            time.sleep(0.01)

    _, job = scheduler.admit(RequestPlan(X4, 1_000, target_s=1.0))
    with pytest.raises(Aborted) as aborted:
        asyncio.run(scheduler.run(job, slow_tiles))
    scheduler.shutdown()
    assert aborted.value.reason == "timeout" and 1 <= len(tiles) < 100


X4 = ModelKey()
LADDER_QUALITY = {ServedRung(X4, 1.0): 31.3, ServedRung(X4, 0.5): 31.1, ServedRung(X4, 0.25): 30.5}


def fill(max_lane_price: float = math.inf, arrivals: int = 40) -> tuple[list[float], list[ServedRung | None]]:
    """The lane price before each of ``arrivals`` admissions of one size into a scheduler that never runs them,
    and the rung each got (None: refused). Full width 0.5 s, 0.5 0.15 s, 0.25 0.05 s; target 4 s."""
    cost = CostModel(list(LADDER_QUALITY), alpha=0.0, ref_pixels=1)
    for rung, s_per_mp in zip(LADDER_QUALITY, (10.0, 3.0, 1.0), strict=True):
        cost.fit(rung, [(100_000, s_per_mp * 0.1), (200_000, s_per_mp * 0.2)])
    scheduler = Scheduler(cost, Limits(workers=1, lanes=1, max_queue=50, timeout_s=60.0, max_lane_price=max_lane_price))
    scheduler.ladders[X4] = Ladder(tuple(LADDER_QUALITY), {}, LADDER_QUALITY)
    pixels, target = 50_000, 4.0
    assert scheduler.lane_price(X4, pixels, target) == 0  # idle
    prices, rungs = [], []
    for _ in range(arrivals):
        prices.append(scheduler.lane_price(X4, pixels, target))
        decision, _ = scheduler.admit(RequestPlan(X4, pixels, target_s=target))
        rungs.append(decision.rung)
    scheduler.shutdown()
    return prices, rungs


def test_the_lane_price_rises_with_the_requests_in_the_system() -> None:
    """Queued work makes lane time dear: once n requests at the best rung would outlast the target, admissions
    step down the ladder (by price, then by what still fits), and then they are refused."""
    prices, rungs = fill()
    served = [r for r in rungs if r is not None]
    assert prices == sorted(prices) and prices[7] > 0
    # 7 x 0.5 s at full width hold 0.9 of the 4 s target, an 8th would not: priced down to width 0.5
    assert served[:8] == [ServedRung(X4, 1.0)] * 7 + [ServedRung(X4, 0.5)]
    assert served == sorted(served, key=lambda r: -r.width) and served[-1] == ServedRung(X4, 0.25)
    assert rungs[len(served) :] == [None] * (40 - len(served))  # then even the cheapest misses the target


def test_a_price_limit_trades_answers_for_quality_past_capacity() -> None:
    """Capped below the full-width / 0.5 break-even (0.2 dB for 0.35 s: 0.57 dB/s), the price never narrows a
    request that full width still fits: full width is served until it no longer fits, then nothing is, so
    fewer requests are admitted than without the cap, each of higher quality."""
    free_prices, free = fill()
    capped_prices, capped = fill(max_lane_price=0.3)
    assert max(capped_prices) == 0.3 and max(free_prices) > 0.57
    served_free, served_capped = [r for r in free if r], [r for r in capped if r]
    assert served_capped == [ServedRung(X4, 1.0)] * 8  # 8 x 0.5 s fill the 4 s target
    assert served_free.count(ServedRung(X4, 1.0)) == 7 and len(served_free) > len(served_capped)
