"""Noise levels and scales: the JPEG quality estimate, ``noise=auto``'s rule, and one server with several models
(native scales, factors between them, the input limit per scale)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from model.degradations import degraded_file, gaussian_blur
from model.edsr import EDSR, EDSRConfig
from model.weights import save_weights
from service.catalog.noise import (
    BLURRED_DETAIL_RATIO,
    CLEAN_JPEG_QUALITY,
    JPEG,
    NONE,
    REAL,
    choose_for_probe,
    choose_noise,
    detail_ratio,
    estimate_jpeg_quality,
    jpeg_detail_ratio,
)
from service.inference.images import probe
from tests.conftest import synthetic_image
from tests.service.conftest import CARD, TINY, client_for, decode, encode, running_server, settings


def jpeg_file(quality: int, subsampling: int = 2, size: int = 48, **kw) -> bytes:
    return encode(synthetic_image(size, size, seed=quality), "JPEG", quality=quality, subsampling=subsampling, **kw)


def quality_of(data: bytes) -> int | None:
    with Image.open(io.BytesIO(data)) as img:
        return estimate_jpeg_quality(getattr(img, "quantization", None))


@pytest.mark.parametrize("subsampling", [0, 2])  # 4:4:4 and 4:2:0: the luminance table is the same
def test_the_jpeg_quality_estimate_recovers_the_quality_the_file_was_saved_at(subsampling: int) -> None:
    assert [quality_of(jpeg_file(q, subsampling)) for q in range(1, 101)] == list(range(1, 101))


def test_an_encoder_with_its_own_tables_gets_its_nearest_ijg_quality() -> None:
    # A camera-style table: the q 80 IJG table with every quantizer one step coarser.
    with Image.open(io.BytesIO(jpeg_file(80))) as img:
        tables = {k: [min(255, v + 1) for v in t] for k, t in img.quantization.items()}
    own = encode(synthetic_image(48, 48), "JPEG", qtables=[tables[0], tables[1]])  # no quality: tables as given
    estimate = quality_of(own)
    assert estimate is not None and 70 <= estimate < 80
    assert quality_of(encode(synthetic_image(16, 16), "PNG")) is None


def test_auto_picks_the_level_from_the_file() -> None:
    levels = {NONE, REAL}
    assert choose_noise("auto", "PNG", True, None, levels).level == NONE
    assert choose_noise("auto", "JPEG", False, 75, levels).level == REAL
    assert choose_noise("auto", "JPEG", False, CLEAN_JPEG_QUALITY - 1, levels).level == REAL
    assert choose_noise("auto", "JPEG", False, CLEAN_JPEG_QUALITY, levels).level == NONE
    assert choose_noise("auto", "JPEG", False, None, levels).level == REAL  # no tables read: assume a web JPEG
    assert choose_noise("auto", "WEBP", False, None, levels).level == REAL  # lossy WebP
    assert choose_noise("auto", "WEBP", True, None, levels).level == NONE  # lossless WebP
    # the asked level wins; a server without the real model serves the one it has, and says so
    assert choose_noise(NONE, "JPEG", False, 40, levels).level == NONE
    only_clean = choose_noise("auto", "JPEG", False, 40, {NONE})
    assert only_clean.level == NONE and "no jpeg model" in only_clean.reason
    # the card entry X-Expected-PSNR is read at: the evaluated JPEG quality nearest the file's
    qualities = (30, 62, 63, 80, 83, 95, 96)
    assert [choose_noise("auto", "JPEG", False, q, levels).degradation for q in qualities] == [
        "jpeg50",
        "jpeg50",
        "jpeg75",
        "jpeg75",
        "jpeg90",
        "jpeg90",
        "clean",  # nearer lossless than q 90
    ]


def test_auto_prefers_the_jpeg_level_for_jpegs_and_lossy_webp() -> None:
    levels = {NONE, JPEG, REAL}
    assert choose_noise("auto", "JPEG", False, 75, levels).level == JPEG
    assert choose_noise("auto", "JPEG", False, None, levels).level == JPEG
    assert choose_noise("auto", "JPEG", False, CLEAN_JPEG_QUALITY, levels).level == NONE
    assert choose_noise("auto", "WEBP", False, None, levels).level == JPEG
    assert choose_noise("auto", "PNG", True, None, levels).level == NONE
    # each falls back to the other artifact model when only that one is served
    assert choose_noise("auto", "WEBP", False, None, {NONE, REAL}).level == REAL
    assert choose_noise("auto", "JPEG", False, 60, {NONE, REAL}).level == REAL
    assert choose_noise(REAL, "JPEG", False, 60, levels).reason == "asked"


def test_a_jpeg_blurred_before_compression_goes_to_the_real_level() -> None:
    sharp = synthetic_image(96, 96, seed=1)
    camera, clean = degraded_file(sharp, "camera", seed=1), degraded_file(sharp, "jpeg80")  # both q 80
    assert jpeg_detail_ratio(camera) < BLURRED_DETAIL_RATIO < jpeg_detail_ratio(clean)
    levels = {NONE, JPEG, REAL}
    chosen = choose_for_probe("auto", probe(camera, 1 << 20), levels)
    assert chosen.level == REAL and chosen.degradation == "camera"
    assert chosen.reason.startswith("jpeg q~80, blurred: detail 0.")
    assert choose_for_probe("auto", probe(clean, 1 << 20), levels).level == JPEG
    assert choose_for_probe(REAL, probe(camera, 1 << 20), levels).degradation == "camera"  # asked: same card entry
    # below q 70 compression alone flattens the finest scale as much: the check does not apply
    blurred_q60 = encode(gaussian_blur(sharp, 0.8), "JPEG", quality=60)
    assert jpeg_detail_ratio(blurred_q60) < BLURRED_DETAIL_RATIO
    assert choose_for_probe("auto", probe(blurred_q60, 1 << 20), levels).level == JPEG
    # nor from the clean threshold up; and without a real model the jpeg one serves a blurred file
    assert choose_noise("auto", "JPEG", False, CLEAN_JPEG_QUALITY, levels, detail=0.2).level == NONE
    assert choose_noise("auto", "JPEG", False, 80, {NONE, JPEG}, detail=0.2).level == JPEG


def test_detail_ratio_needs_a_few_pixels_and_survives_a_corrupt_file() -> None:
    assert detail_ratio(np.zeros((15, 200), np.uint8)) is None
    assert detail_ratio(np.full((64, 64), 128, np.uint8)) is None  # flat: no detail at either scale
    assert jpeg_detail_ratio(jpeg_file(80)[:200]) is None  # truncated: the pipeline's decode reports it


REAL_AT_X2_CAMERA = {"1": {"psnr": 30.21}, "0.5": {"psnr": 30.36}, "0.25": {"psnr": 30.26}}
REAL_CARD = {
    "noise": REAL,
    "metrics": {"Set5": {"1": {"psnr": 31.0}, "0.5": {"psnr": 30.6}, "0.25": {"psnr": 30.0}}},
    "metrics_degraded": {
        "jpeg50": {"Set5": {"1": {"psnr": 27.5}, "0.5": {"psnr": 27.3}, "0.25": {"psnr": 27.1}}},
        "jpeg75": {"Set5": {"1": {"psnr": 28.9}, "0.5": {"psnr": 28.6}, "0.25": {"psnr": 28.2}}},
        # ranked here (the input auto serves it), width 0.5 is below 0.25: dominated, unlike at jpeg75
        "camera": {"Set5": {"1": {"psnr": 25.6}, "0.5": {"psnr": 25.5}, "0.25": {"psnr": 25.55}}},
    },
    # measured at x2 too, where the ranking differs (as shipped: width 0.5 best, full width dominated)
    "at_scale": {"2": {"metrics_degraded": {"camera": {"Set5": REAL_AT_X2_CAMERA}}}},
}


# x4-jpeg measured at x3 too: a JPEG at x3 has no x3-jpeg model and is served by it, downscaled
JPEG_AT_X3_SET5 = {"1": {"psnr": 29.9}, "0.5": {"psnr": 29.7}, "0.25": {"psnr": 29.4}}
JPEG_AT_X3 = {"metrics_degraded": {"jpeg50": {"Set5": JPEG_AT_X3_SET5}}}
JPEG_CARD = {**REAL_CARD, "noise": JPEG, "at_scale": {"3": JPEG_AT_X3}}
# x4 measured at x3 (csd-sr evaluate --scale 3): below the x3 model at width 1, above it at 0.25 (as shipped)
X4_AT_X3 = {"metrics": {"Set5": {"1": {"psnr": 31.0}, "0.5": {"psnr": 30.8}, "0.25": {"psnr": 30.5}}}}


@pytest.fixture(scope="module")
def four_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server with x4 (clean, with figures at x3), x4-jpeg, x4-real, x3 and x2 (clean) tiny models."""
    folder = tmp_path_factory.mktemp("models")
    files = []
    for name, cfg, card in [
        ("csd-edsr-x4", TINY, {**CARD, "at_scale": {"3": X4_AT_X3}}),
        ("csd-edsr-x4-jpeg", TINY, JPEG_CARD),
        ("csd-edsr-x4-real", TINY, REAL_CARD),
        ("csd-edsr-x3", EDSRConfig(scale=3, n_resblocks=2, n_feats=16), CARD),
        ("csd-edsr-x2", EDSRConfig(scale=2, n_resblocks=2, n_feats=16), CARD),
    ]:
        torch.manual_seed(len(files))
        files.append(folder / f"{name}.safetensors")
        save_weights(EDSR(cfg), files[-1], card)
    with running_server(settings(",".join(map(str, files)), tile_size=32)) as url:
        yield url


