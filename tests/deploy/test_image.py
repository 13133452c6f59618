"""The Docker image, built from the Dockerfile and run by a real engine with host networking.

Run alone: ``.venv/bin/pytest -m docker``. The set-up (scripts/docker-engine.sh) installs
Debian's engine and debootstrap when missing (root), starts dockerd without its bridge, and
builds the debootstrap base image once; an engine this test started is stopped at the end.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from model.openvino import native_bf16
from tests.conftest import synthetic_image
from tests.deploy.conftest import REPO, WEIGHTS, free_port, http_status, wait_until
from tests.deploy.docker_engine import (
    Build,
    build_image,
    docker,
    health,
    local_torch_wheels,
    main_pid,
    proc_uids,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        not WEIGHTS.exists(), reason=f"{WEIGHTS.relative_to(REPO)} is absent: the image ships the trained weights"
    ),
]


@pytest.fixture(scope="module")
def docker_client() -> Iterator[str]:
    pid_file = Path("/tmp/csd-sr-dockerd-test.pid")
    pid_file.unlink(missing_ok=True)
    env = {**os.environ, "CSD_SR_DOCKERD_PID": str(pid_file)}
    script = subprocess.run(
        ["bash", str(REPO / "scripts" / "docker-engine.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    if script.returncode != 0 and os.geteuid() != 0:
        pytest.skip(f"no usable Docker engine without root: {script.stderr.strip()[-300:]}")
    assert script.returncode == 0, f"scripts/docker-engine.sh failed:\n{script.stderr[-3000:]}"
    yield script.stdout.strip().splitlines()[-1]
    if pid_file.exists():  # this run started the engine: stop it
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 60, "dockerd stopped")
        pid_file.unlink()


@pytest.fixture(scope="module")
def image(docker_client: str) -> Iterator[Build]:
    offline = local_torch_wheels(REPO / "docker" / "wheels", Path(sys.executable).with_name("pip"))
    build = build_image(docker_client, REPO, "csd-sr:test", offline_torch=offline)
    print(f"\nimage csd-sr:test: {build.size_bytes / 1e6:.0f} MB, built in {build.seconds:.0f} s")
    yield build


@pytest.fixture
def container(docker_client: str, image: Build) -> Iterator[tuple[str, str]]:
    """The image running as in production (read-only root, /tmp on tmpfs), on a free loopback port."""
    name, port = f"csd-sr-test-{uuid.uuid4().hex[:8]}", free_port()
    run = docker(
        docker_client,
        "run", "--detach", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp",
        "--env", "CSD_SR_HOST=127.0.0.1", "--env", f"CSD_SR_PORT={port}",
        "--health-interval", "2s",  # the image's own check, run more often than its default
        image.tag,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        logs = docker(docker_client, "logs", "--tail", "30", name, check=False)
        print(f"container logs (tail):\n{logs.stdout}{logs.stderr}")
        docker(docker_client, "rm", "--force", name, check=False)


def test_image_serves_upscales_and_runs_as_non_root(docker_client: str, container: tuple[str, str]) -> None:
    name, url = container
    wait_until(lambda: health(docker_client, name) in ("healthy", "unhealthy", "exited"), 300, "health check")
    assert health(docker_client, name) == "healthy"
    wait_until(lambda: http_status(f"{url}/readyz") == 200, 300, "model warmed up (/readyz)")

    buf = io.BytesIO()
    Image.fromarray(synthetic_image(40, 56)).save(buf, format="PNG")
    with httpx.Client(base_url=url, timeout=60) as client:
        resp = client.post("/v1/upscale", files={"file": ("in.png", buf.getvalue(), "image/png")})
        assert resp.status_code == 200, resp.text
        assert Image.open(io.BytesIO(resp.content)).size == (56 * 4, 40 * 4)
        # The int8 rungs ship beside the weights and match them: the image serves both precisions, and bf16
        # where the CPU computes it natively (the container runs on this CPU, with the default precisions).
        rungs = client.get("/v1/model").json()["rungs"]
        assert {r["precision"] for r in rungs} == {"fp32", "int8"} | ({"bf16"} if native_bf16() else set()), rungs
        resp = client.post("/v1/upscale", params={"precision": "int8"}, files={"file": ("in.png", buf.getvalue())})
        assert resp.status_code == 200 and resp.headers["x-precision"] == "int8", resp.text
        # Jobs write their database and files on the image's volume, under the read-only root.
        job = client.post("/v1/jobs", files={"file": ("in.png", buf.getvalue(), "image/png")})
        assert job.status_code == 202, job.text
        status = job.json()
        wait_until(lambda: client.get(f"/v1/jobs/{status['id']}").json()["state"] == "done", 120, "job done")
        result = client.get(f"/v1/jobs/{status['id']}/result")
        assert result.status_code == 200 and Image.open(io.BytesIO(result.content)).size == (56 * 4, 40 * 4)
        # The web page and the offline docs are package data: the installed package must carry them.
        for path in ("/", "/static/app.js", "/docs", "/static/vendor/swagger-ui/swagger-ui-bundle.js"):
            assert client.get(path).status_code == 200, path

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        served = [
            sample.value
            for family in text_string_to_metric_families(metrics.text)
            for sample in family.samples
            if sample.name == "csd_sr_http_requests_total"
            and sample.labels.get("route") == "/v1/upscale"
            and sample.labels.get("status") == "200"
        ]
        assert served and served[0] >= 1, metrics.text[:2000]

    uid = docker(docker_client, "exec", name, "id", "-u").stdout.strip()
    assert uid not in ("", "0"), f"id -u inside the container: {uid!r}"
    assert 0 not in proc_uids(main_pid(docker_client, name)), "the server process runs as root"
