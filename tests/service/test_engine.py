"""Tiled inference: spans, receptive radius and seam-free tiles at every scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.edsr import EDSR, EDSRConfig
from service.engine import Engine, receptive_radius, tile_spans
from tests.conftest import synthetic_image


def tiny(scale: int) -> EDSR:
    torch.manual_seed(scale)
    return EDSR(EDSRConfig(scale=scale, n_resblocks=2, n_feats=16)).eval()


def test_spans_cover_the_axis_once_with_clipped_margins() -> None:
    spans = tile_spans(70, 32, 8)
    assert [(s.start, s.stop, s.lo, s.hi) for s in spans] == [(0, 32, 0, 40), (32, 64, 24, 70), (64, 70, 56, 70)]
    assert tile_spans(10, 32, 8)[0] == tile_spans(10, 32, 8)[-1]  # smaller than a tile: one whole-image pass


def test_receptive_radius() -> None:
    # 2 + 2 * n_resblocks LR convs, the first upsampler conv, and fractions of a pixel after it.
    assert receptive_radius(EDSRConfig(n_resblocks=16)) == 36
    assert receptive_radius(EDSRConfig(scale=2, n_resblocks=2)) == 8


def test_work_pixels_include_margins() -> None:
    engine = Engine(tiny(4), tile_size=32)
    assert engine.margin == 8
    assert engine.work_pixels(20, 30) == 600  # one tile, no margin
    assert engine.work_pixels(64, 64) == 80 * 80  # two tiles per axis, each reading 8 extra pixels


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tiles_equal_the_whole_image_pass(scale: int) -> None:
    model = tiny(scale)
    img = synthetic_image(50, 75, seed=scale).astype(np.float32)
    whole = Engine(model, tile_size=1000).run(img, 0.5)
    tiled = Engine(model, tile_size=16).run(img, 0.5)  # 4 x 5 tiles
    assert tiled.shape == whole.shape == (50 * scale, 75 * scale, 3)
    assert np.abs(tiled - whole).max() < 1e-2


def test_margins_below_the_receptive_radius_show_seams() -> None:
    """The equality above is not vacuous: without enough margin the tiles differ."""
    model = tiny(4)
    img = synthetic_image(48, 48).astype(np.float32)
    whole = Engine(model, tile_size=1000).run(img, 1.0)
    assert np.abs(Engine(model, tile_size=16, tile_overlap=0).run(img, 1.0) - whole).max() > 1.0


def test_before_tile_can_abort() -> None:
    calls = []

    def stop() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise TimeoutError

    with pytest.raises(TimeoutError):
        Engine(tiny(4), tile_size=16).run(synthetic_image(48, 48).astype(np.float32), 1.0, stop)
    assert len(calls) == 3
