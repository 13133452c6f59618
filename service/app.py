"""The app factory: ``uvicorn --factory service.app:create_app`` or ``csd-sr serve``.

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

from service import errors, logs, openapi, pipeline
from service.hardware import cpu_info
from service.jobs.manager import JobManager
from service.jobs.redis_store import RedisJobStore
from service.jobs.store import JobStore
from service.ladder import QUALITY_SET, build_ladder, expected_psnr
from service.metrics import Metrics, width_label
from service.middleware import RequestContextMiddleware
from service.noise import LADDER_DEGRADATION
from service.policy import CostModel
from service.registry import LadderKey, ServedModel, build_registry
from service.routes import health, jobs, model_info, upscale, web
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
        jobs = asyncio.create_task(svc.jobs.run_forever())
        try:
            yield
        finally:
            warmup.cancel()
            svc.jobs.stop()
            jobs.cancel()
            svc.scheduler.shutdown()

    app = FastAPI(
        title="csd-sr",
        version=_package_version(),
        summary="Load-adaptive super-resolution with width-switchable EDSR models "
        f"({', '.join(m.key.name for m in svc.registry)}).",
        lifespan=lifespan,
        docs_url=None,  # served by service.routes.web from shipped files: FastAPI's loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.service = svc
    errors.install(app)
    openapi.install(app)  # the spec says what the server enforces, errors included
    app.add_middleware(RequestContextMiddleware, metrics=svc.metrics)
    for module in (upscale, jobs, model_info, health, web):
        app.include_router(module.router)
    app.mount(web.STATIC_URL, web.static_files(), name="static")
    return app


def _build_state(settings: Settings) -> ServiceState:
    registry = build_registry(settings)
    fixed = settings.fixed_rung
    for m in registry:
        if fixed is not None and fixed not in m.engine.rungs:
            keys = [r.key for r in m.engine.rungs]
            raise ValueError(f"policy {settings.policy}: not a rung model {m.key.name} runs {keys}")
        log.info("backend", extra={"fields": {"model": m.key.name, "cpu": cpu_info(), **m.engine.backend.describe()}})
    default = registry[registry.default]
    cost = CostModel(registry.rungs, settings.cost_ewma_alpha, pipeline.REFERENCE_PIXELS)
    scheduler = Scheduler(
        cost,
        workers=settings.workers,
        lanes=default.engine.backend.lanes,
        max_queue=settings.max_queue,
        timeout_s=settings.request_timeout_s,
        planning_fraction=settings.planning_fraction,
        max_lane_price=math.inf if settings.max_lane_price is None else settings.max_lane_price,
        init_worker=default.engine.backend.init_worker,
    )
    metrics = Metrics(registry.rungs, settings.latency_target_s)
    reference = pipeline.reference_work_pixels(default.engine)
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
    svc = ServiceState(settings, registry, scheduler, metrics)
    # with Redis, replicas share the jobs' state; their files stay in jobs_dir, which they share too (a volume)
    redis_url = settings.redis_url
    store = RedisJobStore(redis_url.get_secret_value(), settings.jobs_dir) if redis_url else JobStore(settings.jobs_dir)
    svc.jobs = JobManager(svc, store)
    metrics.bind_jobs(svc.jobs.store)
    return svc


async def _warm_up(svc: ServiceState) -> None:
    """Measure each rung's cost on a worker thread, build each model's ladder, then report ready."""
    loop = asyncio.get_running_loop()
    s, cost = svc.settings, svc.scheduler.cost
    measured: dict[tuple, ServedModel] = {}  # by architecture and rungs: what one costs, its twins cost
    try:
        for m in svc.registry:
            twin = measured.setdefault((m.engine.cfg, m.engine.rungs), m)
            if twin is not m:  # e.g. x4-real is x4's network with other weights: the same multiply-adds
                cost.copy(twin.rungs, m.rungs)
                continue
            await loop.run_in_executor(svc.scheduler.executor, pipeline.warm_up, m, cost, s.png_compress_level)
    except Exception as exc:  # stay alive but unready: /readyz reports why
        svc.warmup_error = f"warm-up failed: {exc!r}"
        log.exception("warm-up failed")
        return
    for key in svc.registry.ladder_keys:
        reference = pipeline.reference_work_pixels(svc.registry[key.model].engine)
        degradation = LADDER_DEGRADATION.get(key.model.noise, "clean")
        route = svc.registry.route(key)  # its rungs, and a larger model's that serve its scale
        svc.scheduler.ladders[key] = build_ladder(
            {r: expected_psnr(card, r, (QUALITY_SET,), degradation).get(QUALITY_SET) for r, card in route.items()},
            {r: cost.predict(r, reference) for r in route},
            native=key.model,
        )
    svc.ready = True
    svc.metrics.ready.set(1)
    costs = {r.id: vars(c) for r, c in cost.snapshot().items()}
    log.info(
        "ready",
        extra={
            "fields": {
                "models": [m.path.name for m in svc.registry],
                "backend": s.backend,
                "workers": s.workers,
                "lanes": svc.scheduler.lanes,
                "policy": s.policy,
                "latency_target_s": s.latency_target_s,
                "cost": costs,
                "ladder": {
                    k.name: [r.name_for(k.model) for r in lad.rungs] for k, lad in svc.scheduler.ladders.items()
                },
                "dropped": {
                    f"{k.name}: {r.name_for(k.model)}": why
                    for k, lad in svc.scheduler.ladders.items()
                    for r, why in lad.dropped.items()
                },
            }
        },
    )


def _package_version() -> str:
    try:
        return version("csd-sr")
    except PackageNotFoundError:
        return "0+unknown"
