"""Job state that survives restarts: one SQLite database (stdlib ``sqlite3``, WAL) beside the job files.

A job moves ``queued -> running -> done | failed | cancelled``; ``claim`` takes the oldest queued job
atomically. Inputs and results are files in the jobs folder, named by the job id; the database holds
what the status endpoint reports and what a restart needs (``recover``: interrupted jobs run again).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)
MAX_ATTEMPTS = 3  # a job that was running through this many crashes fails instead of crashing the next start


@dataclass
class JobRecord:
    id: str
    created_at: float
    options: dict  # service.upscaling.options.UpscaleOptions fields, plus deadline_s
    input_bytes: int
    reserved_bytes: int  # upper bound of the result's size: the disk budget counts it until the result exists
    input_size: str  # "WxH"
    output_size: str
    model: str
    idempotency_key: str | None = None
    fingerprint: str = ""  # sha256 of the input and options: a reused Idempotency-Key must match it
    state: str = QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    tiles_done: int = 0
    tiles_total: int = 0
    predicted_s: float | None = None  # the cost model's seconds for the job, once a rung is chosen
    rung: str | None = None
    reason: str | None = None
    media_type: str | None = None
    headers: dict = field(default_factory=dict)
    result_bytes: int | None = None
    error: str | None = None
    detail: str | None = None
    attempts: int = 0
    heartbeat_at: float | None = None  # renewed while running (``beat``): a shared store's lease


_COLUMNS = [f.name for f in dataclasses.fields(JobRecord)]
_JSON = {"options", "headers"}


class JobStore:
    """The jobs database; safe to call from the event loop and the job thread (one connection, a lock).

    Local to one server (``shared`` False): at start-up every job left running was this server's.
    """

    shared = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._db.row_factory = sqlite3.Row  # read by column name: an upgraded table has its new columns last
        columns = ", ".join(f"{name} {'TEXT PRIMARY KEY' if name == 'id' else ''}" for name in _COLUMNS)
        self._db.execute(f"CREATE TABLE IF NOT EXISTS jobs ({columns})")
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name in _COLUMNS:  # a database from an earlier version: its jobs keep running after the upgrade
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name}")
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs (idempotency_key)")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at)")

    def input_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.in"

    def result_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.out"

    def partial_path(self, job_id: str) -> Path:
        """The result while it is written (renamed to ``result_path`` once complete)."""
        return self.folder / f"{job_id}.part"

    def add(self, job: JobRecord) -> JobRecord:
        """Insert ``job``; with an ``idempotency_key`` already used, the existing job instead (not inserted)."""
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
        """Move a queued or running job to a final ``state``; False if it had finished already."""
        values = [json.dumps(v) if k in _JSON else v for k, v in fields.items()]
        sets = ", ".join(["state = ?", "finished_at = ?", *(f"{k} = ?" for k in fields)])
        with self._lock:
            cur = self._db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND state IN (?, ?)",
                [state, time.time(), *values, job_id, QUEUED, RUNNING],
            )
        return cur.rowcount == 1

    def claim(self) -> JobRecord | None:
        """The oldest queued job, now running (atomic: one claimant gets it)."""
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "UPDATE jobs SET state = ?, started_at = ?, heartbeat_at = ?, attempts = attempts + 1 WHERE id = "
                "(SELECT id FROM jobs WHERE state = ? ORDER BY created_at LIMIT 1) RETURNING *",
                (RUNNING, now, now, QUEUED),
            ).fetchone()
        return None if row is None else self._record(row)

    def beat(self, job_id: str) -> bool:
        """Renew a running job's lease; False when it is no longer running (cancelled, removed)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND state = ?", (time.time(), job_id, RUNNING)
            )
        return cur.rowcount == 1

    def recover(self, stale_before: float | None = None) -> tuple[list[str], list[str]]:
        """Jobs left running by a server that stopped (every running one, or those whose lease is older
        than ``stale_before``) run again from the start, unless they were running through
        ``MAX_ATTEMPTS`` starts, which fail. Returns (requeued ids, failed ids)."""
        stale = "state = ?" + ("" if stale_before is None else " AND heartbeat_at < ?")
        args: tuple = (RUNNING,) if stale_before is None else (RUNNING, stale_before)
        detail = f"the server stopped during each of {MAX_ATTEMPTS} runs"
        with self._lock:
            failed = [
                r[0]
                for r in self._db.execute(
                    "UPDATE jobs SET state = ?, finished_at = ?, error = 'crashed', detail = ? "
                    f"WHERE {stale} AND attempts >= ? RETURNING id",
                    (FAILED, time.time(), detail, *args, MAX_ATTEMPTS),
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
        """Jobs queued ahead of ``job`` (0: it runs next)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = ? AND created_at < ?", (QUEUED, job.created_at)
            ).fetchone()
        return row[0]

    def ahead(self, job: JobRecord) -> list[JobRecord]:
        """The running jobs and the queued ones ahead of ``job``."""
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
        """Bytes the jobs hold or will hold: inputs of unfinished jobs, results (or their reservation)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(CASE WHEN state IN (?, ?) THEN input_bytes + reserved_bytes "
                "ELSE COALESCE(result_bytes, 0) END), 0) FROM jobs",
                (QUEUED, RUNNING),
            ).fetchone()
        return row[0]

    def expired(self, before: float) -> list[str]:
        """Finished jobs older than ``before`` (their time to live is over)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM jobs WHERE state IN ({', '.join('?' * len(FINISHED))}) AND finished_at < ?",
                (*FINISHED, before),
            ).fetchall()
        return [r[0] for r in rows]

    def next_expiry(self, ttl_s: float) -> float | None:
        """When the oldest finished job expires (``time.time()`` seconds), None with none finished."""
        with self._lock:
            row = self._db.execute(
                f"SELECT MIN(finished_at) FROM jobs WHERE state IN ({', '.join('?' * len(FINISHED))})", FINISHED
            ).fetchone()
        return None if row[0] is None else row[0] + ttl_s

    def remove(self, job_id: str) -> None:
        """Forget the job and delete its files."""
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        for path in (self.input_path(job_id), self.partial_path(job_id), self.result_path(job_id)):
            path.unlink(missing_ok=True)  # a running job's partial result too: it stops at its next beat

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args: tuple) -> JobRecord | None:
        row = self._db.execute(sql, args).fetchone()
        return None if row is None else self._record(row)

    def _record(self, row: sqlite3.Row) -> JobRecord:
        return JobRecord(**{k: json.loads(row[k]) if k in _JSON and row[k] is not None else row[k] for k in _COLUMNS})
