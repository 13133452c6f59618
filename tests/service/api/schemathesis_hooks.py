"""Loaded by Schemathesis (``SCHEMATHESIS_HOOKS``) in tests/service/api/test_contract.py: real image bytes.

A JSON Schema cannot say "bytes that decode as a PNG", so the spec's image bodies are ``format: binary``
and, left alone, the fuzzer sends random bytes as schema-valid data (a 400 ``bad_image``, reported as a
valid request rejected). These strategies make every image body and multipart ``file`` part a real image
of its declared type: small, of random size and content, in the colour modes each format stores.
Images with alpha are left out: JPEG output of one is a 422 that depends on the pixels, not the request.
A target size (``out_width`` / ``out_height``) is valid for a given image only within 1-4x its size, and
only without ``scale``: constraints between parameters and the body that OpenAPI cannot state, so
``before_call`` (every phase; ``map_case`` misses the coverage phase) moves a schema-valid target into the
range of the image sent (tests/service/catalog/test_noise.py checks the 422s outside it).
"""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

MODES = {
    "PNG": ("RGB", "L", "P", "I;16"),
    "JPEG": ("RGB", "L"),
    "WEBP": ("RGB",),
    "BMP": ("RGB", "L", "P"),
    "TIFF": ("RGB", "L"),
    "GIF": ("P", "L"),
}


@st.composite
def image_bytes(draw: st.DrawFn, fmt: str | None = None) -> bytes:
    fmt = fmt or draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    h, w, seed = draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(0, 2**32 - 1))
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    elif mode == "P":
        img = img.quantize(16)
    else:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


for _fmt in MODES:
    schemathesis.openapi.media_type(f"image/{_fmt.lower()}", image_bytes(_fmt))
schemathesis.openapi.media_type("application/octet-stream", image_bytes())  # the server sniffs the type


@schemathesis.hook
def before_call(ctx: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict) -> None:
    query = case.query or {}
    targets = [name for name in ("out_width", "out_height") if name in query]
    if not targets or case.meta is None or not case.meta.generation.mode.is_positive:
        return
    body = case.body.get("file") if isinstance(case.body, dict) else case.body
    if not isinstance(body, bytes):
        return
    with Image.open(io.BytesIO(body)) as img:
        sides = dict(zip(("out_width", "out_height"), img.size, strict=True))
    query.pop("scale", None)
    for name in targets:  # into side+1 .. 4 x side: a factor in (1, 4] on each side asked
        query[name] = sides[name] + 1 + int(query[name]) % (3 * sides[name])
    case.query = query
