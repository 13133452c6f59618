"""One upscale, from the bytes a client sent to the bytes it gets back: the request flow both
``POST /v1/upscale`` and the jobs room call (HTTP reading and client disconnects stay in the route).

images (probe) -> noise level and model (``service.noise``, ``service.registry``) -> policy
(which rung, ``Scheduler.admit``) -> scheduler (a worker, the lane) -> engine (tiles) -> images (encode).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from service import images, pipeline
from service.errors import ApiError
from service.ladder import HEADER_SETS, expected_psnr
from service.metrics import rung_labels, width_label
from service.noise import AUTO, NoiseChoice, choose_for_probe
from service.policy import EXCEEDS_TIMEOUT, QUEUE_FULL, Ask, Decision, allowed
from service.registry import ModelKey, ServedRung
from service.scheduler import JobAborted
from service.settings import Settings
from service.state import ServiceState

LIMIT_CODES = ("body_too_large", "too_many_pixels")


@dataclass(frozen=True)
class UpscaleOptions:
    """What a client may ask of one upscale (the query parameters of ``/v1/upscale``)."""

    scale: float = 4.0  # a native scale, or any factor in (1, max native]: the next native scale up + downscale
    noise: str = AUTO
    width: str = "auto"
    precision: str = "auto"
    min_width: str | None = None
    fmt: str | None = None
    quality: int | None = None
    deadline_ms: int | None = None


@dataclass(frozen=True)
class Upscaled:
    body: bytes
    media_type: str
    headers: dict[str, str]


async def upscale(svc: ServiceState, data: bytes, opts: UpscaleOptions, log: dict, started: float) -> Upscaled:
    """Upscale ``data`` as ``opts`` say; raises ``ApiError`` for anything refused. ``log`` collects the
    request's log fields; ``started`` (``perf_counter``) is when the request arrived.

    Cancelling the caller abandons the work (a queued job is dropped, a running one stops at its next tile).
    """
    s, m = svc.settings, svc.metrics
    if not svc.ready:
        m.rejections.labels("not_ready").inc()
        raise ApiError(503, "not_ready", svc.warmup_error or "warming up", {"Retry-After": "2"})
    scales = svc.registry.scales
    try:
        # the largest input any scale allows; the plan checks the one of the scale it serves
        probe = images.probe(data, input_limit(s.max_pixels, scales[0]))
        plan = plan_size(probe.width, probe.height, opts, scales, s.max_pixels)
    except ApiError as exc:
        if exc.code in LIMIT_CODES:
            m.rejections.labels(exc.code).inc()
        raise
    levels = _check_noise(svc, plan.native, opts.noise)
    noise = choose_for_probe(opts.noise, probe, levels)
    key = svc.registry.resolve(plan.native, noise.level)
    assert key is not None  # choose_noise picks among the served levels
    model = svc.registry[key]
    ask = _parse_ask(svc, key, opts)
    # `quality` with format=png is accepted and ignored, as it always was when the output is PNG by default:
    # PNG is lossless, there is nothing for it to set. It used to be a 422, which the spec cannot express
    # (OpenAPI parameters are independent schemas, so no "quality only with jpeg/webp"): a request valid by
    # the spec was refused, and generated clients could not know it (found by tests/service/test_contract.py).
    fmt = opts.fmt or ("webp" if probe.lossless_webp else "png")
    if fmt == "jpeg" and probe.has_alpha:
        raise ApiError(422, "invalid_option", "jpeg cannot carry the alpha channel; ask for png or webp")
    log.update(input=f"{probe.width}x{probe.height}", input_format=probe.format, bytes_in=len(data))
    log.update(model=key.name, noise=noise.header)
    if probe.reduced_16bit:
        log["input_bits"] = 16  # decoded at 8 bits per channel (see service.images)

    target_s = opts.deadline_ms / 1000 if opts.deadline_ms else s.latency_target_s
    fixed = ServedRung.of(key, s.fixed_rung)
    decision, job = svc.scheduler.admit(
        key,
        model.engine.work_pixels(probe.height, probe.width),
        target_s=target_s,
        from_deadline=opts.deadline_ms is not None,
        ask=ask,
        fixed=fixed,
    )
    log.update(reason=decision.reason, predicted_ms=round(1000 * decision.predicted_s, 1))
    if job is None:
        m.rejections.labels(decision.reason).inc()
        raise _refusal(decision, s, target_s)
    labels = rung_labels(job.rung)
    m.decisions.labels(*labels, decision.reason).inc()
    log.update(width=job.rung.width, precision=job.rung.precision)
    try:
        out = await svc.scheduler.run(
            job,
            lambda j: pipeline.process(
                model.engine,
                probe,
                j.rung.rung,
                fmt,
                opts.quality,
                s.png_compress_level,
                j.check,
                j.waited_for_lane,
                None if plan.exact_native else plan.out_size,
            ),
        )
    except JobAborted as exc:  # timed out, or the server is shutting down
        m.rejections.labels(exc.reason).inc()
        retry = max(1, math.ceil(svc.scheduler.load().wait_s))
        detail = {"timeout": f"not finished within {s.request_timeout_s:g} s"}.get(exc.reason, "server shutting down")
        raise ApiError(503, exc.reason, detail, {"Retry-After": str(retry)}) from exc

    m.queue_wait.observe(job.queue_wait_s)
    m.inference.labels(*labels).observe(out.inference_s)
    m.input_pixels.inc(probe.pixels)
    m.output_pixels.inc(out.out_width * out.out_height)
    m.request_duration.labels(*labels).observe(time.perf_counter() - started)
    wait_ms, infer_ms = round(1000 * job.queue_wait_s, 1), round(1000 * out.inference_s, 1)
    log.update(
        output=f"{out.out_width}x{out.out_height}",
        format=fmt,
        bytes_out=len(out.body),
        queue_wait_ms=wait_ms,
        inference_ms=infer_ms,
    )
    headers = {
        "X-Scale": plan.header,
        "X-Noise": noise.header,
        "X-Width": labels[2],
        "X-Precision": job.rung.precision,
        "X-Width-Reason": decision.reason,
        "X-Queue-Wait-Ms": str(wait_ms),
        "X-Inference-Ms": str(infer_ms),
        "X-Bit-Depth": str(out.bit_depth),
    }
    psnr = _expected(model.card, job.rung, noise)
    if psnr:
        headers["X-Expected-PSNR"] = psnr
    return Upscaled(out.body, out.media_type, headers)


def _expected(card: dict, rung: ServedRung, noise: NoiseChoice) -> str | None:
    """``X-Expected-PSNR``: the card's figures at the degradation nearest the input, e.g.
    ``jpeg75: Set5=29.10; Set14=26.40`` (clean inputs: no prefix, as before)."""
    psnr = expected_psnr(card, rung.rung, HEADER_SETS, noise.degradation)
    if not psnr:
        return None
    values = "; ".join(f"{name}={value:.2f}" for name, value in psnr.items())
    return values if noise.degradation == "clean" else f"{noise.degradation}: {values}"


@dataclass(frozen=True)
class SizePlan:
    """How an output size is reached: the native scale whose model runs, and the size returned."""

    native: int
    factor: float
    out_size: tuple[int, int]  # (width, height)
    exact_native: bool  # the native model's own output, no downscale

    @property
    def header(self) -> str:
        """``X-Scale``: ``4``, or ``1.5 (x2 + lanczos)`` for a factor served by a downscale."""
        return str(self.native) if self.exact_native else f"{self.factor:.4g} (x{self.native} + lanczos)"


def input_limit(max_pixels: int, native: int) -> int:
    """Input pixels a native scale accepts: ``MAX_PIXELS`` at x4, more at lower scales (the output is the
    limit that matters, 16 x ``MAX_PIXELS``: a x2 request may send 4x the pixels of a x4 one)."""
    return max_pixels * 16 // (native * native)


def plan_size(w: int, h: int, opts: UpscaleOptions, scales: tuple[int, ...], max_pixels: int) -> SizePlan:
    """The native scale and output size for a ``w`` x ``h`` input; 422/413 for what cannot be served."""
    factor = opts.scale
    size = (round(w * factor), round(h * factor))
    top = max(scales)
    if not 1 < factor <= top + 1e-9:
        raise ApiError(422, "invalid_option", f"the scale must lie in (1, {top}], got {factor:.4g} for {w}x{h}")
    native = min(sc for sc in scales if sc >= factor - 1e-9)
    limit = input_limit(max_pixels, native)
    if w * h > limit:
        raise ApiError(413, "too_many_pixels", f"{w}x{h} = {w * h} pixels exceeds the x{native} limit of {limit}")
    return SizePlan(native, factor, size, size == (w * native, h * native))


def _check_noise(svc: ServiceState, scale: int, noise: str) -> set[str]:
    """The noise levels served at ``scale``; 422 for a level the server does not serve there."""
    levels = svc.registry.noise_levels(scale)
    if noise != AUTO and noise not in levels:
        choices = ", ".join(["auto", *sorted(levels)])
        raise ApiError(422, "invalid_option", f"noise must be one of {choices} at scale {scale}, got {noise!r}")
    return levels


def _refusal(decision: Decision, s: Settings, target_s: float) -> ApiError:
    """The error for a request refused at admission: 422 when it can never finish in time, else 503."""
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


def _parse_ask(svc: ServiceState, key: ModelKey, opts: UpscaleOptions) -> Ask:
    """The client's choice, checked against the model's ladder: a 422 naming the ladder when nothing matches."""
    widths = svc.registry[key].engine.widths
    ask = Ask(
        None if opts.width == "auto" else _parse_width("width", opts.width, widths),
        None if opts.precision == "auto" else opts.precision,
        None if opts.min_width is None else _parse_width("min_width", opts.min_width, widths),
    )
    ladder, fixed = svc.scheduler.ladder(key).rungs, svc.settings.fixed_rung
    if allowed(ladder, ask, ServedRung.of(key, fixed)):
        return ask
    asked = f"width={opts.width}, precision={opts.precision}"
    asked += "" if opts.min_width is None else f", min_width={opts.min_width}"
    if ask.width is None and fixed is not None:
        detail = f"this server serves {fixed.key} to width=auto (policy {svc.settings.policy}), not {asked}"
    else:
        detail = f"no rung on the {key.name} ladder matches {asked}; the ladder: {', '.join(r.key for r in ladder)}"
    raise ApiError(422, "invalid_option", detail)


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
