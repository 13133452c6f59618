"""``POST /v1/upscale``: read and check the image, let the policy pick a rung, run it on a worker."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from service import images, pipeline
from service.auth import require_api_key
from service.errors import ApiError
from service.ladder import HEADER_SETS, expected_psnr
from service.metrics import rung_labels, width_label
from service.policy import EXCEEDS_TIMEOUT, QUEUE_FULL, Ask, Decision, allowed
from service.scheduler import JobAborted
from service.settings import Settings
from service.state import ServiceState, get_state

router = APIRouter(tags=["upscale"], dependencies=[Depends(require_api_key)])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "The image: a multipart `file` part, or the raw bytes with `Content-Type: image/*`.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
# Every error is a service.errors.ErrorBody, {"error": code, "detail": text} (service.openapi adds the schema).
_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
_RESPONSES: dict = {
    200: {
        "description": "The upscaled image.",
        "content": {media: {} for media in images.OUTPUT_MEDIA_TYPES.values()},
        "headers": {
            "X-Width": {"description": "model width used", "schema": {"type": "string"}},
            "X-Precision": {"description": "numeric precision used: fp32 or int8", "schema": {"type": "string"}},
            "X-Width-Reason": {"description": "why the policy chose the rung", "schema": {"type": "string"}},
            "X-Expected-PSNR": {
                "description": "the model card's PSNR (dB) of the rung used, per eval set, e.g. "
                "'Set5=31.29; Set14=27.96' (absent when the card has none)",
                "schema": {"type": "string"},
            },
            "X-Queue-Wait-Ms": {
                "description": "time waiting for a worker and the inference lane",
                "schema": {"type": "number"},
            },
            "X-Inference-Ms": {"description": "model time", "schema": {"type": "number"}},
            "X-Bit-Depth": {"description": "bits per channel of the output (8 or 16)", "schema": {"type": "integer"}},
            "X-Request-ID": {"description": "the request id (echoed or generated)", "schema": {"type": "string"}},
        },
    },
    400: {"description": "bad_image: undecodable or truncated image; bad_request: malformed multipart.", **_ERROR},
    401: {
        "description": "unauthorized: missing or wrong API key (only when the server has one).",
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
        **_ERROR,
    },
    413: {"description": "body_too_large / too_many_pixels: over the limit the detail gives.", **_ERROR},
    415: {"description": "unsupported_media_type: not multipart or image/*, or a type not decoded.", **_ERROR},
    422: {
        "description": "invalid_option: a parameter out of range, a width or rung not on the ladder (the "
        "detail lists the ladder), JPEG output for an image with alpha, or multipart without a 'file' part; "
        "exceeds_timeout: the rung asked for (or the cheapest allowed) is predicted to miss the request timeout.",
        **_ERROR,
    },
    500: {"description": "internal_error: a bug (logged by the server).", **_ERROR},
    503: {
        "description": "overloaded (no allowed rung meets the target, or the queue is full), timeout (not finished "
        "within the request timeout), not_ready (warming up), or shutting down.",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        **_ERROR,
    },
}
LIMIT_CODES = ("body_too_large", "too_many_pixels")


@router.post(
    "/v1/upscale",
    response_class=Response,
    openapi_extra=_BODY_DOC,
    responses=_RESPONSES,
    summary="Upscale an image; the rung (width, precision) follows the server's load",
)
async def upscale(
    request: Request,
    width: Annotated[str, Query(description="'auto' (policy) or a width of the ladder, e.g. 0.25")] = "auto",
    precision: Annotated[
        Literal["auto", "fp32", "int8"],
        Query(description="'auto' (policy) or a precision: only rungs of it are served"),
    ] = "auto",
    min_width: Annotated[
        str | None,
        Query(description="with width=auto: never narrower than this width (503 rather than narrower)"),
    ] = None,
    fmt: Annotated[
        Literal["png", "jpeg", "webp"] | None,
        Query(alias="format", description="output format; default PNG (lossless WebP for lossless WebP inputs)"),
    ] = None,
    quality: Annotated[
        int | None, Query(ge=1, le=100, description="JPEG/WebP quality; no quality: lossless WebP")
    ] = None,
    x_deadline_ms: Annotated[
        int | None, Header(gt=0, le=3_600_000, description="this request's latency target, replacing the server's")
    ] = None,
) -> Response:
    svc = get_state(request)
    with svc.metrics.inflight.track_inprogress():
        try:
            return await _upscale(request, svc, width, precision, min_width, fmt, quality, x_deadline_ms)
        except ApiError as exc:
            if exc.code in LIMIT_CODES:
                svc.metrics.rejections.labels(exc.code).inc()
            raise
        except ClientDisconnect:  # gone during the upload (the web page's Cancel): not a server error
            return _client_closed(request.state.log)


async def _upscale(
    request: Request,
    svc: ServiceState,
    width: str,
    precision: str,
    min_width: str | None,
    fmt: str | None,
    quality: int | None,
    deadline_ms: int | None,
) -> Response:
    s, m, log = svc.settings, svc.metrics, request.state.log
    if not svc.ready:
        m.rejections.labels("not_ready").inc()
        raise ApiError(503, "not_ready", svc.warmup_error or "warming up", {"Retry-After": "2"})
    ask = _parse_ask(svc, width, precision, min_width)
    # `quality` with format=png is accepted and ignored, as it always was when the output is PNG by default:
    # PNG is lossless, there is nothing for it to set. It used to be a 422, which the spec cannot express
    # (OpenAPI parameters are independent schemas, so no "quality only with jpeg/webp"): a request valid by
    # the spec was refused, and generated clients could not know it (found by tests/service/test_contract.py).
    data = await _read_image(request, s.max_body_bytes)
    probe = images.probe(data, s.max_pixels)
    fmt = fmt or ("webp" if probe.lossless_webp else "png")
    if fmt == "jpeg" and probe.has_alpha:
        raise ApiError(422, "invalid_option", "jpeg cannot carry the alpha channel; ask for png or webp")
    log.update(input=f"{probe.width}x{probe.height}", input_format=probe.format, bytes_in=len(data))
    if probe.reduced_16bit:
        log["input_bits"] = 16  # decoded at 8 bits per channel (see service.images)

    target_s = deadline_ms / 1000 if deadline_ms else s.latency_target_s
    decision, job = svc.scheduler.admit(
        svc.engine.work_pixels(probe.height, probe.width),
        target_s=target_s,
        from_deadline=deadline_ms is not None,
        ask=ask,
        fixed=s.fixed_rung,
    )
    log.update(reason=decision.reason, predicted_ms=round(1000 * decision.predicted_s, 1))
    if job is None:
        m.rejections.labels(decision.reason).inc()
        raise _refusal(decision, s, target_s)
    labels = rung_labels(job.rung)
    m.decisions.labels(*labels, decision.reason).inc()
    log.update(width=job.rung.width, precision=job.rung.precision)
    work = asyncio.ensure_future(
        svc.scheduler.run(
            job,
            lambda j: pipeline.process(
                svc.engine, probe, j.rung, fmt, quality, s.png_compress_level, j.check, j.waited_for_lane
            ),
        )
    )
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        left = not work.done()
        if left:  # the client left (or the server stops): drop a queued job, stop a running one at its next tile
            work.cancel()
    if left:
        return _client_closed(log)
    try:
        out = work.result()
    except JobAborted as exc:  # timed out, or the server is shutting down
        m.rejections.labels(exc.reason).inc()
        retry = max(1, math.ceil(svc.scheduler.load().wait_s))
        detail = {"timeout": f"not finished within {s.request_timeout_s:g} s"}.get(exc.reason, "server shutting down")
        raise ApiError(503, exc.reason, detail, {"Retry-After": str(retry)}) from exc

    m.queue_wait.observe(job.queue_wait_s)
    m.inference.labels(*labels).observe(out.inference_s)
    m.input_pixels.inc(probe.pixels)
    m.output_pixels.inc(out.out_width * out.out_height)
    m.request_duration.labels(*labels).observe(time.perf_counter() - request.state.started)
    wait_ms, infer_ms = round(1000 * job.queue_wait_s, 1), round(1000 * out.inference_s, 1)
    log.update(
        output=f"{out.out_width}x{out.out_height}",
        format=fmt,
        bytes_out=len(out.body),
        queue_wait_ms=wait_ms,
        inference_ms=infer_ms,
    )
    headers = {
        "X-Width": labels[0],
        "X-Precision": job.rung.precision,
        "X-Width-Reason": decision.reason,
        "X-Queue-Wait-Ms": str(wait_ms),
        "X-Inference-Ms": str(infer_ms),
        "X-Bit-Depth": str(out.bit_depth),
    }
    psnr = expected_psnr(svc.card, job.rung, HEADER_SETS)
    if psnr:
        headers["X-Expected-PSNR"] = "; ".join(f"{name}={value:.2f}" for name, value in psnr.items())
    return Response(out.body, media_type=out.media_type, headers=headers)


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


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read, so only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _parse_ask(svc: ServiceState, width: str, precision: str, min_width: str | None) -> Ask:
    """The client's choice, checked against the ladder: a 422 naming the ladder when nothing on it matches."""
    widths = svc.engine.widths
    ask = Ask(
        None if width == "auto" else _parse_width("width", width, widths),
        None if precision == "auto" else precision,
        None if min_width is None else _parse_width("min_width", min_width, widths),
    )
    ladder, fixed = svc.scheduler.ladder.rungs, svc.settings.fixed_rung
    if allowed(ladder, ask, fixed):
        return ask
    asked = f"width={width}, precision={precision}" + ("" if min_width is None else f", min_width={min_width}")
    if ask.width is None and fixed is not None:
        detail = f"this server serves {fixed.key} to width=auto (policy {svc.settings.policy}), not {asked}"
    else:
        detail = f"no rung on the ladder matches {asked}; the ladder: {', '.join(r.key for r in ladder)}"
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


async def _read_image(request: Request, limit: int) -> bytes:
    """The image bytes from a multipart ``file`` part or the raw body; 413 past ``limit``, 415 for other bodies."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await _file_part(request.headers, await _read_body(request, limit))
    if not (media.startswith("image/") or media == "application/octet-stream"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"got Content-Type {media or 'none'}; send multipart/form-data with a 'file' part "
            "or the raw image with Content-Type image/*",
        )
    images.check_media_type(media)
    return await _read_body(request, limit)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit`` (declared length, then bytes read)."""
    too_large = ApiError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _file_part(headers: Headers, body: bytes) -> bytes:
    async def once() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=1, max_fields=16).parse()
    except MultiPartException as exc:
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc.message}") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_option", "multipart body without a 'file' part")
        images.check_media_type(upload.content_type)
        return await upload.read()
    finally:
        await form.close()


def _client_closed(log: dict) -> Response:
    """The client left before its answer: nginx's 499, logged, never counted as a server error."""
    log["error"] = "client_closed_request"
    return Response(status_code=499)
