"""Inference: one dense sub-network per width, run over overlapping tiles so memory stays bounded.

Tiles are cut from the LR input: a core of ``tile_size`` pixels plus a margin on
each side that is cropped from the output. With a margin of at least the
network's receptive radius every output pixel sees exactly what it sees in a
whole-image pass, so seams are invisible (equal up to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from model.edsr import EDSR, EDSRConfig


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
    """The model's dense sub-networks and the tiled forward pass."""

    def __init__(self, model: EDSR, tile_size: int, tile_overlap: int | None = None) -> None:
        self.cfg = model.cfg
        self.scale = model.cfg.scale
        self.widths = model.cfg.widths
        self.nets = {w: model.dense(w) for w in self.widths}
        self.tile_size = tile_size
        self.margin = receptive_radius(self.cfg) if tile_overlap is None else tile_overlap

    def spans(self, h: int, w: int) -> tuple[list[Span], list[Span]]:
        return tile_spans(h, self.tile_size, self.margin), tile_spans(w, self.tile_size, self.margin)

    def work_pixels(self, h: int, w: int) -> int:
        """LR pixels the network processes for an ``h`` x ``w`` input, tile margins included."""
        rows, cols = self.spans(h, w)
        return sum(s.hi - s.lo for s in rows) * sum(s.hi - s.lo for s in cols)

    @torch.inference_mode()
    def run(self, rgb: np.ndarray, width: float, before_tile: Callable[[], None] | None = None) -> np.ndarray:
        """float HxWx3 (0..255) -> float (sH)x(sW)x3, unclamped; ``before_tile`` may raise to abort."""
        net, s = self.nets[width], self.scale
        h, w = rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        out = torch.empty(3, h * s, w * s)
        rows, cols = self.spans(h, w)
        for r in rows:
            for c in cols:
                if before_tile is not None:
                    before_tile()
                y = net(x[:, :, r.lo : r.hi, c.lo : c.hi].contiguous())[0]
                top, left = (r.start - r.lo) * s, (c.start - c.lo) * s
                core = y[:, top : top + (r.stop - r.start) * s, left : left + (c.stop - c.start) * s]
                out[:, r.start * s : r.stop * s, c.start * s : c.stop * s] = core
        return out.permute(1, 2, 0).numpy()
