"""``POST /v1/upscale``: read the body, run ``Upscaler.upscale``, drop the work if the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from service.api.auth import require_api_key
from service.api.deps import UpscalerDep
from service.errors import ApiError
from service.inference import images
from service.upscaling.options import LIMIT_CODES, UpscaleOptions
from service.upscaling.prometheus import Metrics

MAX_SIDE = 65_535  # a bound for the schema (a JPEG side's limit); the output is bounded by the pixel limits

router = APIRouter(tags=["upscale"], dependencies=[Depends(require_api_key)])

BODY_DOC = {
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
# Every error is a service.api.errors.ErrorBody, {"error": code, "detail": text} (service.api.openapi adds the schema).
ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
RESPONSES: dict = {
    200: {
        "description": "The upscaled image.",
        "content": {media: {} for media in images.OUTPUT_MEDIA_TYPES.values()},
        "headers": {
            "X-Scale": {
                "description": "the scale served: the native model's ('2', '3', '4'), or a factor served by the "
                "next native scale and a downscale, e.g. '1.5 (x2 + lanczos)'",
                "schema": {"type": "string"},
            },
            "X-Noise": {
                "description": "the noise level served and why, e.g. 'real; jpeg q~75 < 96' or 'none; lossless png'",
                "schema": {"type": "string"},
            },
            "X-Style": {"description": "the style served: faithful or sharp", "schema": {"type": "string"}},
            "X-Sharpness": {
                "description": "style sharp: the sharpness step served (the nearest to the one asked)",
                "schema": {"type": "string"},
            },
            "X-Expected-Sharpness": {
                "description": "style sharp, instead of X-Expected-PSNR: the model card's sharpness of the rung used "
                "(% of the luma's spectral power above a quarter of Nyquist), per eval set, e.g. "
                "'jpeg75: Set5=3.75; Set14=5.27'",
                "schema": {"type": "string"},
            },
            "X-Width": {"description": "model width used", "schema": {"type": "string"}},
            "X-Precision": {"description": "numeric precision used: fp32 or int8", "schema": {"type": "string"}},
            "X-Width-Reason": {"description": "why the policy chose the rung", "schema": {"type": "string"}},
            "X-Expected-PSNR": {
                "description": "the model card's PSNR (dB) of the rung used, per eval set, e.g. "
                "'Set5=31.29; Set14=27.96'; for a JPEG input at the card's nearest JPEG degradation, e.g. "
                "'jpeg75: Set5=28.90; Set14=26.31'; a factor served by a larger model, downscaled, reads its "
                "figures at the smallest scale measured that reaches the factor (absent when the card has none)",
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
    400: {"description": "bad_image: undecodable or truncated image; bad_request: malformed multipart.", **ERROR},
    401: {
        "description": "unauthorized: missing or wrong API key (only when the server has one).",
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
        **ERROR,
    },
    413: {"description": "body_too_large / too_many_pixels: over the limit the detail gives.", **ERROR},
    415: {"description": "unsupported_media_type: not multipart or image/*, or a type not decoded.", **ERROR},
    422: {
        "description": "invalid_option: a parameter out of range, a width or rung not on the ladder (the "
        "detail lists the ladder), JPEG output for an image with alpha, or multipart without a 'file' part; "
        "exceeds_timeout: the rung asked for (or the cheapest allowed) is predicted to miss the request timeout.",
        **ERROR,
    },
    500: {"description": "internal_error: a bug (logged by the server).", **ERROR},
    503: {
        "description": "overloaded (no allowed rung meets the target, or the queue is full), timeout (not finished "
        "within the request timeout), not_ready (warming up), or shutting down.",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        **ERROR,
    },
}


def _size_options(
    scale: Annotated[
        float | None,
        Query(
            gt=1,
            le=4,
            description="scale factor (default 4): a native scale the server has a model for (2, 3, 4) runs that "
            "model; any other factor in (1, 4] runs the next native scale up and an antialiased Lanczos downscale "
            "to exactly round(width x factor) x round(height x factor). Not with out_width / out_height",
        ),
    ] = None,
    out_width: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_SIDE,
            description="a target width instead of a scale: the output is this wide, its height keeps the aspect "
            "(with out_height too: the largest size of the input's aspect within both); the factor it makes must "
            "lie in (1, 4], served as a scale is",
        ),
    ] = None,
    out_height: Annotated[
        int | None, Query(ge=1, le=MAX_SIDE, description="a target height, as out_width (either or both)")
    ] = None,
) -> dict[str, Any]:
    return {"scale": scale, "out_width": out_width, "out_height": out_height}


def _rung_options(
    noise: Annotated[
        str,
        Query(
            description="noise level: 'auto' (from the file: JPEG quality from its quantization tables, lossy "
            "WebP, or lossless), 'none' (the clean model) or a level the server has, e.g. 'real' (JPEG, blur, "
            "sensor noise); X-Noise says which served and why"
        ),
    ] = "auto",
    style: Annotated[
        Literal["faithful", "sharp"],
        Query(
            description="'faithful' (default: trained for fidelity to the original, PSNR) or 'sharp' (crisp edges and "
            "texture, distilled from a GAN upscaler, Real-ESRGAN x4plus; one model for every input: noise only picks "
            "which card row X-Expected-Sharpness reads); X-Style says which served"
        ),
    ] = "faithful",
    sharpness: Annotated[
        float | None,
        Query(
            ge=0,
            le=1,
            description="style sharp: how sharp, from 0 (the faithful real-photo model's look) to 1 (default, "
            "the distilled model); served by the nearest step the server ships (x4-real's and x4-sharp's weights "
            "interpolated), X-Sharpness says which. Ignored by style faithful",
        ),
    ] = None,
    width: Annotated[str, Query(description="'auto' (policy) or a width of the ladder, e.g. 0.25")] = "auto",
    precision: Annotated[
        Literal["auto", "fp32", "bf16", "int8"],
        Query(description="'auto' (policy) or a precision: only rungs of it are served"),
    ] = "auto",
    min_width: Annotated[
        str | None,
        Query(description="with width=auto: never narrower than this width (503 rather than narrower)"),
    ] = None,
) -> dict[str, Any]:
    return {
        "noise": noise,
        "style": style,
        "sharpness": sharpness,
        "width": width,
        "precision": precision,
        "min_width": min_width,
    }


def _format_options(
    fmt: Annotated[
        Literal["png", "jpeg", "webp"] | None,
        Query(alias="format", description="output format; default PNG (lossless WebP for lossless WebP inputs)"),
    ] = None,
    quality: Annotated[
        int | None, Query(ge=1, le=100, description="JPEG/WebP quality; no quality: lossless WebP")
    ] = None,
) -> dict[str, Any]:
    return {"fmt": fmt, "quality": quality}


def upscale_options(
    size: Annotated[dict[str, Any], Depends(_size_options)],
    rung: Annotated[dict[str, Any], Depends(_rung_options)],
    output: Annotated[dict[str, Any], Depends(_format_options)],
) -> UpscaleOptions:
    """The query parameters of ``/v1/upscale``, which ``POST /v1/jobs`` takes too: the size asked, the rung
    choice and the output format (three groups, in the spec in this order)."""
    return UpscaleOptions(**size, **rung, **output)


@router.post(
    "/v1/upscale",
    response_class=Response,
    openapi_extra=BODY_DOC,
    responses=RESPONSES,
    summary="Upscale an image; the rung (width, precision) follows the server's load",
)
async def upscale(
    request: Request,
    upscaler: UpscalerDep,
    options: Annotated[UpscaleOptions, Depends(upscale_options)],
    x_deadline_ms: Annotated[
        int | None, Header(gt=0, le=3_600_000, description="this request's latency target, replacing the server's")
    ] = None,
) -> Response:
    opts = replace(options, deadline_ms=x_deadline_ms)
    log = request.state.log
    with upscaler.metrics.inflight.track_inprogress():
        try:
            data = await read_image(request, upscaler.settings.max_body_bytes, upscaler.metrics)
        except ClientDisconnect:  # gone during the upload (the web page's Cancel): not a server error
            return client_closed(log)
        work = asyncio.ensure_future(upscaler.upscale(data, opts, log, request.state.started))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            left = not work.done()
            if left:  # the client left (or the server stops): drop a queued job, stop a running one at its next tile
                work.cancel()
        if left:
            return client_closed(log)
        out = work.result()
        return Response(out.body, media_type=out.media_type, headers=out.headers)


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read, so only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_image(request: Request, limit: int, metrics: Metrics) -> bytes:
    """The image bytes from a multipart ``file`` part or the raw body; 413 past ``limit`` (counted as a
    rejection in ``metrics``), 415 for other bodies."""
    try:
        return await _read_image(request, limit)
    except ApiError as exc:
        if exc.code in LIMIT_CODES:
            metrics.rejections.labels(exc.code).inc()
        raise


async def _read_image(request: Request, limit: int) -> bytes:
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


def client_closed(log: dict) -> Response:
    """The client left before its answer: nginx's 499, logged, never counted as a server error."""
    log["error"] = "client_closed_request"
    return Response(status_code=499)
