"""Real servers on 127.0.0.1 (uvicorn in a thread, free port) around tiny saved models, real httpx clients."""

from __future__ import annotations

import io
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import openvino as ov
import pytest
import torch
import uvicorn
from PIL import Image

from model.edsr import EDSR, EDSRConfig
from model.openvino import MANIFEST, int8_dir, to_openvino
from model.rungs import Rung
from model.weights import file_sha256, save_weights
from service.api.app import create_app
from service.settings import Settings
from tests.conftest import synthetic_image

TINY = EDSRConfig(scale=4, n_resblocks=2, n_feats=16)
# Wide enough that full width costs ~10x the narrowest: the policy tests need unambiguous costs.
HEAVY = EDSRConfig(scale=4, n_resblocks=2, n_feats=64)
CARD = {
    "metrics": {
        "Set5": {
            "bicubic": {"psnr": 28.4, "ssim": 0.81},
            "0.25": {"psnr": 30.1, "ssim": 0.85, "params": 1},
            "0.25-int8": {"psnr": 30.0, "ssim": 0.84},
            "0.5": {"psnr": 30.9, "ssim": 0.87},
            "0.5-int8": {"psnr": 30.8, "ssim": 0.86},
            "1": {"psnr": 31.5, "ssim": 0.88},
            "1-int8": {"psnr": 31.4, "ssim": 0.88},
        },
        "Set14": {"0.25": {"psnr": 27.4}, "0.5": {"psnr": 27.8}, "1": {"psnr": 28.0}, "1-int8": {"psnr": 27.9}},
    }
}


def make_weights(folder: Path, cfg: EDSRConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = folder / "model.safetensors"
    save_weights(EDSR(cfg), path, CARD)
    return path


def add_int8_rungs(weights: Path, graphs: dict[float, EDSR]) -> None:
    """int8 rungs beside ``weights`` as ``csd-sr quantize`` lays them out, each an fp32 stand-in graph.

    The service only needs rungs that run, at a cost the ladder measures: a stand-in of
    a known size gives the rung a cost far from every other, so the ladder is the same
    on any machine.
    """
    folder = int8_dir(weights)
    folder.mkdir()
    rungs = {}
    for width, net in graphs.items():
        key = Rung(width, "int8").key
        ov.save_model(to_openvino(net.eval()), folder / f"{key}.xml")
        rungs[key] = {"model": f"{key}.xml"}
    manifest = {"weights_sha256": file_sha256(weights), "rungs": rungs}
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weights(tmp_path_factory.mktemp("tiny"), TINY)


@pytest.fixture(scope="session")
def heavy_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weights(tmp_path_factory.mktemp("heavy"), HEAVY)


@pytest.fixture(scope="session")
def ladder_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HEAVY with int8 rungs whose stand-in costs sit between the fp32 rungs', except 0.25-int8's.

    Measured cost at 256x256 (model only, 2 cores): fp32 0.25 / 0.5 / 1 about 0.12 / 0.32 / 1.05 s;
    the stand-ins 0.25-int8 (HEAVY at 0.5) 0.32 s, 0.5-int8 (24 channels) 0.23 s, 1-int8 (48) 0.62 s.
    So the ladder is 1, 1-int8, 0.5, 0.5-int8, 0.25, and 0.25-int8 is dropped: slower than 0.25, worse.
    """
    weights = make_weights(tmp_path_factory.mktemp("ladder"), HEAVY)
    torch.manual_seed(1)
    full = {n: EDSR(EDSRConfig(scale=4, n_resblocks=2, n_feats=n)).dense(1.0) for n in (24, 48)}
    add_int8_rungs(weights, {0.25: EDSR(HEAVY).dense(0.5), 0.5: full[24], 1.0: full[48]})
    return weights


@contextmanager
def running_server(settings: Settings) -> Iterator[str]:
    """Serve ``create_app(settings)`` on a free loopback port until the block ends; yields the base URL."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    with client_for(url) as client:
        while time.monotonic() < deadline:
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def client_for(url: str, **headers: str) -> httpx.Client:
    # trust_env=False: never route loopback traffic through a proxy from the environment.
    return httpx.Client(base_url=url, timeout=120.0, trust_env=False, headers=headers)


def settings(weights: Path, **kw) -> Settings:
    """Test settings: tiny limits so the limit paths are cheap to reach, one torch thread per worker."""
    base = dict(weights=weights, workers=2, torch_threads=1, max_body_bytes=1_000_000, max_pixels=200_000)
    base["jobs_dir"] = Path(tempfile.mkdtemp(prefix="csd-sr-jobs-"))  # each server its own jobs
    return Settings(**{**base, **kw})


@pytest.fixture(scope="module")
def server(tiny_weights: Path) -> Iterator[str]:
    """The general-purpose server: small tiles, so ordinary test images run tiled."""
    with running_server(settings(tiny_weights, tile_size=32)) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with client_for(server) as c:
        yield c


def encode(img: Image.Image | np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bytes(h: int = 24, w: int = 32, seed: int = 0) -> bytes:
    return encode(synthetic_image(h, w, seed=seed))


def decode(body: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(body))
    img.load()
    return img


# The sharp card ranks by sharpness, which here orders the widths unlike its PSNR to the HR and to the teacher:
# the ladder shows which figure ranked it.
SHARP_CARD = {
    "style": "sharp",
    "metrics": {
        name: {
            "0.25": {"psnr": 31.0, "psnr_teacher": 30.0, "sharpness": 3.0},
            "0.5": {"psnr": 30.0, "psnr_teacher": 29.0, "sharpness": 4.0},
            "1": {"psnr": 29.0, "psnr_teacher": 28.0, "sharpness": 5.0},
        }
        for name in ("Set5", "Set14")
    },
}


def model_file(folder: Path, card: dict, seed: int) -> Path:
    """A tiny x4 model with ``card``, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    path = folder / f"model-{seed}.safetensors"
    save_weights(EDSR(TINY), path, card)
    return path


@pytest.fixture(scope="module")
def two_styles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with a faithful and a sharp tiny x4 model, and a sharpness step 0.5 between them (fp32 rungs)."""
    folder = tmp_path_factory.mktemp("styles")
    half = {**SHARP_CARD, "sharpness": 0.5}
    weights = (model_file(folder, CARD, 0), model_file(folder, SHARP_CARD, 1), model_file(folder, half, 2))
    with running_server(settings(weights, tile_size=32, precisions=("fp32",))) as url:
        yield url
