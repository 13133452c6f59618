"""The web page at ``/`` and the offline ``/docs``, in a real browser against a real server.

Debian's ``chromium`` driven by Playwright through ``executable_path`` (``scripts/system-deps.sh`` installs
it; Playwright's own browser download is never used). Every page here runs with all requests to hosts other
than the server's loopback address blocked and recorded, which proves the page and the docs need no CDN.
The first tests need no browser: they check what the server sends.
"""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, Response, Route, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import synthetic_image
from tests.service.conftest import client_for, encode, png_bytes, running_server, settings

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000  # generous: two shared cores, a browser and a model on them
# POST /v1/upscale, GET /v1/model, /v1/models, /healthz, /readyz, /metrics; the jobs: POST /v1/jobs, GET
# /v1/jobs/{id}, GET .../result, POST .../cancel, DELETE /v1/jobs/{id}
OPERATIONS = 11
# Waits go through locators, never page.wait_for_function: the page's CSP (no eval) would refuse its string.
expect.set_options(timeout=TIMEOUT_MS)

# --- what the server sends (no browser) -------------------------------------------------------


def test_page_and_assets_are_served_from_the_package(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(ref.startswith("/") for ref in refs), refs  # nothing from another origin
    for ref in refs:
        assert client.get(ref).status_code == 200, ref
    assert "javascript" in client.get("/static/app.js").headers["content-type"]


def test_docs_use_the_vendored_swagger_ui_and_redoc_is_off(client: httpx.Client) -> None:
    html = client.get("/docs").text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/swagger-ui/swagger-ui.css"} <= set(refs)
    assert all(ref.startswith("/") for ref in refs), refs
    assert "cdn" not in html.lower()
    for ref in refs:
        assert client.get(ref).status_code == 200, ref
    assert client.get("/redoc").status_code == 404


def test_page_routes_are_not_in_the_api_contract(client: httpx.Client) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    jobs = {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/cancel"}
    assert paths == {"/v1/upscale", "/v1/model", "/v1/models", "/healthz", "/readyz", "/metrics", *jobs}


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == name and labels.items() <= s.labels.items())


def test_a_client_that_leaves_during_the_upload_is_a_499_not_a_500(client: httpx.Client, server: str) -> None:
    """The page's Cancel during an upload closes the connection mid-body: no error log, no 5xx in the metrics."""
    host, port = urlsplit(server).netloc.split(":")
    head = b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 500000\r\n\r\n"
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + png_bytes())  # a fraction of the declared body, then gone
    deadline = time.monotonic() + 10
    while metric(client, "csd_sr_http_requests_total", route="/v1/upscale", status="499") < 1:
        assert time.monotonic() < deadline, "the server never saw the client leave"
        time.sleep(0.05)
    assert metric(client, "csd_sr_http_requests_total", route="/v1/upscale", status="500") == 0


# --- in the browser ----------------------------------------------------------------------------


def in_browser(test: Callable) -> Callable:
    """A browser test: marked ``browser``, skipped with the reason where Debian's chromium is missing."""
    reason = f"{CHROMIUM} missing: Debian's chromium package (scripts/system-deps.sh installs it as root)"
    return pytest.mark.browser(pytest.mark.skipif(not CHROMIUM.exists(), reason=reason)(test))


@dataclass
class Watched:
    """A page and what went wrong on it: console errors, uncaught exceptions, failed or blocked requests."""

    page: Page
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def clean(self) -> None:
        assert not (self.errors or self.failed or self.outside), (self.errors, self.failed, self.outside)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        # --no-sandbox: Chromium's sandbox refuses to start as root, which is how CI runs.
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Watched]]:
    """``open_page(url, width=1280, height=900)``: a fresh context whose page has loaded ``url``."""
    contexts: list[BrowserContext] = []

    def open_(url: str, width: int = 1280, height: int = 900) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        watched = Watched(page)
        allowed = urlsplit(url).netloc

        def route(route: Route) -> None:
            if urlsplit(route.request.url).netloc == allowed:
                route.continue_()
            else:
                watched.outside.append(route.request.url)
                route.abort()

        context.route("**/*", route)
        page.on("console", lambda m: m.type == "error" and watched.errors.append(m.text))
        page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
        page.on("requestfailed", lambda r: watched.failed.append(f"{r.url}: {r.failure}"))
        page.on("request", lambda r: watched.requests.append(f"{r.method} {r.url}"))
        page.goto(url)
        return watched

    yield open_
    for context in contexts:
        context.close()


