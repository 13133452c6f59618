"""Endpoints, options, error paths and request ids against a real server."""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from model.edsr import count_params
from model.openvino import native_bf16
from model.weights import load_weights
from service.api.app import create_app
from service.api.logs import JsonFormatter
from service.settings import Settings
from tests.conftest import synthetic_image
from tests.service.conftest import (
    TINY,
    client_for,
    decode,
    encode,
    png_bytes,
    running_server,
    settings,
)

PNG = {"content-type": "image/png"}


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == code and body["detail"]
    return body


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but carries almost no data (a would-be bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# --- the endpoints ---------------------------------------------------------------------------


def test_healthz_and_readyz(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_upscale_multipart_and_raw_body_give_the_same_image(client: httpx.Client) -> None:
    data = png_bytes(24, 32)
    raw = client.post("/v1/upscale", content=data, headers=PNG)
    multipart = client.post("/v1/upscale", files={"file": ("x.png", data, "image/png")})
    for r in (raw, multipart):
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        assert decode(r.content).size == (128, 96)
        assert r.headers["x-width"] == "1" and r.headers["x-width-reason"] == "idle"
        assert r.headers["x-precision"] == "fp32" and r.headers["x-expected-psnr"] == "Set5=31.50; Set14=28.00"
        assert float(r.headers["x-queue-wait-ms"]) >= 0 and float(r.headers["x-inference-ms"]) > 0
        assert r.headers["x-bit-depth"] == "8"
    assert np.array_equal(np.asarray(decode(raw.content)), np.asarray(decode(multipart.content)))


def test_octet_stream_and_multipart_without_part_type_are_sniffed(client: httpx.Client) -> None:
    data = png_bytes()
    assert client.post("/v1/upscale", content=data, headers={"content-type": "application/octet-stream"}).is_success
    assert client.post("/v1/upscale", files={"file": ("x", data, "application/octet-stream")}).is_success


def test_forced_width_is_honoured(client: httpx.Client) -> None:
    for width, label in (("0.5", "0.5"), (".25", "0.25"), ("1.0", "1")):
        r = client.post("/v1/upscale", params={"width": width}, content=png_bytes(), headers=PNG)
        assert r.status_code == 200
        assert (r.headers["x-width"], r.headers["x-width-reason"]) == (label, "forced")


@pytest.mark.parametrize(
    ("params", "media", "pil_format"),
    [
        ({"format": "png"}, "image/png", "PNG"),
        ({"format": "jpeg", "quality": 70}, "image/jpeg", "JPEG"),
        ({"format": "jpeg"}, "image/jpeg", "JPEG"),
        ({"format": "webp", "quality": 80}, "image/webp", "WEBP"),
        ({"format": "webp"}, "image/webp", "WEBP"),
    ],
)
def test_output_formats(client: httpx.Client, params: dict, media: str, pil_format: str) -> None:
    r = client.post("/v1/upscale", params=params, content=png_bytes(), headers=PNG)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    out = decode(r.content)
    assert out.format == pil_format and out.size == (128, 96)


def test_webp_without_quality_is_lossless(client: httpx.Client) -> None:
    data = png_bytes()
    png = np.asarray(decode(client.post("/v1/upscale", content=data, headers=PNG).content))
    webp = np.asarray(decode(client.post("/v1/upscale", params={"format": "webp"}, content=data, headers=PNG).content))
    assert np.array_equal(png, webp)


def test_model_info(client: httpx.Client, tiny_weights: Path) -> None:
    info = client.get("/v1/model").json()
    assert info["ready"] is True
    assert info["scale"] == 4 and info["widths"] == [0.25, 0.5, 1.0]
    assert info["weights"] == tiny_weights.name and len(info["weights_sha256"]) == 64
    assert info["tile_size"] == 32 and info["tile_overlap"] == Settings().tile_overlap
    runtime = info["runtime"]
    assert runtime["backend"] == "openvino" and runtime["precision"] == "f32" and runtime["threads"] >= 1
    assert runtime["cpu"]["cpus"] >= 1 and isinstance(runtime["cpu"]["features"], list)
    assert "int8 rungs: no " in runtime["missing"]  # int8 asked for, no files: what is missing, and why, is said
    for row in info["per_width"]:
        assert row["params"] == count_params(TINY, row["width"])
        assert row["macs_per_lr_megapixel"] > 0
        assert row["cost"]["s_per_megapixel"] > 0 and row["cost"]["overhead_s"] >= 0
    assert info["per_width"][0]["quality"] == {"Set5": {"psnr": 30.1, "ssim": 0.85}, "Set14": {"psnr": 27.4}}
    # No int8 files beside these weights: the fp32 rungs, all on the ladder, best first.
    assert info["ladder"] == ["1", "0.5", "0.25"]
    assert [(r["key"], r["precision"], r["in_ladder"], r["dropped"]) for r in info["rungs"]] == [
        ("0.25", "fp32", True, None),
        ("0.5", "fp32", True, None),
        ("1", "fp32", True, None),
    ]
    assert [r["cost"] for r in info["rungs"]] == [r["cost"] for r in info["per_width"]]
    policy = info["policy"]
    assert policy["mode"] == "auto" and policy["latency_target_s"] == 2.0 and policy["workers"] == 2
    assert policy["lanes"] == 1
    assert (policy["queued"], policy["running"], policy["lane_price"], policy["max_lane_price"]) == (0, 0, 0, None)
    # Idle server: never narrowed for load; full width unless the live cost model (machine speed) says a
    # 256x256 input is too slow for the target at that width.
    assert policy["reason"] in {"idle", "size", "best_effort"}
    assert (policy["width"] == 1.0) == (policy["reason"] == "idle")
    assert policy["precision"] == "fp32" and policy["rung"] == f"{policy['width']:g}"
    assert info["card"]["architecture"]["n_feats"] == TINY.n_feats


def test_openapi_documents_the_api(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/upscale", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    upscale = spec["paths"]["/v1/upscale"]["post"]
    assert {"multipart/form-data", "image/*"} <= set(upscale["requestBody"]["content"])
    params = {p["name"]: p["schema"] for p in upscale["parameters"]}
    assert {"width", "precision", "min_width", "format", "quality", "x-deadline-ms"} <= set(params)
    assert params["precision"]["enum"] == ["auto", "fp32"]  # the precisions this server runs
    assert params["min_width"]["enum"] == [0.25, 0.5, 1.0]
    assert {"X-Width-Reason", "X-Precision", "X-Expected-PSNR"} <= set(upscale["responses"]["200"]["headers"])
    assert client.get("/docs").status_code == 200


# --- error paths -----------------------------------------------------------------------------


def test_400_undecodable_and_truncated(client: httpx.Client) -> None:
    assert_error(client.post("/v1/upscale", content=b"definitely not an image", headers=PNG), 400, "bad_image")
    assert_error(client.post("/v1/upscale", content=b"", headers=PNG), 400, "bad_image")
    for fmt in ("PNG", "JPEG"):
        data = encode(synthetic_image(64, 64), fmt)
        body = assert_error(client.post("/v1/upscale", content=data[: len(data) // 2], headers=PNG), 400, "bad_image")
        assert "truncated" in body["detail"]


def test_400_malformed_multipart(client: httpx.Client) -> None:
    for body, boundary in ((b"--xyz\r\nContent-Disposition: form-data\r\n\r\nno name", "; boundary=xyz"), (b"x", "")):
        r = client.post("/v1/upscale", content=body, headers={"content-type": "multipart/form-data" + boundary})
        assert "multipart" in assert_error(r, 400, "bad_request")["detail"]


def test_413_body_over_the_limit(client: httpx.Client) -> None:
    big = b"\0" * 1_000_001
    body = assert_error(client.post("/v1/upscale", content=big, headers=PNG), 413, "body_too_large")
    assert "1000000 bytes" in body["detail"]
    assert_error(client.post("/v1/upscale", files={"file": ("x.png", big, "image/png")}), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        for _ in range(20):
            yield b"\0" * 100_000

    assert_error(client.post("/v1/upscale", content=chunks(), headers=PNG), 413, "body_too_large")


def test_413_pixels_over_the_limit_before_decoding(client: httpx.Client) -> None:
    body = assert_error(
        client.post("/v1/upscale", content=png_header_only(1000, 1000), headers=PNG), 413, "too_many_pixels"
    )
    assert "200000 pixels" in body["detail"] and "1000x1000" in body["detail"]
    # Beyond Pillow's own bomb threshold too: refused from the header, nothing decoded.
    assert_error(client.post("/v1/upscale", content=png_header_only(30000, 30000), headers=PNG), 413, "too_many_pixels")


def test_415_unsupported_media_types(client: httpx.Client) -> None:
    data = png_bytes()
    assert_error(
        client.post("/v1/upscale", content=data, headers={"content-type": "text/plain"}), 415, "unsupported_media_type"
    )
    assert_error(client.post("/v1/upscale", content=data), 415, "unsupported_media_type")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"/>'
    assert_error(
        client.post("/v1/upscale", content=svg, headers={"content-type": "image/svg+xml"}),
        415,
        "unsupported_media_type",
    )
    files = {"file": ("x.svg", svg, "image/svg+xml")}
    assert_error(client.post("/v1/upscale", files=files), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("params", "headers", "needle"),
    [
        ({"width": "0.3"}, {}, "0.25, 0.5, 1"),
        ({"width": "wide"}, {}, "width"),
        ({"width": "nan"}, {}, "width"),
        ({"min_width": "auto"}, {}, "min_width must be one of 0.25, 0.5, 1"),
        ({"precision": "fp16"}, {}, "precision"),
        ({"precision": "int8"}, {}, "the ladder: 1, 0.5, 0.25"),  # no int8 rung here
        ({"width": "0.5", "precision": "int8"}, {}, "no rung on the x4 ladder matches width=0.5, precision=int8"),
        ({"format": "gif"}, {}, "format"),
        ({"quality": "0"}, {}, "quality"),
        ({"quality": "high"}, {}, "quality"),
        ({}, {"x-deadline-ms": "-5"}, "x-deadline-ms"),
        ({}, {"x-deadline-ms": "soon"}, "x-deadline-ms"),
    ],
)
def test_422_bad_options(client: httpx.Client, params: dict, headers: dict, needle: str) -> None:
    r = client.post("/v1/upscale", params=params, content=png_bytes(), headers={**PNG, **headers})
    assert needle in assert_error(r, 422, "invalid_option")["detail"]


def test_422_jpeg_output_would_drop_alpha(client: httpx.Client) -> None:
    rgba = np.dstack([synthetic_image(16, 16), np.full((16, 16), 128, np.uint8)])
    r = client.post("/v1/upscale", params={"format": "jpeg"}, content=encode(rgba), headers=PNG)
    assert "alpha" in assert_error(r, 422, "invalid_option")["detail"]


def test_422_webp_output_wider_than_webp_stores(client: httpx.Client) -> None:
    # 4x4100 at x4 is 16400 px wide, well within the pixel limits: libwebp stores at most 16383 a side
    thin = encode(np.ascontiguousarray(np.tile(synthetic_image(4, 41), (1, 100, 1))))
    r = client.post("/v1/upscale", params={"format": "webp"}, content=thin, headers=PNG)
    assert "16383" in assert_error(r, 422, "invalid_option")["detail"]
    r = client.post("/v1/upscale", params={"format": "webp", "scale": 2}, content=thin, headers=PNG)
    assert r.status_code == 200 and decode(r.content).size == (8200, 8)  # within the limit it is served


def test_422_multipart_without_file_part(client: httpx.Client) -> None:
    r = client.post("/v1/upscale", data={"image": "nope"}, files={"other": ("x.png", png_bytes(), "image/png")})
    assert "'file'" in assert_error(r, 422, "invalid_option")["detail"]


def test_404_and_405_use_the_error_shape(client: httpx.Client) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/v1/upscale"), 405, "method_not_allowed")


# --- request ids and the access log ----------------------------------------------------------


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    assert client.get("/healthz", headers={"x-request-id": "abc-123.x"}).headers["x-request-id"] == "abc-123.x"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    for bad in ("x" * 200, "a b", "<script>"):
        assert client.get("/healthz", headers={"x-request-id": bad}).headers["x-request-id"] != bad
    r = client.post("/v1/upscale", content=b"junk", headers={**PNG, "x-request-id": "err-1"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "err-1"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_one_json_log_line_per_request_without_image_data(client: httpx.Client) -> None:
    handler = _Lines()
    logger = logging.getLogger("csd_sr.access")
    logger.addHandler(handler)
    try:
        r = client.post("/v1/upscale", content=png_bytes(), headers={**PNG, "x-request-id": "log-1"})
        client.post("/v1/upscale", params={"width": "9"}, content=png_bytes(), headers={**PNG, "x-request-id": "log-2"})
    finally:
        logger.removeHandler(handler)
    entries = [json.loads(line) for line in handler.lines]
    ok = [e for e in entries if e["request_id"] == "log-1"]
    assert len(ok) == 1
    entry = ok[0]
    assert entry["status"] == 200 and entry["path"] == "/v1/upscale"
    assert entry["width"] == 1.0 and entry["precision"] == "fp32" and entry["reason"] == "idle"
    assert entry["input"] == "32x24" and entry["output"] == "128x96" and entry["bytes_out"] == len(r.content)
    assert {"queue_wait_ms", "inference_ms", "duration_ms", "bytes_in"} <= set(entry)
    bad = [e for e in entries if e["request_id"] == "log-2"]
    assert len(bad) == 1 and bad[0]["status"] == 422 and bad[0]["error"] == "invalid_option"
    assert all(len(line) < 2000 for line in handler.lines)  # sizes and timings only, never pixels


# --- tiling ----------------------------------------------------------------------------------


def test_tiled_result_equals_whole_image_result(client: httpx.Client, tiny_weights: Path) -> None:
    """The server's tile is 32 LR pixels: a 72x136 input is 3x5 tiles; seams must not show."""
    img = synthetic_image(72, 136, seed=3)
    r = client.post("/v1/upscale", params={"width": "1"}, content=encode(img), headers=PNG)
    assert r.status_code == 200
    tiled = np.asarray(decode(r.content)).astype(int)
    model, _ = load_weights(tiny_weights)
    with torch.no_grad():
        whole = model.dense(1.0)(torch.from_numpy(img).permute(2, 0, 1)[None].float())
    whole = whole[0].clamp(0, 255).round().permute(1, 2, 0).numpy().astype(int)
    assert tiled.shape == whole.shape == (288, 544, 3)
    assert np.abs(tiled - whole).max() <= 1


# --- the API key -----------------------------------------------------------------------------


def test_api_key(tiny_weights: Path) -> None:
    with running_server(settings(tiny_weights, api_key="s3cret")) as url, client_for(url) as c:
        data = png_bytes()
        for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"authorization": "s3cret"}):
            r = c.post("/v1/upscale", content=data, headers={**PNG, **headers})
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert_error(c.get("/v1/model"), 401, "unauthorized")
        assert c.post("/v1/upscale", content=data, headers={**PNG, "authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/upscale", content=data, headers={**PNG, "x-api-key": "s3cret"}).status_code == 200
        assert c.get("/v1/model", headers={"x-api-key": "s3cret"}).status_code == 200
        # Infrastructure endpoints stay open.
        assert c.get("/healthz").status_code == c.get("/readyz").status_code == c.get("/metrics").status_code == 200


def test_work_predicted_past_the_timeout_is_refused_before_any_compute(tiny_weights: Path) -> None:
    """No doomed work: a forced width that cannot finish within request_timeout_s is a 422 naming what fits."""
    with running_server(settings(tiny_weights, tile_size=16, request_timeout_s=0.2)) as url, client_for(url) as c:
        r = c.post("/v1/upscale?width=1", content=encode(synthetic_image(400, 400)), headers=PNG)
        body = assert_error(r, 422, "exceeds_timeout")
        assert "0.2 s request timeout" in body["detail"] and "rungs that fit now:" in body["detail"]
        samples = {
            (s.name, s.labels.get("reason", s.labels.get("width"))): s.value
            for family in text_string_to_metric_families(c.get("/metrics").text)
            for s in family.samples
        }
        assert samples["csd_sr_rejections_total", "exceeds_timeout"] == 1
        assert all(samples["csd_sr_inference_duration_seconds_count", w] == 0 for w in ("0.25", "0.5", "1"))
        assert c.get("/healthz").status_code == 200


def test_start_up_logs_the_cpu_features_and_what_the_runtime_uses(tiny_weights: Path) -> None:
    handler = _Lines()
    logger = logging.getLogger("csd_sr.app")
    logger.addHandler(handler)
    try:
        create_app(settings(tiny_weights))
    finally:
        logger.removeHandler(handler)
    entry = next(e for e in map(json.loads, handler.lines) if e["msg"] == "backend")
    assert entry["cpu"]["cpus"] >= 1 and set(entry["cpu"]["features"]) <= {"AVX2", "AVX-512", "VNNI", "BF16", "AMX"}
    assert entry["backend"] == "openvino" and entry["precision"] == "f32" and entry["streams"] == 1
    assert entry["threads"] == entry["cpu"]["cpus"]  # all usable cores for the one lane


# --- the ladder of rungs (width, precision) ---------------------------------------------------


@pytest.fixture(scope="module")
def ladder_url(ladder_weights: Path) -> Iterator[str]:
    """Whole-image tiles: a 256x256 input costs what warm-up measured for the reference input."""
    with running_server(settings(ladder_weights, tile_size=2048)) as url:
        yield url


def reference_seconds(cost: dict) -> float:
    """A rung's predicted seconds for the 256x256 reference input (whole-image tiles), from ``/v1/model``."""
    return cost["overhead_s"] + cost["s_per_megapixel"] * 256 * 256 / 1e6


def served_as(r: httpx.Response) -> tuple[str, str, str]:
    assert r.status_code == 200, r.text
    return r.headers["x-width"], r.headers["x-precision"], r.headers["x-width-reason"]


def test_model_info_lists_every_rung_and_why_one_is_off_the_ladder(ladder_url: str) -> None:
    with client_for(ladder_url) as c:
        info = c.get("/v1/model").json()
    assert info["ladder"] == ["1", "1-int8", "0.5", "0.5-int8", "0.25"]
    rungs = {r["key"]: r for r in info["rungs"]}
    assert list(rungs) == ["0.25", "0.25-int8", "0.5", "0.5-int8", "1", "1-int8"]
    dropped = rungs.pop("0.25-int8")
    assert not dropped["in_ladder"] and dropped["dropped"].startswith("slower than 0.25 ")
    assert all(r["in_ladder"] and r["dropped"] is None and r["cost"]["s_per_megapixel"] > 0 for r in rungs.values())
    assert (rungs["1-int8"]["width"], rungs["1-int8"]["precision"]) == (1.0, "int8")
    assert rungs["1-int8"]["quality"] == {"Set5": {"psnr": 31.4, "ssim": 0.88}, "Set14": {"psnr": 27.9}}
    assert info["runtime"]["rungs"] == ["0.25", "0.25-int8", "0.5", "0.5-int8", "1", "1-int8"]
    # idle: the best ladder rung the cost model predicts within the target for the reference input (1 or
    # 1-int8 on an idle 2-core machine; narrower when other work slows the measured costs)
    policy, cost = info["policy"], {r["key"]: r["cost"] for r in info["rungs"]}

    def predicted(key: str) -> float:
        return reference_seconds(cost[key])

    ladder, chosen = info["ladder"], policy["rung"]
    planned_s = policy["latency_target_s"] * Settings().planning_fraction  # the share of the target it plans
    assert policy["reason"] == ("idle" if chosen == ladder[0] else "size")
    assert predicted(chosen) == pytest.approx(policy["predicted_s"])
    assert predicted(chosen) <= planned_s or chosen == ladder[-1]
    assert all(predicted(k) > planned_s for k in ladder[: ladder.index(chosen)])


def test_the_rung_served_and_its_expected_psnr_are_in_the_headers(ladder_url: str) -> None:
    data = png_bytes(16, 16)
    with client_for(ladder_url) as c:

        def post(**params: str) -> httpx.Response:
            return c.post("/v1/upscale", params=params, content=data, headers=PNG)

        r = post()
        assert served_as(r) == ("1", "fp32", "idle") and r.headers["x-expected-psnr"] == "Set5=31.50; Set14=28.00"
        r = post(precision="int8")
        assert served_as(r) == ("1", "int8", "idle") and r.headers["x-expected-psnr"] == "Set5=31.40; Set14=27.90"
        r = post(width="0.5", precision="int8")
        assert served_as(r) == ("0.5", "int8", "forced") and r.headers["x-expected-psnr"] == "Set5=30.80"
        assert served_as(post(width="1")) == ("1", "fp32", "forced")  # idle: the best rung of that width
        assert served_as(post(width="0.25")) == ("0.25", "fp32", "forced")  # its only rung on the ladder
        body = assert_error(post(width="0.25", precision="int8"), 422, "invalid_option")
        assert body["detail"].endswith("the ladder: 1, 1-int8, 0.5, 0.5-int8, 0.25")
        metrics = c.get("/metrics").text
    rung = 'noise="none",precision="int8",{}scale="4",style="faithful",width="{}"'
    assert "csd_sr_width_decisions_total{" + rung.format('reason="idle",', "1") + "} 1.0" in metrics
    assert "csd_sr_inference_duration_seconds_count{" + rung.format("", "0.5") + "} 1.0" in metrics


def test_min_width_is_a_floor_for_the_policy(ladder_url: str) -> None:
    """A deadline no rung meets, on an idle server: best effort at the cheapest rung the floor allows."""
    data = encode(synthetic_image(256, 256))  # the reference input: rungs cost what the ladder measured
    tight = {**PNG, "x-deadline-ms": "1"}

    def cheapest(c: httpx.Client, min_width: float, precision: str | None = None) -> tuple[str, str, str]:
        """The ladder's cheapest rung from ``min_width`` up by the server's own cost model now (the stand-ins
        0.25 fp32 and 0.5-int8 cost about the same on some CPUs, and every request updates the costs)."""
        rungs = [
            r
            for r in c.get("/v1/model").json()["rungs"]
            if r["in_ladder"] and r["width"] >= min_width and precision in (None, r["precision"])
        ]
        r = min(rungs, key=lambda r: reference_seconds(r["cost"]))
        return r["key"].split("-")[0], r["precision"], "best_effort"

    with client_for(ladder_url) as c:
        expected = cheapest(c, 0.25)
        assert served_as(c.post("/v1/upscale", content=data, headers=tight)) == expected
        expected = cheapest(c, 0.5)
        r = c.post("/v1/upscale", params={"min_width": "0.5"}, content=data, headers=tight)
        assert served_as(r) == expected
        r = c.post("/v1/upscale", params={"min_width": "1", "precision": "fp32"}, content=data, headers=tight)
        assert served_as(r) == ("1", "fp32", "best_effort")
        # with an explicit width the floor does not apply: the client chose
        r = c.post("/v1/upscale", params={"min_width": "1", "width": "0.25"}, content=data, headers=PNG)
        assert served_as(r) == ("0.25", "fp32", "forced")


def test_bf16_rungs_are_served_exactly_where_the_cpu_has_bf16(tiny_weights: Path) -> None:
    with running_server(settings(tiny_weights, precisions="fp32,bf16,int8")) as url, client_for(url) as client:
        info = client.get("/v1/model").json()
        bf16 = [r["key"] for r in info["rungs"] if r["precision"] == "bf16"]
        resp = client.post("/v1/upscale", params={"precision": "bf16"}, content=png_bytes(), headers=PNG)
        if native_bf16():
            assert bf16 == ["0.25-bf16", "0.5-bf16", "1-bf16"]
            assert "bf16 rungs left out" not in (info["runtime"]["missing"] or "")
            assert resp.status_code == 200 and resp.headers["x-precision"] == "bf16", resp.text
        else:  # left out, the reason said, and asking for bf16 is a clear 422
            assert not bf16 and "bf16 rungs left out" in info["runtime"]["missing"]
            assert resp.status_code == 422 and resp.json()["error"], resp.text
