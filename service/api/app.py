"""The app factory: ``uvicorn --factory service.api.app:create_app`` or ``csd-sr serve``.

The models are loaded when the app is created (a missing or bad weights file stops
start-up with a clear error); the warm-up runs in the background after start-up
so ``/healthz`` answers at once and ``/readyz`` turns 200 once costs are measured.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from service.api import errors, logs, openapi
from service.api.middleware import RequestContextMiddleware
from service.api.routes import health, models, upscale, web
from service.api.routes import jobs as jobs_routes
from service.catalog.registry import LadderKey, build_registry
from service.inference.hardware import cpu_info
from service.jobs.base import JobStore
from service.jobs.manager import JobManager
from service.jobs.redis_store import RedisJobStore
from service.jobs.store import SqliteJobStore
from service.scheduling.policy import CostModel
from service.scheduling.scheduler import Limits, Scheduler
from service.settings import Settings
from service.upscaling import warmup
from service.upscaling.prometheus import Metrics, width_label
from service.upscaling.upscaler import Upscaler

log = logging.getLogger("csd_sr.app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logs.setup(settings.log_level)
    upscaler = _build_upscaler(settings)
    # with Redis, replicas share the jobs' state; their files stay in jobs_dir, which they share too (a volume)
    url, folder = settings.redis_url, settings.jobs_dir
    store: JobStore = (
        RedisJobStore(url.get_secret_value(), folder, settings.redis_prefix) if url else SqliteJobStore(folder)
    )
    jobs = JobManager(upscaler, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warmup = asyncio.create_task(upscaler.warm_up())
        running = asyncio.create_task(jobs.run_forever())
        try:
            yield
        finally:
            warmup.cancel()
            jobs.stop()
            running.cancel()
            upscaler.scheduler.shutdown()

    app = FastAPI(
        title="csd-sr",
        version=_package_version(),
        summary="Load-adaptive super-resolution with width-switchable EDSR models "
        f"({', '.join(m.key.name for m in upscaler.registry)}).",
        lifespan=lifespan,
        docs_url=None,  # served by service.api.routes.web from shipped files: FastAPI's loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.upscaler = upscaler  # what service.api.deps hands the routes
    app.state.jobs = jobs
    errors.install(app)
    openapi.install(app, upscaler.registry)  # the spec says what the server enforces, errors included
    app.add_middleware(RequestContextMiddleware, metrics=upscaler.metrics)
    for module in (upscale, jobs_routes, models, health, web):
        app.include_router(module.router)
    app.mount(web.STATIC_URL, web.static_files(), name="static")
    return app


def _build_upscaler(settings: Settings) -> Upscaler:
    """The served models, the scheduler over their rungs and the metrics that watch both."""
    registry = build_registry(settings)
    fixed = settings.fixed_rung
    for m in registry:
        if fixed is not None and fixed not in m.engine.rungs:
            keys = [r.key for r in m.engine.rungs]
            raise ValueError(f"policy {settings.policy}: not a rung model {m.key.name} runs {keys}")
        log.info("backend", extra={"fields": {"model": m.key.name, "cpu": cpu_info(), **m.engine.backend.describe()}})
    default = registry[registry.default]
    cost = CostModel(registry.rungs, settings.cost_ewma_alpha, warmup.REFERENCE_PIXELS)
    limits = Limits(
        workers=settings.workers,
        lanes=default.engine.backend.lanes,
        max_queue=settings.max_queue,
        timeout_s=settings.request_timeout_s,
        planning_fraction=settings.planning_fraction,
        max_lane_price=math.inf if settings.max_lane_price is None else settings.max_lane_price,
    )
    scheduler = Scheduler(cost, limits, init_worker=default.engine.backend.init_worker)
    metrics = Metrics(registry.rungs, settings.latency_target_s)
    reference = warmup.reference_work_pixels(default.engine)
    metrics.bind(scheduler, cost, LadderKey.of(registry.default), reference, settings.latency_target_s)
    cfg = default.engine.cfg
    metrics.model.info(
        {
            "version": default.sha256[:12],
            "weights": default.path.name,
            "models": ",".join(m.key.name for m in registry),
            "scale": str(cfg.scale),
            "widths": ",".join(width_label(w) for w in default.engine.widths),
            "rungs": ",".join(r.id for r in registry.rungs),
            "n_resblocks": str(cfg.n_resblocks),
            "n_feats": str(cfg.n_feats),
            "service_version": _package_version(),
        }
    )
    return Upscaler(settings, registry, scheduler, metrics)


def _package_version() -> str:
    try:
        return version("csd-sr")
    except PackageNotFoundError:
        return "0+unknown"
