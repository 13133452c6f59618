"""Noise levels: which model a request is served by, decided from the file itself for ``noise=auto``.

A noise level names a model trained for one kind of input (``none``: clean bicubic LR; ``jpeg``:
JPEG q 25-90 alone, ``model.degradations.JPEG_ONLY``; ``real``: blurred, noisy JPEGs, a camera's,
``model.degradations.BLURRED``). ``auto``, first served level of:

- JPEG: the quality estimated from the file's quantization tables (the IJG quality whose scaled
  standard tables are nearest; encoders with their own tables get their nearest equivalent). At or
  above ``CLEAN_JPEG_QUALITY`` the compression is too light to matter and ``none`` serves it, below
  it ``jpeg``, then ``real``: the threshold is where the models' Set5/Set14 PSNR cross
  (bench/results/noise-auto.md). The file does not say whether a camera also blurred or noised
  it in so many words, but blur leaves a trace: from q ``BLUR_CHECK_QUALITY`` up, a file whose finest
  detail is weak against the next scale's (``detail_ratio`` below ``BLURRED_DETAIL_RATIO``) was
  blurred before it was compressed (a camera's softness, a resize), and ``real``, trained on blur,
  serves it, its quality read at the card's ``camera`` entry (bench/results/noise-blur.md). Below
  that quality compression alone flattens the finest scale as much, and a user who knows the photo
  is blurred asks ``noise=real``.
- lossy WebP: ``jpeg``, then ``real``. Its quantizer is not exposed, and ``jpeg`` is the level that measures
  well at every WebP quality (bench/results/noise-auto.md).
- lossless formats (PNG, lossless WebP, BMP, TIFF, GIF): ``none``.

The estimate also picks the card entry ``X-Expected-PSNR`` reports: the evaluated JPEG
degradation nearest the file's quality.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from service.inference.images import Probe

NONE, JPEG, REAL, AUTO = "none", "jpeg", "real", "auto"
# none and the artifact levels cross between q 85 (jpeg +0.24 dB) and q 90 (none +0.03): bench/results/noise-auto.md
CLEAN_JPEG_QUALITY = 88
# Blurred-before-compression JPEGs: detail_ratio below 0.37 from q 70 up. On the training sets' LRs
# (Wiki49, T91, BSDS500test) 92-97 % of `camera` inputs fall below it and 0-9 % of clean JPEGs of q 70-85
# (at q 60 and below clean ones fall there as often): bench/results/noise-blur.md.
BLURRED_DETAIL_RATIO = 0.37
BLUR_CHECK_QUALITY = 70
DETAIL_WINDOW = 1024  # the ratio is read on the central 1024x1024 at most: a bounded cost for any photo
# The card degradations a JPEG input maps to, by quality (100: as good as lossless).
EVALUATED_JPEG = {50: "jpeg50", 75: "jpeg75", 90: "jpeg90", 100: "clean"}
# The degradation a level is meant for: its card's Set5 figures there rank the level's rungs (its ladder).
LADDER_DEGRADATION = {NONE: "clean", JPEG: "jpeg50", REAL: "camera"}


@cache
def _ijg_luma_tables() -> np.ndarray:
    """The 64 luminance quantizers Pillow (libjpeg) writes at each quality 1..100, in Pillow's order."""
    tables = []
    for q in range(1, 101):
        buf = io.BytesIO()
        Image.new("L", (8, 8)).save(buf, format="JPEG", quality=q)
        with Image.open(buf) as img:
            tables.append(img.quantization[0])
    return np.array(tables, dtype=np.float64)


def estimate_jpeg_quality(quantization: dict[int, list[int]] | None) -> int | None:
    """The IJG quality (1..100) whose luminance table is nearest the file's, ``None`` without tables.

    Nearest in log space: a quantizer of 2 vs 4 is as different as 20 vs 40.
    """
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    table = np.log(np.maximum(np.asarray(quantization[0], dtype=np.float64), 1))
    dist = np.abs(np.log(_ijg_luma_tables()) - table).sum(axis=1)
    return int(np.argmin(dist)) + 1


def _laplacian_energy(y: np.ndarray) -> float:
    """Mean |Laplacian| (the 3x3 operator of Immerkaer's noise estimate, as two second differences)."""
    d = y[:, :-2] - 2 * y[:, 1:-1] + y[:, 2:]
    return float(np.abs(d[:-2] - 2 * d[1:-1] + d[2:]).mean())


