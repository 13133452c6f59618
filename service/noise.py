"""Noise levels: which model a request is served by, decided from the file itself for ``noise=auto``.

A noise level names a model trained for one kind of input (``none``: clean bicubic LR; ``jpeg``:
JPEG q 25-90 alone, ``model.degradations.JPEG_ONLY``; ``real``: JPEG q 30-95, blur and sensor
noise, ``model.degradations.RealWorld``). ``auto``, first served level of:

- JPEG: the quality estimated from the file's quantization tables (the IJG quality whose scaled
  standard tables are nearest; encoders with their own tables get their nearest equivalent). At or
  above ``CLEAN_JPEG_QUALITY`` the compression is too light to matter and ``none`` serves it, below
  it ``jpeg``, then ``real``: the threshold is where the models' Set5/Set14 PSNR cross
  (bench/results/noise-auto.md). The file does not say whether a camera also blurred or noised
  it (block statistics of blurred-noisy and clean JPEGs overlap from one photo to the next), so
  a user who knows it asks ``noise=real``.
- lossy WebP: ``real``, then ``jpeg`` (its quantizer is not exposed, and lossy WebP is a web image).
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

from service.images import Probe

NONE, JPEG, REAL, AUTO = "none", "jpeg", "real", "auto"
# none and the artifact levels cross between q 85 (jpeg +0.24 dB) and q 90 (none +0.03): bench/results/noise-auto.md
CLEAN_JPEG_QUALITY = 88
# The card degradations a JPEG input maps to, by quality (100: as good as lossless).
EVALUATED_JPEG = {50: "jpeg50", 75: "jpeg75", 90: "jpeg90", 100: "clean"}
# The degradation a level is meant for: its card's Set5 figures there rank the level's rungs (its ladder).
LADDER_DEGRADATION = {NONE: "clean", JPEG: "jpeg50", REAL: "jpeg75"}


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


@dataclass(frozen=True)
class NoiseChoice:
    """The level serving a request, why (``X-Noise``), and the card degradation its quality is read at."""

    level: str
    reason: str
    degradation: str = "clean"

    @property
    def header(self) -> str:
        return f"{self.level}; {self.reason}"


def expected_degradation(image_format: str, jpeg_quality: int | None) -> str:
    """The evaluated degradation (``model.degradations.EVAL_DEGRADATIONS``) nearest what the file is."""
    if image_format == "JPEG":
        q = 75 if jpeg_quality is None else jpeg_quality
        return EVALUATED_JPEG[min(EVALUATED_JPEG, key=lambda k: abs(k - q))]
    return "clean"


def choose_for_probe(asked: str, probe: Probe, levels: set[str]) -> NoiseChoice:
    """``choose_noise`` for a probed file: its format, whether it is lossless, its JPEG quality."""
    lossless = probe.format != "JPEG" and (probe.format != "WEBP" or probe.lossless_webp)
    quality = estimate_jpeg_quality(getattr(probe.image, "quantization", None))
    return choose_noise(asked, probe.format, lossless, quality, levels)


def choose_noise(
    asked: str, image_format: str, lossless: bool, jpeg_quality: int | None, levels: set[str]
) -> NoiseChoice:
    """The level for a request that asked for ``asked`` (``auto`` or a level in ``levels``)."""
    degradation = expected_degradation(image_format, jpeg_quality)
    if asked != AUTO:
        return NoiseChoice(asked, "asked", degradation)
    if image_format == "JPEG":
        if jpeg_quality is None:
            wanted, why = (JPEG, REAL), "jpeg, quality unknown"
        elif jpeg_quality >= CLEAN_JPEG_QUALITY:
            wanted, why = (NONE,), f"jpeg q~{jpeg_quality} >= {CLEAN_JPEG_QUALITY}"
        else:
            wanted, why = (JPEG, REAL), f"jpeg q~{jpeg_quality} < {CLEAN_JPEG_QUALITY}"
    elif not lossless:
        wanted, why = (REAL, JPEG), f"lossy {image_format.lower()}"
    else:
        wanted, why = (NONE,), f"lossless {image_format.lower() or 'image'}"
    level = next((lv for lv in wanted if lv in levels), None)
    if level is None:  # a server without those models serves one it has
        fallback = NONE if NONE in levels else min(levels)
        return NoiseChoice(fallback, f"{why}; no {wanted[0]} model served", degradation)
    return NoiseChoice(level, why, degradation)