@pytest.fixture
def multi(four_models: str) -> Iterator[httpx.Client]:
    with client_for(four_models) as c:
        yield c


def post(client: httpx.Client, data: bytes, media: str, **params: str) -> httpx.Response:
    return client.post("/v1/upscale", params=params, content=data, headers={"Content-Type": media})


def test_auto_serves_jpegs_with_the_jpeg_model_and_lossless_files_with_the_clean_one(multi: httpx.Client) -> None:
    png = post(multi, encode(synthetic_image(24, 32)), "image/png")
    assert png.status_code == 200, png.text
    assert png.headers["x-noise"] == "none; lossless png" and png.headers["x-scale"] == "4"
    assert png.headers["x-expected-psnr"].startswith("Set5=")  # the clean model's clean figures
    assert decode(png.content).size == (128, 96)

    jpeg = post(multi, jpeg_file(60), "image/jpeg")
    assert jpeg.status_code == 200, jpeg.text
    assert jpeg.headers["x-noise"] == f"jpeg; jpeg q~60 < {CLEAN_JPEG_QUALITY}"
    width = jpeg.headers["x-width"]
    expected = JPEG_CARD["metrics_degraded"]["jpeg50"]["Set5"][width]["psnr"]
    assert jpeg.headers["x-expected-psnr"] == f"jpeg50: Set5={expected:.2f}"

    light = post(multi, jpeg_file(98), "image/jpeg")
    assert light.headers["x-noise"] == f"none; jpeg q~98 >= {CLEAN_JPEG_QUALITY}"
    asked = post(multi, jpeg_file(60), "image/jpeg", noise="none")
    assert asked.headers["x-noise"] == "none; asked"
    camera = post(multi, jpeg_file(60), "image/jpeg", noise="real")  # a client that knows its photos are noisy
    assert camera.status_code == 200 and camera.headers["x-noise"] == "real; asked"

    blurred = post(multi, degraded_file(synthetic_image(48, 64, seed=2), "camera", seed=2), "image/jpeg")
    assert blurred.status_code == 200, blurred.text
    assert blurred.headers["x-noise"].startswith("real; jpeg q~80, blurred: detail 0.")
    expected = REAL_CARD["metrics_degraded"]["camera"]["Set5"][blurred.headers["x-width"]]["psnr"]
    assert blurred.headers["x-expected-psnr"] == f"camera: Set5={expected:.2f}"