def detail_ratio(luma: np.ndarray) -> float | None:
    """The finest scale's detail over the next one's: the mean |Laplacian| of ``luma`` over that of its
    2x2 box downscale; ``None`` for an image too small to say. Content (smooth or busy) moves both
    scales, blur mostly the first, so the ratio reads blur more than content does."""
    h, w = (min(s, DETAIL_WINDOW) // 2 * 2 for s in luma.shape)
    if min(h, w) < 16:
        return None
    top, left = (luma.shape[0] - h) // 2, (luma.shape[1] - w) // 2
    y = luma[top : top + h, left : left + w].astype(np.float32)
    coarse = _laplacian_energy(y.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    return _laplacian_energy(y) / coarse if coarse > 0 else None


def jpeg_detail_ratio(data: bytes) -> float | None:
    """``detail_ratio`` of a JPEG file's luminance (decoded alone, at full size); ``None`` if it fails to
    decode (the real decode reports that)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("L", img.size)  # libjpeg decodes the Y channel only: a third of a colour decode
            return detail_ratio(np.asarray(img.convert("L")))
    except (OSError, SyntaxError, ValueError):
        return None


def blur_checked(jpeg_quality: int | None) -> bool:
    """Whether the blur check applies to a JPEG of this quality (below it compression hides blur, from
    ``CLEAN_JPEG_QUALITY`` the clean model serves it anyway)."""
    return jpeg_quality is not None and BLUR_CHECK_QUALITY <= jpeg_quality < CLEAN_JPEG_QUALITY


def blurred(jpeg_quality: int | None, detail: float | None) -> bool:
    """Whether a JPEG of this quality and ``detail_ratio`` was blurred before it was compressed."""
    return blur_checked(jpeg_quality) and detail is not None and detail < BLURRED_DETAIL_RATIO


@dataclass(frozen=True)
class NoiseChoice:
    """The level serving a request, why (``X-Noise``), and the card degradation its quality is read at."""

    level: str
    reason: str
    degradation: str = "clean"

    @property
    def header(self) -> str:
        return f"{self.level}; {self.reason}"


def expected_degradation(image_format: str, jpeg_quality: int | None, detail: float | None = None) -> str:
    """The evaluated degradation (``model.degradations.EVAL_DEGRADATIONS``) nearest what the file is."""
    if image_format == "JPEG":
        if blurred(jpeg_quality, detail):
            return "camera"
        q = 75 if jpeg_quality is None else jpeg_quality
        return EVALUATED_JPEG[min(EVALUATED_JPEG, key=lambda k: abs(k - q))]
    return "clean"


def choose_for_probe(asked: str, probe: Probe, levels: set[str]) -> NoiseChoice:
    """``choose_noise`` for a probed file: its format, whether it is lossless, its JPEG quality and,
    where the blur check applies, its ``detail_ratio`` (the one decode before the pipeline's)."""
    lossless = probe.format != "JPEG" and (probe.format != "WEBP" or probe.lossless_webp)
    quality = estimate_jpeg_quality(getattr(probe.image, "quantization", None))
    detail = jpeg_detail_ratio(probe.data) if probe.format == "JPEG" and blur_checked(quality) else None
    return choose_noise(asked, probe.format, lossless, quality, levels, detail)


def choose_noise(
    asked: str,
    image_format: str,
    lossless: bool,
    jpeg_quality: int | None,
    levels: set[str],
    detail: float | None = None,
) -> NoiseChoice:
    """The level for a request that asked for ``asked`` (``auto`` or a level in ``levels``); ``detail``:
    a JPEG's ``detail_ratio``, where it was measured."""
    degradation = expected_degradation(image_format, jpeg_quality, detail)
    if asked != AUTO:
        return NoiseChoice(asked, "asked", degradation)
    if image_format == "JPEG":
        if jpeg_quality is None:
            wanted, why = (JPEG, REAL), "jpeg, quality unknown"
        elif jpeg_quality >= CLEAN_JPEG_QUALITY:
            wanted, why = (NONE,), f"jpeg q~{jpeg_quality} >= {CLEAN_JPEG_QUALITY}"
        elif blurred(jpeg_quality, detail):
            wanted, why = (REAL, JPEG), f"jpeg q~{jpeg_quality}, blurred: detail {detail:.2f} < {BLURRED_DETAIL_RATIO}"
        else:
            wanted, why = (JPEG, REAL), f"jpeg q~{jpeg_quality} < {CLEAN_JPEG_QUALITY}"
    elif not lossless:
        wanted, why = (JPEG, REAL), f"lossy {image_format.lower()}"
    else:
        wanted, why = (NONE,), f"lossless {image_format.lower() or 'image'}"
    level = next((lv for lv in wanted if lv in levels), None)
    if level is None:  # a server without those models serves one it has
        fallback = NONE if NONE in levels else min(levels)
        return NoiseChoice(fallback, f"{why}; no {wanted[0]} model served", degradation)
    return NoiseChoice(level, why, degradation)