def ready(watched: Watched) -> Page:
    """Wait until the page has read /v1/model (the width choices exist) and return the page."""
    page = watched.page
    page.wait_for_selector("#widths input[value='auto']")
    expect(page.locator("#live-state")).to_have_text(re.compile("^ready"))
    return page


def choose(page: Page, name: str, data: bytes, mime: str) -> None:
    page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.wait_for_selector("#chosen:not([hidden])")


def upscale(page: Page) -> Response:
    """Click the button; the /v1/upscale response once the page shows the result."""
    with page.expect_response(lambda r: "/v1/upscale" in r.url) as info:
        page.click("#go")
    page.wait_for_selector("#result:not([hidden])")  # shown once the output has been decoded
    return info.value


def text(page: Page, selector: str) -> str:
    return page.inner_text(selector).strip()


@in_browser
def test_page_loads_offline_with_labelled_controls(open_page, server: str) -> None:
    watched = open_page(server)
    page = ready(watched)
    assert "200,000 pixels" in text(page, "#limits")  # the test server's max_pixels, shown before any upload
    assert page.locator("#widths input[name='width']").count() == 4  # auto + the ladder
    assert "Set5 30.10 dB" in text(page, "label[for='width-0.25']")  # from the model card
    # Every visible control has an accessible name.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, textarea, a[href]')]
            .filter((el) => el.offsetParent !== null || el.type === 'file')
            .filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
            .map((el) => el.outerHTML)"""
    )
    assert unnamed == []
    watched.clean()


@in_browser
def test_upload_shows_the_result_its_headers_and_downloads_it(open_page, server: str, tmp_path: Path) -> None:
    watched = open_page(server)
    page = ready(watched)
    choose(page, "photo.png", png_bytes(40, 50), "image/png")
    facts = text(page, "#facts")
    assert "50×40" in facts and "200×160" in facts and "4 tiles of 32×32" in facts  # tile_size=32 server
    response = upscale(page)
    assert response.status == 200
    after = page.locator("#after")
    size = after.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [200, 160]
    assert page.locator("#before").evaluate("canvas => [canvas.width, canvas.height]") == size
    headers = response.headers
    assert text(page, "#res-width") == headers["x-width"]
    assert text(page, "#res-precision") == headers["x-precision"] == "fp32"
    assert text(page, "#res-psnr") == "Set5 31.50 dB, Set14 28.00 dB"  # the card of tests/service/conftest.py
    assert text(page, "#res-reason") == headers["x-width-reason"]
    assert text(page, "#res-wait") == f"{headers['x-queue-wait-ms']} ms"
    assert text(page, "#res-model") == f"{headers['x-inference-ms']} ms"

    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == "photo-x4.png"
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    with Image.open(path) as img:
        assert (img.format, img.size) == ("PNG", (200, 160))
    page.check("#zoom-2")  # actual pixels, twice: unsmoothed and 400 px wide
    assert page.evaluate("getComputedStyle(document.getElementById('after')).imageRendering") == "pixelated"
    assert page.evaluate("document.getElementById('stage').getBoundingClientRect().width") == 400
    watched.clean()


@in_browser
def test_width_and_output_options_reach_the_server(open_page, server: str) -> None:
    watched = open_page(server)
    page = ready(watched)
    choose(page, "shot.final.png", png_bytes(24, 32), "image/png")
    page.check("input[name='width'][value='0.25']")
    page.select_option("#format", "webp")
    page.uncheck("#lossless")
    page.fill("#quality", "80")
    response = upscale(page)
    query = dict(pair.split("=") for pair in urlsplit(response.url).query.split("&"))
    assert query == {"scale": "4", "noise": "auto", "width": "0.25", "format": "webp", "quality": "80"}
    assert text(page, "#res-noise") == "none; lossless png" and text(page, "#res-scale") == "×4"
    assert (response.headers["x-width"], response.headers["x-width-reason"]) == ("0.25", "forced")
    assert text(page, "#res-reason") == "forced"
    assert page.get_attribute("#download", "download") == "shot.final-x4.webp"
    watched.clean()


@in_browser
def test_keyboard_alone_chooses_and_upscales(open_page, server: str) -> None:
    page = ready(open_page(server))

    def tab_to(element_id: str) -> None:
        for _ in range(30):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == element_id:
                return
        raise AssertionError(f"#{element_id} not reachable with Tab")

    tab_to("file")
    # Under a loaded CPU headless Chromium can drop the first key press's chooser: press again,
    # still only by keyboard, a few times before calling the control unreachable.
    for attempt in range(3):
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press("Space")
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
            assert page.evaluate("document.activeElement.id") == "file"
    chooser.value.set_files(files=[{"name": "k.png", "mimeType": "image/png", "buffer": png_bytes(16, 16)}])
    expect(page.locator("#go")).to_be_enabled()
    tab_to("go")
    page.keyboard.press("Enter")
    page.wait_for_selector("#result:not([hidden])")
    assert page.evaluate("document.getElementById('after').naturalWidth") == 64


@in_browser
def test_a_text_file_shows_the_415_message(open_page, server: str) -> None:
    page = ready(open_page(server))
    choose(page, "notes.txt", b"not an image\n", "text/plain")
    assert "does not look like an image" in text(page, "#file-warning")
    with page.expect_response(lambda r: "/v1/upscale" in r.url) as info:
        page.click("#go")
    assert info.value.status == 415
    page.wait_for_selector("#error:not([hidden])")
    assert text(page, "#error-title") == "This type of file is not supported (HTTP 415, unsupported_media_type)"
    assert "text/plain" in text(page, "#error-detail")  # the server's own detail
    assert text(page, "#error-hint") == "Choose a PNG, JPEG, WebP, BMP, TIFF or GIF image."
    assert page.is_hidden("#result")


@pytest.fixture(scope="module")
def jobs_server(tiny_weights: Path) -> Iterator[str]:
    """/v1/upscale takes 200,000 pixels at x4, a job 300,000."""
    with running_server(settings(tiny_weights, tile_size=64, max_job_pixels=300_000)) as url:
        yield url


@in_browser
def test_an_image_over_the_pixel_limit_is_refused_before_upload(open_page, jobs_server: str) -> None:
    watched = open_page(jobs_server)
    page = ready(watched)
    choose(page, "big.png", encode(synthetic_image(600, 600)), "image/png")  # 360,000 > 300,000 pixels
    assert page.is_disabled("#go")
    warning = text(page, "#file-warning")
    assert "360,000 pixels" in warning and "300,000 pixels" in warning
    assert not any("/v1/" in r and "/v1/model" not in r for r in watched.requests)
    watched.clean()


@in_browser
def test_an_image_over_the_request_limit_runs_as_a_job_with_progress(open_page, jobs_server: str) -> None:
    watched = open_page(jobs_server)
    page = ready(watched)
    choose(page, "big.png", encode(synthetic_image(500, 500)), "image/png")  # 250,000: over one request's limit
    expect(page.locator("#go")).to_have_text("Upscale ×4 as a job")
    assert "runs as a job" in text(page, "#file-warning")
    page.select_option("#format", "jpeg")  # a job streams PNG: anything else is refused before sending
    assert page.is_disabled("#go") and "choose PNG" in text(page, "#file-warning")
    page.select_option("#format", "png")
    page.click("#go")
    expect(page.locator("#phase")).to_have_text(re.compile("tiles"))  # Running at rung ...: n of 64 tiles
    page.wait_for_selector("#result:not([hidden])")
    assert text(page, "#res-scale") == "×4" and text(page, "#res-output").startswith("2000×2000 PNG")
    assert text(page, "#phase").startswith("Done in") and "64 tiles" in text(page, "#phase")
    assert any(r.startswith("POST") and "/v1/jobs?" in r for r in watched.requests)
    assert not any("/v1/upscale" in r for r in watched.requests)
    expect(page.locator("#go")).to_be_enabled()
    watched.clean()


@in_browser
def test_503_shows_a_retry_after_countdown_then_retries(open_page, server: str) -> None:
    page = ready(open_page(server))
    calls = []

    def busy_once(route: Route) -> None:
        # The server's own 503 needs a saturated server; this is its documented shape, sent once.
        calls.append(route.request.url)
        if len(calls) > 1:
            route.continue_()
            return
        body = '{"error": "overloaded", "detail": "predicted wait 9.0 s: no width can finish within 2 s"}'
        route.fulfill(status=503, headers={"Retry-After": "2"}, content_type="application/json", body=body)

    page.route("**/v1/upscale*", busy_once)
    choose(page, "photo.png", png_bytes(), "image/png")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    assert text(page, "#error-title") == "The server is busy (HTTP 503, overloaded)"
    assert "predicted wait 9.0 s" in text(page, "#error-detail")
    assert page.is_disabled("#retry") and text(page, "#retry") == "Retry in 2 s"
    expect(page.locator("#retry")).to_be_enabled(timeout=5000)
    page.click("#retry")
    page.wait_for_selector("#result:not([hidden])")
    assert len(calls) == 2 and page.is_hidden("#error")


@in_browser
def test_phone_width_has_no_sideways_scrolling(open_page, server: str) -> None:
    page = ready(open_page(server, width=360, height=740))
    choose(page, "photo.png", png_bytes(64, 96), "image/png")
    upscale(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert page.evaluate("document.getElementById('stage').getBoundingClientRect().width") <= 360


@in_browser
def test_docs_render_every_operation_offline(open_page, server: str) -> None:
    watched = open_page(f"{server}/docs")
    page = watched.page
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() == OPERATIONS
    assert "/v1/upscale" in page.inner_text("#swagger-ui")
    watched.clean()


@in_browser
def test_api_key_is_asked_for_and_kept_for_the_tab_only(open_page, tiny_weights: Path) -> None:
    with running_server(settings(tiny_weights, api_key="page-key")) as url:
        page = open_page(url).page
        page.wait_for_selector("#key-panel:not([hidden])")
        page.fill("#key-input", "wrong")
        page.click("#key-form button")
        expect(page.locator("#key-message")).to_contain_text("refused")
        page.fill("#key-input", "page-key")
        page.click("#key-form button")
        page.wait_for_selector("#key-panel", state="hidden")
        choose(page, "photo.png", png_bytes(), "image/png")
        assert upscale(page).status == 200
        storage = page.evaluate("[sessionStorage.getItem('csd-sr-api-key'), localStorage.length]")
        assert storage == ["page-key", 0]


@pytest.fixture(scope="module")
def slow_server(heavy_weights: Path) -> Iterator[str]:
    """One worker, a wide model and small tiles: a large request runs for seconds and stops within a tile."""
    s = settings(heavy_weights, workers=1, tile_size=64, max_pixels=4_000_000, max_body_bytes=20_000_000)
    with running_server(s) as url:
        yield url


@in_browser
def test_cancel_really_stops_the_request_on_the_server(open_page, slow_server: str) -> None:
    with client_for(slow_server) as c:
        cost = next(r["cost"] for r in c.get("/v1/model").json()["per_width"] if r["width"] == 1.0)
        side = min(1500, int(math.sqrt(20.0 / cost["s_per_megapixel"] * 1e6)))  # ~20 s at full width
        page = ready(open_page(slow_server))
        choose(page, "large.png", encode(synthetic_image(side, side)), "image/png")
        page.check("input[name='width'][value='1']")
        page.click("#go")
        expect(page.locator("#phase")).to_have_text(re.compile("^Uploaded"))
        deadline = time.monotonic() + 30
        while c.get("/v1/model").json()["policy"]["running"] != 1:  # the model is at work on it
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        page.click("#cancel")
        assert text(page, "#phase").startswith("Cancelled.")
        while metric(c, "csd_sr_http_requests_total", route="/v1/upscale", status="499") < 1:
            assert time.monotonic() - started < 10, "the server never saw the client leave"
            time.sleep(0.05)
        while c.get("/v1/model").json()["policy"]["running"]:
            assert time.monotonic() - started < 10, "the job kept running after the client left"
            time.sleep(0.05)
        assert time.monotonic() - started < 10  # far less than the ~20 s the request would have taken
        assert metric(c, "csd_sr_inference_duration_seconds_count") == 0  # it never completed
        assert page.is_hidden("#result")


@pytest.fixture(scope="module")
def two_scales(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with a clean x4 and a clean x2 tiny model."""
    import torch

    from model.edsr import EDSR, EDSRConfig
    from model.weights import save_weights
    from tests.service.conftest import CARD, TINY

    folder = tmp_path_factory.mktemp("scales")
    for name, cfg in [("csd-edsr-x4", TINY), ("csd-edsr-x2", EDSRConfig(scale=2, n_resblocks=2, n_feats=16))]:
        torch.manual_seed(0)
        save_weights(EDSR(cfg), folder / f"{name}.safetensors", CARD)
    with running_server(settings(folder, tile_size=32)) as url:
        yield url


