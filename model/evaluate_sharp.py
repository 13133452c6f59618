"""Evaluation of the sharp style: how close each rung comes to the GAN teacher's look, and at what fidelity.

Per set, LR degradation and rung: sharpness (``model.perceptual_metrics``; % of the luma's spectral power
above a quarter of Nyquist), PIQE (no-reference, lower is better), fine detail where the teacher is flat
(``flat_noise``: artifacts, lower is better), Y-PSNR to the teacher's output on the same LR, and Y-PSNR /
SSIM to the HR. Rows for bicubic and the teacher itself frame the rungs. The
teacher runs once per (image, degradation) in PyTorch (bf16), at training time only. Below x4 (``scale`` 2
or 3) every x4 output, the teacher's too, is Lanczos-downscaled to the HR's size, as the service serves it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.data import Pair, as_rgb, degrade_pairs, downscale, load_image, load_pairs, resize_lanczos, upscale
from model.evaluate import Forward, set_name, super_resolve
from model.metrics import psnr_y, ssim_y
from model.perceptual_metrics import flat_noise, piqe, sharpness
from model.rrdbnet import RRDBNet
from model.rungs import Rung
from model.teacher import teacher_upscale
from model.teacher_data import split_folder

SHARP_DEGRADATIONS = ("clean", "jpeg75", "camera")


def sharp_scores(sr: np.ndarray, hr: np.ndarray, teacher: np.ndarray, shave: int) -> dict[str, float]:
    """The six figures of one output (``shave`` px off each border for every figure)."""
    inner = (slice(shave, -shave), slice(shave, -shave)) if shave else (slice(None), slice(None))
    return {
        "sharpness": sharpness(sr, shave),
        "piqe": piqe(sr[inner]),
        "flat_noise": flat_noise(sr, teacher, shave),
        "psnr_teacher": psnr_y(sr, teacher, shave),
        "psnr": psnr_y(sr, hr, shave),
        "ssim": ssim_y(sr, hr, shave),
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


def holdout_pairs(
    folders: list[str | Path], crops: int, lr_size: int = 80, scale: int = 4, seed: int = 0
) -> list[Pair]:
    """``crops`` seeded HR crops (``lr_size * scale`` px) of the images held out from the teacher's targets."""
    images = [as_rgb(load_image(p)) for f in folders for p in split_folder(f)[1]]
    size = lr_size * scale
    images = [img for img in images if min(img.shape[:2]) >= size]
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(crops):
        img = images[i % len(images)]
        y, x = (int(rng.integers(0, s - size + 1)) for s in img.shape[:2])
        hr = np.ascontiguousarray(img[y : y + size, x : x + size])
        pairs.append(Pair(f"holdout-{i:02d}", downscale(hr, scale), hr))
    return pairs


@torch.no_grad()
def evaluate_sharp(
    pairs_by_set: dict[str, list[Pair]],
    forwards: dict[str, Forward],
    teacher: RRDBNet,
    degradations: tuple[str, ...] = SHARP_DEGRADATIONS,
    scale: int = 4,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``result[degradation][set][row]`` for rows bicubic, teacher and every entry of ``forwards``, on pairs of
    ``scale`` (the x4 teacher and rungs downscaled below 4)."""
    result: dict = {}
    for degradation in degradations:
        for name, clean in pairs_by_set.items():
            pairs = degrade_pairs(clean, degradation)
            targets = [_served(teacher_upscale(teacher, as_rgb(p.lr)), p) for p in pairs]
            outputs = {"bicubic": [upscale(as_rgb(p.lr), scale) for p in pairs], "teacher": targets}
            outputs |= {key: [super_resolve(f, p.lr, size=_size(p)) for p in pairs] for key, f in forwards.items()}
            result.setdefault(degradation, {})[name] = {
                key: _mean(
                    [sharp_scores(sr, as_rgb(p.hr), t, scale) for sr, p, t in zip(srs, pairs, targets, strict=True)]
                )
                for key, srs in outputs.items()
            }
    return result


def _size(pair: Pair) -> tuple[int, int]:
    return pair.hr.shape[1], pair.hr.shape[0]


def _served(x4: np.ndarray, pair: Pair) -> np.ndarray:
    """A x4 output as served at ``pair``'s scale: itself, or Lanczos-downscaled to the HR's size."""
    if x4.shape[:2] == pair.hr.shape[:2]:
        return x4
    return np.clip(np.rint(resize_lanczos(x4.astype(np.float32), _size(pair))), 0, 255).astype(np.uint8)


def load_sets(folders: list[str | Path], scale: int = 4) -> dict[str, list[Pair]]:
    return {set_name(f): load_pairs(f, scale) for f in folders}


def to_markdown(result: dict) -> str:
    lines = []
    for degradation, sets in result.items():
        for name, rows in sets.items():
            lines += [
                f"### {name}, LR {degradation}",
                "",
                "| row | sharpness % | PIQE | flat noise | PSNR to teacher | PSNR to HR | SSIM |",
                "|---|---|---|---|---|---|---|",
            ]
            for key, r in rows.items():
                lines.append(
                    f"| {key} | {r['sharpness']:.2f} | {r['piqe']:.1f} | {r['flat_noise']:.2f} | "
                    f"{r['psnr_teacher']:.2f} | {r['psnr']:.2f} | {r['ssim']:.4f} |"
                )
            lines.append("")
    return "\n".join(lines)


def rung_forwards(forwards: dict[Rung, Forward], prefix: str = "") -> dict[str, Forward]:
    return {f"{prefix}{rung.key}": f for rung, f in forwards.items()}