def test_scale_picks_the_native_model(multi: httpx.Client) -> None:
    r = post(multi, encode(synthetic_image(24, 32)), "image/png", scale="2")
    assert r.status_code == 200, r.text
    assert r.headers["x-scale"] == "2" and decode(r.content).size == (64, 48)
    # no x2 model for JPEG artifacts: the x4 one serves them, downscaled (on Set5 jpeg50 the clean x2 model
    # is 0.3 dB below bicubic, x4-jpeg + Lanczos 1.2 dB above: bench/results/jpeg-at-x2)
    jpeg = post(multi, jpeg_file(60), "image/jpeg", scale="2")
    assert jpeg.status_code == 200 and jpeg.headers["x-noise"] == f"jpeg; jpeg q~60 < {CLEAN_JPEG_QUALITY}"
    assert jpeg.headers["x-scale"] == "2 (x4 + lanczos)" and decode(jpeg.content).size == (96, 96)


@pytest.mark.parametrize(
    ("params", "size", "served"),
    [
        ({"scale": "1.5"}, (48, 36), "1.5 (x2 + lanczos)"),
        ({"scale": "3", "width": "1"}, (96, 72), "3"),
        ({"scale": "2.5", "width": "1"}, (80, 60), "2.5 (x3 + lanczos)"),
        # a target size: the aspect kept, the side that binds exactly as asked
        ({"out_width": "48"}, (48, 36), "1.5 (x2 + lanczos)"),
        ({"out_height": "60", "width": "1"}, (80, 60), "2.5 (x3 + lanczos)"),
        ({"out_width": "64", "out_height": "1000"}, (64, 48), "2"),  # x2 exactly: the native model's output
        ({"out_width": "1000", "out_height": "50", "width": "1"}, (67, 50), "2.083 (x3 + lanczos)"),
        ({"scale": "3.5"}, (112, 84), "3.5 (x4 + lanczos)"),
    ],
)
def test_any_factor_returns_exactly_the_asked_size(multi: httpx.Client, params: dict, size: tuple, served: str) -> None:
    r = post(multi, encode(synthetic_image(24, 32)), "image/png", **params)
    assert r.status_code == 200, r.text
    assert decode(r.content).size == size and r.headers["x-scale"] == served


