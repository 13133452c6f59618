"""Quality of every scale factor the service serves, native and between natives, against bicubic.

python scripts/measure_scales.py --data ../shared/data/Set5/HR --factors 1.5 2 2.5 3 4 \
    --out bench/results/scales

For a factor f the HR is cropped so that its 1/f is whole (the standard mod-crop: to a multiple
of 3 for 1.5, 5 for 2.5) and bicubic-downscaled by f (antialiased, MATLAB-style kernel); the model
is the shipped clean model of each native scale >= f (fp32, full width, PyTorch), its output
brought to the HR size by the service's own downscale (``service.images.downscale``, Lanczos):
the path ``/v1/upscale?scale=f`` runs. Y-PSNR against the HR, ceil(f) pixels shaved. Each row
says which native scale served it, so x2 via x4 + downscale sits beside the x2 model itself.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.data import list_images, load_image, to_image, to_tensor
from model.metrics import psnr_y
from model.weights import load_weights
from service.hardware import cpu_info
from service.images import downscale
from service.settings import WEIGHTS_DIR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", required=True, help="HR folders")
    ap.add_argument("--factors", nargs="+", type=float, default=[1.5, 2, 2.5, 3, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets = {}
    for scale in (2, 3, 4):
        path = WEIGHTS_DIR / f"csd-edsr-x{scale}.safetensors"
        if path.exists():
            nets[scale] = load_weights(path)[0].dense(1.0)
    hrs = [_rgb(load_image(p)) for folder in args.data for p in list_images(folder)]
    rows = []
    for f in args.factors:
        for native in sorted(s for s in nets if s >= f):
            bic, sr = [], []
            for full in hrs:
                (lh, h), (lw, w) = _lr_hr_sides(full.shape[0], f), _lr_hr_sides(full.shape[1], f)
                hr = full[:h, :w]  # cropped so that the LR is exactly 1/f of it (the standard mod-crop)
                lr = np.array(Image.fromarray(hr).resize((lw, lh), Image.Resampling.BICUBIC))
                size = (w, h)
                with torch.inference_mode():
                    out = nets[native](to_tensor(lr))[0].permute(1, 2, 0).numpy()
                if size != (out.shape[1], out.shape[0]):
                    out = downscale(out, size)
                sr_img = to_image(torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None])
                bic_img = np.array(Image.fromarray(lr).resize(size, Image.Resampling.BICUBIC))
                shave = math.ceil(f)
                sr.append(psnr_y(sr_img, hr, shave))
                bic.append(psnr_y(bic_img, hr, shave))
            row = {"factor": f, "native": native, "bicubic": float(np.mean(bic)), "model": float(np.mean(sr))}
            rows.append(row)
            print(f"x{f:g} via x{native}: bicubic {row['bicubic']:.2f}  model {row['model']:.2f}", flush=True)
    header = f"CPU: {json.dumps(cpu_info())}; {len(hrs)} images ({', '.join(args.data)}); width 1, fp32 (PyTorch)"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
        lines = [header, "", "| factor | served by | bicubic | model | gain |", "|---|---|---|---|---|"]
        for r in rows:
            gain = r["model"] - r["bicubic"]
            lines.append(f"| {r['factor']:g} | x{r['native']} | {r['bicubic']:.2f} | {r['model']:.2f} | {gain:+.2f} |")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _lr_hr_sides(side: int, f: float) -> tuple[int, int]:
    """The largest LR side whose x``f`` is a whole number of HR pixels within ``side``: (LR, HR)."""
    lr = math.floor(side / f)
    while abs(lr * f - round(lr * f)) > 1e-6:
        lr -= 1
    return lr, round(lr * f)


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


if __name__ == "__main__":
    main()
