"""Image-quality metrics for upscales that have no HR: a spectral sharpness share and PIQE (no reference),
and the detail drawn where a reference (the teacher's output) is flat.

Sharpness cannot tell texture from artifacts: a grid or noise in flat areas raises it as much as drawn
detail does. ``flat_noise`` measures that part alone, in the areas the reference leaves flat.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter

from model.metrics import luma

# Radial frequency (cycles/pixel) above which power counts as "high": a quarter of Nyquist (0.5).
_SHARPNESS_CUTOFF = 0.125

# MATLAB's rgb2gray weights (the first row of inv(YIQ matrix)); documented rounded as 0.2989, 0.5870, 0.1140.
_RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])

# PIQE's constants, as in MATLAB's piqe (Image Processing Toolbox, R2018b+).
_BLOCK = 16  # non-overlapping analysis blocks
_ACTIVITY_T = 0.1  # an MSCN block variance above this makes a block "spatially active"
_IMPAIRED_T = 0.1  # an edge segment whose MSCN std is below this is a noticeable (blocking-like) artefact
_SEGMENT = 6  # edge segment length; segments slide by 1 px, 11 per 16-px edge
_C = 1.0  # keeps the pooled score finite when no block is active


def _shaved_luma(img: np.ndarray, shave: int) -> np.ndarray:
    """``model.metrics.luma(img)`` without ``shave`` px at each border."""
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    y = luma(img)
    return y[shave:-shave, shave:-shave] if shave else y


def sharpness(img: np.ndarray, shave: int = 0) -> float:
    """Percentage (0-100) of the luma's spectral power above a quarter of Nyquist.

    Definition: Y = ``model.metrics.luma(img)`` (BT.601 luma of uint8 RGB HxWx3; an HxW gray image is its
    own luma), with ``shave`` px removed from each border; ``z = (Y - mean(Y)) * hann(H) ⊗ hann(W)``;
    ``P = |FFT2(z)|**2``; ``r = sqrt(fx**2 + fy**2)`` with fx, fy from ``np.fft.fftfreq`` (cycles/pixel,
    Nyquist 0.5); the result is ``100 * P[r > 0.125].sum() / P.sum()``, and 0.0 for a constant image.
    """
    y = _shaved_luma(img, shave)
    if y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"image too small after shaving {shave} px: {y.shape}")
    # Test flatness on the values, not on the power: the mean of a float constant need not be exact, and
    # the rounding residue would otherwise give an arbitrary share.
    if np.ptp(y) == 0:
        return 0.0
    h, w = y.shape
    # The Hann taper stops the wrap-around jump between opposite borders (which the DFT treats as adjacent)
    # from showing up as broadband high-frequency power.
    z = (y - y.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(z)) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    high = np.sqrt(fx**2 + fy**2) > _SHARPNESS_CUTOFF
    total = float(power.sum())
    return 0.0 if total == 0.0 else 100.0 * float(power[high].sum()) / total


def flat_noise(img: np.ndarray, reference: np.ndarray, shave: int = 0, block: int = 16, share: float = 0.25) -> float:
    """RMS gray levels (0-255 luma) of ``img``'s fine detail in the areas ``reference`` leaves flat.

    Fine detail: the luma minus its Gaussian blur (sigma 1 px: periods below ~6 px). Flat areas: the
    ``block`` x ``block`` blocks whose fine-detail RMS in ``reference`` is among its lowest ``share``. The
    result is the mean fine-detail RMS of ``img`` over those blocks; ``reference`` scores itself low.
    """
    detail = []
    for x in (img, reference):
        y = _shaved_luma(x, shave)
        h, w = (n - n % block for n in y.shape)
        high = (y - gaussian_filter(y, 1.0))[:h, :w]
        detail.append(np.sqrt((high.reshape(h // block, block, w // block, block) ** 2).mean(axis=(1, 3))))
    flat = detail[1] <= np.quantile(detail[1], share)
    return float(detail[0][flat].mean())


def _matlab_round(x: np.ndarray) -> np.ndarray:
    # MATLAB rounds halves away from zero; np.round rounds them to even.
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _piqe_gray(img: np.ndarray) -> np.ndarray:
    """Gray image on MATLAB's 0..255 integer grid: ``round(255 * im2double(rgb2gray(img)))``."""
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {img.shape}")
    if img.dtype in (np.uint8, np.uint16):
        peak = float(np.iinfo(img.dtype).max)
        g = img.astype(np.float64)
        if g.ndim == 3:
            # rgb2gray keeps the integer class, so MATLAB rounds the weighted sum before the rescale.
            g = _matlab_round(g @ _RGB2GRAY)
        g = g / peak
    elif np.issubdtype(img.dtype, np.floating):
        # Floats follow im2double: already on a 0..1 scale.
        g = img.astype(np.float64)
        if g.ndim == 3:
            g = g @ _RGB2GRAY
    else:
        raise TypeError(f"unsupported dtype {img.dtype}: use uint8, uint16 or float in [0, 1]")
    if not np.isfinite(g).all():
        raise ValueError("image has NaN or infinite values")
    return _matlab_round(255.0 * g)


