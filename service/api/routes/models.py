"""``GET /v1/models`` (every served model) and ``GET /v1/model`` (the default one): each model's card plus
live state (its ladder, cost per rung, load, current policy decision)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from model.edsr import count_macs, count_params
from model.rungs import Rung
from service.api.auth import require_api_key
from service.api.deps import UpscalerDep
from service.api.errors import ErrorBody
from service.catalog.cards import card_quality
from service.catalog.registry import SHARP, LadderKey, ServedModel, ServedRung
from service.inference.hardware import cpu_info
from service.scheduling.policy import RequestPlan, RungCost
from service.upscaling.upscaler import Upscaler
from service.upscaling.warmup import REFERENCE_SIDE, reference_work_pixels

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
    name: str  # the model key: x4, x4-real, x2, x4-sharp, x4-sharp-0.5 (scale, and noise level when not none,
    # or style and sharpness step)
    noise: str  # the noise level it serves: none (clean bicubic LR) or e.g. real; none for a sharp model
    style: str  # faithful (fidelity to the original) or sharp (distilled from a GAN teacher: every input)
    sharpness: float | None  # style sharp: its step (1: the distilled model; below: interpolated with x4-real)
    weights: str
    weights_sha256: str
    scale: int
    widths: list[float]
    ladder: list[str]  # the rungs auto serves, best expected quality first (empty before warm-up); a larger
    # model's rung that serves this scale by a downscale is named with it, e.g. x4/0.25
    ladders: dict[str, list[str]]  # per output scale it serves ("4", and "2" for x4-real without an x2-real
    # model): the ladder ranked by its card's figures at that scale; ladders[str(scale)] is ``ladder``
    tile_size: int
    tile_overlap: int
    runtime: dict[str, object]  # backend, version, threads, precision in use; the CPU and its features
    max_pixels: int
    max_body_bytes: int
    max_job_pixels: int
    max_job_output_pixels: int
    max_job_body_bytes: int
    per_width: list[WidthInfo]
    rungs: list[RungInfo]  # every rung the backend runs
    policy: PolicyState | None  # None until warm-up has measured the costs
    card: dict


class ModelsInfo(BaseModel):
    default: str  # the model of a request without scale and noise (noise=auto picks by the file)
    scales: list[int]
    noise_levels: dict[str, list[str]]  # per scale: its models' and the larger ones' (served with a downscale)
    styles: dict[str, list[str]]  # per scale: the styles served (faithful; sharp where a sharp model reaches it)
    sharpness_steps: dict[str, list[float]]  # per scale: the sharpness steps of style sharp served there
    models: list[ModelInfo]


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
    summary="The default model's card, the ladder of rungs with their cost, and the current policy",
)
async def model_info(upscaler: UpscalerDep) -> ModelInfo:
    return _info(upscaler, upscaler.registry[upscaler.registry.default])


@router.get(
    "/v1/models",
    response_model=ModelsInfo,
    responses=_RESPONSES,
    summary="Every served model (scale x noise level): card, ladder, rung costs and the current policy",
)
async def models_info(upscaler: UpscalerDep) -> ModelsInfo:
    reg = upscaler.registry
    return ModelsInfo(
        default=reg.default.name,
        scales=list(reg.scales),
        noise_levels={str(s): sorted(reg.noise_levels(s)) for s in reg.scales},
        styles={str(s): sorted(reg.styles(s)) for s in reg.scales},
        sharpness_steps={str(s): reg.sharpness_steps(s) for s in reg.scales},
        models=[_info(upscaler, m) for m in reg],
    )


def _info(upscaler: Upscaler, m: ServedModel) -> ModelInfo:
    scheduler = upscaler.scheduler
    cfg, costs, ladder = m.engine.cfg, scheduler.cost.snapshot(), scheduler.ladder(LadderKey.of(m.key))
    ladders = {str(k.scale): scheduler.ladder(k) for k in upscaler.registry.ladder_keys if k.model == m.key}
    per_width = [
        WidthInfo(
            width=w,
            channels=cfg.channels(w),
            params=count_params(cfg, w),
            macs_per_lr_megapixel=count_macs(cfg, w, (1000, 1000)),
            quality=card_quality(m.card, Rung(w)),
            cost=_cost(costs.get(ServedRung(m.key, w))),
        )
        for w in m.engine.widths
    ]
    rungs = [
        RungInfo(
            key=r.key,
            width=r.width,
            precision=r.precision,
            quality=card_quality(m.card, r.rung),
            cost=_cost(costs.get(r)),
            in_ladder=r in ladder.rungs,
            dropped=ladder.dropped.get(r),
        )
        for r in m.rungs
    ]
    return ModelInfo(
        ready=upscaler.ready,
        name=m.key.name,
        noise=m.key.noise,
        style=m.key.style,
        sharpness=m.key.sharpness if m.key.style == SHARP else None,
        weights=m.path.name,
        weights_sha256=m.sha256,
        scale=m.engine.scale,
        widths=list(m.engine.widths),
        ladder=[r.name_for(m.key) for r in ladder.rungs],
        ladders={s: [r.name_for(m.key) for r in lad.rungs] for s, lad in ladders.items()},
        tile_size=m.engine.tile_size,
        tile_overlap=m.engine.margin,
        runtime={**m.engine.backend.describe(), "cpu": cpu_info()},
        max_pixels=upscaler.settings.max_pixels,
        max_body_bytes=upscaler.settings.max_body_bytes,
        max_job_pixels=upscaler.settings.max_job_pixels,
        max_job_output_pixels=upscaler.settings.max_job_output_pixels,
        max_job_body_bytes=upscaler.settings.max_job_body_bytes,
        per_width=per_width,
        rungs=rungs,
        policy=_policy(upscaler, m) if upscaler.ready else None,
        card=m.card,
    )


def _cost(cost: RungCost | None) -> Cost | None:
    return None if cost is None else Cost(**vars(cost))


def _policy(upscaler: Upscaler, m: ServedModel) -> PolicyState:
    s, load = upscaler.settings, upscaler.scheduler.load()
    pixels = reference_work_pixels(m.engine)
    fixed = ServedRung.of(m.key, s.fixed_rung)
    ladder = LadderKey.of(m.key)
    decision = upscaler.scheduler.preview(RequestPlan(ladder, pixels, s.latency_target_s, fixed=fixed))
    rung = decision.rung
    return PolicyState(
        mode=s.policy,
        latency_target_s=s.latency_target_s,
        workers=s.workers,
        lanes=upscaler.scheduler.lanes,
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
        lane_price=_finite(upscaler.scheduler.lane_price(ladder, pixels, s.latency_target_s)),
        max_lane_price=s.max_lane_price,
    )


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x
