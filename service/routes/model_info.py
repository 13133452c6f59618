"""``GET /v1/model``: the model card plus live state (cost per width, load, current policy decision)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from model.edsr import count_macs, count_params
from service.auth import require_api_key
from service.errors import ErrorBody
from service.hardware import cpu_info
from service.metrics import width_label
from service.state import ServiceState, get_state

router = APIRouter(tags=["model"], dependencies=[Depends(require_api_key)])

REFERENCE_SIDE = 256  # the current decision is shown for a REFERENCE_SIDE^2 LR input


class Cost(BaseModel):
    overhead_s: float
    s_per_megapixel: float


class WidthInfo(BaseModel):
    width: float
    channels: int
    params: int
    macs_per_lr_megapixel: int
    quality: dict[str, dict[str, float]]  # eval set -> {"psnr": .., "ssim": ..}, from the model card
    cost: Cost | None  # None until warm-up has measured it


class PolicyState(BaseModel):
    mode: str
    latency_target_s: float
    workers: int
    lanes: int  # requests whose tiles run at once (openvino: 1, over all its threads)
    max_queue: int
    queued: int
    running: int
    predicted_wait_s: float
    reference_input: str
    width: float | None
    reason: str
    predicted_s: float


class ModelInfo(BaseModel):
    ready: bool
    weights: str
    weights_sha256: str
    scale: int
    widths: list[float]
    tile_size: int
    tile_overlap: int
    runtime: dict[str, object]  # backend, version, threads, precision in use; the CPU and its features
    max_pixels: int
    max_body_bytes: int
    per_width: list[WidthInfo]
    policy: PolicyState | None  # None until warm-up has measured the costs
    card: dict


_RESPONSES: dict = {
    401: {
        "model": ErrorBody,
        "description": "unauthorized: missing or wrong API key (only when the server has one).",
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    },
    500: {"model": ErrorBody, "description": "internal_error: a bug (logged by the server)."},
}


@router.get(
    "/v1/model",
    response_model=ModelInfo,
    responses=_RESPONSES,
    summary="Model card, cost per width and current policy",
)
async def model_info(request: Request) -> ModelInfo:
    svc = get_state(request)
    cfg, costs = svc.engine.cfg, svc.scheduler.cost.snapshot()
    per_width = [
        WidthInfo(
            width=w,
            channels=cfg.channels(w),
            params=count_params(cfg, w),
            macs_per_lr_megapixel=count_macs(cfg, w, (1000, 1000)),
            quality=_quality(svc.card, width_label(w)),
            cost=Cost(**vars(costs[w])) if w in costs else None,
        )
        for w in svc.engine.widths
    ]
    return ModelInfo(
        ready=svc.ready,
        weights=svc.weights_name,
        weights_sha256=svc.weights_sha256,
        scale=svc.engine.scale,
        widths=list(svc.engine.widths),
        tile_size=svc.engine.tile_size,
        tile_overlap=svc.engine.margin,
        runtime={**svc.engine.backend.describe(), "cpu": cpu_info()},
        max_pixels=svc.settings.max_pixels,
        max_body_bytes=svc.settings.max_body_bytes,
        per_width=per_width,
        policy=_policy(svc) if svc.scheduler.cost.ready else None,
        card=svc.card,
    )


def _quality(card: dict, width_key: str) -> dict[str, dict[str, float]]:
    """PSNR/SSIM at one width per eval set, from ``card["metrics"][set][width_key]`` (``csd-sr evaluate``)."""
    out = {}
    for name, rows in (card.get("metrics") or {}).items():
        row = rows.get(width_key) if isinstance(rows, dict) else None
        if isinstance(row, dict):
            out[name] = {k: float(row[k]) for k in ("psnr", "ssim") if k in row}
    return out


def _policy(svc: ServiceState) -> PolicyState:
    s, load = svc.settings, svc.scheduler.load()
    pixels = svc.engine.work_pixels(REFERENCE_SIDE, REFERENCE_SIDE)
    decision, _ = svc.scheduler.admit(pixels, target_s=s.latency_target_s, fixed=s.fixed_width, enqueue=False)
    return PolicyState(
        mode=s.policy,
        latency_target_s=s.latency_target_s,
        workers=s.workers,
        lanes=svc.scheduler.lanes,
        max_queue=s.max_queue,
        queued=load.queued,
        running=load.running,
        predicted_wait_s=load.wait_s,
        reference_input=f"{REFERENCE_SIDE}x{REFERENCE_SIDE}",
        width=decision.width,
        reason=decision.reason,
        predicted_s=decision.predicted_s,
    )