def test_a_downscaled_factor_keeps_the_alpha_channel(multi: httpx.Client) -> None:
    rgba = np.dstack([synthetic_image(24, 32), np.full((24, 32), 128, np.uint8)])
    r = post(multi, encode(rgba), "image/png", scale="1.5")
    out = decode(r.content)
    assert out.mode == "RGBA" and out.size == (48, 36)
    assert np.abs(np.asarray(out)[..., 3].astype(int) - 128).max() <= 1


def test_a_scale_takes_the_larger_models_rung_where_its_card_measures_it_better(multi: httpx.Client) -> None:
    x3 = next(m for m in multi.get("/v1/models").json()["models"] if m["name"] == "x3")
    assert "x4/0.25" in x3["ladder"] and "x4/1" not in x3["ladder"]  # x4 at x3: better at 0.25, not at 1
    small = encode(synthetic_image(24, 32))
    r = post(multi, small, "image/png", scale="3", width="0.25")
    assert r.status_code == 200, r.text
    assert r.headers["x-scale"] == "3 (x4 + lanczos)" and decode(r.content).size == (96, 72)
    assert r.headers["x-expected-psnr"] == "Set5=30.50"  # the x4 card's figure at x3, not at x4
    # over the x4 input limit (200 000 pixels here) but within x3's: the x3 model's own rung
    big = post(multi, encode(synthetic_image(480, 600)), "image/png", scale="3", width="0.25")
    assert big.status_code == 200, big.text
    assert big.headers["x-scale"] == "3" and decode(big.content).size == (1800, 1440)
    # no x3 model for JPEG artifacts: the x4 one serves them, downscaled
    jpeg = post(multi, jpeg_file(60), "image/jpeg", scale="3")
    assert jpeg.status_code == 200, jpeg.text
    assert jpeg.headers["x-noise"].startswith("jpeg; ") and jpeg.headers["x-scale"] == "3 (x4 + lanczos)"
    expected = JPEG_AT_X3_SET5[jpeg.headers["x-width"]]["psnr"]
    assert jpeg.headers["x-expected-psnr"] == f"jpeg50: Set5={expected:.2f}"  # its figures at x3, not x4
    # a factor between scales reads the figures of the smallest measured scale that reaches it
    r = post(multi, small, "image/png", scale="2.5", width="0.25")
    assert r.status_code == 200, r.text
    assert r.headers["x-scale"] == "2.5 (x4 + lanczos)" and decode(r.content).size == (80, 60)
    assert r.headers["x-expected-psnr"] == "Set5=30.50"  # x4's at x3: the nearest figure to 2.5 measured


