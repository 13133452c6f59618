"""One image's worker-side work: decode, infer (tiles), encode; or, for a job, stream the PNG to a file."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

from model.data import resize_lanczos
from model.rungs import Rung
from service.inference import images
from service.inference.hardware import available_cpus
from service.inference.png import PngStreamWriter
from service.inference.tiles import Engine

ENCODE_THREADS = available_cpus()  # PNG deflate strips in parallel: a lone request's encode uses every core


@dataclass(frozen=True)
class Output:
    body: bytes
    media_type: str
    out_width: int
    out_height: int
    bit_depth: int
    inference_s: float  # the model's time, the wait for the inference lane excluded


@dataclass(frozen=True)
class TileHooks:
    """What a caller runs around the tiles (``Engine.strips``): ``before_tile`` may raise to abort,
    ``on_lane`` gets the seconds waited for the lane, ``tile_turn`` holds the lane around each tile."""

    before_tile: Callable[[], None] | None = None
    on_lane: Callable[[float], None] | None = None
    tile_turn: Callable[[], AbstractContextManager[object]] | None = None


NO_HOOKS = TileHooks()


def process(
    engine: Engine,
    probe: images.Probe,
    rung: Rung,
    encoding: images.Encoding,
    out_size: tuple[int, int] | None = None,
    hooks: TileHooks = NO_HOOKS,
) -> Output:
    """Decode, upscale at ``rung`` (alpha by bicubic), encode as ``encoding`` says, ``hooks`` around the tiles.

    ``out_size`` (width, height, of the file as stored): smaller than the native scale's output, reached
    by an antialiased downscale (``model.data.resize_lanczos``); default: the native scale.
    """
    decoded = images.decode(probe)
    waited = 0.0

    def lane_waited(seconds: float) -> None:
        nonlocal waited
        waited = seconds
        if hooks.on_lane is not None:
            hooks.on_lane(seconds)

    start = time.perf_counter()
    rgb = engine.run(decoded.rgb, rung, hooks.before_tile, lane_waited)
    inference_s = time.perf_counter() - start - waited
    native = (rgb.shape[1], rgb.shape[0])
    size = out_size or native
    if out_size and (decoded.rgb.shape[1], decoded.rgb.shape[0]) != (probe.width, probe.height):
        size = out_size[::-1]  # EXIF orientation turned the image: the asked size turns with it
    if size != native:
        rgb = resize_lanczos(rgb, size)
    alpha = None if decoded.alpha is None else images.upscale_alpha(decoded.alpha, size)
    body, bit_depth = images.encode(rgb, alpha, decoded, encoding, ENCODE_THREADS)
    h, w = rgb.shape[:2]
    return Output(body, images.OUTPUT_MEDIA_TYPES[encoding.fmt], w, h, bit_depth, inference_s)


def process_to_file(
    engine: Engine,
    probe: images.Probe,
    rung: Rung,
    out: BinaryIO,
    png_compress_level: int,
    hooks: TileHooks,
) -> Output:
    """``process`` for a job at a native scale, PNG: the output written to ``out`` one row of tiles at a
    time (``service.inference.png.PngStreamWriter``), so memory holds the input and one strip, whatever the output's
    size; each tile runs inside ``hooks.tile_turn`` (``Scheduler.job_turn``). ``body`` is empty."""
    decoded = images.decode(probe)
    h, w = decoded.rgb.shape[:2]
    s = engine.scale
    alpha = None if decoded.alpha is None else Image.fromarray(decoded.alpha)
    writer = None
    start = time.perf_counter()
    for top, strip in engine.strips(decoded.rgb, rung, hooks.before_tile, tile_turn=hooks.tile_turn):
        rows = strip.shape[0]
        strip_alpha = None
        if alpha is not None:  # the rows of the whole-image bicubic resize: Pillow reads past the box
            box = (0, top / s, w, (top + rows) / s)
            strip_alpha = np.asarray(alpha.resize((w * s, rows), Image.Resampling.BICUBIC, box=box))
        pixels, icc = images.to_pixels(strip, strip_alpha, decoded, "png")
        if writer is None:
            channels = 1 if pixels.ndim == 2 else pixels.shape[2]
            depth = 16 if pixels.dtype == np.uint16 else 8
            writer = PngStreamWriter(out, (w * s, h * s), channels, depth, png_compress_level, icc)
        writer.write(pixels)
    assert writer is not None  # an image has at least one row of tiles
    writer.close()
    return Output(b"", images.OUTPUT_MEDIA_TYPES["png"], w * s, h * s, writer.depth, time.perf_counter() - start)
