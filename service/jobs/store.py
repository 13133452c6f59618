"""Job state that survives restarts: one SQLite database (stdlib ``sqlite3``, WAL) beside the job files
(``service.jobs.base.JobFiles``).

The database holds what the status endpoint reports and what a restart needs (``recover``: interrupted jobs
run again); ``claim`` takes the oldest queued job atomically. The disk budget's bytes on record are a counter
that triggers keep with every insert, state change and delete, in the same transaction.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from pathlib import Path

from service.jobs.base import (
    CRASHED_DETAIL,
    FAILED,
    FINISHED,
    MAX_ATTEMPTS,
    QUEUED,
    RUNNING,
    STATES,
    JobFiles,
    JobRecord,
)

_COLUMNS = [f.name for f in dataclasses.fields(JobRecord)]
_JSON = {"options", "headers"}


def _held(row: str) -> str:
    """SQL for ``JobRecord.disk_bytes`` of ``row`` (a trigger's NEW or OLD, or the table itself)."""
    unfinished = f"{row}.state IN ('{QUEUED}', '{RUNNING}')"
    reserved = f"COALESCE({row}.input_bytes, 0) + COALESCE({row}.reserved_bytes, 0)"
    return f"(CASE WHEN {unfinished} THEN {reserved} ELSE COALESCE({row}.result_bytes, 0) END)"


def _disk_trigger(name: str, event: str, change: str) -> str:
    return (
        f"CREATE TRIGGER IF NOT EXISTS jobs_disk_{name} AFTER {event} ON jobs "
        f"BEGIN UPDATE counters SET value = value + {change} WHERE name = 'disk_bytes'; END"
    )


# The disk budget's counter follows every change of a job's bytes in the statement's own transaction: a
# submission, a finish, a recovery and a removal (``remove``, the TTL's sweep) alike, and no path can miss it.
_DISK_TRIGGERS = [
    _disk_trigger("insert", "INSERT", _held("NEW")),
    _disk_trigger(
        "update", "UPDATE OF state, input_bytes, reserved_bytes, result_bytes", f"{_held('NEW')} - {_held('OLD')}"
    ),
    _disk_trigger("delete", "DELETE", f"-{_held('OLD')}"),
]


class SqliteJobStore:
    """The jobs database (implements ``service.jobs.base.JobStore``); safe from several threads (one
    connection, a lock).

    Local to one server (``shared`` False): at start-up every job left running was this server's.
    """

    shared = False

    def __init__(self, folder: Path) -> None:
        self.files = JobFiles(folder)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._db.row_factory = sqlite3.Row  # read by column name: an upgraded table has its new columns last
        self._db.execute("BEGIN IMMEDIATE")  # another process opening the same database waits
        self._create_or_upgrade()
        self._db.execute("COMMIT")

    def _create_or_upgrade(self) -> None:
        """The table, its indexes and the disk counter; a database of an earlier version gains what it lacks."""
        columns = ", ".join(f"{name} {'TEXT PRIMARY KEY' if name == 'id' else ''}" for name in _COLUMNS)
        self._db.execute(f"CREATE TABLE IF NOT EXISTS jobs ({columns})")
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name in _COLUMNS:  # a database from an earlier version: its jobs keep running after the upgrade
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name}")
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs (idempotency_key)")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at)")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        # Counted once, when the counter is new (a new database, or one from before it); the triggers keep it.
        self._db.execute(
            f"INSERT OR IGNORE INTO counters SELECT 'disk_bytes', COALESCE(SUM({_held('jobs')}), 0) FROM jobs"
        )
        for trigger in _DISK_TRIGGERS:
            self._db.execute(trigger)

    def add(self, job: JobRecord) -> JobRecord:
        row = [json.dumps(v) if k in _JSON else v for k, v in dataclasses.asdict(job).items()]
        with self._lock:
            if job.idempotency_key is not None:
                existing = self._one("SELECT * FROM jobs WHERE idempotency_key = ?", (job.idempotency_key,))
                if existing is not None:
                    return existing
            marks = ", ".join("?" * len(_COLUMNS))
            self._db.execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({marks})", row)
        return job

    def get_by_key(self, idempotency_key: str) -> JobRecord | None:
        with self._lock:
            return self._one("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,))

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def update(self, job_id: str, **fields: object) -> None:
        values = [json.dumps(v) if k in _JSON else v for k, v in fields.items()]
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?", [*values, job_id])

    def finish(self, job_id: str, state: str, **fields: object) -> bool:
        values = [json.dumps(v) if k in _JSON else v for k, v in fields.items()]
        sets = ", ".join(["state = ?", "finished_at = ?", *(f"{k} = ?" for k in fields)])
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND state IN (?, ?)",
                [state, time.time(), *values, job_id, QUEUED, RUNNING],
            )
        return cur.rowcount == 1

    def claim(self) -> JobRecord | None:
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET state = ?, started_at = ?, heartbeat_at = ?, attempts = attempts + 1 WHERE id = "
                "(SELECT id FROM jobs WHERE state = ? ORDER BY created_at LIMIT 1) RETURNING *",
                (RUNNING, now, now, QUEUED),
            ).fetchone()
        return None if row is None else self._record(row)

    def beat(self, job_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND state = ?", (time.time(), job_id, RUNNING)
            )
        return cur.rowcount == 1

    def recover(self, stale_before: float | None = None) -> tuple[list[str], list[str]]:
        stale = "state = ?" + ("" if stale_before is None else " AND heartbeat_at < ?")
        args: tuple = (RUNNING,) if stale_before is None else (RUNNING, stale_before)
        with self._lock:
            failed = [
                r[0]
                for r in self._db.execute(
                    "UPDATE jobs SET state = ?, finished_at = ?, error = 'crashed', detail = ? "
                    f"WHERE {stale} AND attempts >= ? RETURNING id",
                    (FAILED, time.time(), CRASHED_DETAIL, *args, MAX_ATTEMPTS),
                )
            ]
            requeued = [
                r[0]
                for r in self._db.execute(
                    f"UPDATE jobs SET state = ?, started_at = NULL, tiles_done = 0 WHERE {stale} RETURNING id",
                    (QUEUED, *args),
                )
            ]
        return requeued, failed

    def position(self, job: JobRecord) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = ? AND created_at < ?", (QUEUED, job.created_at)
            ).fetchone()
        return row[0]

    def ahead(self, job: JobRecord) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? OR (state = ? AND created_at < ?)",
                (RUNNING, QUEUED, job.created_at),
            ).fetchall()
        return [self._record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | dict(rows)

    def disk_bytes(self) -> int:
        with self._lock:
            return self._db.execute("SELECT value FROM counters WHERE name = 'disk_bytes'").fetchone()[0]

    def expired(self, before: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM jobs WHERE state IN ({', '.join('?' * len(FINISHED))}) AND finished_at < ?",
                (*FINISHED, before),
            ).fetchall()
        return [r[0] for r in rows]

    def next_expiry(self, ttl_s: float) -> float | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT MIN(finished_at) FROM jobs WHERE state IN ({', '.join('?' * len(FINISHED))})", FINISHED
            ).fetchone()
        return None if row[0] is None else row[0] + ttl_s

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.files.delete(job_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args: tuple) -> JobRecord | None:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else self._record(row)

    def _record(self, row: sqlite3.Row) -> JobRecord:
        return JobRecord(**{k: json.loads(row[k]) if k in _JSON and row[k] is not None else row[k] for k in _COLUMNS})
