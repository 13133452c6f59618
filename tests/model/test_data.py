from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import PatchSampler, downscale, load_pair, load_pairs, mod_crop, to_image, to_tensor, upscale
from tests.conftest import synthetic_image, write_png


@pytest.fixture
def hr_folder(tmp_path):
    folder = tmp_path / "HR"
    folder.mkdir()
    for i, (h, w) in enumerate([(96, 120), (130, 101), (20, 20)]):
        write_png(folder / f"img{i}.png", synthetic_image(h, w, seed=i))
    return folder


def test_bicubic_downscale_is_antialiased_and_sized() -> None:
    hr = mod_crop(synthetic_image(101, 99), 4)
    lr = downscale(hr, 4)
    assert hr.shape == (100, 96, 3) and lr.shape == (25, 24, 3)
    # antialiased: a 4x4 checkerboard of period 2 averages out instead of aliasing
    board = np.indices((64, 64)).sum(0) % 2 * 255
    small = downscale(np.repeat(board[..., None], 3, 2).astype(np.uint8), 4)
    assert abs(small.astype(float).mean() - 127.5) < 2 and small.std() < 3
    assert upscale(lr, 4).shape == hr.shape


def test_lr_cache_is_reused(tmp_path, hr_folder) -> None:
    cache = tmp_path / "cache"
    first = load_pair(hr_folder / "img0.png", 4, cache)
    files = list(cache.iterdir())
    assert len(files) == 1
    np.save(files[0], np.zeros_like(first.lr))  # prove the second load reads the cache
    assert load_pair(hr_folder / "img0.png", 4, cache).lr.max() == 0


def test_sampler_patches_are_aligned_and_deterministic(hr_folder) -> None:
    sampler = PatchSampler([hr_folder], 4, 32, None)
    assert len(sampler) == 2  # the 20x20 image is smaller than one LR patch and is skipped
    lr, hr = sampler.sample(6, torch.Generator().manual_seed(0))
    assert lr.shape == (6, 3, 8, 8) and hr.shape == (6, 3, 32, 32)
    # LR patch is the LR of its HR patch (up to the border effect of downscaling the whole image)
    for lo, hi in zip(lr, hr, strict=True):
        ref = downscale(to_image(hi[None]), 4).astype(float)
        assert np.abs(ref[2:-2, 2:-2] - to_image(lo[None]).astype(float)[2:-2, 2:-2]).mean() < 4
    again = sampler.sample(6, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], lr) and torch.equal(again[1], hr)


def test_grayscale_images_load_as_single_channel(tmp_path) -> None:
    folder = tmp_path / "gray"
    folder.mkdir()
    write_png(folder / "g.png", synthetic_image(40, 40)[..., 0])
    (pair,) = load_pairs(folder, 4)
    assert pair.hr.ndim == 2 and pair.lr.shape == (10, 10)
    assert to_tensor(pair.lr).shape == (1, 3, 10, 10)
