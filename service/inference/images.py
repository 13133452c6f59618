"""Images as users send them: checked before decoding, normalised for the model, encoded back.

Behaviour per input (documented in the README):

- Formats: PNG, JPEG, WebP, BMP, TIFF, GIF (first frame). EXIF orientation is
  applied to the pixels; other EXIF data is not copied. The ICC profile is
  kept when the output has the profile's colour model (RGB or gray).
- RGB, RGBA: colour through the model; alpha (RGBA, LA, palette or colour-key
  transparency) is upscaled with bicubic and returned, never dropped.
- L, LA, 1: gray replicated to RGB for the model, reduced back with BT.601 weights.
- P, PA: converted to RGB(A); the result comes back as RGB(A), not paletted.
- CMYK: converted to sRGB (through its ICC profile when it has one) and returned as RGB.
- 16-bit gray (PNG/TIFF ``I;16``): processed at full precision (the model works
  in float) and returned as 16-bit PNG; JPEG/WebP outputs are 8-bit.
- 16-bit colour PNG/TIFF: Pillow decodes these to 8 bits per channel, so they are
  processed and returned at 8 bits; the response says so with ``X-Bit-Depth: 8``.
- Model overshoot is clamped to the output range; input values are never clipped.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from service.errors import ApiError
from service.inference.png import encode_png

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
INPUT_MEDIA_TYPES = {
    "image/png",
    "image/jpeg",
    "image/pjpeg",
    "image/webp",
    "image/bmp",
    "image/x-bmp",
    "image/x-ms-bmp",
    "image/tiff",
    "image/gif",
}
OUTPUT_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# The longest side each lossy output format can store (libwebp's limit; JPEG's 16-bit header fields).
# PNG's, 2^31 - 1, is far beyond any output the pixel limits allow.
MAX_OUTPUT_SIDE = {"jpeg": 65535, "webp": 16383}
I16_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", *I16_MODES)
BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
DEFAULT_JPEG_QUALITY = 90
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


@dataclass
class Probe:
    """An image opened for its header only: pixels are not decoded yet."""

    image: Image.Image
    format: str
    width: int
    height: int
    has_alpha: bool
    lossless_webp: bool
    reduced_16bit: bool
    data: bytes = field(repr=False)  # the file (a reference, not a copy)

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class Decoded:
    """Model-ready pixels: ``rgb`` float32 HxWx3 in 0..255 (16-bit inputs keep their fraction)."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    gray: bool
    bit_depth: int
    icc: bytes | None
    icc_space: str | None


def check_media_type(content_type: str | None) -> None:
    """415 for a declared image type we do not read; no or generic types are sniffed instead."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media.startswith("image/") and media not in INPUT_MEDIA_TYPES:
        raise ApiError(415, "unsupported_media_type", f"{media} is not supported; send {_supported()}")


def probe(data: bytes, max_pixels: int) -> Probe:
    """Identify the image and check its size from the header, before any pixel is decoded."""
    if not data:
        raise ApiError(400, "bad_image", "empty body: send an image")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "too_many_pixels", f"{exc}; the limit is {max_pixels} pixels") from exc
    except UnidentifiedImageError as exc:
        raise ApiError(400, "bad_image", f"cannot identify an image; send {_supported()}") from exc
    except _DECODE_ERRORS as exc:
        raise ApiError(400, "bad_image", f"corrupt image header: {exc}") from exc
    w, h = img.size
    if w * h > max_pixels:
        raise ApiError(413, "too_many_pixels", f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels")
    if w == 0 or h == 0:
        raise ApiError(400, "bad_image", f"empty image ({w}x{h})")
    transparency = "transparency" in img.info and img.mode in ("P", "L", "RGB", *I16_MODES)
    return Probe(
        image=img,
        format=img.format or "",
        width=w,
        height=h,
        has_alpha=img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or transparency,
        lossless_webp=img.format == "WEBP" and _is_lossless_webp(data),
        reduced_16bit=_pillow_reduces_16bit(img, data),
        data=data,
    )


def decode(p: Probe) -> Decoded:
    """Decode the pixels (400 when truncated or corrupt), apply EXIF orientation, normalise the mode."""
    img = p.image
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    except _DECODE_ERRORS as exc:
        raise ApiError(400, "bad_image", f"truncated or corrupt image: {exc}") from exc
    if img.mode not in MODES:  # e.g. 32-bit float: no lossless way into 0..255 RGB
        raise ApiError(415, "unsupported_media_type", f"image mode {img.mode} is not supported")
    icc = img.info.get("icc_profile") or None
    if img.mode in I16_MODES:
        return _decode_16bit_gray(img, icc)
    if img.mode == "CMYK":
        img, icc = _cmyk_to_srgb(img, icc)
    gray = img.mode in ("1", "L", "LA", "La")
    mode = ("LA" if p.has_alpha else "L") if gray else ("RGBA" if p.has_alpha else "RGB")
    arr = np.atleast_3d(np.asarray(img.convert(mode), dtype=np.float32))  # H x W x channels
    colour = np.repeat(arr[..., :1], 3, axis=2) if gray else arr[..., :3]
    alpha = arr[..., -1] if p.has_alpha else None
    return Decoded(np.ascontiguousarray(colour), alpha, gray, 8, icc, _icc_space(icc))


def upscale_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an alpha plane (float, 0..255) to ``size`` = (width, height): cheap, and alpha
    is mostly smooth or binary."""
    return np.asarray(Image.fromarray(alpha.astype(np.float32)).resize(size, Image.Resampling.BICUBIC))


