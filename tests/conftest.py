from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The servers the tests start (in process and as subprocesses, which inherit this) build the fp32 and int8
# rungs on every CPU, so the ladders they assert do not depend on whether this CPU has native bf16. The bf16
# rungs have their own tests, which ask for them explicitly (tests/service/api/test_api.py, tests/model/test_bf16.py).
os.environ.setdefault("CSD_SR_PRECISIONS", "fp32,int8")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the suite shares 2 cores; keep each test single-threaded


def synthetic_image(h: int, w: int, seed: int = 0, noise: float = 8.0) -> np.ndarray:
    """A natural-ish RGB test image: smooth gradients, sharp edges and fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [
            128 + 100 * np.sin(x / 7.0 + seed) * np.cos(y / 11.0),
            128 + 90 * np.sign(np.sin(x / 13.0 + y / 17.0)),
            (x * 3 + y * 2) % 256,
        ],
        axis=2,
    )
    img += rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_png(path: Path, img: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(img).save(path)
    return path
