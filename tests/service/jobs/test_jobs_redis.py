"""The Redis job store (``service.jobs.redis_store``) against a real ``redis-server`` on loopback: the same
contract as the SQLite store (each store test runs on both), and two replicas sharing one Redis and one
jobs folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from service.jobs.base import CANCELLED, DONE, FAILED, MAX_ATTEMPTS, QUEUED, RUNNING, JobStore
from service.jobs.redis_store import RedisJobStore
from service.jobs.store import SqliteJobStore
from tests.service.conftest import client_for, decode, png_bytes, running_server, settings
from tests.service.jobs.test_job_store import record
from tests.service.jobs.test_jobs import submit, wait_for

Store = SqliteJobStore | RedisJobStore


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence, for this module."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; scripts/system-deps.sh)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    log = (folder / "redis.log").open("wb")
    args = ["--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--dir", str(folder)]
    proc = subprocess.Popen([binary, *args], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer: {(folder / 'redis.log').read_text()}") from None
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the store over one state; each call another connection, as another process or replica."""
    if request.param == "sqlite":

        def make() -> Store:
            return SqliteJobStore(tmp_path)
    else:
        url, prefix = request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex}"  # isolated by prefix

        def make() -> Store:
            return RedisJobStore(url, tmp_path, prefix=prefix)

    opened: list[Store] = []

    def open_one() -> Store:
        opened.append(make())
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


def test_both_stores_implement_the_protocol(open_store: Callable[[], Store]) -> None:
    assert isinstance(open_store(), JobStore)


def test_each_queued_job_is_claimed_once_oldest_first(open_store: Callable[[], Store]) -> None:
    store = open_store()
    for i in range(50):
        store.add(record(f"j{i:02d}", created=1000.0 + i))
    claimed: dict[int, list[str]] = {n: [] for n in range(4)}

    def worker(n: int, replica: Store) -> None:
        while (job := replica.claim()) is not None:
            claimed[n].append(job.id)

    threads = [threading.Thread(target=worker, args=(n, open_store())) for n in claimed]  # 4 replicas
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(i for ids in claimed.values() for i in ids) == [f"j{i:02d}" for i in range(50)]  # none twice
    assert all(ids == sorted(ids) for ids in claimed.values())  # each claim took the oldest left
    assert store.get("j00").state == RUNNING and store.get("j00").attempts == 1
    assert store.get("j00").started_at == store.get("j00").heartbeat_at is not None
    assert store.counts()[RUNNING] == 50 and store.claim() is None


def test_a_key_already_used_returns_the_first_job(open_store: Callable[[], Store]) -> None:
    store = open_store()
    first = store.add(record("a", 1.0, key="k"))
    assert store.add(record("b", 2.0, key="k")).id == first.id == "a"
    assert store.get("b") is None and store.get_by_key("k").id == "a" and store.get_by_key("other") is None
    store.remove("a")  # the key is free again
    assert store.add(record("c", 3.0, key="k")).id == "c" and store.get_by_key("k").id == "c"


