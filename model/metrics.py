"""Standard SR metrics: Y-channel PSNR and SSIM with ``shave`` border pixels removed.

Matches the MATLAB scripts behind published tables: BT.601 luma
``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``; single-channel (gray)
images are scored on their gray value as Y.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def luma(img: np.ndarray) -> np.ndarray:
    """Y channel (float64, 0..255 scale) of an HxWx3 RGB image; HxW gray is returned as is."""
    img = img.astype(np.float64)
    if img.ndim == 2:
        return img
    return 16.0 + img @ np.array([65.481, 128.553, 24.966]) / 255.0


def _shaved_pair(sr: np.ndarray, hr: np.ndarray, shave: int) -> tuple[np.ndarray, np.ndarray]:
    if hr.ndim == 2 and sr.ndim == 3:
        # A gray HR image was replicated to RGB for the network: score the output's gray value.
        sr = sr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    y_sr, y_hr = luma(sr), luma(hr)
    if y_sr.shape != y_hr.shape:
        raise ValueError(f"shape mismatch: {y_sr.shape} vs {y_hr.shape}")
    if shave:
        y_sr, y_hr = y_sr[shave:-shave, shave:-shave], y_hr[shave:-shave, shave:-shave]
    return y_sr, y_hr


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    y_sr, y_hr = _shaved_pair(sr, hr, shave)
    mse = float(np.mean((y_sr - y_hr) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, valid region, L = 255."""
    y_sr, y_hr = _shaved_pair(sr, hr, shave)
    a = torch.from_numpy(y_sr)[None, None]
    b = torch.from_numpy(y_hr)[None, None]
    win = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, win), F.conv2d(b, win)
    var_a = F.conv2d(a * a, win) - mu_a**2
    var_b = F.conv2d(b * b, win) - mu_b**2
    cov = F.conv2d(a * b, win) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
