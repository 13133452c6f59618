"""Training and evaluation data: HR folders, MATLAB-style bicubic LR, random patches.

LR images come from Pillow's BICUBIC resize, which is antialiased with cubic
coefficient -0.5, the kernel of MATLAB's ``imresize`` (the evaluation test checks
that it reproduces the published bicubic figures).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.degradations import RealWorld, degrade, image_seed

IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    return paths


def load_image(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB, or HxW uint8 for single-channel (grayscale) files."""
    with Image.open(path) as img:
        img = img.convert("L") if img.mode in ("L", "I;16", "I") else img.convert("RGB")
        return np.array(img)  # writable copy: torch.from_numpy needs one


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def bicubic_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 image to ``size`` = (width, height) with MATLAB-style bicubic."""
    return np.array(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC))


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    h, w = hr.shape[:2]
    return bicubic_resize(hr, (w // scale, h // scale))


def upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = lr.shape[:2]
    return bicubic_resize(lr, (w * scale, h * scale))


def resize_lanczos(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased Lanczos-3 resize of a float HxWx3 image to ``size`` = (width, height), in float.

    Serves a factor below a model's native scale: the model's output, then this (Real-ESRGAN's
    ``--outscale`` does the same with OpenCV's Lanczos); the service and ``csd-sr evaluate --scale``
    share it. Lanczos keeps more of the model's detail than bicubic at the same antialiasing; its
    slight overshoot is clamped at encoding.
    """
    planes = [Image.fromarray(np.ascontiguousarray(rgb[..., c], dtype=np.float32)) for c in range(rgb.shape[2])]
    return np.stack([np.asarray(p.resize(size, Image.Resampling.LANCZOS)) for p in planes], axis=2)


@dataclass
class Pair:
    name: str
    lr: np.ndarray
    hr: np.ndarray


def default_cache_dir() -> Path:
    return Path(os.environ.get("CSD_SR_CACHE", Path.home() / ".cache" / "csd-sr"))


def load_pair(path: Path, scale: int, cache_dir: Path | None = None) -> Pair:
    """HR (mod-cropped) and its bicubic LR; the LR is cached on disk when ``cache_dir`` is set."""
    hr = mod_crop(load_image(path), scale)
    if cache_dir is None:
        return Pair(path.stem, downscale(hr, scale), hr)
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|x{scale}".encode())
    cached = cache_dir / f"{path.stem}-{key.hexdigest()[:16]}.npy"
    if cached.exists():
        lr = np.load(cached)
    else:
        lr = downscale(hr, scale)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # a per-process temporary name: DDP ranks fill the same cache at the same time
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, lr)
        tmp.replace(cached)
    return Pair(path.stem, lr, hr)


def load_pairs(folder: str | Path, scale: int, cache_dir: Path | None = None) -> list[Pair]:
    return [load_pair(p, scale, cache_dir) for p in list_images(folder)]


def degrade_pairs(pairs: list[Pair], degradation: str) -> list[Pair]:
    """The same pairs with each LR degraded (``model.degradations.degrade``, seeded by image name)."""
    return [Pair(p.name, degrade(p.lr, degradation, image_seed(p.name)), p.hr) for p in pairs]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxW[x3] -> float 1x3xHxW in 0..255 (grayscale replicated to RGB)."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def to_image(t: torch.Tensor) -> np.ndarray:
    """float 1x3xHxW in 0..255 -> uint8 HxWx3, rounded and clamped as the protocol requires."""
    return t[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


class PatchSampler:
    """Random aligned LR/HR patches with flips and transpose from in-memory images.

    With a ``degradation`` recipe each LR patch is synthesised on the fly from the clean bicubic
    one (``model.degradations``). Sampling draws only from ``generator``, so a checkpointed
    generator state resumes the exact patch sequence.
    """

    def __init__(
        self,
        folders: list[str | Path],
        scale: int,
        patch_size: int,
        cache_dir: Path | None,
        degradation: RealWorld | None = None,
    ):
        if patch_size % scale:
            raise ValueError(f"patch_size {patch_size} must be a multiple of scale {scale}")
        self.scale, self.lr_patch = scale, patch_size // scale
        self.degradation = degradation
        pairs = [pair for folder in folders for pair in load_pairs(folder, scale, cache_dir)]
        self.pairs = [p for p in pairs if min(p.lr.shape[:2]) >= self.lr_patch]
        if not self.pairs:
            raise ValueError(f"no training image is at least {patch_size} px on each side")
        self.pairs = [Pair(p.name, as_rgb(p.lr), as_rgb(p.hr)) for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (lr, hr) float tensors in 0..255, shapes Bx3xPxP and Bx3x(sP)x(sP)."""
        s, p = self.scale, self.lr_patch
        lrs, hrs = [], []
        for _ in range(batch_size):
            pair = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=generator))]
            h, w = pair.lr.shape[:2]
            y = int(torch.randint(h - p + 1, (1,), generator=generator))
            x = int(torch.randint(w - p + 1, (1,), generator=generator))
            lr_np = np.ascontiguousarray(pair.lr[y : y + p, x : x + p])
            hr_np = np.ascontiguousarray(pair.hr[y * s : (y + p) * s, x * s : (x + p) * s])
            if self.degradation is not None:
                lr_np = self.degradation(lr_np, hr_np, generator)
            lr, hr = (torch.from_numpy(a).permute(2, 0, 1) for a in (lr_np, hr_np))
            hflip, vflip, transpose = torch.randint(2, (3,), generator=generator).tolist()
            lr, hr = (augment(t, hflip, vflip, transpose) for t in (lr, hr))
            lrs.append(lr)
            hrs.append(hr)
        return torch.stack(lrs).float(), torch.stack(hrs).float()


def as_rgb(img: np.ndarray) -> np.ndarray:
    """HxWx3: a grayscale HxW image repeated over three channels, RGB as it is."""
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def augment(t: torch.Tensor, hflip: int, vflip: int, transpose: int) -> torch.Tensor:
    """A CxHxW patch flipped and transposed as drawn (the samplers draw once per aligned pair)."""
    if hflip:
        t = t.flip(2)
    if vflip:
        t = t.flip(1)
    if transpose:
        t = t.transpose(1, 2)
    return t.contiguous()
