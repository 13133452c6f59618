"""Liveness, readiness and the Prometheus scrape endpoint (no API key: infrastructure calls them)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep, UpscalerDep
from service.api.errors import ErrorBody
from service.errors import ApiError

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


_NOT_READY = {
    "model": ErrorBody,
    "description": "not_ready: warming up, or the warm-up failed (the detail says why).",
    "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
}


@router.get("/readyz", summary="Readiness: model loaded and warmed up", responses={503: _NOT_READY})
async def readyz(upscaler: UpscalerDep) -> dict[str, str]:
    if not upscaler.ready:
        raise ApiError(503, "not_ready", upscaler.warmup_error or "warming up", {"Retry-After": "1"})
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    # on a thread: the jobs' gauges read the jobs' store
    return Response(await asyncio.to_thread(metrics.render), media_type=CONTENT_TYPE_LATEST)
