"""/metrics parses with prometheus-client's own parser and moves when requests are served."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import png_bytes

PNG = {"content-type": "image/png"}


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """A sample's value; a rung's labels (``width``) name the served model too: the one x4 clean model here."""
    if "width" in labels:
        labels = {"scale": "4", "noise": "none", "style": "faithful", **labels}
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_describe_the_model(client: httpx.Client) -> None:
    m = scrape(client)
    names = {name for name, _ in m}
    expected = {
        "csd_sr_http_requests_total",
        "csd_sr_upscale_duration_seconds_bucket",
        "csd_sr_inference_duration_seconds_count",
        "csd_sr_queue_wait_seconds_count",
        "csd_sr_queue_depth",
        "csd_sr_busy_workers",
        "csd_sr_workers",
        "csd_sr_inflight_requests",
        "csd_sr_width_decisions_total",
        "csd_sr_rejections_total",
        "csd_sr_input_pixels_total",
        "csd_sr_output_pixels_total",
        "csd_sr_cost_seconds_per_megapixel",
        "csd_sr_cost_overhead_seconds",
        "csd_sr_latency_target_seconds",
        "csd_sr_lane_price",
        "csd_sr_ready",
        "csd_sr_model_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    }
    assert expected <= names, expected - names
    info = next(dict(labels) for name, labels in m if name == "csd_sr_model_info")
    assert info["scale"] == "4" and info["widths"] == "0.25,0.5,1" and len(info["version"]) == 12
    assert info["rungs"] == "x4/0.25,x4/0.5,x4/1"  # no int8 files beside these weights
    assert info["models"] == "x4"
    for w in ("0.25", "0.5", "1"):
        assert value(m, "csd_sr_cost_seconds_per_megapixel", width=w, precision="fp32") > 0
        # The latency target (2 s) is a bucket boundary, so "share within target" is one ratio.
        labels = {"le": "2.0", "noise": "none", "precision": "fp32", "scale": "4", "style": "faithful", "width": w}
        assert ("csd_sr_upscale_duration_seconds_bucket", tuple(sorted(labels.items()))) in m
    assert value(m, "csd_sr_ready") == 1 and value(m, "csd_sr_latency_target_seconds") == 2.0
    assert value(m, "csd_sr_workers") == 2
    assert value(m, "csd_sr_queue_depth") == 0 and value(m, "csd_sr_busy_workers") == 0
    assert value(m, "csd_sr_lane_price") == 0  # idle: lane time is free


def test_metrics_move_when_requests_are_served(client: httpx.Client) -> None:
    before = scrape(client)
    r = client.post("/v1/upscale", content=png_bytes(24, 32), headers=PNG)
    assert r.status_code == 200 and r.headers["x-width"] == "1"
    client.post("/v1/upscale", params={"width": "0.5"}, content=png_bytes(24, 32), headers=PNG)
    client.post("/v1/upscale", content=b"\0" * 2_000_000, headers=PNG)  # 413
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("csd_sr_http_requests_total", route="/v1/upscale", method="POST", status="200") == 2
    assert delta("csd_sr_http_requests_total", route="/v1/upscale", method="POST", status="413") == 1
    assert delta("csd_sr_width_decisions_total", width="1", precision="fp32", reason="idle") == 1
    assert delta("csd_sr_width_decisions_total", width="0.5", precision="fp32", reason="forced") == 1
    assert delta("csd_sr_rejections_total", reason="body_too_large") == 1
    assert delta("csd_sr_input_pixels_total") == 2 * 24 * 32
    assert delta("csd_sr_output_pixels_total") == 2 * 96 * 128
    assert delta("csd_sr_upscale_duration_seconds_count", width="1", precision="fp32") == 1
    assert delta("csd_sr_upscale_duration_seconds_bucket", width="1", precision="fp32", le="+Inf") == 1
    assert delta("csd_sr_inference_duration_seconds_count", width="0.5", precision="fp32") == 1
    assert delta("csd_sr_queue_wait_seconds_count") == 2
    assert delta("csd_sr_http_requests_total", route="/metrics", method="GET", status="200") == 1
