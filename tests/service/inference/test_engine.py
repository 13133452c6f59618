"""Tiled inference: spans, receptive radius, seam-free tiles at every scale, and backends that agree."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from model.edsr import EDSR, EDSRConfig
from model.rungs import Rung
from service.inference.backends import Cores, create_backend
from service.inference.tiles import Engine, receptive_radius, tile_spans
from tests.conftest import synthetic_image


def tiny(scale: int) -> EDSR:
    torch.manual_seed(scale)
    return EDSR(EDSRConfig(scale=scale, n_resblocks=2, n_feats=16)).eval()


def engine(model: EDSR, tile_size: int, tile_overlap: int | None = None, backend: str = "torch") -> Engine:
    return Engine(
        create_backend(backend, model, Cores(threads=2, workers=1, torch_threads=2)), model.cfg, tile_size, tile_overlap
    )


def test_spans_cover_the_axis_once_with_clipped_margins() -> None:
    spans = tile_spans(70, 32, 8)
    assert [(s.start, s.stop, s.lo, s.hi) for s in spans] == [(0, 32, 0, 40), (32, 64, 24, 70), (64, 70, 56, 70)]
    assert tile_spans(10, 32, 8)[0] == tile_spans(10, 32, 8)[-1]  # smaller than a tile: one whole-image pass


def test_receptive_radius() -> None:
    # 2 + 2 * n_resblocks LR convs, the first upsampler conv, and fractions of a pixel after it.
    assert receptive_radius(EDSRConfig(n_resblocks=16)) == 36
    assert receptive_radius(EDSRConfig(scale=2, n_resblocks=2)) == 8


def test_work_pixels_include_margins() -> None:
    e = engine(tiny(4), tile_size=32)
    assert e.margin == 8
    assert e.work_pixels(20, 30) == 600  # one tile, no margin
    assert e.work_pixels(64, 64) == 80 * 80  # two tiles per axis, each reading 8 extra pixels


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tiles_equal_the_whole_image_pass(scale: int) -> None:
    model = tiny(scale)
    img = synthetic_image(50, 75, seed=scale).astype(np.float32)
    whole = engine(model, tile_size=1000).run(img, Rung(0.5))
    tiled = engine(model, tile_size=16).run(img, Rung(0.5))  # 4 x 5 tiles
    assert tiled.shape == whole.shape == (50 * scale, 75 * scale, 3)
    assert np.abs(tiled - whole).max() < 1e-2


def test_margins_below_the_receptive_radius_show_seams() -> None:
    """The equality above is not vacuous: without enough margin the tiles differ."""
    model = tiny(4)
    img = synthetic_image(48, 48).astype(np.float32)
    whole = engine(model, tile_size=1000).run(img, Rung(1.0))
    assert np.abs(engine(model, tile_size=16, tile_overlap=0).run(img, Rung(1.0)) - whole).max() > 1.0


def test_before_tile_can_abort() -> None:
    calls = []

    def stop() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise TimeoutError

    with pytest.raises(TimeoutError):
        engine(tiny(4), tile_size=16).run(synthetic_image(48, 48).astype(np.float32), Rung(1.0), stop)
    assert len(calls) == 3


@pytest.fixture(scope="module")
def trained_like() -> EDSR:
    """Weights with trained-like magnitudes: outputs span the pixel range instead of sitting at the mean colour."""
    torch.manual_seed(7)
    model = EDSR(EDSRConfig(scale=4, n_resblocks=4, n_feats=32)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def openvino_backend(trained_like: EDSR):
    return create_backend("openvino", trained_like, Cores(threads=2, workers=1, torch_threads=2))


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_openvino_equals_torch_whole_and_tiled(trained_like: EDSR, openvino_backend, width: float) -> None:
    """The default runtime, compiled from the same weights, reproduces the reference path at every width."""
    img = synthetic_image(40, 56, seed=3).astype(np.float32)
    reference = engine(trained_like, tile_size=1000).run(img, Rung(width))
    assert reference.std() > 10
    for tile in (1000, 16):  # whole image, then 3 x 4 tiles of varying shapes
        out = Engine(openvino_backend, trained_like.cfg, tile, None).run(img, Rung(width))
        assert out.shape == reference.shape
        # float rounding of another kernel library: 1e-4 of the output range (0.03 levels at 0..255)
        assert np.abs(out - reference).max() < 1e-4 * np.ptp(reference)


def test_one_image_holds_the_lane_for_all_its_tiles(trained_like: EDSR, openvino_backend) -> None:
    """Concurrent images take turns whole: the first one's tiles are never delayed by the second's."""
    calls: list[str] = []
    infer = openvino_backend.infer

    def recording(rung: Rung, x: np.ndarray) -> np.ndarray:
        calls.append(threading.current_thread().name)
        return infer(rung, x)

    waits: list[float] = []
    e = Engine(openvino_backend, trained_like.cfg, 16, None)
    img = synthetic_image(40, 56, seed=5).astype(np.float32)  # 3 x 4 tiles
    openvino_backend.infer = recording
    try:
        threads = [
            threading.Thread(target=e.run, args=(img, Rung(1.0), None, waits.append), name=f"w{i}") for i in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del openvino_backend.infer
    assert len(calls) == 24 and calls[:12] == [calls[0]] * 12 and calls[12:] == [calls[12]] * 12
    assert len(waits) == 2 and min(waits) >= 0
