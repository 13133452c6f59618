"""``GET /v1/model``: the model card plus live state (the ladder, cost per rung, load, current policy decision)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from model.edsr import count_macs, count_params
from model.rungs import Rung
from service.auth import require_api_key
from service.errors import ErrorBody
from service.hardware import cpu_info
from service.ladder import card_quality
from service.pipeline import REFERENCE_SIDE, reference_work_pixels
from service.policy import RungCost
from service.state import ServiceState, get_state

router = APIRouter(tags=["model"], dependencies=[Depends(require_api_key)])


class Cost(BaseModel):
    overhead_s: float
    s_per_megapixel: float


class WidthInfo(BaseModel):
    width: float
    channels: int
    params: int
    macs_per_lr_megapixel: int
    quality: dict[str, dict[str, float]]  # eval set -> {"psnr": .., "ssim": ..} of its fp32 rung, from the card
    cost: Cost | None  # of its fp32 rung; None until warm-up has measured it (or without an fp32 rung)


class RungInfo(BaseModel):
    key: str  # "0.5" (fp32) or "0.5-int8": as in the card, the fixed: policy and the metrics
    width: float
    precision: str
    quality: dict[str, dict[str, float]]  # eval set -> {"psnr": .., "ssim": ..}, from the model card
    cost: Cost | None  # None until warm-up has measured it
    in_ladder: bool  # served by auto; false before warm-up has built the ladder
    dropped: str | None  # why it is not on the ladder (None while on it, or before warm-up)


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
    rung: str | None  # the rung's key; None: refused (reason says why)
    width: float | None
    precision: str | None
    reason: str
    predicted_s: float
    # Expected Set5 dB a lane-second costs now (0: idle or every request may have its best rung);
    # None: past capacity, the cheapest rung is served (the price is infinite).
    lane_price: float | None
    max_lane_price: float | None  # CSD_SR_MAX_LANE_PRICE; None: no limit


class ModelInfo(BaseModel):
    ready: bool
    weights: str
    weights_sha256: str
    scale: int
    widths: list[float]
    ladder: list[str]  # the rungs auto serves, best expected quality first (empty before warm-up)
    tile_size: int
    tile_overlap: int
    runtime: dict[str, object]  # backend, version, threads, precision in use; the CPU and its features
    max_pixels: int
    max_body_bytes: int
    per_width: list[WidthInfo]
    rungs: list[RungInfo]  # every rung the backend runs
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
    summary="Model card, the ladder of rungs with their cost, and the current policy",
)
async def model_info(request: Request) -> ModelInfo:
    svc = get_state(request)
    cfg, costs, ladder = svc.engine.cfg, svc.scheduler.cost.snapshot(), svc.scheduler.ladder
    per_width = [
        WidthInfo(
            width=w,
            channels=cfg.channels(w),
            params=count_params(cfg, w),
            macs_per_lr_megapixel=count_macs(cfg, w, (1000, 1000)),
            quality=card_quality(svc.card, Rung(w)),
            cost=_cost(costs.get(Rung(w))),
        )
        for w in svc.engine.widths
    ]
    rungs = [
        RungInfo(
            key=r.key,
            width=r.width,
            precision=r.precision,
            quality=card_quality(svc.card, r),
            cost=_cost(costs.get(r)),
            in_ladder=r in ladder.rungs,
            dropped=ladder.dropped.get(r),
        )
        for r in svc.engine.rungs
    ]
    return ModelInfo(
        ready=svc.ready,
        weights=svc.weights_name,
        weights_sha256=svc.weights_sha256,
        scale=svc.engine.scale,
        widths=list(svc.engine.widths),
        ladder=[r.key for r in ladder.rungs],
        tile_size=svc.engine.tile_size,
        tile_overlap=svc.engine.margin,
        runtime={**svc.engine.backend.describe(), "cpu": cpu_info()},
        max_pixels=svc.settings.max_pixels,
        max_body_bytes=svc.settings.max_body_bytes,
        per_width=per_width,
        rungs=rungs,
        policy=_policy(svc) if svc.ready else None,
        card=svc.card,
    )


def _cost(cost: RungCost | None) -> Cost | None:
    return None if cost is None else Cost(**vars(cost))


def _policy(svc: ServiceState) -> PolicyState:
    s, load = svc.settings, svc.scheduler.load()
    pixels = reference_work_pixels(svc.engine)
    decision, _ = svc.scheduler.admit(pixels, target_s=s.latency_target_s, fixed=s.fixed_rung, enqueue=False)
    rung = decision.rung
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
        rung=None if rung is None else rung.key,
        width=None if rung is None else rung.width,
        precision=None if rung is None else rung.precision,
        reason=decision.reason,
        predicted_s=decision.predicted_s,
        lane_price=_finite(svc.scheduler.lane_price(pixels, s.latency_target_s)),
        max_lane_price=s.max_lane_price,
    )


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x
