"""The jobs database (``service.jobs.store``): atomic claims, recovery after a crash, the disk account."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from service.jobs.base import CANCELLED, DONE, FAILED, MAX_ATTEMPTS, QUEUED, RUNNING, JobRecord
from service.jobs.store import SqliteJobStore


def record(job_id: str, created: float, key: str | None = None, **kw) -> JobRecord:
    base = dict(options={}, input_bytes=100, reserved_bytes=1000, input_size="1x1", output_size="4x4", model="x4")
    return JobRecord(id=job_id, created_at=created, idempotency_key=key, **{**base, **kw})


def test_each_queued_job_is_claimed_once_oldest_first(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path)
    for i in range(50):
        store.add(record(f"j{i:02d}", created=1000.0 + i))
    claimed: list[str] = []

    def worker() -> None:
        while (job := store.claim()) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [f"j{i:02d}" for i in range(50)]  # every one, none twice
    assert store.get("j00").state == RUNNING and store.get("j00").attempts == 1


def test_a_key_already_used_returns_the_first_job(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path)
    first = store.add(record("a", 1.0, key="k"))
    assert store.add(record("b", 2.0, key="k")).id == first.id == "a"
    assert store.get("b") is None and store.get_by_key("k").id == "a"


def test_recovery_requeues_interrupted_jobs_and_fails_those_that_keep_crashing(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path)
    store.add(record("ok", 1.0))
    store.add(record("poison", 2.0, attempts=MAX_ATTEMPTS - 1))
    store.add(record("waiting", 3.0))
    assert store.claim().id == "ok" and store.claim().id == "poison"
    store.update("ok", tiles_done=7)
    requeued, failed = SqliteJobStore(tmp_path).recover()  # a new process after a crash
    assert requeued == ["ok"] and failed == ["poison"]
    assert store.get("ok").state == QUEUED and store.get("ok").tiles_done == 0
    assert store.get("poison").state == FAILED and store.get("poison").error == "crashed"
    assert [j.id for j in store.ahead(store.get("waiting"))] == ["ok"] and store.position(store.get("waiting")) == 1


def test_finishing_is_final_and_the_disk_account_follows(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path)
    store.add(record("a", 1.0))
    store.add(record("b", 2.0))
    assert store.disk_bytes() == 2 * (100 + 1000)  # unfinished: input + the result's upper bound
    store.claim()
    assert store.finish("a", DONE, result_bytes=400)
    assert not store.finish("a", CANCELLED)  # a finished job stays finished
    assert store.disk_bytes() == 400 + 1100
    assert store.counts() == {QUEUED: 1, RUNNING: 0, DONE: 1, FAILED: 0, CANCELLED: 0}
    assert store.expired(time.time() + 1) == ["a"] and store.expired(time.time() - 60) == []
    store.files.input_path("a").write_bytes(b"x")
    store.remove("a")
    assert store.get("a") is None and not store.files.input_path("a").exists()


def test_a_database_of_an_earlier_version_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "jobs.sqlite3")  # the first version's table: no heartbeat_at, no counter
    old = {"id": "old", "created_at": 1.0, "options": "{}", "headers": "{}", "state": QUEUED, "input_bytes": 5}
    columns = [c for c in JobRecord.__dataclass_fields__ if c != "heartbeat_at"]
    db.execute(f"CREATE TABLE jobs ({', '.join(columns)})")
    db.execute(
        f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [old.get(c, 0) for c in columns],
    )
    db.commit()
    db.close()
    store = SqliteJobStore(tmp_path)
    assert store.disk_bytes() == 5  # counted once, when the counter is new
    assert store.get("old").state == QUEUED and store.claim().id == "old"
    assert store.get("old").heartbeat_at is not None and store.beat("old")
    store.add(record("new", 2.0))
    assert store.counts()[QUEUED] == 1 and store.disk_bytes() == 5 + 1100
    assert SqliteJobStore(tmp_path).disk_bytes() == 5 + 1100  # reopened: kept, not counted again
