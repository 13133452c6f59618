"""One upscale, from the bytes a client sent to the bytes it gets back: the request flow both
``POST /v1/upscale`` and the jobs room call (HTTP reading and client disconnects stay in the route).

images (probe) -> noise level and model (``service.catalog.noise``, ``service.catalog.registry``) -> policy
(which rung, ``Scheduler.admit``) -> scheduler (a worker, the lane) -> engine (tiles) -> images (encode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import BinaryIO, NamedTuple

from service.catalog.cards import HEADER_SETS, SHARP_LADDER_DEGRADATION, STYLE_METRIC, expected_psnr
from service.catalog.noise import AUTO, LADDER_DEGRADATION, NoiseChoice, choose_for_probe
from service.catalog.registry import FAITHFUL, SHARP, LadderKey, ModelKey, Registry, ServedModel, ServedRung
from service.errors import ApiError
from service.inference import images
from service.inference.process import Output, TileHooks, process, process_to_file
from service.scheduling.ladder import QUALITY_SET, build_ladder
from service.scheduling.policy import EXCEEDS_TIMEOUT, QUEUE_FULL, Ask, Decision, RequestPlan, allowed
from service.scheduling.scheduler import Aborted, Scheduler
from service.settings import Settings
from service.upscaling import warmup
from service.upscaling.options import (
    LIMIT_CODES,
    SizePlan,
    UpscaleOptions,
    input_limit,
    interactive_limits,
    job_limits,
    output_size,
    plan_size,
    streamed,
)
from service.upscaling.prometheus import Metrics, rung_labels, width_label

log = logging.getLogger("csd_sr.app")


@dataclass(frozen=True)
class Upscaled:
    body: bytes  # empty for a job: its output is in the job's file
    media_type: str
    headers: dict[str, str]


class Read(NamedTuple):
    """What a request's bytes and options say, checked against the limits: the image's header, the size plan,
    the noise level and model chosen, the output format."""

    probe: images.Probe
    plan: SizePlan
    noise: NoiseChoice
    key: ModelKey
    fmt: str


@dataclass(frozen=True)
class Prepared:
    """A request checked against what the server serves: what ``Read`` holds, its ladder and the client's
    rung choice."""

    probe: images.Probe
    plan: SizePlan
    noise: NoiseChoice
    key: ModelKey
    fmt: str
    ladder: LadderKey  # the key's ladder at the output scale: ranked by its figures there
    ask: Ask
    others: bool  # whether a larger model may serve it (its rungs on the ladder, its output downscaled)

    @property
    def streamed(self) -> bool:
        """Whether a job writes the output as it goes (PNG at a native scale), never holding it whole."""
        return streamed(self.fmt, self.plan)


@dataclass
class JobRun:
    """How a job (``service.jobs``) runs in ``Upscaler.run_job``: the best rung for its own deadline on the lane
    interactive requests leave free, tile by tile, into its result file."""

    out: BinaryIO
    executor: Executor  # the jobs' own thread: interactive workers are never taken
    deadline_s: float  # what is left of the job's deadline
    check: Callable[[], None]  # before each tile: raises Aborted when cancelled or out of time
    progress: Callable[[int, int], None]  # tiles done, tiles in all
    started: Callable[[Decision, ServedRung, float], None]  # the rung chosen, why, predicted seconds (on ``executor``)


class Upscaler:
    """One upscale, from the bytes a client sent to the bytes it gets back, for ``POST /v1/upscale`` and the
    jobs room alike: the served models, the scheduler and the metrics, built once by the app factory.
    ``ready`` turns true once ``warm_up`` has measured every rung and built the ladders."""

    def __init__(self, settings: Settings, registry: Registry, scheduler: Scheduler, metrics: Metrics) -> None:
        self.settings = settings
        self.registry = registry
        self.scheduler = scheduler
        self.metrics = metrics
        self.ready = False
        self.warmup_error: str | None = None  # why the warm-up failed: /readyz and 503s say it

    async def warm_up(self) -> None:
        """Measure each rung's cost on a worker thread, build each model's ladder, then report ready."""
        loop = asyncio.get_running_loop()
        s, cost = self.settings, self.scheduler.cost
        measured: dict[tuple, ServedModel] = {}  # by architecture and rungs: what one costs, its twins cost
        try:
            for m in self.registry:
                twin = measured.setdefault((m.engine.cfg, m.engine.rungs), m)
                if twin is not m:  # e.g. x4-real is x4's network with other weights: the same multiply-adds
                    cost.copy(twin.rungs, m.rungs)
                    continue
                await loop.run_in_executor(self.scheduler.executor, warmup.warm_up, m, cost, s.png_compress_level)
        except Exception as exc:  # stay alive but unready: /readyz reports why
            self.warmup_error = f"warm-up failed: {exc!r}"
            log.exception("warm-up failed")
            return
        for key in self.registry.ladder_keys:
            reference = warmup.reference_work_pixels(self.registry[key.model].engine)
            degradation, metric = _ladder_basis(key.model)
            route = self.registry.route(key)  # its rungs, and a larger model's that serve its scale
            self.scheduler.ladders[key] = build_ladder(
                {
                    r: expected_psnr(card, r, (QUALITY_SET,), degradation, metric).get(QUALITY_SET)
                    for r, card in route.items()
                },
                {r: cost.predict(r, reference) for r in route},
                native=key.model,
            )
        self.ready = True
        self.metrics.ready.set(1)
        self._log_ready()

    def _log_ready(self) -> None:
        s, scheduler = self.settings, self.scheduler
        costs = {r.id: vars(c) for r, c in scheduler.cost.snapshot().items()}
        log.info(
            "ready",
            extra={
                "fields": {
                    "models": [m.path.name for m in self.registry],
                    "backend": s.backend,
                    "workers": s.workers,
                    "lanes": scheduler.lanes,
                    "policy": s.policy,
                    "latency_target_s": s.latency_target_s,
                    "cost": costs,
                    "ladder": {
                        k.name: [r.name_for(k.model) for r in lad.rungs] for k, lad in scheduler.ladders.items()
                    },
                    "dropped": {
                        f"{k.name}: {r.name_for(k.model)}": why
                        for k, lad in scheduler.ladders.items()
                        for r, why in lad.dropped.items()
                    },
                }
            },
        )

    def plan_job(self, req: Prepared, deadline_s: float) -> tuple[Decision, int]:
        """The rung a job of ``req`` would get now for ``deadline_s`` (chosen again when it starts) and its
        tiles; ``ApiError`` when no rung can finish it."""
        decision = self._choose_for_job(self._plan(req, deadline_s, from_deadline=True))
        rows, cols = self.registry[req.key].engine.spans(req.probe.height, req.probe.width)
        return decision, len(rows) * len(cols)

    async def upscale(self, data: bytes, opts: UpscaleOptions, log: dict, started: float) -> Upscaled:
        """Upscale ``data`` as ``opts`` say, for ``POST /v1/upscale``; raises ``ApiError`` for anything refused.
        ``log`` collects the request's log fields; ``started`` (``perf_counter``) is when the request arrived.

        Admitted by the scheduler at a rung the load allows, run on its workers; cancelling the caller abandons
        the work (a queued request is dropped, a running one stops at its next tile).
        """
        s, m = self.settings, self.metrics
        self._check_ready()
        # off the event loop: noise=auto may decode the image to measure its blur (15 ms a megapixel)
        req = await asyncio.to_thread(self.prepare, data, opts)
        _log_input(log, req, len(data))
        target_s = opts.deadline_ms / 1000 if opts.deadline_ms else s.latency_target_s
        decision, queued = self.scheduler.admit(self._plan(req, target_s, from_deadline=opts.deadline_ms is not None))
        log.update(reason=decision.reason, predicted_ms=round(1000 * decision.predicted_s, 1))
        if queued is None:
            m.rejections.labels(decision.reason).inc()
            raise self.refusal(decision, target_s)
        rung = queued.rung
        m.decisions.labels(*rung_labels(rung), decision.reason).inc()
        encoding = images.Encoding(req.fmt, opts.quality, s.png_compress_level)
        engine, out_size = self.registry[rung.model].engine, req.plan.resize_to(rung.model.scale)
        try:
            out = await self.scheduler.run(
                queued,
                lambda j: process(
                    engine, req.probe, j.rung.rung, encoding, out_size, TileHooks(j.check, j.waited_for_lane)
                ),
            )
        except Aborted as exc:  # timed out, or the server is shutting down
            m.rejections.labels(exc.reason).inc()
            retry = max(1, math.ceil(self.scheduler.load().wait_s))
            timeout = f"not finished within {s.request_timeout_s:g} s"
            detail = timeout if exc.reason == "timeout" else "server shutting down"
            raise ApiError(503, exc.reason, detail, {"Retry-After": str(retry)}) from exc
        m.queue_wait.observe(queued.queue_wait_s)
        labels = rung_labels(rung)
        m.inference.labels(*labels).observe(out.inference_s)
        m.request_duration.labels(*labels).observe(time.perf_counter() - started)
        return self._answer(req, decision, rung, out, queued.queue_wait_s, log)

    async def run_job(self, data: bytes, opts: UpscaleOptions, log: dict, job: JobRun) -> Upscaled:
        """A job's upscale (``service.jobs``): the best rung for its own deadline on the lane interactive requests
        leave free, tile by tile, into its result file (``JobRun``). Its latencies are the jobs' own
        (``csd_sr_job_duration_seconds``), never in the interactive histograms."""
        self._check_ready()
        req = await asyncio.to_thread(self.prepare_job, data, opts)
        _log_input(log, req, len(data))
        plan = self._plan(req, job.deadline_s, from_deadline=True)
        decision = self._choose_for_job(plan)
        rung = decision.rung
        assert rung is not None  # _choose_for_job refuses the rest
        log.update(reason=decision.reason, predicted_ms=round(1000 * decision.predicted_s, 1))
        out = await asyncio.get_running_loop().run_in_executor(
            job.executor, self._run_job, req, decision, job, opts, plan.pixels
        )
        return self._answer(req, decision, rung, out, 0.0, log)

    def _check_ready(self) -> None:
        if not self.ready:
            self.metrics.rejections.labels("not_ready").inc()
            raise ApiError(503, "not_ready", self.warmup_error or "warming up", {"Retry-After": "2"})

    def _plan(self, req: Prepared, target_s: float, from_deadline: bool) -> RequestPlan:
        """What admission and the decision read of ``req``: its ladder, its work (LR pixels with tile margins:
        the same for every model its ladder holds, one tile size and the body's receptive radius), its target."""
        pixels = self.registry[req.key].engine.work_pixels(req.probe.height, req.probe.width)
        fixed = ServedRung.of(req.key, self.settings.fixed_rung)
        return RequestPlan(req.ladder, pixels, target_s, req.ask, fixed, req.others, from_deadline)

    def _choose_for_job(self, plan: RequestPlan) -> Decision:
        """A job's rung for its deadline; only a rung alone past the job timeout is refused (``ApiError``)."""
        decision = self.scheduler.choose_for_job(plan, self.settings.job_timeout_s)
        if decision.rung is None:
            raise self.refusal(decision, plan.target_s)
        return decision

    def _answer(
        self, req: Prepared, decision: Decision, rung: ServedRung, out: Output, queue_wait_s: float, log: dict
    ) -> Upscaled:
        """The response headers of ``out``, served at ``rung``; the pixel counters and the log fields too."""
        m = self.metrics
        m.input_pixels.inc(req.probe.pixels)
        m.output_pixels.inc(out.out_width * out.out_height)
        wait_ms, infer_ms = round(1000 * queue_wait_s, 1), round(1000 * out.inference_s, 1)
        log.update(model=rung.model.name, width=rung.width, precision=rung.precision)
        log.update(output=f"{out.out_width}x{out.out_height}")
        log.update(format=req.fmt, bytes_out=len(out.body), queue_wait_ms=wait_ms, inference_ms=infer_ms)
        headers = {
            "X-Scale": req.plan.header(rung.model.scale),
            "X-Noise": req.noise.header
            if req.key.style == FAITHFUL
            else f"{req.noise.header}; not used by style sharp",
            "X-Style": req.key.style,
            **({"X-Sharpness": f"{req.key.sharpness:g}"} if req.key.style == SHARP else {}),
            "X-Width": width_label(rung.width),
            "X-Precision": rung.precision,
            "X-Width-Reason": decision.reason,
            "X-Queue-Wait-Ms": str(wait_ms),
            "X-Inference-Ms": str(infer_ms),
            "X-Bit-Depth": str(out.bit_depth),
        }
        psnr = _expected(self.registry.figures(rung, req.plan.factor), rung, req.noise)
        if psnr:
            headers[_expected_header(rung)] = psnr
        return Upscaled(out.body, out.media_type, headers)

    def prepare(self, data: bytes, opts: UpscaleOptions) -> Prepared:
        """Check an interactive request against the served models and the input pixels allowed at each native
        scale: 4xx ``ApiError`` for anything refused, before any pixel is decoded."""
        limit = interactive_limits(self.settings)
        read = self._read(data, opts, limit)
        return self._complete(read, opts, others=read.probe.pixels <= limit(max(self.registry.scales)))

    def prepare_job(self, data: bytes, opts: UpscaleOptions) -> Prepared:
        """``prepare`` at the job limits (a job is refused at submission): over the interactive limit only as
        PNG at a native scale, written as it goes."""
        limit = job_limits(self.settings)
        read = self._read(data, opts, limit)
        # a larger model's output is 16/9 (x4 for x3) the pixels of the model's own: only inputs within the
        # largest scale's limit may take it, and a streamed job writes the native output as it goes
        streams = streamed(read.fmt, read.plan)
        req = self._complete(read, opts, others=not streams and read.probe.pixels <= limit(max(self.registry.scales)))
        probe, plan = req.probe, req.plan
        interactive = input_limit(self.settings.max_pixels, plan.native)
        if probe.pixels > interactive and not streams:  # held whole in memory: the interactive limit holds
            raise ApiError(
                413,
                "too_many_pixels",
                f"{probe.width}x{probe.height} is over the x{plan.native} interactive limit of {interactive} pixels: "
                f"larger images are served as PNG at a native scale ({', '.join(map(str, self.registry.scales))}), "
                f"not {req.fmt} at {plan.header(plan.native)}",
            )
        return req

    def _read(self, data: bytes, opts: UpscaleOptions, limit: Callable[[int], int]) -> Read:
        """The image's header, the size asked, the noise level and model chosen, the output format: 413 past
        ``limit`` (counted as a rejection), 422 for a scale or a level not served."""
        reg = self.registry
        try:
            # the largest input any scale allows; the plan checks the one of the scale it serves
            probe = images.probe(data, max(map(limit, reg.scales)))
            factor, size = output_size(probe.width, probe.height, opts, max(reg.scales))
            levels = self._check_noise(factor, opts.noise)
            self._check_style(factor, opts.style)
            noise = choose_for_probe(opts.noise, probe, levels)
            key = reg.resolve(factor, noise.level, opts.style, 1.0 if opts.sharpness is None else opts.sharpness)
            assert key is not None  # choose_for_probe picks among the levels served at this factor, and the style
            plan = plan_size(probe.width, probe.height, factor, size, key.scale, limit)
        except ApiError as exc:
            if exc.code in LIMIT_CODES:
                self.metrics.rejections.labels(exc.code).inc()
            raise
        return Read(probe, plan, noise, key, opts.fmt or ("webp" if probe.lossless_webp else "png"))

    def _complete(self, read: Read, opts: UpscaleOptions, others: bool) -> Prepared:
        """``read`` with the client's rung choice checked against its ladder (``others``: with the larger models'
        rungs on it) and the output format against the image."""
        ladder = self.registry.ladder_key(read.key, read.plan.factor)
        ask = self._parse_ask(ladder, opts, others)
        # `quality` with format=png is accepted and ignored, as it always was when the output is PNG by default:
        # PNG is lossless, there is nothing for it to set. It used to be a 422, which the spec cannot express
        # (OpenAPI parameters are independent schemas, so no "quality only with jpeg/webp"): a request valid by
        # the spec was refused, and generated clients could not know it (found by tests/service/api/test_contract.py).
        fmt, probe = read.fmt, read.probe
        if fmt == "jpeg" and probe.has_alpha:
            raise ApiError(422, "invalid_option", "jpeg cannot carry the alpha channel; ask for png or webp")
        if max(read.plan.out_size) > images.MAX_OUTPUT_SIDE.get(fmt, math.inf):  # a thin panorama, within limits
            w, h = read.plan.out_size
            raise ApiError(
                422,
                "invalid_option",
                f"{fmt} stores at most {images.MAX_OUTPUT_SIDE[fmt]} pixels a side, and the output is {w}x{h}; "
                "ask for png",
            )
        return Prepared(*read, ladder, ask, others)

    def _run_job(
        self,
        req: Prepared,
        decision: Decision,
        job: JobRun,
        opts: UpscaleOptions,
        work_pixels: int,
    ) -> Output:
        """A job's work on its own thread: streamed when it can be, otherwise (small images) in memory."""
        rung = decision.rung
        assert rung is not None  # _choose_for_job refuses the rest
        job.started(decision, rung, decision.predicted_s)  # here: it writes to the store, off the event loop
        s, engine, out_size = self.settings, self.registry[rung.model].engine, req.plan.resize_to(rung.model.scale)
        rows, cols = engine.spans(req.probe.height, req.probe.width)
        total, done, waited, last_tile_s = len(rows) * len(cols), 0, 0.0, 0.0

        def before_tile() -> None:
            nonlocal done
            job.check()
            job.progress(done, total)
            done += 1

        @contextlib.contextmanager
        def turn() -> Iterator[None]:
            nonlocal waited, last_tile_s
            with self.scheduler.job_turn(engine.backend.lane, job.check, last_tile_s) as seconds:
                waited += seconds
                began = time.perf_counter()
                yield
                last_tile_s = time.perf_counter() - began

        start = time.perf_counter()
        if req.streamed:
            hooks = TileHooks(before_tile, tile_turn=turn)
            out = process_to_file(engine, req.probe, rung.rung, job.out, s.png_compress_level, hooks)
        else:  # within the interactive limit: it waits its turn once, then holds the lane for its tiles
            with self.scheduler.job_turn(contextlib.nullcontext, job.check) as seconds:
                waited += seconds
            encoding = images.Encoding(req.fmt, opts.quality, s.png_compress_level)
            out = process(engine, req.probe, rung.rung, encoding, out_size, TileHooks(before_tile))
            job.out.write(out.body)
        job.progress(total, total)
        own_s = time.perf_counter() - start - waited
        self.scheduler.observe_job(rung, work_pixels, own_s)
        return replace(out, body=b"", inference_s=min(out.inference_s, own_s))

    def _check_noise(self, factor: float, noise: str) -> set[str]:
        """The noise levels served at ``factor``; 422 for a level the server does not serve there."""
        levels = self.registry.noise_levels(factor)
        if noise != AUTO and noise not in levels:
            choices = ", ".join(["auto", *sorted(levels)])
            raise ApiError(422, "invalid_option", f"noise must be one of {choices} at scale {factor:g}, got {noise!r}")
        return levels

    def _check_style(self, factor: float, style: str) -> None:
        """422 for a style the server does not serve at ``factor``. A ``sharpness`` with style faithful is
        ignored, as ``quality`` with PNG is: a 422 there is a request valid by the spec refused (its parameters
        are independent schemas), which tests/service/api/test_contract.py found."""
        served = self.registry.styles(factor)
        if style not in served:
            raise ApiError(
                422,
                "invalid_option",
                f"style must be one of {', '.join(sorted(served))} at scale {factor:g}, got {style!r}",
            )

    def refusal(self, decision: Decision, target_s: float) -> ApiError:
        """The error for a request refused at admission: 422 when it can never finish in time, else 503."""
        s = self.settings
        fits = ", ".join(r.key for r in decision.fits) or "none"
        if decision.reason == EXCEEDS_TIMEOUT:
            detail = (
                f"predicted {decision.predicted_s:.1f} s ({decision.wait_s:.1f} s waiting) exceeds the "
                f"{s.request_timeout_s:g} s request timeout; rungs that fit now: {fits}"
            )
            return ApiError(422, "exceeds_timeout", detail)
        if decision.reason == QUEUE_FULL:
            detail = f"queue full ({s.max_queue} waiting, {s.workers} running); predicted wait {decision.wait_s:.1f} s"
        elif decision.predicted_s > s.request_timeout_s:
            detail = (
                f"predicted wait {decision.wait_s:.1f} s: the request would not finish within the "
                f"{s.request_timeout_s:g} s request timeout; rungs that fit now: {fits}"
            )
        else:
            detail = f"predicted wait {decision.wait_s:.1f} s: no allowed rung can finish within {target_s:g} s"
        return ApiError(503, "overloaded", detail, {"Retry-After": str(decision.retry_after_s)})

    def _parse_ask(self, ladder_key: LadderKey, opts: UpscaleOptions, others: bool) -> Ask:
        """The client's choice, checked against the request's ladder (``others``: with the larger models' rungs it
        holds): a 422 naming the ladder when nothing matches."""
        key = ladder_key.model
        widths = self.registry[key].engine.widths
        ask = Ask(
            None if opts.width == "auto" else _parse_width("width", opts.width, widths),
            None if opts.precision == "auto" else opts.precision,
            None if opts.min_width is None else _parse_width("min_width", opts.min_width, widths),
        )
        route = self.scheduler.ladder(ladder_key)
        ladder, fixed = (route if others else route.own).rungs, self.settings.fixed_rung
        if allowed(ladder, ask, ServedRung.of(key, fixed)):
            return ask
        asked = f"width={opts.width}, precision={opts.precision}"
        asked += "" if opts.min_width is None else f", min_width={opts.min_width}"
        if ask.width is None and fixed is not None:
            detail = f"this server serves {fixed.key} to width=auto (policy {self.settings.policy}), not {asked}"
        else:
            names = ", ".join(r.name_for(key) for r in ladder)
            detail = f"no rung on the {ladder_key.name} ladder matches {asked}; the ladder: {names}"
        raise ApiError(422, "invalid_option", detail)


def _log_input(log: dict, req: Prepared, bytes_in: int) -> None:
    probe = req.probe
    log.update(input=f"{probe.width}x{probe.height}", input_format=probe.format, bytes_in=bytes_in)
    log.update(model=req.key.name, noise=req.noise.header)
    if probe.reduced_16bit:
        log["input_bits"] = 16  # decoded at 8 bits per channel (see service.inference.images)


def _ladder_basis(key: ModelKey) -> tuple[str, str]:
    """The degradation and the card figure that rank ``key``'s rungs: a faithful level's own inputs and PSNR to
    the HR; for a sharp model typical web photos and sharpness (``STYLE_METRIC``)."""
    if key.style == SHARP:
        return SHARP_LADDER_DEGRADATION, STYLE_METRIC[SHARP]
    return LADDER_DEGRADATION.get(key.noise, "clean"), STYLE_METRIC[FAITHFUL]


def _expected_header(rung: ServedRung) -> str:
    """``X-Expected-PSNR`` for a faithful rung, ``X-Expected-Sharpness`` (its metric's name) for a sharp one."""
    return "X-Expected-Sharpness" if rung.model.style == SHARP else "X-Expected-PSNR"


def _expected(card: dict, rung: ServedRung, noise: NoiseChoice) -> str | None:
    """``X-Expected-PSNR``: the card's figures at the degradation nearest the input, e.g.
    ``jpeg75: Set5=29.10; Set14=26.40`` (clean inputs: no prefix, as before); a sharp rung's sharpness (%)."""
    psnr = expected_psnr(card, rung.rung, HEADER_SETS, noise.degradation, STYLE_METRIC[rung.model.style])
    if not psnr:
        return None
    values = "; ".join(f"{name}={value:.2f}" for name, value in psnr.items())
    return values if noise.degradation == "clean" else f"{noise.degradation}: {values}"


def _parse_width(name: str, text: str, widths: tuple[float, ...]) -> float:
    """One of ``widths``, or 422."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    for w in widths:
        if w == value:  # exact: the spec lists the model's widths, so 1.0000000000000002 is not one of them
            return w
    choices = ", ".join(width_label(w) for w in widths)
    auto = "'auto' or " if name == "width" else ""
    raise ApiError(422, "invalid_option", f"{name} must be {auto}one of {choices}, got {text!r}")
