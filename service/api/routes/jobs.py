"""``/v1/jobs``: an upscale accepted now and run in the background (``service.jobs``), for images over the
interactive limit and for batches: submit (202), poll the status (progress, ETA, rung), fetch the result,
cancel or remove. The manager's methods do the store's and the files' work on threads: the event loop
never waits on a disk or on Redis."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from service.api.auth import require_api_key
from service.api.deps import JobsDep
from service.api.routes.upscale import BODY_DOC, ERROR, RESPONSES, client_closed, read_image, upscale_options
from service.errors import ApiError
from service.jobs.base import DONE
from service.upscaling.options import UpscaleOptions

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)])


class Progress(BaseModel):
    tiles_done: int = Field(description="tiles finished (an image runs in LR tiles of TILE_SIZE)")
    tiles_total: int
    fraction: float


class JobError(BaseModel):
    error: str = Field(description="the error code /v1/upscale would have answered, or timeout, cancelled, crashed")
    detail: str | None


class JobStatus(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    created_at: float = Field(description="Unix time of the submission")
    started_at: float | None
    finished_at: float | None
    model: str = Field(description="the model serving it (/v1/models), e.g. 'x2' or 'x4-real'")
    input: str = Field(description="input size, WxH")
    output: str = Field(description="output size, WxH")
    progress: Progress
    rung: str | None = Field(description="the rung (model-width-precision): planned while queued, then the one running")
    reason: str | None = Field(description="why that rung: the job's deadline against the cost model's prediction")
    eta_s: float | None = Field(
        description="seconds until done: the queue ahead plus the cost model's prediction, then the job's own pace"
    )
    queue_position: int | None = Field(description="jobs ahead (0: next), while queued")
    result: str | None = Field(None, description="where the result is, once done")
    expires_at: float | None = Field(None, description="Unix time the finished job and its result are removed")
    error: JobError | None = None
    updated: float = Field(description="Unix time of this report")


_NOT_FOUND = {
    401: RESPONSES[401],
    404: {"description": "not_found: no such job (never submitted, removed, or past its TTL).", **ERROR},
    500: RESPONSES[500],
}
_SUBMIT_RESPONSES: dict = {
    202: {
        "description": "Accepted: the job's status. A retried submission with the same Idempotency-Key answers "
        "the same job.",
        "headers": {"Location": {"description": "the job's status URL", "schema": {"type": "string"}}},
        "model": JobStatus,
    },
    **{code: r for code, r in RESPONSES.items() if code != 200},
    413: {
        "description": "body_too_large / too_many_pixels: over the job limits (MAX_JOB_*), or over the "
        "interactive limit for an output other than PNG at a native scale.",
        **ERROR,
    },
    409: {
        "description": "idempotency_key_reused: the Idempotency-Key names a job of another image or other options.",
        **ERROR,
    },
    503: {
        "description": "not_ready (warming up), or queue_full (MAX_JOBS_QUEUED jobs waiting).",
        "headers": RESPONSES[503]["headers"],
        **ERROR,
    },
    507: {
        "description": "insufficient_storage: the job's input and result would pass the jobs disk budget "
        "(JOBS_DISK_BYTES); retry once older results expire.",
        "headers": RESPONSES[503]["headers"],
        **ERROR,
    },
}


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobStatus,
    openapi_extra=BODY_DOC,
    responses=_SUBMIT_RESPONSES,
    summary="Submit an upscale as a job: large images (up to MAX_JOB_PIXELS), batches; answers at once",
)
async def submit(
    request: Request,
    response: Response,
    manager: JobsDep,
    options: Annotated[UpscaleOptions, Depends(upscale_options)],
    deadline_s: Annotated[
        float | None,
        Query(
            gt=0,
            le=86_400,
            description="the job's deadline: the best rung predicted to finish within it "
            "(default JOB_DEADLINE_S); interactive requests go first",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200, description="a retried submission with the same key is the same job"),
    ] = None,
) -> JobStatus | Response:
    settings = manager.settings
    try:
        data = await read_image(request, settings.max_job_body_bytes, manager.metrics)
    except ClientDisconnect:
        return client_closed(request.state.log)
    job = await manager.submit(data, options, deadline_s or settings.job_deadline_s, idempotency_key)
    request.state.log.update(job=job.id, model=job.model, input=job.input_size)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobStatus(**await manager.status(job))


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobStatus,
    responses=_NOT_FOUND,
    summary="A job's state, progress (tiles), ETA, queue position and rung",
)
async def status(manager: JobsDep, job_id: str) -> JobStatus:
    return JobStatus(**await manager.status(await manager.find(job_id)))


@router.get(
    "/v1/jobs/{job_id}/result",
    response_class=FileResponse,
    responses={
        200: {k: v for k, v in RESPONSES[200].items() if k != "description"} | {"description": "The result."},
        **_NOT_FOUND,
        409: {
            "description": "job_not_done: the job is queued, running, failed or cancelled (the detail says "
            "which, and why it failed).",
            **ERROR,
        },
    },
    summary="A done job's image, with the headers /v1/upscale sends",
)
async def result(manager: JobsDep, job_id: str) -> FileResponse:
    job = await manager.find(job_id)
    if job.state != DONE:
        why = f": {job.error} ({job.detail})" if job.error else ""
        raise ApiError(409, "job_not_done", f"job {job_id} is {job.state}{why}")
    path = manager.store.files.result_path(job.id)  # FileResponse reads it on a thread
    return FileResponse(path, media_type=job.media_type, headers=job.headers)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=JobStatus,
    responses=_NOT_FOUND,
    summary="Cancel a queued job (it never runs) or a running one (it stops at its next tile); kept, as "
    "cancelled, until its TTL",
)
async def cancel(manager: JobsDep, job_id: str) -> JobStatus:
    await manager.cancel(await manager.find(job_id))  # a finished job stays as it was
    return JobStatus(**await manager.status(await manager.find(job_id)))


@router.delete(
    "/v1/jobs/{job_id}",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Removed: cancelled first if it was queued or running; it and its files are gone."},
        **_NOT_FOUND,
    },
    summary="Remove a job: cancel it if unfinished, delete its input and result",
)
async def delete(manager: JobsDep, job_id: str) -> Response:
    await manager.remove(await manager.find(job_id))
    return Response(status_code=204)
