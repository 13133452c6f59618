"""Crop sheet of the two styles: bicubic | faithful | sharp at each width | sharpness steps | the teacher | HR.

    python -m bench.crop_sheet --out docs/screenshots/sharp-crops.png

Each row is one crop of an image from ../shared/data (Set14 and the held-out training images, never a
training crop), x4 from an LR degraded as named on the row (the ``model.degradations`` recipes). The
teacher (Real-ESRGAN x4plus) runs in PyTorch at training time only; the rest as the service runs them
(PyTorch dense widths here, the same weights).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from model.data import as_rgb, downscale, load_image, upscale
from model.degradations import degrade, image_seed
from model.evaluate import super_resolve
from model.teacher import load_teacher, teacher_upscale
from model.weights import load_weights

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# (image, degradation, HR crop box x, y): textures (fur, foliage, fabric), edges and a face
CROPS = (
    ("Set14/HR/baboon.png", "jpeg75", 180, 40),
    ("Set14/HR/comic.png", "camera", 40, 60),
    ("Set14/HR/barbara.png", "jpeg75", 420, 260),
    ("Set14/HR/zebra.png", "jpeg75", 240, 120),
    ("train/BSDS500test/HR/" + "{last}", "camera", 120, 60),
)
SIDE = 128  # HR crop side (LR 32)


def crop_hr(path: Path, x: int, y: int) -> np.ndarray:
    img = as_rgb(load_image(path))
    h, w = img.shape[:2]
    x, y = min(x, w - SIDE), min(y, h - SIDE)
    return np.ascontiguousarray(img[y : y + SIDE, x : x + SIDE])


def resolve(name: str) -> Path:
    if "{last}" in name:
        folder = DATA / Path(name).parent
        return sorted(folder.iterdir())[-1]
    return DATA / name


def label(tile: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(tile)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 7 * len(text) + 6, 14), fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(img)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faithful", default="weights/csd-edsr-x4-real.safetensors")
    parser.add_argument("--sharp", default="weights/csd-edsr-x4-sharp.safetensors")
    parser.add_argument(
        "--steps", nargs="*", default=["weights/csd-edsr-x4-sharp-0.5.safetensors"], help="sharpness steps (width 1)"
    )
    parser.add_argument("--out", default="docs/screenshots/sharp-crops.png")
    parser.add_argument("--zoom", type=int, default=2, help="nearest-neighbour zoom of each tile")
    args = parser.parse_args()
    torch.set_num_threads(2)
    faithful, _ = load_weights(args.faithful)
    sharp, _ = load_weights(args.sharp)
    steps = [load_weights(p) for p in args.steps]
    teacher = load_teacher()
    rows = []
    for name, degradation, x, y in CROPS:
        path = resolve(name)
        hr = crop_hr(path, x, y)
        lr = degrade(downscale(hr, 4), degradation, image_seed(path.stem))
        tiles = [("bicubic", upscale(lr, 4)), ("faithful 1", super_resolve(faithful.dense(1.0), lr))]
        tiles += [(f"sharp w{w:g}", super_resolve(sharp.dense(w), lr)) for w in sharp.widths]
        tiles += [(f"sharpness {card['sharpness']:g}", super_resolve(m.dense(1.0), lr)) for m, card in steps]
        tiles += [("teacher", teacher_upscale(teacher, lr)), (f"HR ({path.stem}, {degradation})", hr)]
        rows.append(np.concatenate([label(t, text) for text, t in tiles], axis=1))
    sheet = np.concatenate(rows, axis=0)
    sheet = sheet.repeat(args.zoom, 0).repeat(args.zoom, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out, optimize=True)
    print(f"wrote {args.out}: {sheet.shape[1]}x{sheet.shape[0]}")


if __name__ == "__main__":
    main()
