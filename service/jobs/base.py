"""What every job store shares: the record and its states, the job's files on disk, and the ``JobStore``
Protocol that ``service.jobs.store.SqliteJobStore`` (one server) and ``service.jobs.redis_store.RedisJobStore``
(replicas) both implement.

A job moves ``queued -> running -> done | failed | cancelled``. Every store method is blocking I/O: async code
calls it on a thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
UNFINISHED = (QUEUED, RUNNING)
FINISHED = (DONE, FAILED, CANCELLED)
MAX_ATTEMPTS = 3  # a job that was running through this many crashes fails instead of crashing the next start
CRASHED_DETAIL = f"the server stopped during each of {MAX_ATTEMPTS} runs"


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

    @property
    def disk_bytes(self) -> int:
        """What the job counts against the disk budget: its input and its result's upper bound until it
        finishes, then its result. Each store keeps the sum as a counter (SQL and Lua say the same)."""
        if self.state in UNFINISHED:
            return self.input_bytes + self.reserved_bytes
        return self.result_bytes or 0


class JobFiles:
    """A job's files in the jobs folder, named by its id: its input until it finishes, its result while it is
    written (``.part``), then its result. Replicas sharing a store share the folder too (a shared volume)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def input_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.in"

    def partial_path(self, job_id: str) -> Path:
        """The result while it is written (renamed to ``result_path`` once complete)."""
        return self.folder / f"{job_id}.part"

    def result_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.out"

    def write_input(self, job_id: str, data: bytes) -> None:
        self.input_path(job_id).write_bytes(data)

    def read_input(self, job_id: str) -> bytes:
        return self.input_path(job_id).read_bytes()

    def drop_input(self, job_id: str) -> None:
        self.input_path(job_id).unlink(missing_ok=True)

    def publish(self, job_id: str) -> int:
        """Rename the complete result into place (no half-written result is ever served); its size in bytes."""
        result = self.result_path(job_id)
        self.partial_path(job_id).replace(result)
        return result.stat().st_size

    def delete(self, job_id: str) -> None:
        """Every file of the job; a running job's partial result too (it stops at its next beat)."""
        for path in (self.input_path(job_id), self.partial_path(job_id), self.result_path(job_id)):
            path.unlink(missing_ok=True)


@runtime_checkable
class JobStore(Protocol):
    """The jobs' state, durable across restarts; safe to call from several threads at once."""

    shared: bool  # several servers use it: a job left running is another's only once its lease is stale
    files: JobFiles

    def add(self, job: JobRecord) -> JobRecord:
        """Insert ``job``; with an ``idempotency_key`` already used, the existing job instead (not inserted)."""
        ...

    def get_by_key(self, idempotency_key: str) -> JobRecord | None: ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def update(self, job_id: str, **fields: object) -> None:
        """Set ``fields`` of a job still on record (a removed job stays removed)."""
        ...

    def finish(self, job_id: str, state: str, **fields: object) -> bool:
        """Move a queued or running job to a final ``state``; False if it had finished already."""
        ...

    def claim(self) -> JobRecord | None:
        """The oldest queued job, now running (atomic: one claimant gets it)."""
        ...

    def beat(self, job_id: str) -> bool:
        """Renew a running job's lease; False when it is no longer running (cancelled, removed)."""
        ...

    def recover(self, stale_before: float | None = None) -> tuple[list[str], list[str]]:
        """Jobs left running by a server that stopped (every running one, or those whose lease is older
        than ``stale_before``) run again from the start, unless they were running through
        ``MAX_ATTEMPTS`` starts, which fail. Returns (requeued ids, failed ids)."""
        ...

    def position(self, job: JobRecord) -> int:
        """Jobs queued ahead of ``job`` (0: it runs next)."""
        ...

    def ahead(self, job: JobRecord) -> list[JobRecord]:
        """The running jobs and the queued ones ahead of ``job``."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs in each state."""
        ...

    def disk_bytes(self) -> int:
        """The sum of every job's ``JobRecord.disk_bytes``: a counter kept with each change, not a scan."""
        ...

    def expired(self, before: float) -> list[str]:
        """Finished jobs older than ``before`` (their time to live is over)."""
        ...

    def next_expiry(self, ttl_s: float) -> float | None:
        """When the oldest finished job expires (``time.time()`` seconds), None with none finished."""
        ...

    def remove(self, job_id: str) -> None:
        """Forget the job and delete its files."""
        ...

    def close(self) -> None: ...
