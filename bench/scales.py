"""Quality of every scale factor the service serves, native and between natives, against bicubic.

python -m bench.scales --data ../shared/data/Set5/HR --factors 1.5 2 2.5 3 4 \
    --out bench/results/scales
python -m bench.scales --data ../shared/data/Set5/HR --factors 3 --widths 0.25 0.5 1 \
    --weights weights/csd-edsr-x4.safetensors weights/csd-edsr-x3.safetensors --out bench/results/scales-x3

For a factor f the HR is cropped so that its 1/f is whole (the standard mod-crop: to a multiple
of 3 for 1.5, 5 for 2.5) and bicubic-downscaled by f (antialiased, MATLAB-style kernel); the model
is the shipped clean model (or each of ``--weights``) of each native scale >= f (fp32, PyTorch, each of
``--widths``), its output
brought to the HR size by the service's own downscale (``model.data.resize_lanczos``):
the path ``/v1/upscale?scale=f`` runs. Y-PSNR against the HR, ceil(f) pixels shaved. Each row
says which native scale served it, so x2 via x4 + downscale sits beside the x2 model itself.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import cpu_description
from model.data import as_rgb, list_images, load_image, resize_lanczos, to_image, to_tensor
from model.metrics import psnr_y
from model.report import write_report
from model.weights import load_weights
from service.settings import WEIGHTS_DIR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", required=True, help="HR folders")
    ap.add_argument("--factors", nargs="+", type=float, default=[1.5, 2, 2.5, 3, 4])
    ap.add_argument("--weights", nargs="+", type=Path, help="model files (default: the shipped clean models)")
    ap.add_argument("--widths", nargs="+", type=float, default=[1.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = args.weights or [WEIGHTS_DIR / f"csd-edsr-x{scale}.safetensors" for scale in (2, 3, 4)]
    models = {m.cfg.scale: m for m in (load_weights(p)[0] for p in paths if p.exists())}
    hrs = [as_rgb(load_image(p)) for folder in args.data for p in list_images(folder)]
    rows = []
    for f, native, width in (
        (f, n, w) for f in args.factors for n in sorted(s for s in models if s >= f) for w in args.widths
    ):
        net = models[native].dense(width)
        bic, sr = [], []
        for full in hrs:
            (lh, h), (lw, w) = _lr_hr_sides(full.shape[0], f), _lr_hr_sides(full.shape[1], f)
            hr = full[:h, :w]  # cropped so that the LR is exactly 1/f of it (the standard mod-crop)
            lr = np.array(Image.fromarray(hr).resize((lw, lh), Image.Resampling.BICUBIC))
            size = (w, h)
            with torch.inference_mode():
                out = net(to_tensor(lr))[0].permute(1, 2, 0).numpy()
            if size != (out.shape[1], out.shape[0]):
                out = resize_lanczos(out, size)
            sr_img = to_image(torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None])
            bic_img = np.array(Image.fromarray(lr).resize(size, Image.Resampling.BICUBIC))
            shave = math.ceil(f)
            sr.append(psnr_y(sr_img, hr, shave))
            bic.append(psnr_y(bic_img, hr, shave))
        row = {
            "factor": f,
            "native": native,
            "width": width,
            "bicubic": float(np.mean(bic)),
            "model": float(np.mean(sr)),
        }
        rows.append(row)
        print(f"x{f:g} via x{native} at {width:g}: bicubic {row['bicubic']:.2f}  model {row['model']:.2f}", flush=True)
    header = f"CPU: {cpu_description()}; {len(hrs)} images ({', '.join(args.data)}); fp32 (PyTorch)"
    if args.out:
        lines = [header, "", "| factor | served by | width | bicubic | model | gain |", "|---|---|---|---|---|---|"]
        for r in rows:
            gain = r["model"] - r["bicubic"]
            cells = [
                f"{r['factor']:g}",
                f"x{r['native']}",
                f"{r['width']:g}",
                f"{r['bicubic']:.2f}",
                f"{r['model']:.2f}",
            ]
            lines.append(f"| {' | '.join(cells)} | {gain:+.2f} |")
        write_report(args.out, {"header": header, "rows": rows}, "\n".join(lines) + "\n")


def _lr_hr_sides(side: int, f: float) -> tuple[int, int]:
    """The largest LR side whose x``f`` is a whole number of HR pixels within ``side``: (LR, HR)."""
    lr = math.floor(side / f)
    while abs(lr * f - round(lr * f)) > 1e-6:
        lr -= 1
    return lr, round(lr * f)


if __name__ == "__main__":
    main()
