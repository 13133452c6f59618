"""The parallel PNG writer: every mode round-trips through Pillow, and the stream is one valid zlib stream."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.png import encode_png
from tests.conftest import synthetic_image


def idat(png: bytes) -> bytes:
    pos, data = 8, b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return data


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("threads", [1, 3])
def test_round_trip_every_8bit_mode(channels: int, threads: int) -> None:
    rgb = synthetic_image(700, 900, seed=channels)  # 1.9-7.6 MB of rows: several strips with 3 threads
    pixels = np.dstack([rgb, rgb[..., 0]])[..., :channels]
    pixels = pixels[..., 0] if channels == 1 else pixels
    back = np.asarray(Image.open(io.BytesIO(encode_png(pixels, level=1, threads=threads))))
    assert back.dtype == np.uint8 and np.array_equal(back, pixels)


def test_16bit_gray_and_icc_profile() -> None:
    pixels = (synthetic_image(40, 30)[..., 0].astype(np.uint16) * 257 + 5).astype(np.uint16)
    img = Image.open(io.BytesIO(encode_png(pixels, level=3, icc=b"profile bytes")))
    assert img.mode == "I;16" and np.array_equal(np.asarray(img), pixels)
    assert img.info["icc_profile"] == b"profile bytes"


def test_strips_join_into_one_checked_zlib_stream() -> None:
    """zlib.decompress checks the header bits and the Adler-32 of the whole: a strip out of place fails it."""
    pixels = synthetic_image(800, 800)
    stream = idat(encode_png(pixels, level=1, threads=4))
    rows = np.frombuffer(zlib.decompress(stream), np.uint8).reshape(800, 800 * 3 + 1)
    assert (rows[:, 0] == 1).all()  # Sub filter on every row
    assert np.array_equal(np.cumsum(rows[:, 1:].reshape(800, 800, 3), axis=1, dtype=np.uint8), pixels)
    corrupted = stream[:-4] + bytes(4)
    with pytest.raises(zlib.error):
        zlib.decompress(corrupted)


def test_tiny_images() -> None:
    for h, w in ((1, 1), (1, 7), (5, 1)):
        pixels = synthetic_image(h, w)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(pixels, level=1, threads=2)))), pixels)
