"""LR degradations: the fixed ones evaluation and the service measure, and the random training recipe.

Evaluation degradations act on the clean bicubic LR, exactly as the real-photo issue defines them
(so every measurement agrees): ``jpegQ`` is Pillow's JPEG at quality Q (4:2:0); ``camera`` is
Pillow ``GaussianBlur(0.8)``, Gaussian noise of sigma 4 (of 255, numpy, seeded per image), rounded
and clipped, then JPEG q 80.

The training recipe (``RealWorld``) follows Real-ESRGAN's first-order pipeline, one pass of
(resize kernel, blur, noise, JPEG), each step drawn at random strength, with a share of clean
bicubic pairs so the same model stays good on clean inputs. Every random draw comes from the
caller's ``torch.Generator``: a checkpointed generator resumes the exact sequence.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

EVAL_DEGRADATIONS = ("clean", "jpeg90", "jpeg75", "jpeg50", "camera")


def jpeg_bytes(img: np.ndarray, quality: int) -> bytes:
    """``img`` as a Pillow JPEG file (default 4:2:0 subsampling)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip through Pillow."""
    with Image.open(io.BytesIO(jpeg_bytes(img, quality))) as out:
        return np.array(out.convert(Image.fromarray(img).mode))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.array(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))


def add_noise(img: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``img`` plus a float noise field (broadcast over channels), rounded and clipped to uint8."""
    return np.clip(np.round(img.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def image_seed(name: str) -> int:
    """A stable per-image seed (the camera noise of one image is the same in every run)."""
    return zlib.crc32(name.encode())


def _compressed(lr: np.ndarray, degradation: str, seed: int) -> tuple[np.ndarray, int]:
    """What a lossy ``degradation`` hands the JPEG encoder, and at which quality."""
    if degradation.startswith("jpeg") and degradation[4:].isdigit():
        return lr, int(degradation[4:])
    if degradation == "camera":
        blurred = gaussian_blur(lr, 0.8)
        return add_noise(blurred, np.random.default_rng(seed).normal(0.0, 4.0, blurred.shape)), 80
    raise ValueError(f"unknown degradation {degradation!r}: expected one of {EVAL_DEGRADATIONS} or jpegQ")


def degrade(lr: np.ndarray, degradation: str, seed: int = 0) -> np.ndarray:
    """One of ``EVAL_DEGRADATIONS`` applied to a clean uint8 LR image."""
    return lr if degradation == "clean" else jpeg(*_compressed(lr, degradation, seed))


def degraded_file(lr: np.ndarray, degradation: str, seed: int = 0) -> bytes:
    """``degrade(lr, degradation, seed)`` as the file a user sends: decoding it gives exactly that.

    JPEG degradations (and ``camera``, which ends in JPEG q 80) are the JPEG file; ``clean`` is a PNG.
    """
    if degradation != "clean":
        return jpeg_bytes(*_compressed(lr, degradation, seed))
    buf = io.BytesIO()
    Image.fromarray(lr).save(buf, format="PNG")
    return buf.getvalue()


# Pillow kernels a camera or a web pipeline may have downscaled with (bicubic is the clean one).
_KERNELS = (Image.Resampling.BILINEAR, Image.Resampling.BOX, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class RealWorld:
    """Random real-world LR synthesis for training; the defaults are the shipped ``real`` recipe.

    Strengths cover the inputs users send: web images and phone shares at JPEG q 30-95, mild lens
    blur, sensor noise of a few grey levels.
    """

    p_clean: float = 0.2  # share of untouched bicubic pairs
    p_kernel: float = 0.3  # another downscaling kernel instead of bicubic
    p_blur: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    p_noise: float = 0.5
    noise_sigma: tuple[float, float] = (1.0, 10.0)
    p_gray_noise: float = 0.4  # luminance-only noise (the same field in every channel)
    p_jpeg: float = 0.9
    jpeg_quality: tuple[int, int] = (30, 95)

    def __call__(self, lr: np.ndarray, hr: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """A degraded version of the clean bicubic ``lr`` patch (``hr`` is its HR patch)."""

        def chance(p: float) -> bool:
            return float(torch.rand((), generator=generator)) < p

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=generator))

        if chance(self.p_clean):
            return lr
        out = lr
        if chance(self.p_kernel):
            kernel = _KERNELS[int(torch.randint(len(_KERNELS), (), generator=generator))]
            out = np.array(Image.fromarray(hr).resize(lr.shape[1::-1], kernel))
        if chance(self.p_blur):
            out = gaussian_blur(out, uniform(*self.blur_sigma))
        if chance(self.p_noise):
            sigma = uniform(*self.noise_sigma)
            # luminance-only: one field for every channel (an HxW input takes an HxW field either way)
            shape = out.shape[:2] + (1,) * (out.ndim - 2) if chance(self.p_gray_noise) else out.shape
            out = add_noise(out, (torch.randn(shape, generator=generator, dtype=torch.float64) * sigma).numpy())
        if chance(self.p_jpeg):
            lo, hi = self.jpeg_quality
            out = jpeg(out, int(torch.randint(lo, hi + 1, (), generator=generator)))
        return out


# The heavy level (configs/x4-heavy.toml), an experiment that measured below "real" (docs/models.md):
# every pair degraded, JPEG q 15-75, blur and noise more often and stronger.
HEAVY = RealWorld(
    p_clean=0.0,
    p_blur=0.6,
    blur_sigma=(0.3, 2.0),
    p_noise=0.6,
    noise_sigma=(1.0, 15.0),
    p_jpeg=1.0,
    jpeg_quality=(15, 75),
)

# The JPEG level (configs/x4-jpeg.toml): compression alone, the artifact of web images and phone
# shares, without the blur and noise whose inversion (sharpening) also sharpens block edges.
# Quality 25-90 covers what ``noise=auto`` sends it (q below service.noise.CLEAN_JPEG_QUALITY).
JPEG_ONLY = RealWorld(p_clean=0.1, p_blur=0.0, p_noise=0.0, p_jpeg=1.0, jpeg_quality=(25, 90))

# The JPEG level's third stage: the same steps with the qualities shifted down (q 20-80, 5 % clean),
# because its weakest inputs are the strongly compressed ones (q 50 and below) and q 80-87 had dB to spare.
JPEG_LOW = RealWorld(p_clean=0.05, p_blur=0.0, p_noise=0.0, p_jpeg=1.0, jpeg_quality=(20, 80))

# The "real" level's later stages (configs/x4-real.toml): since ``noise=auto`` sends clean files and
# sharp JPEGs elsewhere, the ``real`` model sees blurred JPEGs (q 70-87) and noisy inputs; its pairs
# now mostly carry blur and noise, and JPEG of the qualities the blur check routes to it.
BLURRED = RealWorld(p_clean=0.05, p_blur=0.8, p_noise=0.7, p_jpeg=0.95, jpeg_quality=(60, 95))

TRAINING_RECIPES: dict[str, RealWorld | None] = {
    "none": None,
    "real": RealWorld(),
    "heavy": HEAVY,
    "jpeg": JPEG_ONLY,
    "blurred": BLURRED,
    "jpeg-low": JPEG_LOW,
}


# Recipes that train a later stage of another recipe's level; every other recipe names its level.
STAGE_RECIPES = {"blurred": "real", "jpeg-low": "jpeg"}


def noise_level(recipe: str) -> str:
    """The noise level a model trained on ``recipe`` serves (a card's ``noise``; ``none``: clean)."""
    return STAGE_RECIPES.get(recipe, recipe)
