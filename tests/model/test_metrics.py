from __future__ import annotations

import numpy as np
import pytest

from model.data import load_pairs, upscale
from model.metrics import luma, psnr_y, ssim_y
from tests.conftest import SHARED_DATA, synthetic_image


def test_luma_bt601() -> None:
    px = np.array([[[255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    np.testing.assert_allclose(luma(px), [[235.0, 16.0]])


def test_psnr_and_ssim_basics() -> None:
    img = synthetic_image(40, 40)
    assert psnr_y(img, img, 4) == float("inf")
    assert ssim_y(img, img, 4) == pytest.approx(1.0)
    noisy = np.clip(img.astype(int) + 5, 0, 255).astype(np.uint8)
    assert 25 < psnr_y(noisy, img, 4) < 40
    assert ssim_y(noisy, img, 4) < 1.0


def test_shave_removes_borders() -> None:
    img = synthetic_image(40, 40)
    bad_border = img.copy()
    bad_border[:4] = 0
    assert psnr_y(bad_border, img, 4) == float("inf")
    assert psnr_y(bad_border, img, 0) < 30


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "psnr", "ssim"), [("Set5", 28.42, 0.8104), ("Set14", 26.00, 0.7027)])
def test_protocol_reproduces_published_bicubic_x4(name: str, psnr: float, ssim: float) -> None:
    if not (SHARED_DATA / name).exists():
        pytest.skip(f"{SHARED_DATA / name} is absent")
    pairs = load_pairs(SHARED_DATA / name / "HR", 4)
    sr = [upscale(p.lr, 4) for p in pairs]
    assert np.mean([psnr_y(s, p.hr, 4) for s, p in zip(sr, pairs, strict=True)]) == pytest.approx(psnr, abs=0.03)
    assert np.mean([ssim_y(s, p.hr, 4) for s, p in zip(sr, pairs, strict=True)]) == pytest.approx(ssim, abs=0.002)
