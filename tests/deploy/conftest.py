"""Shared set-up for the deployment tests: real engines only (Docker, Prometheus, the service)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
WEIGHTS = REPO / "weights" / "csd-edsr-x4.safetensors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def ensure_system_packages(*binaries: str) -> None:
    """Install Debian's packages for missing binaries when root (scripts/system-deps.sh); else skip."""
    if all(shutil.which(b) for b in binaries):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"needs {', '.join(binaries)}: run scripts/system-deps.sh as root")
    subprocess.run(["bash", str(REPO / "scripts" / "system-deps.sh")], check=True)
    missing = [b for b in binaries if not shutil.which(b)]
    assert not missing, f"still missing after scripts/system-deps.sh: {missing}"


@dataclass
class Service:
    """A real ``csd-sr serve`` process on loopback."""

    url: str
    port: int
    weights: Path
    proc: subprocess.Popen[bytes]


def start_service(weights: Path, log: Path, **env: str) -> Service:
    port = free_port()
    environ = {
        **os.environ,
        "CSD_SR_HOST": "127.0.0.1",
        "CSD_SR_PORT": str(port),
        "CSD_SR_WEIGHTS": str(weights),
        **env,
    }
    exe = Path(sys.executable).with_name("csd-sr")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), "serve"], env=environ, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and http_status(f"{url}/readyz") == 200, 240, "service ready")
    except TimeoutError:
        stop_process(proc)
        raise AssertionError(f"csd-sr serve did not become ready:\n{log.read_text()[-3000:]}") from None
    return Service(url, port, weights, proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def service_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped weights; without them (a fresh training run) a small model made in a temp folder."""
    if WEIGHTS.exists():
        return WEIGHTS
    from model.edsr import EDSR, EDSRConfig
    from model.weights import save_weights

    path = tmp_path_factory.mktemp("weights") / "csd-edsr-x4.safetensors"
    save_weights(EDSR(EDSRConfig(n_resblocks=2, n_feats=16)), path)
    return path


@pytest.fixture(scope="module")
def live_service(service_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # A short queue so that a small burst is enough to see load shedding (503) in the metrics.
    svc = start_service(
        service_weights,
        tmp_path_factory.mktemp("service") / "serve.log",
        CSD_SR_WORKERS="1",
        CSD_SR_TORCH_THREADS="1",
        CSD_SR_MAX_QUEUE="1",
        CSD_SR_LATENCY_TARGET_S="1.0",
        CSD_SR_JOBS_DIR=str(tmp_path_factory.mktemp("jobs")),
    )
    yield svc
    stop_process(svc.proc)
