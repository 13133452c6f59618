"""``style=faithful|sharp`` and ``sharpness``: a faithful and a sharp tiny model, and a sharpness step between
them, side by side on a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.catalog.registry import FAITHFUL, SHARP, ModelKey, resolve, sharpness_steps, styles
from tests.service.conftest import client_for, decode, png_bytes, running_server, settings


@pytest.fixture
def client(two_styles: str) -> Iterator[httpx.Client]:
    with client_for(two_styles) as c:
        yield c


def test_keys_and_resolution_keep_the_styles_apart() -> None:
    faithful, real, sharp = ModelKey(4), ModelKey(4, "real"), ModelKey.of(4, {"style": SHARP, "noise": "real"})
    assert (sharp.name, sharp.noise) == ("x4-sharp", "none")  # one sharp model serves every noise level
    keys = (faithful, real, sharp, ModelKey(2))
    assert resolve(keys, 4, "real") == real
    assert resolve(keys, 4, "real", SHARP) == sharp
    assert resolve(keys, 2, "none", SHARP) == sharp  # x2 through the x4 sharp model and a downscale
    assert resolve(keys, 2, "none") == ModelKey(2)
    assert styles(keys, 2) == {FAITHFUL, SHARP}
    assert styles((faithful, ModelKey(2)), 2) == {FAITHFUL}


def test_a_sharpness_goes_to_the_nearest_step() -> None:
    full, half = ModelKey.of(4, {"style": SHARP}), ModelKey.of(4, {"style": SHARP, "sharpness": 0.5})
    assert (half.name, half.look, full.look) == ("x4-sharp-0.5", "sharp-0.5", "sharp")
    keys = (ModelKey(4, "real"), full, half)
    assert sharpness_steps(keys, 4) == [0.5, 1.0]
    assert resolve(keys, 4, "none", SHARP) == full  # no sharpness asked: the distilled model
    assert [resolve(keys, 4, "none", SHARP, s) for s in (0.0, 0.6, 0.75, 0.9)] == [half, half, full, full]


def post(client: httpx.Client, **params: str) -> httpx.Response:
    return client.post("/v1/upscale", params=params, content=png_bytes(), headers={"Content-Type": "image/png"})


def test_a_sharpness_step_serves_its_own_weights(client: httpx.Client) -> None:
    full, half = post(client, style="sharp", width="1"), post(client, style="sharp", width="1", sharpness="0.3")
    assert (full.status_code, half.status_code) == (200, 200), half.text
    assert (full.headers["X-Sharpness"], half.headers["X-Sharpness"]) == ("1", "0.5")
    assert not np.array_equal(*(np.asarray(decode(r.content)) for r in (full, half)))
    assert "X-Sharpness" not in post(client).headers


def test_a_sharpness_outside_0_to_1_is_a_422_and_style_faithful_ignores_it(client: httpx.Client) -> None:
    faithful = post(client, sharpness="0.5")  # valid by the spec, whose parameters are independent
    assert faithful.status_code == 200 and faithful.headers["X-Style"] == FAITHFUL
    assert "X-Sharpness" not in faithful.headers
    assert post(client, style="sharp", sharpness="1.5").status_code == 422
    info = client.get("/v1/models").json()
    assert info["sharpness_steps"] == {"4": [0.5, 1.0]}
    assert [m["sharpness"] for m in info["models"]] == [None, 1.0, 0.5]


def test_the_default_stays_faithful(client: httpx.Client) -> None:
    r = client.post("/v1/upscale", content=png_bytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["X-Style"] == FAITHFUL
    assert "X-Expected-PSNR" in r.headers and "X-Expected-Sharpness" not in r.headers


def test_sharp_runs_the_sharp_model_and_reports_its_metric(client: httpx.Client) -> None:
    body = png_bytes()
    faithful = client.post("/v1/upscale", params={"width": "1"}, content=body, headers={"Content-Type": "image/png"})
    sharp = client.post(
        "/v1/upscale",
        params={"style": "sharp", "width": "1", "noise": "none"},
        content=body,
        headers={"Content-Type": "image/png"},
    )
    assert sharp.status_code == 200, sharp.text
    assert sharp.headers["X-Style"] == SHARP
    assert sharp.headers["X-Expected-Sharpness"] == "Set5=5.00; Set14=5.00"
    assert "X-Expected-PSNR" not in sharp.headers
    assert "not used by style sharp" in sharp.headers["X-Noise"]
    a, b = (np.asarray(decode(r.content)) for r in (faithful, sharp))
    assert a.shape == b.shape and not np.array_equal(a, b)  # other weights ran


def test_sharp_at_a_lower_scale_is_the_x4_sharp_model_downscaled(client: httpx.Client) -> None:
    r = client.post(
        "/v1/upscale",
        params={"style": "sharp", "scale": "2"},
        content=png_bytes(),
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["X-Scale"] == "2 (x4 + lanczos)"
    assert decode(r.content).size == (64, 48)


def test_an_unknown_style_is_a_422(client: httpx.Client) -> None:
    r = client.post(
        "/v1/upscale", params={"style": "vivid"}, content=png_bytes(), headers={"Content-Type": "image/png"}
    )
    assert r.status_code == 422


def test_the_sharp_ladder_is_ranked_by_sharpness(client: httpx.Client) -> None:
    info = client.get("/v1/models").json()
    assert info["styles"]["4"] == [FAITHFUL, SHARP]
    sharp = next(m for m in info["models"] if m["style"] == SHARP)
    assert sharp["name"] == "x4-sharp"
    assert sharp["ladder"][0] == "1"  # the sharpest, though the worst PSNR to the HR and to the teacher
    faithful = next(m for m in info["models"] if m["style"] == FAITHFUL)
    assert faithful["ladder"][0] == "1"


def test_metrics_carry_the_style(client: httpx.Client) -> None:
    client.post("/v1/upscale", params={"style": "sharp"}, content=png_bytes(), headers={"Content-Type": "image/png"})
    text = client.get("/metrics").text
    assert 'csd_sr_inference_duration_seconds_count{noise="none",precision="fp32",scale="4",style="sharp"' in text
    post(client, style="sharp", sharpness="0.5")
    text = client.get("/metrics").text
    assert 'csd_sr_inference_duration_seconds_count{noise="none",precision="fp32",scale="4",style="sharp-0.5"' in text


def job_result(client: httpx.Client, **params: str) -> dict:
    """A job's final record, submitted with ``params``."""
    r = client.post("/v1/jobs", params=params, content=png_bytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == 202, r.text
    job = r.json()
    deadline = time.monotonic() + 60
    while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["state"] == "done", job
    return job


def test_a_job_takes_the_style_and_sharpness(client: httpx.Client) -> None:
    assert job_result(client, style="sharp")["rung"].startswith("x4-sharp/")
    assert job_result(client, style="sharp", sharpness="0.5")["rung"].startswith("x4-sharp-0.5/")


def test_a_server_without_a_sharp_model_refuses_the_style(tiny_weights: Path) -> None:
    with running_server(settings(tiny_weights, precisions=("fp32",))) as url, client_for(url) as c:
        r = c.post("/v1/upscale", params={"style": "sharp"}, content=png_bytes(), headers={"Content-Type": "image/png"})
        assert r.status_code == 422
        assert r.json() == {
            "error": "invalid_option",
            "detail": "style must be one of faithful at scale 4, got 'sharp'",
        }
        assert c.get("/v1/models").json()["styles"] == {"4": [FAITHFUL]}
