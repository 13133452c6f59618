from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from model.perceptual_metrics import flat_noise, piqe, sharpness
from tests.conftest import synthetic_image


def _noise(h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (h, w))


def test_sharpness_constant_image_is_zero() -> None:
    assert sharpness(np.full((32, 48, 3), 77, np.uint8)) == 0.0
    assert sharpness(np.full((32, 48), 0.1)) == 0.0  # a float constant whose mean is inexact


def test_sharpness_white_noise_is_high() -> None:
    # A flat spectrum puts 1 - pi * 0.125**2 (~95 %) of its power outside the r = 0.125 disc.
    assert sharpness(_noise()) > 60


def test_sharpness_drops_under_blur() -> None:
    noise = _noise()
    sharp = sharpness(noise)
    assert sharpness(gaussian_filter(noise, 3)) < sharp / 5
    scores = [sharpness(gaussian_filter(noise, sigma)) for sigma in (0.5, 1, 2)]
    assert sharp > scores[0] > scores[1] > scores[2]


def test_sharpness_gray_equals_replicated_rgb() -> None:
    gray = synthetic_image(64, 80)[..., 0]
    rgb = np.repeat(gray[..., None], 3, axis=2)
    # BT.601 luma of (v, v, v) is affine in v, and the share ignores offset and scale.
    assert sharpness(rgb) == pytest.approx(sharpness(gray), rel=1e-9)


def test_sharpness_shave_crops_borders() -> None:
    img = synthetic_image(64, 64)
    assert sharpness(img, shave=4) == pytest.approx(sharpness(img[4:-4, 4:-4]), rel=1e-12)
    with pytest.raises(ValueError):
        sharpness(img, shave=-1)


def _natural(seed: int = 0) -> np.ndarray:
    # Smooth gradients, sharp-edged shapes and mild texture (tests/conftest.py), 128x128 RGB.
    return synthetic_image(128, 128, seed=seed, noise=3)


def test_piqe_range_and_determinism() -> None:
    img = _natural()
    score = piqe(img)
    assert 0.0 <= score <= 100.0
    assert piqe(img.copy()) == score
    assert 0.0 <= piqe(_noise(50, 70).astype(np.uint8)) <= 100.0  # not a multiple of 16: padded


def test_piqe_flat_image_scores_worst() -> None:
    assert piqe(np.full((48, 48, 3), 200, np.uint8)) == 100.0


def test_piqe_penalises_noise_and_blocking() -> None:
    img = _natural()
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 25, img.shape), 0, 255).astype(np.uint8)
    # 8x8 blocking: box-downsample by 8, then nearest-upsample.
    small = img.astype(np.float64).reshape(16, 8, 16, 8, 3).mean(axis=(1, 3))
    blocky = np.round(np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)).astype(np.uint8)
    clean = piqe(img)
    assert clean < piqe(noisy)
    assert clean < piqe(blocky)


def test_piqe_input_conventions() -> None:
    img = _natural()
    # Floats follow MATLAB's im2double (0..1) and gray needs no conversion.
    assert piqe(img.astype(np.float64) / 255) == pytest.approx(piqe(img), abs=1.0)
    gray = img[..., 1]
    assert piqe(np.repeat(gray[..., None], 3, axis=2)) == pytest.approx(piqe(gray), rel=1e-12)
    with pytest.raises(ValueError):
        piqe(np.zeros((32, 32, 4), np.uint8))


def test_flat_noise_sees_a_grid_where_the_reference_is_flat_and_not_its_texture() -> None:
    rng = np.random.default_rng(0)
    reference = np.full((64, 64, 3), 128, np.uint8)
    reference[:, :32] = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)  # texture left, flat right
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 16 - 8
    gridded = reference.astype(int)
    gridded[:, 32:] += checker[:, 32:, None]  # a grid drawn in the flat half
    assert flat_noise(reference, reference) == pytest.approx(0, abs=1e-9)  # flat is flat
    assert flat_noise(np.clip(gridded, 0, 255).astype(np.uint8), reference) > 5  # ~8 levels of checker
    retextured = reference.copy()
    retextured[:, :32] = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)  # other texture, same place
    assert flat_noise(retextured, reference) == pytest.approx(0, abs=1e-9)
