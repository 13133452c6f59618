"""What a client may ask of one upscale (``UpscaleOptions``, the query parameters of ``/v1/upscale`` and
``/v1/jobs``) and how the output size is reached: the factor asked, the native scale whose model runs, the
input pixels each scale accepts. Pure logic; 413 and 422 as ``ApiError``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from service.catalog.noise import AUTO
from service.errors import ApiError
from service.settings import Settings

LIMIT_CODES = ("body_too_large", "too_many_pixels")  # refusals counted as rejections (csd_sr_rejections_total)
DEFAULT_SCALE = 4


@dataclass(frozen=True)
class UpscaleOptions:
    """What a client may ask of one upscale (the query parameters of ``/v1/upscale``)."""

    scale: float | None = None  # a native scale, or any factor in (1, max native]: the next native scale up
    # + downscale; none: DEFAULT_SCALE, or the factor of the target size
    out_width: int | None = None  # a target size (either or both): the largest of the input's aspect within it
    out_height: int | None = None
    noise: str = AUTO
    style: str = "faithful"  # service.catalog.registry.STYLES: the models of a style serve it
    sharpness: float | None = None  # style sharp only, in [0, 1]: the nearest step served (none: 1)
    width: str = "auto"
    precision: str = "auto"
    min_width: str | None = None
    fmt: str | None = None
    quality: int | None = None
    deadline_ms: int | None = None


@dataclass(frozen=True)
class SizePlan:
    """How an output size is reached: the native scale whose model runs, and the size returned."""

    native: int
    factor: float
    out_size: tuple[int, int]  # (width, height)
    exact_native: bool  # the native model's own output, no downscale

    def resize_to(self, scale: int) -> tuple[int, int] | None:
        """The size a x``scale`` model's output is downscaled to; ``None``: it is the answer."""
        return None if self.exact_native and scale == self.native else self.out_size

    def header(self, scale: int) -> str:
        """``X-Scale`` when a x``scale`` model serves it: ``4``, or ``1.5 (x2 + lanczos)`` for a factor
        served by a downscale, ``3 (x4 + lanczos)`` for x3 served by the x4 model's rung."""
        return f"{self.factor:.4g} (x{scale} + lanczos)" if self.resize_to(scale) else str(self.native)


def streamed(fmt: str, plan: SizePlan) -> bool:
    """Whether a job writes the output as it goes (PNG at a native scale), never holding it whole."""
    return fmt == "png" and plan.exact_native


def interactive_limits(s: Settings) -> Callable[[int], int]:
    """Input pixels ``/v1/upscale`` accepts per native scale."""
    return functools.partial(input_limit, s.max_pixels)


def job_limits(s: Settings) -> Callable[[int], int]:
    """Input pixels a job accepts per native scale: ``MAX_JOB_PIXELS``, and its output within
    ``MAX_JOB_OUTPUT_PIXELS``."""
    return lambda native: min(s.max_job_pixels, s.max_job_output_pixels // (native * native))


def input_limit(max_pixels: int, native: int) -> int:
    """Input pixels a native scale accepts: ``MAX_PIXELS`` at x4, more at lower scales (the output is the
    limit that matters, 16 x ``MAX_PIXELS``: a x2 request may send 4x the pixels of a x4 one)."""
    return max_pixels * 16 // (native * native)


def plan_size(
    w: int, h: int, factor: float, size: tuple[int, int], native: int, limit: Callable[[int], int]
) -> SizePlan:
    """How the model of scale ``native`` serves ``factor`` (to ``size``) for a ``w`` x ``h`` input; 413 when
    the input is over that scale's ``limit``."""
    most = limit(native)
    if w * h > most:
        raise ApiError(413, "too_many_pixels", f"{w}x{h} = {w * h} pixels exceeds the x{native} limit of {most}")
    return SizePlan(native, factor, size, size == (w * native, h * native))


def output_size(w: int, h: int, opts: UpscaleOptions, top: int) -> tuple[float, tuple[int, int]]:
    """The factor and the output size asked: ``scale`` (default 4), or the largest size of the input's
    aspect within ``out_width`` and/or ``out_height``; the side that binds is exactly the one asked.
    422 for a factor outside (1, ``top``], the largest native scale."""
    factor, size = _asked_size(w, h, opts)
    if not 1 < factor <= top + 1e-9:
        asked = f"{factor:.4g} (to {size[0]}x{size[1]})"
        raise ApiError(422, "invalid_option", f"the scale must lie in (1, {top}], got {asked} for {w}x{h}")
    return factor, size


def _asked_size(w: int, h: int, opts: UpscaleOptions) -> tuple[float, tuple[int, int]]:
    tw, th = opts.out_width, opts.out_height
    if tw is None and th is None:
        factor = DEFAULT_SCALE if opts.scale is None else opts.scale
        return factor, (round(w * factor), round(h * factor))
    if opts.scale is not None:
        raise ApiError(422, "invalid_option", "ask for a scale or a target size (out_width, out_height), not both")
    if tw is not None and (th is None or tw * h <= th * w):  # the width binds: tw / w <= th / h
        return tw / w, (tw, max(1, round(h * tw / w)))
    assert th is not None
    return th / h, (max(1, round(w * th / h)), th)
