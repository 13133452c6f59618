"""Jobs (``/v1/jobs``) on a real server on loopback: accepted durably, run in the background on the lane
interactive requests leave, streamed to disk, recovered after a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.catalog.registry import ModelKey, ServedRung
from service.jobs.store import SqliteJobStore
from service.scheduling.ladder import Ladder
from service.scheduling.policy import CostModel, RequestPlan
from service.scheduling.scheduler import Limits, Scheduler
from tests.conftest import synthetic_image
from tests.service.conftest import client_for, decode, encode, png_bytes, running_server, settings, wait_ready

PNG = {"content-type": "image/png"}


def wait_for(c: httpx.Client, job_id: str, until: tuple[str, ...] = ("done", "failed", "cancelled")) -> dict:
    for _ in range(1200):
        status = c.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in until:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {status['state']}")


def submit(c: httpx.Client, body: bytes, query: str = "", **headers: str) -> httpx.Response:
    return c.post(f"/v1/jobs{query}", content=body, headers={**PNG, **headers})


@pytest.fixture(scope="module")
def jobs_server(tiny_weights: Path) -> str:
    with running_server(settings(tiny_weights, tile_size=32)) as url:
        yield url


@pytest.fixture
def c(jobs_server: str) -> httpx.Client:
    with client_for(jobs_server) as client:
        yield client


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_a_job_returns_what_upscale_returns_at_its_rung(c: httpx.Client, mode: str) -> None:
    img = encode(Image.fromarray(synthetic_image(70, 90, seed=3)).convert(mode))
    r = submit(c, img)
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    status = wait_for(c, r.json()["id"])
    assert status["state"] == "done" and status["progress"]["tiles_done"] == status["progress"]["tiles_total"] > 1
    result = c.get(status["result"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    rung = f"width={result.headers['x-width']}&precision={result.headers['x-precision']}"
    direct = c.post(f"/v1/upscale?{rung}", content=img, headers=PNG)
    job_px, direct_px = np.asarray(decode(result.content)), np.asarray(decode(direct.content))
    assert decode(result.content).mode == decode(direct.content).mode == mode
    # alpha: the strip-wise bicubic resize equals the whole-image one up to float rounding
    assert np.abs(job_px.astype(int) - direct_px).max() <= (1 if mode == "RGBA" else 0)
    for header in ("x-scale", "x-noise", "x-width-reason", "x-expected-psnr"):
        assert header in result.headers


def test_inputs_over_the_interactive_limit_are_jobs(c: httpx.Client) -> None:
    big = png_bytes(500, 500)  # 250,000 pixels: over the test server's 200,000
    assert c.post("/v1/upscale", content=big, headers=PNG).status_code == 413
    status = wait_for(c, submit(c, big, "?out_width=2000").json()["id"])  # x4 exactly, as a target size
    assert status["state"] == "done" and status["output"] == "2000x2000"
    assert decode(c.get(status["result"]).content).size == (2000, 2000)
    for held_whole in ("?format=jpeg", "?out_width=1000"):  # only PNG at a native scale streams
        refused = submit(c, big, held_whole)
        assert refused.status_code == 413 and "served as PNG at a native scale" in refused.json()["detail"]


def test_bad_submissions_are_4xx_before_anything_is_queued(c: httpx.Client) -> None:
    assert submit(c, b"not an image").json()["error"] == "bad_image"
    assert submit(c, png_bytes(), "?width=0.3").status_code == 422
    assert submit(c, png_bytes(), "?deadline_s=0").status_code == 422
    assert c.get("/v1/jobs/nope").status_code == 404
    assert c.get("/v1/jobs/nope/result").json()["error"] == "not_found"


def test_idempotency_key_makes_a_retry_the_same_job(c: httpx.Client) -> None:
    first = submit(c, png_bytes(seed=1), **{"Idempotency-Key": "retry-1"}).json()
    again = submit(c, png_bytes(seed=1), **{"Idempotency-Key": "retry-1"})
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    other = submit(c, png_bytes(seed=2), **{"Idempotency-Key": "retry-1"})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"


def test_cancel_a_running_job_and_remove_a_finished_one(tiny_weights: Path, tmp_path: Path) -> None:
    # tiles of 8: a few hundred tiles, long enough to cancel in the middle
    with running_server(settings(tiny_weights, tile_size=8, jobs_dir=tmp_path)) as url, client_for(url) as c:
        job = submit(c, png_bytes(300, 300)).json()["id"]
        queued = submit(c, png_bytes(300, 300, seed=5)).json()["id"]
        for _ in range(600):
            running = c.get(f"/v1/jobs/{job}").json()
            if running["progress"]["tiles_done"] > 0:
                break
            time.sleep(0.02)
        assert running["state"] == "running" and c.get(f"/v1/jobs/{queued}").json()["queue_position"] == 0
        assert c.get(f"/v1/jobs/{job}/result").json()["error"] == "job_not_done"
        assert c.post(f"/v1/jobs/{queued}/cancel").json()["state"] == "cancelled"
        cancelled = c.post(f"/v1/jobs/{job}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        time.sleep(0.5)
        status = c.get(f"/v1/jobs/{job}").json()
        assert status["progress"]["tiles_done"] < status["progress"]["tiles_total"]
        assert c.get(f"/v1/jobs/{queued}").json()["started_at"] is None  # never ran
        assert c.delete(f"/v1/jobs/{job}").status_code == 204
        assert c.get(f"/v1/jobs/{job}").status_code == 404
        assert not list(tmp_path.glob(f"{job}.*"))
        running = submit(c, png_bytes(300, 300, seed=6)).json()["id"]
        wait_for(c, running, until=("running",))
        assert c.delete(f"/v1/jobs/{running}").status_code == 204  # cancelled and removed at once
        time.sleep(0.5)
        assert c.get(f"/v1/jobs/{running}").status_code == 404 and not list(tmp_path.glob(f"{running}.*"))


def test_jobs_survive_a_restart(tiny_weights: Path, tmp_path: Path) -> None:
    images = [png_bytes(200, 200, seed=s) for s in (7, 8)]
    with running_server(settings(tiny_weights, tile_size=8, jobs_dir=tmp_path)) as url, client_for(url) as c:
        ids = [submit(c, img, "?width=1&precision=fp32").json()["id"] for img in images]
        wait_for(c, ids[0], until=("running",))
    # stopped in the middle of the first: it is left running, the second queued
    assert [SqliteJobStore(tmp_path).get(i).state for i in ids] == ["running", "queued"]
    with running_server(settings(tiny_weights, tile_size=8, jobs_dir=tmp_path)) as url, client_for(url) as c:
        for job, img in zip(ids, images, strict=True):
            status = wait_for(c, job)
            assert status["state"] == "done"
            direct = c.post("/v1/upscale?width=1&precision=fp32", content=img, headers=PNG).content
            assert np.array_equal(np.asarray(decode(c.get(status["result"]).content)), np.asarray(decode(direct)))
        assert SqliteJobStore(tmp_path).get(ids[0]).attempts == 2


def test_the_disk_budget_refuses_up_front(tiny_weights: Path, tmp_path: Path) -> None:
    with running_server(settings(tiny_weights, jobs_dir=tmp_path, jobs_disk_bytes=50_000)) as url, client_for(url) as c:
        refused = submit(c, png_bytes(64, 64))  # 256x256 RGB: up to ~200 kB of PNG
        assert refused.status_code == 507 and refused.json()["error"] == "insufficient_storage"
        assert int(refused.headers["retry-after"]) >= 1
        assert submit(c, png_bytes(16, 16)).status_code == 202


def test_finished_jobs_expire(tiny_weights: Path, tmp_path: Path) -> None:
    with running_server(settings(tiny_weights, jobs_dir=tmp_path, job_ttl_s=1.0)) as url, client_for(url) as c:
        job = wait_for(c, submit(c, png_bytes()).json()["id"])
        assert job["expires_at"] == pytest.approx(job["finished_at"] + 1.0)
        for _ in range(100):
            if c.get(f"/v1/jobs/{job['id']}").status_code == 404:
                break
            time.sleep(0.1)
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert not list(tmp_path.glob(f"{job['id']}.*"))


def one_rung_scheduler() -> Scheduler:
    full = ServedRung(ModelKey(), 1.0)
    cost = CostModel([full], alpha=0.0, ref_pixels=1)
    cost.fit(full, [(1_000, 0.001), (2_000, 0.002)])
    scheduler = Scheduler(cost, Limits(workers=1, lanes=1, max_queue=4, timeout_s=60))
    scheduler.ladders[ModelKey()] = Ladder((full,), {})
    return scheduler


def test_a_job_tile_waits_while_an_interactive_request_is_in_the_system() -> None:
    scheduler = one_rung_scheduler()
    release = threading.Event()
    order: list[str] = []

    async def interactive() -> None:
        _, job = scheduler.admit(RequestPlan(ModelKey(), 1_000, target_s=10))
        assert job is not None
        await scheduler.run(job, lambda _: (release.wait(5), order.append("interactive")))

    def job_tile() -> None:
        with scheduler.job_turn(threading.Lock, lambda: None):
            order.append("job tile")

    async def main() -> None:
        task = asyncio.ensure_future(interactive())
        await asyncio.sleep(0.05)  # admitted and running
        tile = threading.Thread(target=job_tile)
        tile.start()
        await asyncio.sleep(0.3)
        assert order == []  # the job waits for the interactive request
        release.set()
        await task
        await asyncio.to_thread(tile.join, 5)

    asyncio.run(main())
    scheduler.shutdown()
    assert order == ["interactive", "job tile"]


def serve(weights: Path, jobs_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``csd-sr serve`` as its own process (so it can be killed with SIGKILL), tiles of 8: a slow job."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CSD_SR_WEIGHTS": str(weights), "CSD_SR_JOBS_DIR": str(jobs_dir), "CSD_SR_PORT": str(port)}
    env |= {"CSD_SR_TILE_SIZE": "8", "CSD_SR_LOG_LEVEL": "warning"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("csd-sr")), "serve"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return proc, url


def test_a_job_survives_kill_9_with_the_same_bytes(tiny_weights: Path, tmp_path: Path) -> None:
    img, rung = png_bytes(200, 200, seed=9), "?width=1&precision=fp32"  # the rung pinned: auto may choose anew
    proc, url = serve(tiny_weights, tmp_path / "jobs", tmp_path / "serve.log")
    try:
        with client_for(url) as c:
            job = submit(c, img, rung).json()["id"]
            for _ in range(600):
                if c.get(f"/v1/jobs/{job}").json()["progress"]["tiles_done"] > 50:
                    break
                time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # no shutdown of any kind
        proc.wait(10)
        assert SqliteJobStore(tmp_path / "jobs").get(job).state == "running"
        proc, url = serve(tiny_weights, tmp_path / "jobs", tmp_path / "serve.log")
        with client_for(url) as c:
            assert wait_for(c, job)["state"] == "done"
            resumed = c.get(f"/v1/jobs/{job}/result").content
            again = wait_for(c, submit(c, img, rung).json()["id"])  # the same job, never interrupted
            assert resumed == c.get(again["result"]).content
    finally:
        proc.kill()
        proc.wait(10)


def test_a_job_waiting_behind_interactive_requests_still_gets_its_share() -> None:
    scheduler = one_rung_scheduler()
    release = threading.Event()
    order: list[str] = []

    async def interactive() -> None:  # in the system for 5 s: far longer than the job may be held back
        _, job = scheduler.admit(RequestPlan(ModelKey(), 1_000, target_s=10))
        await scheduler.run(job, lambda _: (release.wait(5), order.append("interactive")))

    def job_tile() -> None:
        with scheduler.job_turn(threading.Lock, lambda: None, last_tile_s=0.01):  # may wait max(1 s, 9 x 0.01 s)
            order.append("job tile")
        release.set()

    async def main() -> None:
        task = asyncio.ensure_future(interactive())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(job_tile)
        await task

    asyncio.run(main())
    scheduler.shutdown()
    assert order == ["job tile", "interactive"]
