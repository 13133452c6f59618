"""The app factory: ``uvicorn --factory service.app:create_app`` or ``csd-sr serve``.

The model is loaded when the app is created (a missing or bad weights file stops
start-up with a clear error); the warm-up runs in the background after start-up
so ``/healthz`` answers at once and ``/readyz`` turns 200 once costs are measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI

from model.weights import load_weights
from service import errors, logs, openapi, pipeline
from service.engine import build_engine
from service.hardware import cpu_info
from service.ladder import QUALITY_SET, build_ladder, expected_psnr
from service.metrics import Metrics, width_label
from service.middleware import RequestContextMiddleware
from service.policy import CostModel
from service.routes import health, model_info, upscale, web
from service.scheduler import Scheduler
from service.settings import Settings
from service.state import ServiceState

log = logging.getLogger("csd_sr.app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logs.setup(settings.log_level)
    svc = _build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warmup = asyncio.create_task(_warm_up(svc))
        try:
            yield
        finally:
            warmup.cancel()
            svc.scheduler.shutdown()

    app = FastAPI(
        title="csd-sr",
        version=_package_version(),
        summary=f"Load-adaptive x{svc.engine.scale} super-resolution with one width-switchable EDSR.",
        lifespan=lifespan,
        docs_url=None,  # served by service.routes.web from shipped files: FastAPI's loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.service = svc
    errors.install(app)
    openapi.install(app)  # the spec says what the server enforces, errors included
    app.add_middleware(RequestContextMiddleware, metrics=svc.metrics)
    for module in (upscale, model_info, health, web):
        app.include_router(module.router)
    app.mount(web.STATIC_URL, web.static_files(), name="static")
    return app


def _build_state(settings: Settings) -> ServiceState:
    path = Path(settings.weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path} (set CSD_SR_WEIGHTS or --weights to a .safetensors file from "
            "`csd-sr export`)"
        )
    model, card = load_weights(path)
    engine = build_engine(model, settings)
    fixed = settings.fixed_rung
    if fixed is not None and fixed not in engine.rungs:
        keys = [r.key for r in engine.rungs]
        raise ValueError(f"policy {settings.policy}: not a rung this server runs {keys}")
    backend = engine.backend
    log.info("backend", extra={"fields": {"cpu": cpu_info(), **backend.describe()}})
    cost = CostModel(engine.rungs, settings.cost_ewma_alpha, pipeline.REFERENCE_PIXELS)
    scheduler = Scheduler(
        cost,
        workers=settings.workers,
        lanes=backend.lanes,
        max_queue=settings.max_queue,
        timeout_s=settings.request_timeout_s,
        planning_fraction=settings.planning_fraction,
        max_lane_price=math.inf if settings.max_lane_price is None else settings.max_lane_price,
        init_worker=backend.init_worker,
    )
    metrics = Metrics(engine.rungs, settings.latency_target_s)
    metrics.bind(scheduler, cost, pipeline.reference_work_pixels(engine), settings.latency_target_s)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = model.cfg
    metrics.model.info(
        {
            "version": sha[:12],
            "weights": path.name,
            "scale": str(cfg.scale),
            "widths": ",".join(width_label(w) for w in engine.widths),
            "rungs": ",".join(r.key for r in engine.rungs),
            "n_resblocks": str(cfg.n_resblocks),
            "n_feats": str(cfg.n_feats),
            "service_version": _package_version(),
        }
    )
    return ServiceState(settings, engine, card, sha, scheduler, metrics)


async def _warm_up(svc: ServiceState) -> None:
    """Measure each rung's cost on a worker thread, build the ladder, then report ready."""
    loop = asyncio.get_running_loop()
    s, engine, cost = svc.settings, svc.engine, svc.scheduler.cost
    try:
        await loop.run_in_executor(svc.scheduler.executor, pipeline.warm_up, engine, cost, s.png_compress_level)
    except Exception as exc:  # stay alive but unready: /readyz reports why
        svc.warmup_error = f"warm-up failed: {exc!r}"
        log.exception("warm-up failed")
        return
    reference = pipeline.reference_work_pixels(engine)
    ladder = build_ladder(
        {r: expected_psnr(svc.card, r, (QUALITY_SET,)).get(QUALITY_SET) for r in engine.rungs},
        {r: cost.predict(r, reference) for r in engine.rungs},
    )
    svc.scheduler.ladder = ladder
    svc.ready = True
    svc.metrics.ready.set(1)
    costs = {r.key: vars(c) for r, c in cost.snapshot().items()}
    log.info(
        "ready",
        extra={
            "fields": {
                "weights": svc.weights_name,
                "backend": s.backend,
                "workers": s.workers,
                "lanes": svc.scheduler.lanes,
                "policy": s.policy,
                "latency_target_s": s.latency_target_s,
                "cost": costs,
                "ladder": [r.key for r in ladder.rungs],
                "dropped": {r.key: why for r, why in ladder.dropped.items()},
            }
        },
    )


def _package_version() -> str:
    try:
        return version("csd-sr")
    except PackageNotFoundError:
        return "0+unknown"