def test_a_model_served_below_its_scale_ranks_its_rungs_by_its_figures_there(multi: httpx.Client) -> None:
    """x4-real at x2: width 0.5 measures best there (full width at x4), so an idle server runs 0.5 for it."""
    camera = degraded_file(synthetic_image(48, 64, seed=3), "camera", seed=3)
    r = post(multi, camera, "image/jpeg", scale="2", noise="real")
    assert r.status_code == 200, r.text
    assert r.headers["x-scale"] == "2 (x4 + lanczos)" and r.headers["x-width"] == "0.5"
    assert r.headers["x-expected-psnr"] == f"camera: Set5={REAL_AT_X2_CAMERA['0.5']['psnr']:.2f}"
    at_x4 = post(multi, camera, "image/jpeg", scale="4", noise="real")
    assert at_x4.status_code == 200 and at_x4.headers["x-width"] == "1"


def test_the_input_limit_follows_the_scale(multi: httpx.Client) -> None:
    # max_pixels 200 000 is the x4 input limit: its output, 16x that, bounds every scale's output
    big = encode(synthetic_image(500, 600))  # 300 000 pixels
    r = post(multi, big, "image/png", scale="4")
    assert r.status_code == 413 and "x4 limit of 200000" in r.json()["detail"]
    r = post(multi, big, "image/png", scale="2", width="0.25")
    assert r.status_code == 200, r.text
    assert decode(r.content).size == (1200, 1000)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"scale": "4.5"}, "scale"),
        ({"scale": "1"}, "scale"),
        ({"out_width": "32"}, "the scale must lie in (1, 4], got 1 (to 32x24) for 32x24"),
        ({"out_height": "100"}, "got 4.167 (to 133x100)"),
        ({"out_width": "48", "scale": "2"}, "a scale or a target size"),
        ({"noise": "heavy"}, "noise must be one of auto, jpeg, none, real at scale 4"),
        ({"noise": "heavy", "scale": "2"}, "noise must be one of auto, jpeg, none, real at scale 2"),
    ],
)
def test_a_scale_or_level_not_served_is_a_422(multi: httpx.Client, params: dict, needle: str) -> None:
    r = post(multi, encode(synthetic_image(24, 32)), "image/png", **params)
    assert r.status_code == 422 and r.json()["error"] == "invalid_option"
    assert needle in r.json()["detail"]


def test_models_lists_every_model_and_metrics_label_them(multi: httpx.Client) -> None:
    info = multi.get("/v1/models").json()
    assert info["default"] == "x4" and info["scales"] == [2, 3, 4]
    every = ["jpeg", "none", "real"]  # the x4 models serve the lower scales' JPEGs, downscaled
    assert info["noise_levels"] == {"2": every, "3": every, "4": every}
    by_name = {m["name"]: m for m in info["models"]}
    assert set(by_name) == {"x4", "x4-jpeg", "x4-real", "x3", "x2"}
    assert by_name["x2"]["scale"] == 2 and by_name["x4-real"]["noise"] == REAL
    # each model has its own ladder, ranked by its own card (the real model's at camera); which rungs below the
    # best are dropped as dominated depends on the costs warm-up measures, so only the best rung is asserted
    ladders = by_name["x4-real"]["ladders"]
    assert ladders["4"] == by_name["x4-real"]["ladder"] and ladders["4"][0] == "1"
    # and one per scale its card measures, ranked by the figures at that scale
    assert set(ladders) == {"4", "2"} and ladders["2"][0] == "0.5"
    # x4-real is x4's network: warm-up measures one and starts the other at its costs
    x4_costs = {r["key"]: r["cost"] for r in by_name["x4"]["rungs"]}
    assert all(r["cost"] is not None for r in by_name["x4-real"]["rungs"] + by_name["x2"]["rungs"])
    assert set(x4_costs) == {r["key"] for r in by_name["x4-real"]["rungs"]}
    assert multi.get("/v1/model").json()["name"] == "x4"
    post(multi, jpeg_file(60), "image/jpeg")
    metrics = multi.get("/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("csd_sr_inference_duration_seconds_count{"))
    assert 'scale="' in line and 'noise="' in line
    jpeg = [x for x in metrics.splitlines() if x.startswith("csd_sr_width_decisions_total{") and 'noise="jpeg"' in x]
    assert jpeg and sum(float(x.rsplit(" ", 1)[1]) for x in jpeg) >= 1
    served = {x.split("{")[1].split("}")[0] for x in metrics.splitlines() if x.startswith("csd_sr_cost_seconds")}
    assert any('scale="2"' in labels for labels in served)
