"""What the benchmarks share: where things are, the CPU they ran on, median timing, a ``csd-sr serve``
subprocess on loopback, the photo inputs and a process's memory (reports: ``model.report``).

The one module of ``bench`` the others import; it uses the service's and the model's public
functions only.
"""

from __future__ import annotations

import io
import json
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

from service.inference.hardware import available_cpus, cpu_info

__all__ = ["available_cpus", "cpu_info"]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # ../shared/data: Set5, Set14, train/ (never in the repository)
PHOTOS = DATA / "train" / "BSD200" / "HR"  # the photo mix of the service benchmarks
OUT = ROOT / "bench" / "out"  # scratch output, ignored by git


def cpu_description() -> str:
    """The CPU as the results' headers name it: the service's ``cpu_info()`` as JSON."""
    return json.dumps(cpu_info())


# --- timing ---------------------------------------------------------------------------------------


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls after one warm-up call (shapes, caches, thread pools)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


# --- output ---------------------------------------------------------------------------------------


# --- a server on loopback -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(client: httpx.Client, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    """Poll ``/readyz`` until the server has warmed up; stop if it exits or takes longer than ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in time")


def rss_mb(pid: int) -> dict[str, float]:
    """A process's resident memory now (VmRSS) and at its peak so far (VmHWM), in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


# --- inputs ---------------------------------------------------------------------------------------


def png(img) -> bytes:
    """PNG bytes of an image (a PIL image or an HxWx3 uint8 array)."""
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buf, format="PNG")
    return buf.getvalue()


def photo_inputs(folder: Path, long_sides=(128, 256, 384, 512)) -> list[tuple[bytes, int, float]]:
    """Real photos at each LR long side, landscape and portrait (equal weights): (PNG, pixels, weight)."""
    photos = sorted(folder.glob("*.png"))
    landscape = next(p for p in photos if Image.open(p).width > Image.open(p).height)
    portrait = next(p for p in photos if Image.open(p).width < Image.open(p).height)
    out = []
    for path in (landscape, portrait):
        photo = Image.open(path).convert("RGB")
        for side in long_sides:
            scale = side / max(photo.size)
            img = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
            out.append((png(img), img.width * img.height, 1.0))
    return out