@in_browser
def test_the_scale_chosen_sets_the_output_size_and_reaches_the_server(open_page, two_scales: str) -> None:
    watched = open_page(two_scales)
    page = ready(watched)
    # from /v1/models: x2 and x4, and x1.5, x2.5, x3 served by them and a downscale
    expect(page.locator("#scale option")).to_have_count(5)
    choose(page, "photo.png", png_bytes(24, 32), "image/png")
    expect(page.locator("#facts")).to_contain_text("128×96")
    page.select_option("#scale", "2")
    expect(page.locator("#facts")).to_contain_text("64×48")  # the output size before sending
    expect(page.locator("#go")).to_have_text("Upscale ×2")
    expect(page.locator("#noise option")).to_have_count(2)  # auto and none: x2 has no other level
    response = upscale(page)
    assert "scale=2" in response.url and response.headers["x-scale"] == "2"
    assert text(page, "#res-scale") == "×2"
    assert page.get_attribute("#download", "download") == "photo-x2.png"
    page.select_option("#scale", "1.5")
    expect(page.locator("#facts")).to_contain_text("48×36")
    response = upscale(page)
    assert "scale=1.5" in response.url and response.headers["x-scale"] == "1.5 (x2 + lanczos)"
    assert page.get_attribute("#download", "download") == "photo-x1.5.png"
    watched.clean()


