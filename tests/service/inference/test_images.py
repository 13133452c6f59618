"""Every input format and mode users send, through the real server."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from model.weights import load_weights
from tests.conftest import synthetic_image
from tests.service.conftest import decode, encode

RGB = synthetic_image(24, 32, seed=5)  # H x W = 24 x 32 -> output 96 x 128
GRAY = RGB[..., 1]


def upscale(client: httpx.Client, data: bytes, **params: str) -> tuple[httpx.Response, Image.Image]:
    r = client.post("/v1/upscale", params=params, files={"file": ("image", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return r, decode(r.content)


def pixels(client: httpx.Client, data: bytes, **params: str) -> np.ndarray:
    return np.asarray(upscale(client, data, **params)[1]).astype(np.int64)


def disc_alpha(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.where((y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(h, w) / 3) ** 2, 255, 0).astype(np.uint8)


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (gray HxW, RGB HxWx3 or RGBA HxWx4), which Pillow cannot write for colour."""
    colour_type = 0 if arr.ndim == 2 else {3: 2, 4: 6}[arr.shape[2]]
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def assert_close(a: np.ndarray, b: np.ndarray, tol: int = 1) -> None:
    assert a.shape == b.shape
    assert np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= tol


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {"quality": 90}), ("BMP", {}), ("TIFF", {}), ("GIF", {})],
)
def test_formats_rgb(client: httpx.Client, fmt: str, kw: dict) -> None:
    r, out = upscale(client, encode(RGB, fmt, **kw))
    assert r.headers["content-type"] == "image/png"  # lossless output unless asked otherwise
    assert out.mode == "RGB" and out.size == (128, 96)


def test_rgba_keeps_an_upscaled_alpha(client: httpx.Client) -> None:
    alpha = disc_alpha(24, 32)
    out = pixels(client, encode(np.dstack([RGB, alpha])))
    assert out.shape == (96, 128, 4)
    # Colour runs through the model exactly as without alpha; alpha follows the input's shape.
    assert np.array_equal(out[..., :3], pixels(client, encode(RGB)))
    nearest = np.kron(alpha, np.ones((4, 4), np.uint8)).astype(np.int64)
    assert np.abs(out[..., 3] - nearest).mean() < 10
    assert out[..., 3].min() == 0 and out[..., 3].max() == 255


def test_gray_and_gray_alpha(client: httpx.Client) -> None:
    _, gray = upscale(client, encode(GRAY))
    assert gray.mode == "L" and gray.size == (128, 96)
    # Gray goes through the model as RGB and comes back as BT.601 gray.
    rgb = pixels(client, encode(np.dstack([GRAY] * 3))).astype(np.float64)
    assert_close(np.asarray(gray), np.rint(rgb @ [0.299, 0.587, 0.114]))
    _, la = upscale(client, encode(Image.fromarray(np.dstack([GRAY, disc_alpha(24, 32)]), "LA")))
    assert la.mode == "LA"
    assert_close(np.asarray(la)[..., 0], np.asarray(gray))


def test_bilevel_becomes_gray(client: httpx.Client) -> None:
    _, out = upscale(client, encode(Image.fromarray(GRAY > 128)))
    assert out.mode == "L" and out.size == (128, 96)


def test_palette_without_and_with_transparency(client: httpx.Client) -> None:
    pal = Image.fromarray(RGB).quantize(16)
    assert np.array_equal(pixels(client, encode(pal)), pixels(client, encode(pal.convert("RGB"))))
    pal.info["transparency"] = 0
    _, out = upscale(client, encode(pal, transparency=0))
    assert out.mode == "RGBA"
    assert 0 in np.asarray(out)[..., 3]


