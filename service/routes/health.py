"""Liveness, readiness and the Prometheus scrape endpoint (no API key: infrastructure calls them)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.errors import ApiError
from service.state import get_state

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: model loaded and warmed up", responses={503: {"description": "not ready"}})
async def readyz(request: Request) -> dict[str, str]:
    svc = get_state(request)
    if not svc.ready:
        raise ApiError(503, "not_ready", svc.warmup_error or "warming up", {"Retry-After": "1"})
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
