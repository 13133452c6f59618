"""The warm-up: every rung of every model timed on the full worker path at two input sizes, so the cost
model (``service.scheduling.policy.CostModel``) starts from measured costs; and the reference input the
ladder and ``/v1/model`` compare rungs on."""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
from PIL import Image

from service.catalog.registry import ServedModel
from service.inference import images
from service.inference.process import process
from service.inference.tiles import Engine
from service.scheduling.policy import CostModel

# Warm-up runs each rung on inputs of these LR sides, REPEATS times each, to fit overhead + slope.
# The larger is a default tile: the slope of small inputs underestimates real photos.
WARMUP_SIDES = (64, 256)
WARMUP_REPEATS = 3
# ...but stops repeating a size once its runs took this long: a full-width rung's 256-px run takes 3-4 s
# on a 2-core AVX2 CPU, where timer noise is nothing and its first run only ~4 % slower (measured), and
# three of them for every slow rung of five models kept /readyz past 60 s (71 s; 30 rungs)
WARMUP_SECONDS_PER_SIZE = 2.0
REFERENCE_SIDE = WARMUP_SIDES[-1]  # the input rungs are compared on (the ladder, /v1/model's decision)
REFERENCE_PIXELS = REFERENCE_SIDE**2


def reference_work_pixels(engine: Engine) -> int:
    """LR pixels the network processes for the reference input (tile margins included)."""
    return engine.work_pixels(REFERENCE_SIDE, REFERENCE_SIDE)


def synthetic_png(side: int, seed: int = 0) -> bytes:
    """A textured RGB test image: warm-up inputs should cost what real photos cost to encode."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    base = 128 + 100 * np.sin(x / 5.0)[..., None] * np.cos(y / 7.0)[..., None]
    img = np.clip(base + rng.normal(0, 12, (side, side, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def warm_up(model: ServedModel, cost: CostModel, png_compress_level: int) -> None:
    """Time the full worker path at every rung of ``model`` and two sizes; fit the cost model (median of the
    repeats, fewer for a slow rung: ``WARMUP_SECONDS_PER_SIZE``)."""
    inputs = {side: synthetic_png(side) for side in WARMUP_SIDES}
    engine = model.engine
    for rung in model.rungs:
        samples = []
        for side, data in inputs.items():
            times: list[float] = []
            while len(times) < WARMUP_REPEATS and sum(times) < WARMUP_SECONDS_PER_SIZE:
                start = time.perf_counter()
                encoding = images.Encoding("png", None, png_compress_level)
                process(engine, images.probe(data, side * side), rung.rung, encoding)
                times.append(time.perf_counter() - start)
            samples.append((engine.work_pixels(side, side), statistics.median(times)))
        cost.fit(rung, samples)