def piqe(img: np.ndarray) -> float:
    """PIQE (Venkatanath et al., NCC 2015) as MATLAB's ``piqe`` computes it: 0 (best) to 100 (worst).

    ``img`` is uint8/uint16 (HxW or RGB HxWx3) or float in [0, 1]. RGB goes to gray with MATLAB's
    ``rgb2gray``; the gray image is put on a 0..255 integer grid, replicate-padded (bottom/right) to a
    multiple of 16 and turned into MSCN coefficients (7x7 Gaussian, sigma 7/6, replicate borders,
    ``(I - mu) / (sigma + 1)``). A 16x16 block is active if its MSCN variance v > 0.1; an active block scores
    ``(1 - v)`` if any of the 6-px segments (step 1) along its four 1-px edges has MSCN std < 0.1 (noticeable
    artefact), plus ``v`` if its center/surround deviation flags Gaussian noise. The image score is
    ``100 * (sum of block scores + 1) / (number of active blocks + 1)``; a flat image scores 100.
    """
    gray = _piqe_gray(img)
    h, w = gray.shape
    gray = np.pad(gray, ((0, -h % _BLOCK), (0, -w % _BLOCK)), mode="edge")

    # imgaussfilt(I, 7/6, 'FilterSize', 7, 'Padding', 'replicate'): radius 3, 'nearest' = replicate.
    mu = gaussian_filter(gray, 7 / 6, mode="nearest", radius=3)
    # abs(): E[I^2] - mu^2 can dip just below 0 in flat areas through rounding.
    sigma = np.sqrt(np.abs(gaussian_filter(gray * gray, 7 / 6, mode="nearest", radius=3) - mu * mu))
    mscn = (gray - mu) / (sigma + 1.0)

    ph, pw = mscn.shape
    blocks = mscn.reshape(ph // _BLOCK, _BLOCK, pw // _BLOCK, _BLOCK).swapaxes(1, 2)  # (by, bx, 16, 16)
    flat = blocks.reshape(*blocks.shape[:2], -1)
    var = flat.var(axis=-1, ddof=1)  # MATLAB's var/std normalise by N - 1 throughout
    active = var > _ACTIVITY_T

    # Noticeable-distortion criterion: a nearly constant run of 6 MSCN values on a block's border is the
    # signature of blocking or other abrupt artefacts in an otherwise active block.
    edges = np.stack([blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :], blocks[..., :, 0]], axis=2)
    segment_std = sliding_window_view(edges, _SEGMENT, axis=-1).std(axis=-1, ddof=1)  # (by, bx, 4, 11)
    impaired = (segment_std < _IMPAIRED_T).any(axis=(2, 3))

    # Noise criterion: in Gaussian noise the two center columns vary like the rest of the block.
    center = blocks[..., :, [7, 8]].reshape(*blocks.shape[:2], -1)
    # MATLAB deletes column 8 and then column 9 *of the shortened block* (originally column 10, 1-based),
    # so its "surround" keeps center column 9 and drops column 10; reproduce that to match its scores.
    surround = np.delete(blocks, [7, 9], axis=-1).reshape(*blocks.shape[:2], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = center.std(axis=-1, ddof=1) / surround.std(axis=-1, ddof=1)
        ratio = np.where(np.isnan(ratio), 0.0, ratio)  # 0/0 counts as 0, as in MATLAB
        block_sigma = np.sqrt(var)
        beta = np.abs(block_sigma - ratio) / np.maximum(block_sigma, ratio)
        noisy = block_sigma > 2 * beta  # NaN (inf/inf) compares False, as in MATLAB

    scores = np.where(active, impaired * (1.0 - var) + noisy * var, 0.0)
    return float(100.0 * (scores.sum() + _C) / (active.sum() + _C))