def test_gif_uses_the_first_frame(client: httpx.Client) -> None:
    frames = [Image.fromarray(RGB).quantize(32), Image.fromarray(RGB[::-1]).quantize(32)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    first = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    assert np.array_equal(pixels(client, buf.getvalue()), pixels(client, encode(first)))


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_comes_back_as_rgb(client: httpx.Client, fmt: str) -> None:
    cmyk = Image.fromarray(RGB).convert("CMYK")
    data = encode(cmyk, fmt)
    _, out = upscale(client, data)
    assert out.mode == "RGB" and out.size == (128, 96)
    decoded = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(np.asarray(out), pixels(client, encode(decoded)))


def test_gray_jpeg(client: httpx.Client) -> None:
    assert upscale(client, encode(GRAY, "JPEG"))[1].mode == "L"


def test_lossless_webp_in_lossless_webp_out(client: httpx.Client) -> None:
    data = encode(np.dstack([RGB, disc_alpha(24, 32)]), "WEBP", lossless=True)
    r, out = upscale(client, data)
    assert r.headers["content-type"] == "image/webp"
    assert out.mode == "RGBA"
    png = pixels(client, data, format="png")
    assert np.array_equal(np.asarray(out).astype(np.int64), png)  # lossless: same pixels as PNG


def test_exif_orientation_is_applied(client: httpx.Client) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    _, out = upscale(client, encode(RGB, "JPEG", exif=exif.tobytes()))
    assert out.size == (96, 128)  # the 32x24 input displays as 24x32


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_icc_profile_is_kept(client: httpx.Client, fmt: str) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _, out = upscale(client, encode(RGB, "PNG", icc_profile=icc), format=fmt)
    assert out.info.get("icc_profile") == icc


def test_16bit_gray_png_keeps_16bit_precision(client: httpx.Client, tiny_weights: Path) -> None:
    # Detail below one 8-bit level (the low byte) must survive: it is processed in float, returned as 16-bit.
    gray16 = (GRAY.astype(np.uint16) * 257 + (np.arange(32) * 7)[None, :]).astype(np.uint16)
    r, out = upscale(client, png16(gray16))
    assert r.headers["x-bit-depth"] == "16" and out.mode.startswith("I")
    got = np.asarray(out).astype(np.int64)
    model, _ = load_weights(tiny_weights)
    x = torch.from_numpy(np.repeat((gray16 / 257.0)[..., None], 3, axis=2).astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = model.dense(1.0)(x)[0].permute(1, 2, 0).numpy() @ np.array([0.299, 0.587, 0.114], np.float32)
    expected = np.clip(np.rint(y * 257.0), 0, 65535).astype(np.int64)
    assert_close(got, expected, tol=2)
    assert np.any(got % 257 != 0)  # not an 8-bit result scaled up


def test_16bit_gray_to_8bit_format(client: httpx.Client) -> None:
    gray16 = GRAY.astype(np.uint16) * 257
    r, out = upscale(client, png16(gray16), format="jpeg")
    assert r.headers["x-bit-depth"] == "8" and out.mode == "L"


def test_16bit_gray_tiff(client: httpx.Client) -> None:
    r, out = upscale(client, encode(Image.fromarray(GRAY.astype(np.uint16) * 257), "TIFF"))
    assert r.headers["x-bit-depth"] == "16" and out.mode.startswith("I") and out.size == (128, 96)


def test_16bit_colour_png_is_processed_at_8_bits_and_says_so(client: httpx.Client) -> None:
    rgb16 = RGB.astype(np.uint16) * 257 + 100
    r, out = upscale(client, png16(rgb16))
    assert r.headers["x-bit-depth"] == "8" and out.mode == "RGB"
    high_byte = (rgb16 >> 8).astype(np.uint8)  # what Pillow's decoder keeps
    assert np.array_equal(np.asarray(out), pixels(client, encode(high_byte)))
    rgba16 = np.dstack([rgb16, np.full((24, 32), 65535, np.uint16)])
    r, out = upscale(client, png16(rgba16))
    assert r.headers["x-bit-depth"] == "8" and out.mode == "RGBA"


def test_float_images_are_refused_not_clipped(client: httpx.Client) -> None:
    data = encode(Image.fromarray(GRAY.astype(np.float32) * 10.0), "TIFF")  # mode F, values up to 2550
    r = client.post("/v1/upscale", files={"file": ("f.tiff", data, "image/tiff")})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    assert "mode F" in r.json()["detail"]