@dataclass(frozen=True)
class Encoding:
    """The file a response carries: its format, its quality (JPEG, WebP; none: WebP lossless) and a PNG's
    deflate level (ISA-L, 0 fastest .. 3 smallest)."""

    fmt: str
    quality: int | None = None
    png_level: int = 1


def encode(
    rgb: np.ndarray, alpha: np.ndarray | None, source: Decoded, encoding: Encoding, threads: int = 1
) -> tuple[bytes, int]:
    """Encode the model output (float HxWx3, 0..255) like the source; returns the bytes and bit depth.

    PNG is deflated on up to ``threads`` threads (``service.inference.png``); JPEG and WebP go through Pillow.
    """
    fmt, quality = encoding.fmt, encoding.quality
    pixels, icc = to_pixels(rgb, alpha, source, fmt)
    gray = pixels.ndim == 2 or pixels.shape[2] <= 2
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    if fmt == "png":
        return encode_png(pixels, encoding.png_level, threads, icc), bit_depth
    img = Image.fromarray(pixels)
    if fmt == "webp" and gray:  # WebP stores colour only
        img, icc = img.convert("RGBA" if alpha is not None else "RGB"), None
    options: dict = {"icc_profile": icc} if icc else {}
    if fmt == "jpeg":
        options["quality"] = quality or DEFAULT_JPEG_QUALITY
    elif quality is None:  # WebP: lossless unless a quality asks for lossy; exact keeps colour under alpha 0
        options.update(lossless=True, exact=True)
    else:
        options["quality"] = quality
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **options)
    return buf.getvalue(), bit_depth


def to_pixels(rgb: np.ndarray, alpha: np.ndarray | None, source: Decoded, fmt: str) -> tuple[np.ndarray, bytes | None]:
    """Model output (float HxWx3, or a strip of rows of it) -> the stored pixels like the source (gray,
    16-bit gray PNG, alpha) and the ICC profile that still describes them."""
    if source.gray:
        plane = rgb @ BT601
        if source.bit_depth == 16 and fmt == "png" and alpha is None:
            pixels = np.clip(np.rint(plane * 257.0), 0, 65535).astype(np.uint16)
        else:
            pixels = _to_8bit(plane[..., None], alpha)
    else:
        pixels = _to_8bit(rgb, alpha)
    gray = pixels.ndim == 2 or pixels.shape[2] <= 2
    return pixels, source.icc if source.icc and source.icc_space == ("GRAY" if gray else "RGB") else None


def _to_8bit(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """float HxWxC (C = 1 or 3) plus optional alpha -> uint8 HxW (gray) or HxWxC' (LA, RGB, RGBA)."""
    planes = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
    arr = np.clip(np.rint(planes), 0, 255).astype(np.uint8)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def _decode_16bit_gray(img: Image.Image, icc: bytes | None) -> Decoded:
    """16-bit gray at full precision (as float 0..255); a colour-key makes it 8-bit gray + alpha."""
    arr = np.asarray(img, dtype=np.float32)
    if arr.min() < 0 or arr.max() > 65535:
        raise ApiError(415, "unsupported_media_type", "32-bit integer images outside 0..65535 are not supported")
    alpha = None
    if "transparency" in img.info:  # Pillow has no 16-bit gray + alpha mode to return it in
        alpha = np.where(arr == img.info["transparency"], 0.0, 255.0).astype(np.float32)
    colour = np.repeat((arr / 257.0)[..., None], 3, axis=2)
    return Decoded(colour, alpha, True, 8 if alpha is not None else 16, icc, _icc_space(icc))


def _cmyk_to_srgb(img: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """CMYK -> sRGB via the embedded profile (tagged sRGB after), else Pillow's naive formula (untagged)."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, source, _srgb(), outputMode="RGB"), _srgb_bytes()
        except (ImageCms.PyCMSError, OSError):
            pass  # an unusable profile: fall back to the naive conversion
    return img.convert("RGB"), None


@cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@cache
def _srgb_bytes() -> bytes:
    return _srgb().tobytes()


def _icc_space(icc: bytes | None) -> str | None:
    """The profile's colour model ('RGB', 'GRAY', 'CMYK', ...), ``None`` when absent or unreadable."""
    if not icc:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError):
        return None


def _is_lossless_webp(data: bytes) -> bool:
    """True when the first image chunk of a RIFF/WEBP file is VP8L (lossless)."""
    offset = 12
    while offset + 8 <= len(data):
        fourcc = data[offset : offset + 4]
        if fourcc in (b"VP8L", b"VP8 "):
            return fourcc == b"VP8L"
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        offset += 8 + size + (size & 1)
    return False


def _pillow_reduces_16bit(img: Image.Image, data: bytes) -> bool:
    """16 bits per channel with colour or alpha (PNG header, TIFF BitsPerSample): Pillow decodes these to 8."""
    if img.format == "PNG":
        return data[24] == 16 and data[25] in (2, 4, 6)  # IHDR bit depth; colour types RGB, gray+alpha, RGBA
    if img.format == "TIFF" and img.mode not in I16_MODES:
        bits = img.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


def _supported() -> str:
    return "PNG, JPEG, WebP, BMP, TIFF or GIF"