# Redis only: SqliteJobStore checks a key under its own lock, so two processes on one SQLite file can race
# (the second insert fails the unique index); it is one server's store.
@pytest.mark.parametrize("open_store", ["redis"], indirect=True)
def test_a_key_raced_by_replicas_inserts_one_job(open_store: Callable[[], Store]) -> None:
    replicas = [open_store() for _ in range(4)]
    results: list[str] = []
    start = threading.Barrier(len(replicas))

    def add(n: int, replica: Store) -> None:
        start.wait()
        results.append(replica.add(record(f"r{n}", float(n), key="raced")).id)

    threads = [threading.Thread(target=add, args=(n, r)) for n, r in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = replicas[0].get_by_key("raced").id
    assert results == [winner] * 4 and replicas[0].counts()[QUEUED] == 1


def test_recovery_requeues_interrupted_jobs_and_fails_those_that_keep_crashing(
    open_store: Callable[[], Store],
) -> None:
    store = open_store()
    store.add(record("ok", 1.0))
    store.add(record("poison", 2.0, attempts=MAX_ATTEMPTS - 1))
    store.add(record("waiting", 3.0))
    assert store.claim().id == "ok" and store.claim().id == "poison"
    store.update("ok", tiles_done=7)
    requeued, failed = open_store().recover()  # a new process after a crash
    assert requeued == ["ok"] and failed == ["poison"]
    ok, poison = store.get("ok"), store.get("poison")
    assert ok.state == QUEUED and ok.tiles_done == 0 and ok.started_at is None and ok.attempts == 1
    assert poison.state == FAILED and poison.error == "crashed" and poison.finished_at is not None
    assert store.disk_bytes() == 2 * (100 + 1000)  # the failed job's input and reservation are off the account
    assert [j.id for j in store.ahead(store.get("waiting"))] == ["ok"] and store.position(store.get("waiting")) == 1
    assert store.claim().id == "ok" and store.get("ok").attempts == 2  # runs again, first in line


def test_recovery_with_a_lease_takes_only_stale_running_jobs(open_store: Callable[[], Store]) -> None:
    store = open_store()
    store.add(record("live", 1.0))
    store.add(record("stale", 2.0))
    store.add(record("stale-poison", 3.0, attempts=MAX_ATTEMPTS - 1))
    store.add(record("queued", 4.0))
    for _ in range(3):
        store.claim()
    long_ago = time.time() - 600
    for job_id in ("stale", "stale-poison"):  # their replica stopped beating ten minutes ago
        store.update(job_id, heartbeat_at=long_ago)
    requeued, failed = open_store().recover(stale_before=time.time() - 60)  # another replica's sweep
    assert requeued == ["stale"] and failed == ["stale-poison"]
    states = [store.get(i).state for i in ("live", "stale", "stale-poison", "queued")]
    assert states == [RUNNING, QUEUED, FAILED, QUEUED]
    assert store.beat("live") and not store.beat("stale")  # the lease of a job no longer running is not renewed
    assert store.get("live").heartbeat_at > long_ago
    assert open_store().recover(stale_before=time.time() - 60) == ([], [])  # a fresh lease is left alone
    assert store.counts() == {QUEUED: 2, RUNNING: 1, DONE: 0, FAILED: 1, CANCELLED: 0}
    assert [j.id for j in store.ahead(store.get("queued"))] == ["live", "stale"]


def test_finishing_is_final_and_the_disk_account_follows(open_store: Callable[[], Store]) -> None:
    store = open_store()
    store.add(record("a", 1.0))
    store.add(record("b", 2.0))
    assert store.disk_bytes() == 2 * (100 + 1000)  # unfinished: input + the result's upper bound
    assert store.next_expiry(60.0) is None
    store.claim()
    assert store.finish("a", DONE, result_bytes=400, headers={"X-Width": "1"})
    assert not store.finish("a", CANCELLED) and not store.beat("a")  # a finished job stays finished
    assert store.get("a").state == DONE and store.get("a").headers == {"X-Width": "1"}
    assert store.disk_bytes() == 400 + 1100
    assert store.counts() == {QUEUED: 1, RUNNING: 0, DONE: 1, FAILED: 0, CANCELLED: 0}
    assert store.finish("b", CANCELLED, error="cancelled")  # from queued too; it holds no bytes then
    assert store.disk_bytes() == 400 and store.position(store.get("b")) == 0
    finished_at = store.get("a").finished_at
    assert store.next_expiry(60.0) == pytest.approx(finished_at + 60.0)
    assert sorted(store.expired(time.time() + 1)) == ["a", "b"] and store.expired(time.time() - 60) == []
    for path in (store.files.input_path("a"), store.files.partial_path("a"), store.files.result_path("a")):
        path.write_bytes(b"x")
    store.remove("a")
    assert store.get("a") is None and not any(store.files.folder.glob("a.*"))
    assert store.counts()[DONE] == 0 and store.disk_bytes() == 0 and store.expired(time.time() + 1) == ["b"]
    store.update("a", tiles_done=1)  # a removed job stays removed
    assert store.get("a") is None


@pytest.mark.parametrize("open_store", ["redis"], indirect=True)
def test_a_store_from_before_the_disk_counter_is_counted_once(open_store: Callable[[], Store]) -> None:
    store = open_store()
    store.add(record("a", 1.0))
    store.add(record("b", 2.0))
    store.claim()
    store.finish("a", DONE, result_bytes=400)
    store._redis.delete(store._disk)  # as the keys of a version that kept no counter
    assert open_store().disk_bytes() == 400 + 1100
    store.remove("a")
    assert store.disk_bytes() == 1100


# -- two replicas: one Redis, one jobs folder --

CLUSTER_PREFIX = "{csd-sr}"


@pytest.fixture(scope="module")
def replicas(tiny_weights: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """Replicas A and B (their URLs), the Redis URL and the jobs folder they share; their keys under a prefix in
    braces, as on Redis Cluster."""
    shared = tmp_path_factory.mktemp("shared-jobs")
    url = redis_url.rsplit("/", 1)[0] + "/1"  # a database of their own: the store tests' keys stay apart
    s = settings(tiny_weights, tile_size=32, jobs_dir=shared, redis_url=url, redis_prefix=CLUSTER_PREFIX)
    with running_server(s) as a, running_server(s) as b:
        yield a, b, url, shared


def finished_done(url: str) -> float:
    with client_for(url) as c:
        families = text_string_to_metric_families(c.get("/metrics").text)
        return sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "csd_sr_jobs_finished_total" and sample.labels.get("state") == DONE
        )


def test_jobs_submitted_to_one_replica_are_served_by_the_other(replicas: tuple) -> None:
    a, b, url, shared = replicas
    sizes = [(24, 32), (40, 24), (33, 47), (16, 16), (70, 90), (24, 32)]
    before = finished_done(a) + finished_done(b)
    with client_for(a) as ca, client_for(b) as cb:
        ids = []
        for seed, (h, w) in enumerate(sizes):
            r = submit(ca, png_bytes(h, w, seed=seed))
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        for job_id, (h, w) in zip(ids, sizes, strict=True):
            status = wait_for(cb, job_id)
            assert status["state"] == "done" and status["output"] == f"{4 * w}x{4 * h}"
            result = cb.get(status["result"])
            assert result.status_code == 200 and decode(result.content).size == (4 * w, 4 * h)
            assert ca.get(f"/v1/jobs/{job_id}").json()["state"] == "done"  # the same state on both
    store = RedisJobStore(url, shared, CLUSTER_PREFIX)  # the replicas' keys are under the prefix they were given
    try:
        assert [store.get(i).attempts for i in ids] == [1] * len(ids)  # each claimed by one replica, once
    finally:
        store.close()
    assert finished_done(a) + finished_done(b) - before == len(ids)
    assert not list(shared.glob("*.in")) and not list(shared.glob("*.part"))  # inputs gone once done
    assert not (shared / "jobs.sqlite3").exists()  # the state is in Redis only


def test_an_idempotency_key_is_one_job_across_replicas(replicas: tuple) -> None:
    a, b, _, _ = replicas
    body = png_bytes(seed=11)
    with client_for(a) as ca, client_for(b) as cb:
        first = submit(ca, body, **{"Idempotency-Key": "across-1"})
        again = submit(cb, body, **{"Idempotency-Key": "across-1"})
        assert first.status_code == again.status_code == 202 and again.json()["id"] == first.json()["id"]
        other = submit(cb, png_bytes(seed=12), **{"Idempotency-Key": "across-1"})
        assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
        assert wait_for(cb, first.json()["id"])["state"] == "done"