@in_browser
def test_the_page_offers_sharp_first_and_faithful_on_request(open_page, two_styles: str, server: str) -> None:
    watched = open_page(two_styles)
    page = ready(watched)
    expect(page.locator("#style-row")).to_be_visible()
    assert page.input_value("#style") == "sharp"  # the page's default; the API's stays faithful
    expect(page.locator("#sharpness-row")).to_be_visible()
    assert page.input_value("#sharpness") == "1"  # the strongest step first
    assert page.locator("#sharpness option").evaluate_all("els => els.map(e => e.value)") == ["1", "0.5"]
    expect(page.locator('.quality[data-width="1"]')).to_have_text(", Set5 sharpness 5.00 %")  # the sharp card's
    choose(page, "photo.png", png_bytes(24, 32), "image/png")
    response = upscale(page)
    assert "style=sharp" in response.url and response.headers["x-style"] == "sharp"
    assert text(page, "#res-style") == "sharp"
    assert text(page, "#res-psnr").endswith("%") and text(page, "#res-psnr-label") == "Expected sharpness"
    page.select_option("#sharpness", "0.5")
    response = upscale(page)
    assert "sharpness=0.5" in response.url and text(page, "#res-style") == "sharp, sharpness 0.5"
    page.select_option("#style", "faithful")
    expect(page.locator("#sharpness-row")).to_be_hidden()
    expect(page.locator('.quality[data-width="1"]')).to_contain_text(" dB")
    response = upscale(page)
    assert "style=faithful" in response.url and "sharpness" not in response.url
    assert text(page, "#res-style") == "faithful" and text(page, "#res-psnr-label") == "Expected PSNR"
    watched.clean()
    plain = open_page(server)  # a server without a sharp model: no style to choose, none sent
    ready(plain)
    expect(plain.page.locator("#style-row")).to_be_hidden()
    plain.clean()
