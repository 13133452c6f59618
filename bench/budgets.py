"""Start-up time and memory of ``csd-sr serve`` with every shipped model: the budgets of the noise-level
and scale issues (``/readyz`` within 60 s, idle RSS <= 2.5 GB, peak <= 4 GB under the photo mix).

python -m bench.budgets [--weights weights] [--out bench/results/budgets]

One server subprocess on loopback. Measured: seconds from start to ``/readyz`` 200; RSS once ready
(idle); then the photo mix (BSD200 photos at LR long sides 128..512, every model, ``auto``) and a
1024x768 photo at every rung of every model (full width fp32 is the largest), with RSS and the
process's peak RSS (VmHWM) after each phase. Prints the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from bench.common import PHOTOS, ROOT, cpu_info, free_port, png, rss_mb, wait_ready
from model.report import write_report


def photo_png(path: Path, long_side: int) -> bytes:
    img = Image.open(path).convert("RGB")
    scale = long_side / max(img.size)
    return png(img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=str(ROOT / "weights"), help="CSD_SR_WEIGHTS: files or folders")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "csd_sr", "serve", "--port", str(port), "--weights", args.weights]
    cmd += ["--log-level", "warning"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    report: dict = {"cpu": cpu_info(), "weights": args.weights}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600, trust_env=False) as c:
            wait_ready(c, proc)
            report["ready_s"] = round(time.monotonic() - start, 1)
            report["idle"] = rss_mb(proc.pid)
            models = c.get("/v1/models").json()["models"]
            report["models"] = {m["name"]: m["ladder"] for m in models}
            photos = sorted(PHOTOS.glob("*.png"))[:4]
            for m in models:
                for side in (128, 256, 384, 512):
                    for p in photos:
                        params = {"scale": m["scale"], "noise": m["noise"]}
                        r = c.post("/v1/upscale", params=params, content=photo_png(p, side), headers=_png())
                        r.raise_for_status()
            report["after_photo_mix"] = rss_mb(proc.pid)
            big = photo_png(photos[0], 1024)
            for m in models:
                for rung in (r for r in m["rungs"] if r["in_ladder"]):  # its own (x4/0.25 on x3's: with x4)
                    params = {"scale": m["scale"], "noise": m["noise"], "width": rung["width"]}
                    params["precision"] = rung["precision"]
                    r = c.post("/v1/upscale", params=params, content=big, headers=_png())
                    r.raise_for_status()
            report["after_1024_every_rung"] = rss_mb(proc.pid)
            time.sleep(2)
            report["idle_after"] = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps(report, indent=2))
    if args.out:
        write_report(args.out, report)


def _png() -> dict[str, str]:
    return {"Content-Type": "image/png"}


if __name__ == "__main__":
    main()
