"""The parallel PNG writer: every mode round-trips through Pillow, and the stream is one valid zlib stream."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.inference.png import PngStreamWriter, encode_png
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


@pytest.mark.parametrize(
    "pixels",
    [
        np.random.default_rng(3).integers(0, 256, (61, 45, 3), dtype=np.uint8),
        np.random.default_rng(4).integers(0, 256, (61, 45, 4), dtype=np.uint8),
        np.random.default_rng(5).integers(0, 65536, (61, 45), dtype=np.uint16),
    ],
    ids=["rgb", "rgba", "gray16"],
)
def test_a_png_streamed_in_strips_decodes_to_the_pixels(pixels: np.ndarray) -> None:
    out = io.BytesIO()
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    writer = PngStreamWriter(out, (45, 61), channels, 16 if pixels.dtype == np.uint16 else 8, icc=b"profile")
    for top in range(0, 61, 16):  # uneven strips, the last one short
        writer.write(pixels[top : top + 16])
    writer.close()
    img = Image.open(io.BytesIO(out.getvalue()))
    assert np.array_equal(np.asarray(img), pixels) and img.info["icc_profile"] == b"profile"


def test_a_stream_refuses_rows_that_do_not_continue_the_image() -> None:
    writer = PngStreamWriter(io.BytesIO(), (10, 4), 3)
    with pytest.raises(ValueError, match="do not continue"):
        writer.write(np.zeros((2, 11, 3), np.uint8))
    writer.write(np.zeros((3, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="do not continue"):
        writer.write(np.zeros((2, 10, 3), np.uint8))  # one row left
    with pytest.raises(ValueError, match="1 rows of 4 were never written"):
        writer.close()
