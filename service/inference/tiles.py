"""Inference: a backend's dense sub-network per width, run over overlapping tiles so memory stays bounded.

Tiles are cut from the LR input: a core of ``tile_size`` pixels plus a margin on
each side that is cropped from the output. With a margin of at least the
network's receptive radius every output pixel sees exactly what it sees in a
whole-image pass (equal up to float rounding). The influence of far pixels
decays fast, so a much smaller margin is already invisible: the service's
default (12 of EDSR-baseline's 36) keeps 8-bit outputs within one level of the
whole-image pass at ~1.2x the returned pixels instead of 1.9x
(bench/tiles.py).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.edsr import EDSR, EDSRConfig
from model.rungs import Rung
from service.inference.backends import Backend, Cores, create_backend
from service.inference.hardware import available_cpus
from service.settings import Settings


def receptive_radius(cfg: EDSRConfig) -> int:
    """LR pixels on each side that can influence an output pixel.

    Head, residual blocks, body conv and the first upsampler conv are 3x3 at LR
    resolution (one pixel each); the later convs run at 2x/4x and reach a
    fraction of an LR pixel.
    """
    radius = 2 * cfg.n_resblocks + 3.0
    resolution = 1
    for factor in [2, 2] if cfg.scale == 4 else [cfg.scale]:
        resolution *= factor
        radius += 1 / resolution
    return math.ceil(radius)


@dataclass(frozen=True)
class Span:
    """One tile along an axis: the core ``[start, stop)`` it produces and the input ``[lo, hi)`` it reads."""

    start: int
    stop: int
    lo: int
    hi: int


def tile_spans(length: int, tile: int, margin: int) -> list[Span]:
    """Cores of ``tile`` pixels covering ``length``, each read with ``margin`` context clipped to the image."""
    return [
        Span(start, min(start + tile, length), max(start - margin, 0), min(start + tile + margin, length))
        for start in range(0, length, tile)
    ]


class Engine:
    """Tiled forward passes of one width-switchable model's rungs through a backend."""

    def __init__(self, backend: Backend, cfg: EDSRConfig, tile_size: int, tile_overlap: int | None = None) -> None:
        self.backend = backend
        self.cfg = cfg
        self.scale = cfg.scale
        self.widths = cfg.widths
        self.rungs = backend.rungs
        self.tile_size = tile_size
        self.margin = receptive_radius(cfg) if tile_overlap is None else tile_overlap

    def spans(self, h: int, w: int) -> tuple[list[Span], list[Span]]:
        return tile_spans(h, self.tile_size, self.margin), tile_spans(w, self.tile_size, self.margin)

    def work_pixels(self, h: int, w: int) -> int:
        """LR pixels the network processes for an ``h`` x ``w`` input, tile margins included."""
        rows, cols = self.spans(h, w)
        return sum(s.hi - s.lo for s in rows) * sum(s.hi - s.lo for s in cols)

    def run(
        self,
        rgb: np.ndarray,
        rung: Rung,
        before_tile: Callable[[], None] | None = None,
        on_lane: Callable[[float], None] | None = None,
    ) -> np.ndarray:
        """float HxWx3 (0..255) -> float (sH)x(sW)x3, unclamped; ``before_tile`` may raise to abort.

        The tiles run inside the backend's lane, held for the whole image; ``on_lane`` gets the seconds
        spent waiting for it.
        """
        h, w = rgb.shape[:2]
        out = np.empty((h * self.scale, w * self.scale, 3), np.float32)
        for top, strip in self.strips(rgb, rung, before_tile, on_lane):
            out[top : top + strip.shape[0]] = strip
        return out

    def strips(
        self,
        rgb: np.ndarray,
        rung: Rung,
        before_tile: Callable[[], None] | None = None,
        on_lane: Callable[[float], None] | None = None,
        tile_turn: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The output one row of tiles at a time, top to bottom: (first output row, float strip x W x 3).

        ``tile_turn``: each tile runs inside it, the lane taken tile by tile instead of for the whole
        image (a job that lets interactive requests go first); the consumer may write each strip away,
        so memory holds one strip, never the whole output.
        """
        s = self.scale
        h, w = rgb.shape[:2]
        x = np.ascontiguousarray(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None])
        rows, cols = self.spans(h, w)
        asked = time.perf_counter()
        with self.backend.lane() if tile_turn is None else contextlib.nullcontext():
            if on_lane is not None:
                on_lane(time.perf_counter() - asked)
            try:
                for r in rows:
                    strip = np.empty((3, (r.stop - r.start) * s, w * s), np.float32)
                    for c in cols:
                        if before_tile is not None:
                            before_tile()
                        tile = np.ascontiguousarray(x[:, :, r.lo : r.hi, c.lo : c.hi])
                        with tile_turn() if tile_turn is not None else contextlib.nullcontext():
                            y = self.backend.infer(rung, tile)[0]
                        top, left = (r.start - r.lo) * s, (c.start - c.lo) * s
                        core = y[:, top : top + (r.stop - r.start) * s, left : left + (c.stop - c.start) * s]
                        strip[:, :, c.start * s : c.stop * s] = core
                    yield r.start * s, strip.transpose(1, 2, 0)
            finally:
                if tile_turn is None:
                    self.backend.release(rung)
                else:
                    with tile_turn():
                        self.backend.release(rung)


def build_engine(model: EDSR, settings: Settings, weights: Path, lane: threading.Lock | None = None) -> Engine:
    """The configured backend over ``model``'s widths (``weights``: its file), tiled as the settings say.

    ``lane``: the lock the engines of several models share, so their tiles take turns in one lane.
    """
    cores = Cores(settings.threads or available_cpus(), settings.workers, settings.torch_threads)
    backend = create_backend(settings.backend, model, cores, weights, settings.precisions, lane)
    return Engine(backend, model.cfg, settings.tile_size, settings.tile_overlap)
