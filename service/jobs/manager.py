"""Asynchronous jobs: accepted durably, run one at a time through ``service.upscaling.upscaler.Upscaler`` on the lane
interactive requests leave free, reported with progress and ETA, kept for a TTL.

Submission checks everything ``/v1/upscale`` checks (``Upscaler.prepare_job``) and the disk
budget before answering 202, so an accepted job fails later only for what cannot be known from its header
(a truncated file, a timeout). The input is on disk before the job is in the database, and a result is
renamed into place once complete: after a crash every queued or interrupted job runs (again), and no
half-written result is ever served.

The store and the files are blocking I/O (a database, Redis, inputs up to MAX_JOB_BODY_BYTES): the async
methods the routes call, and the loop running the jobs, do that work on threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from service.catalog.registry import ServedRung
from service.errors import ApiError
from service.jobs.base import CANCELLED, DONE, FAILED, FINISHED, QUEUED, RUNNING, JobRecord, JobStore
from service.scheduling.policy import Decision
from service.scheduling.scheduler import Aborted
from service.upscaling.options import UpscaleOptions
from service.upscaling.upscaler import JobRun, Prepared, Upscaled, Upscaler

log = logging.getLogger("csd_sr.jobs")

SWEEP_EVERY_S = 60.0
STORE_RETRY_S = 2.0
BEAT_S = 1.0  # a running job renews its lease (and sees a cancel) this often
LEASE_S = 60.0  # in a shared store, a running job whose lease is this old belonged to a replica that died
IDLE_POLL_S = 1.0  # a replica also finds jobs others queued (a shared store) within this
BYTES_PER_SAMPLE_BOUND = 1.01  # deflate's worst case over raw bytes, plus the filter byte per row


class JobManager:
    """Owns the jobs' store, their thread and the loop that runs them through ``upscaler``."""

    def __init__(self, upscaler: Upscaler, store: JobStore) -> None:
        self.upscaler = upscaler
        self.settings = upscaler.settings
        self.metrics = m = upscaler.metrics
        self.store = store
        self.ttl_s = self.settings.job_ttl_s
        m.jobs_queued.set_function(lambda: store.counts()[QUEUED])
        m.jobs_running.set_function(lambda: store.counts()[RUNNING])
        for state in (DONE, FAILED, CANCELLED):  # zero-valued series exist from the start
            m.jobs_finished.labels(state)
        default = upscaler.registry[upscaler.registry.default]
        self.executor = ThreadPoolExecutor(1, "csd-sr-job", initializer=default.engine.backend.init_worker)
        self._wake = asyncio.Event()
        self._stopping = False
        self._recovered = False
        self._last_sweep = 0.0

    # -- submission and reports (the routes: each call's work on a thread) --

    async def submit(
        self, data: bytes, opts: UpscaleOptions, deadline_s: float, idempotency_key: str | None
    ) -> JobRecord:
        """Accept a job (``ApiError`` for what would be refused, checked now); a reused key returns its job."""
        job = await asyncio.to_thread(self._accept, data, opts, deadline_s, idempotency_key)
        self._wake.set()
        return job

    async def find(self, job_id: str) -> JobRecord:
        """The job on record (``ApiError`` 404 if there is none)."""
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return job

    async def status(self, job: JobRecord) -> dict:
        """What ``GET /v1/jobs/{id}`` reports."""
        return await asyncio.to_thread(self._status, job)

    async def cancel(self, job: JobRecord) -> bool:
        """Cancel a queued or running job (a running one stops at its next tile); False if it had finished."""
        return await asyncio.to_thread(self._cancel, job)

    async def remove(self, job: JobRecord) -> None:
        """Cancel the job if unfinished, then forget it and delete its files."""
        await asyncio.to_thread(self._remove, job)

    def _accept(self, data: bytes, opts: UpscaleOptions, deadline_s: float, idempotency_key: str | None) -> JobRecord:
        upscaler, s = self.upscaler, self.settings
        if not upscaler.ready:
            raise ApiError(503, "not_ready", upscaler.warmup_error or "warming up", {"Retry-After": "2"})
        fingerprint = hashlib.sha256(data + json.dumps(asdict(opts), sort_keys=True).encode()).hexdigest()
        if idempotency_key is not None:
            existing = self.store.get_by_key(idempotency_key)
            if existing is not None:
                return self._same_submission(existing, fingerprint)
        req = upscaler.prepare_job(data, opts)
        counts = self.store.counts()
        if counts[QUEUED] >= s.max_jobs_queued:
            raise ApiError(503, "queue_full", f"{counts[QUEUED]} jobs queued (the limit)", {"Retry-After": "60"})
        w, h = req.plan.out_size
        channels = 1 if req.probe.image.mode in ("1", "L", "I;16") else 3
        reserved = int(w * h * (channels + req.probe.has_alpha) * 2 * BYTES_PER_SAMPLE_BOUND) + h + 4096
        self._check_disk(len(data) + reserved)
        job = JobRecord(
            id=secrets.token_urlsafe(12),
            created_at=time.time(),
            options={**asdict(opts), "deadline_s": deadline_s},
            input_bytes=len(data),
            reserved_bytes=reserved,
            input_size=f"{req.probe.width}x{req.probe.height}",
            output_size=f"{w}x{h}",
            model=req.key.name,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
        self._plan(job, req)
        self.store.files.write_input(job.id, data)  # before the record: a queued job always has its input
        stored = self.store.add(job)
        if stored is not job:  # the same key raced in between: keep the first
            self.store.files.drop_input(job.id)
            return self._same_submission(stored, fingerprint)
        self.metrics.jobs_submitted.inc()
        return job

    def _status(self, job: JobRecord) -> dict:
        now = time.time()
        body: dict = {
            "id": job.id,
            "state": job.state,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "model": job.model,
            "input": job.input_size,
            "output": job.output_size,
            "progress": {
                "tiles_done": job.tiles_done,
                "tiles_total": job.tiles_total,
                "fraction": job.tiles_done / job.tiles_total if job.tiles_total else 0.0,
            },
            "rung": job.rung,
            "reason": job.reason,
            "eta_s": None,
            "queue_position": None,
        }
        if job.state == QUEUED:
            body["queue_position"] = self.store.position(job)
            body["eta_s"] = round(sum(map(_remaining_s, self.store.ahead(job))) + (job.predicted_s or 0.0), 1)
        elif job.state == RUNNING:
            body["eta_s"] = round(_remaining_s(job), 1)
        elif job.state == DONE:
            body["result"] = f"/v1/jobs/{job.id}/result"
        if job.state in FINISHED and job.finished_at is not None:
            body["expires_at"] = job.finished_at + self.ttl_s
        if job.error:
            body["error"] = {"error": job.error, "detail": job.detail}
        body["updated"] = now
        return body

    def _cancel(self, job: JobRecord) -> bool:
        if not self.store.finish(job.id, CANCELLED, error="cancelled", detail="cancelled by the client"):
            return False
        if job.state == QUEUED:  # a running job's input goes when it stops
            self.store.files.drop_input(job.id)
        self.metrics.jobs_finished.labels(CANCELLED).inc()
        return True

    def _remove(self, job: JobRecord) -> None:
        if job.state not in FINISHED:
            self._cancel(job)
        self.store.remove(job.id)

    # -- running (one job at a time, on the jobs' own thread) --

    async def run_forever(self) -> None:
        """Run queued jobs until cancelled; jobs a previous process left running run again first.

        A store that fails (Redis unreachable, a full disk) is logged and retried: the loop never ends
        on it, and the interactive service is unaffected."""
        while True:
            self._wake.clear()  # before the claim: a job submitted while it is made ends the wait below
            try:
                job = await asyncio.to_thread(self._next)
            except Exception:
                log.exception("jobs store failed; retrying")
                await asyncio.sleep(STORE_RETRY_S)
                continue
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
                continue
            await self._run(job)

    def stop(self) -> None:
        """Stop the running job at its next tile, left ``running`` so the next start runs it again."""
        self._stopping = True
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _next(self) -> JobRecord | None:
        """The store's part of the loop (on a thread): the recovery at the first call, the sweep when due, then
        the oldest queued job, claimed (None while there is none, or while warming up)."""
        if not self._recovered:
            self._recover(None if not self.store.shared else time.time() - LEASE_S)  # local: all ours
            self._recovered = True
        if time.monotonic() - self._last_sweep > min(SWEEP_EVERY_S, self.ttl_s / 2):
            self.sweep()
            if self.store.shared:  # another replica's jobs, if it died running them
                self._recover(time.time() - LEASE_S)
        return self.store.claim() if self.upscaler.ready else None

    def _recover(self, stale_before: float | None) -> None:
        requeued, failed = self.store.recover(stale_before)
        if requeued or failed:
            log.info("jobs recovered", extra={"fields": {"requeued": requeued, "failed": failed}})

    def sweep(self) -> None:
        """Remove the finished jobs whose time to live is over, and their files."""
        self._last_sweep = time.monotonic()
        for job_id in self.store.expired(time.time() - self.ttl_s):
            self.store.remove(job_id)

    async def _run(self, job: JobRecord) -> None:
        """Run ``job`` and record how it ended (a shutdown leaves it running, to run again at the next start)."""
        fields: dict = {"job": job.id, "attempt": job.attempts}
        started = time.perf_counter()
        try:
            result, size = await self._produce(job, fields)
        except Aborted as exc:
            if exc.reason != "timeout":  # cancelled: already recorded; shutdown: left running
                await asyncio.to_thread(self.store.files.partial_path(job.id).unlink, missing_ok=True)
                return
            end = {"error": "timeout", "detail": f"not finished within {self.settings.job_timeout_s:g} s"}
            await asyncio.to_thread(self._settle, job, FAILED, fields, end)
        except ApiError as exc:
            await asyncio.to_thread(self._settle, job, FAILED, fields, {"error": exc.code, "detail": exc.detail})
        except Exception as exc:  # a bug: the job fails, the loop goes on
            log.exception("job failed", extra={"fields": fields})
            await asyncio.to_thread(self._settle, job, FAILED, fields, {"error": "internal_error", "detail": repr(exc)})
        else:
            end = {"media_type": result.media_type, "headers": result.headers, "result_bytes": size}
            await asyncio.to_thread(self._settle, job, DONE, fields, end)
            self.metrics.job_seconds.observe(time.perf_counter() - started)

    async def _produce(self, job: JobRecord, fields: dict) -> tuple[Upscaled, int]:
        """The job's result, written to its partial file and renamed into place once complete; its size."""
        opts = UpscaleOptions(**{k: v for k, v in job.options.items() if k != "deadline_s"})
        deadline_at = job.created_at + job.options["deadline_s"]
        timeout_at = time.monotonic() + self.settings.job_timeout_s
        last_beat = 0.0

        def check() -> None:
            """Before each tile and while waiting for the lane: stop for a shutdown, a timeout or a cancel
            (seen in the store, wherever it was asked), and renew the job's lease there."""
            nonlocal last_beat
            if self._stopping:
                raise Aborted("shutdown")
            now = time.monotonic()
            if now > timeout_at:
                raise Aborted("timeout")
            if now - last_beat >= BEAT_S:
                last_beat = now
                if not self.store.beat(job.id):  # cancelled or removed
                    raise Aborted("cancelled")

        def progress(done: int, total: int) -> None:
            self.store.update(job.id, tiles_done=done, tiles_total=total)

        def on_start(decision: Decision, rung: ServedRung, predicted_s: float) -> None:
            why = f"{decision.reason}: predicted {predicted_s:.0f} s of {decision.target_s:.0f} s left of the deadline"
            self.store.update(job.id, rung=rung.id, reason=why, predicted_s=predicted_s)

        # The callbacks run on the jobs' thread, as does the writing; reading the input and the rename, here.
        files = self.store.files
        data = await asyncio.to_thread(files.read_input, job.id)
        with files.partial_path(job.id).open("wb") as out:
            run = JobRun(out, self.executor, max(0.0, deadline_at - time.time()), check, progress, on_start)
            result = await self.upscaler.run_job(data, opts, fields, run)
        return result, await asyncio.to_thread(files.publish, job.id)

    def _settle(self, job: JobRecord, state: str, fields: dict, values: dict) -> None:
        """Record how the job ended (on a thread); a failed run's partial file goes, a done job's input too."""
        files = self.store.files
        files.partial_path(job.id).unlink(missing_ok=True)  # none once the result is in place
        if self.store.finish(job.id, state, **values):
            self.metrics.jobs_finished.labels(state).inc()
            log.info("job", extra={"fields": {**fields, "state": state, "error": values.get("error")}})
        else:  # cancelled while its last tile ran: drop what it made
            files.result_path(job.id).unlink(missing_ok=True)
        if state == DONE:
            files.drop_input(job.id)  # only the result is kept

    def _plan(self, job: JobRecord, req: Prepared) -> None:
        """The rung the job would get now (it is chosen again when it starts) and its predicted seconds."""
        decision, tiles = self.upscaler.plan_job(req, job.options["deadline_s"])
        assert decision.rung is not None  # plan_job refuses the rest
        job.tiles_total = tiles
        job.predicted_s = decision.predicted_s
        job.rung = decision.rung.id
        job.reason = f"planned ({decision.reason}); chosen again when the job starts"

    def _check_disk(self, more: int) -> None:
        budget = self.settings.jobs_disk_bytes
        used = self.store.disk_bytes()
        if used + more <= budget:
            return
        expiry = self.store.next_expiry(self.ttl_s)
        retry = 3600 if expiry is None else max(1, int(expiry - time.time()))
        detail = f"the job needs up to {more} bytes; {used} of the {budget}-byte jobs disk budget are in use"
        raise ApiError(507, "insufficient_storage", detail, {"Retry-After": str(retry)})

    def _same_submission(self, existing: JobRecord, fingerprint: str) -> JobRecord:
        if existing.fingerprint != fingerprint:
            raise ApiError(  # 409: the key is taken by another submission (the request itself is valid)
                409,
                "idempotency_key_reused",
                f"Idempotency-Key was used for job {existing.id} with another image or other options",
            )
        return existing


def _remaining_s(job: JobRecord) -> float:
    """Seconds a job still needs: from its own pace once tiles are done, else the cost model's prediction."""
    predicted = job.predicted_s or 0.0
    if job.state != RUNNING or job.started_at is None:
        return predicted
    elapsed = time.time() - job.started_at
    if job.tiles_done and job.tiles_total:
        return elapsed * (job.tiles_total - job.tiles_done) / job.tiles_done
    return max(0.0, predicted - elapsed)
