"""The API does what its OpenAPI document says: Schemathesis fuzzes a live server from its ``/openapi.json``.

Every phase (examples, coverage, fuzzing; stateful has no links to follow here), every check (no 5xx; status
codes, content types, headers and bodies as documented, error bodies included; schema-valid requests
accepted, schema-violating ones rejected; unsupported methods refused, ...), positive and negative data, a
bounded number of cases per operation and phase. Image bodies are real images (schemathesis_hooks.py).

Schemathesis runs as its command line (``st run``, its stable interface) in a subprocess, against a real
uvicorn server on loopback. The seed is fixed so that CI is repeatable; ``CSD_SR_FUZZ_SEED=<n>`` and
``CSD_SR_FUZZ_EXAMPLES=<n>`` explore further (a failure prints the request as a curl command).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.api.openapi import DECODED, IMAGE_TYPES
from service.inference.images import INPUT_MEDIA_TYPES
from tests.service.conftest import client_for, png_bytes, running_server, settings

SEED = os.environ.get("CSD_SR_FUZZ_SEED", "18")
MAX_EXAMPLES = int(os.environ.get("CSD_SR_FUZZ_EXAMPLES", "100"))  # per operation and phase
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


@pytest.fixture(scope="module")
def live_url(tiny_weights: Path) -> Iterator[str]:
    # Small tiles: the images the fuzzer gets through run tiled, the whole path.
    with running_server(settings(tiny_weights, tile_size=32, log_level="warning")) as url:
        yield url


def fuzz(url: str, workdir: Path, max_examples: int, *options: str) -> dict:
    """``st run`` against ``url``; asserts a clean exit and returns its JSON report."""
    report_path = workdir / "report.json"
    cmd = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json"),
        *("--checks", "all", "--mode", "all", "--max-examples", str(max_examples), "--seed", SEED),
        *("--workers", "1", "--request-timeout", "60", "--suppress-health-check", "all"),
        *("--report", "json", "--report-json-path", str(report_path)),
        *options,
    ]
    # Loopback: no proxy from the environment. Run in workdir, where Hypothesis keeps its example database.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env |= {"NO_COLOR": "1", "SCHEMATHESIS_HOOKS": str(HOOKS)}
    run = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-10_000:] + run.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["complete"] and not report["failures"] and not report["errors"]
    assert report["operations"]["tested"] == report["operations"]["selected"] >= 2
    return report


def test_server_conforms_to_its_openapi_spec(live_url: str, tmp_path: Path) -> None:
    report = fuzz(live_url, tmp_path, MAX_EXAMPLES)
    assert report["operations"]["tested"] == report["operations"]["total"] >= 5
    assert report["test_cases"]["generated"] >= 2 * MAX_EXAMPLES
    # Schema-valid uploads really went through the model (not only refused as undecodable).
    assert report["valid_rates"]["POST /v1/upscale"]["fuzzing"]["accepted"] >= MAX_EXAMPLES // 5


def test_401_conforms_too(tiny_weights: Path, tmp_path: Path) -> None:
    """With an API key and none sent, every /v1/* answer is the documented 401 (ErrorBody, WWW-Authenticate)."""
    with running_server(settings(tiny_weights, api_key="contract-key", log_level="warning")) as url:
        report = fuzz(url, tmp_path, 10, "--include-path-regex", "^/v1/")
    # /v1/upscale, /v1/model, /v1/models and the five /v1/jobs operations
    assert report["operations"]["tested"] == 8


def test_spec_documents_every_error_with_its_shape(live_url: str) -> None:
    with client_for(live_url) as c:
        spec = c.get("/openapi.json").json()
        body = c.post("/v1/upscale", params={"quality": "0"}, content=b"x", headers={"content-type": "image/png"})
    schemas = spec["components"]["schemas"]
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)  # FastAPI's 422 shape: never sent
    assert set(schemas["ErrorBody"]["required"]) == {"error", "detail"} == set(body.json())
    for path, item in spec["paths"].items():
        for operation in item.values():
            errors = {s: r for s, r in operation["responses"].items() if s.startswith(("4", "5"))}
            if path.startswith("/v1/"):
                assert {"401", "500"} <= set(errors), path
            for status, response in errors.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    upscale = spec["paths"]["/v1/upscale"]["post"]
    assert {"400", "401", "413", "415", "422", "500", "503"} <= set(upscale["responses"])
    assert "Retry-After" in upscale["responses"]["503"]["headers"]
    params = {p["name"]: p["schema"] for p in upscale["parameters"]}
    # Optional parameters are left out, never sent as null (FastAPI writes `int | None` as anyOf [.., null]).
    assert (params["quality"]["type"], params["x-deadline-ms"]["type"], params["format"]["type"]) == (
        "integer",
        "integer",
        "string",
    )
    assert {"type": "number", "enum": [0.25, 0.5, 1.0]} in params["width"]["anyOf"]
    content = upscale["requestBody"]["content"]
    assert set(DECODED) <= INPUT_MEDIA_TYPES
    assert set(content) == {"multipart/form-data", "image/*"}
    assert content["multipart/form-data"]["encoding"]["file"]["contentType"] == ", ".join(IMAGE_TYPES)


def test_quality_with_png_is_accepted_and_ignored(live_url: str) -> None:
    """Valid by the spec, so served (it was a 422): PNG is lossless, quality has nothing to set."""
    with client_for(live_url) as c:
        plain, with_quality = (
            c.post("/v1/upscale", params=params, content=png_bytes(), headers={"content-type": "image/png"})
            for params in ({"width": "1", "format": "png"}, {"width": "1", "format": "png", "quality": "1"})
        )
    assert with_quality.status_code == 200 and with_quality.headers["content-type"] == "image/png"
    assert with_quality.content == plain.content
