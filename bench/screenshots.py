"""Screenshots of the web page for the README: desktop and phone width, before and after a result.

    python -m bench.screenshots           # -> docs/screenshots/{desktop,phone}-{before,after}.png

Serves the shipped weights with ``csd-sr serve`` on a free loopback port, drives Debian's Chromium
through Playwright, and uploads a Set5 image shrunk x4 with bicubic (a synthetic image when
../shared/data is missing). The PNGs are reduced to 256 colours to keep the repository small.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from bench.common import DATA, ROOT, free_port, wait_ready

SET5 = DATA / "Set5" / "HR"
VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}


@contextmanager
def serve(weights: Path) -> Iterator[str]:
    """``csd-sr serve`` on a free loopback port until the block ends; yields its URL once it is ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "csd_sr", "serve", "--weights", str(weights), "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, trust_env=False) as client:  # loopback: never a proxy
            wait_ready(client, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def input_image(folder: Path, name: str) -> Path:
    """A small LR input: ``name`` from Set5 HR shrunk x4 (bicubic), or a synthetic 64x64 image."""
    source = SET5 / f"{name}.png"
    if source.is_file():
        hr = Image.open(source).convert("RGB")
        lr = hr.resize((hr.width // 4, hr.height // 4), Image.Resampling.BICUBIC)
    else:
        y, x = np.mgrid[0:64, 0:64]
        rgb = np.stack([128 + 100 * np.sin(x / 5.0), 128 + 100 * np.cos(y / 7.0), (x * 4) % 256], axis=2)
        lr = Image.fromarray(rgb.astype(np.uint8))
    path = folder / f"{name}.png"
    lr.save(path)
    return path


def shoot(page: Page, path: Path) -> None:
    page.screenshot(path=path, full_page=True)
    Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="default: every shipped model")
    parser.add_argument("--image", default="butterfly", help="a Set5 image name (shrunk x4 for the input)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Debian's chromium package")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp, serve(args.weights) as url, sync_playwright() as pw:
        image = input_image(Path(tmp), args.image)
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        for name, (width, height) in VIEWPORTS.items():
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            page.wait_for_selector("#widths input[value='auto']")
            page.set_input_files("#file", image)
            page.wait_for_selector("#facts dt")
            shoot(page, args.out / f"{name}-before.png")
            page.click("#go")
            page.wait_for_selector("#result:not([hidden])")  # shown once the output is decoded
            page.wait_for_timeout(800)  # the smooth scroll to the result
            shoot(page, args.out / f"{name}-after.png")
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
