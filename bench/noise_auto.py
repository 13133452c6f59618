"""How well ``noise=auto`` picks the level: every noise model on JPEG inputs of quality 30..95 (and the
clean, camera and lossy WebP inputs), side by side with bicubic, and the level ``auto`` picks from each file.

python -m bench.noise_auto --data ../shared/data/Set5/HR ../shared/data/Set14/HR \
    --out bench/results/noise-auto
python -m bench.noise_auto --data ../shared/data/Set5/HR ../shared/data/Set14/HR --scale 2 \
    --weights weights/csd-edsr-x2.safetensors weights/csd-edsr-x4-jpeg.safetensors --qualities 75 80 85 90 \
    --out bench/results/noise-auto-x2   # where the levels cross at x2: a larger model's output downscaled

Each HR is bicubic-downscaled by ``--scale`` (default: the models'; the evaluation protocol), the
LR saved as a real JPEG file of quality q (Pillow), decoded, and upscaled by each model at full width
(fp32, OpenVINO, ``model.evaluate``); a larger model's output is Lanczos-downscaled to the scale, as
the service serves it. ``auto``
reads the file (its quantization tables, and its detail where the blur check applies) exactly as the
service does (``service.catalog.noise.choose_for_probe``). Y-PSNR with
the standard shave; means over all images.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import cpu_description
from model.data import as_rgb, downscale, list_images, load_image, mod_crop, upscale
from model.degradations import degraded_file, image_seed
from model.evaluate import openvino_forwards, super_resolve
from model.metrics import psnr_y
from model.report import write_report
from model.rungs import Rung
from model.weights import load_weights
from service.catalog.noise import choose_for_probe
from service.inference.images import probe

QUALITIES = tuple(range(30, 100, 5))
WEBP_QUALITIES = (50, 75, 90)


def webp_bytes(img: np.ndarray, quality: int) -> bytes:
    """A lossy WebP file (Pillow's libwebp): the service cannot read its quality, so ``auto`` decides on the format."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="WEBP", quality=quality)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", required=True, help="HR folders")
    ap.add_argument(
        "--weights",
        nargs="+",
        type=Path,
        default=[Path(f"weights/csd-edsr-{name}.safetensors") for name in ("x4", "x4-jpeg", "x4-real")],
        help="the noise levels' models (default: the three x4 levels auto picks between)",
    )
    ap.add_argument("--scale", type=int, help="the factor measured (default: the models' scale)")
    ap.add_argument("--qualities", nargs="+", type=int, default=QUALITIES, help="JPEG qualities (default 30..95)")
    ap.add_argument(
        "--webp-qualities", nargs="*", type=int, default=WEBP_QUALITIES, help="lossy WebP qualities (default 50 75 90)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    forwards, scale = {}, args.scale
    for path in args.weights:
        model, card = load_weights(path)
        scale = scale or model.cfg.scale
        if model.cfg.scale < scale:
            ap.error(f"{path} is a x{model.cfg.scale} model: it cannot serve x{scale}")
        forwards[str(card.get("noise", "none"))] = openvino_forwards(model, path, args.threads, ("fp32",))[Rung(1.0)]
    levels = set(forwards)
    hrs = [(p.stem, mod_crop(as_rgb(load_image(p)), scale)) for folder in args.data for p in list_images(folder)]

    rows = []
    webp = {f"webp{q}": q for q in args.webp_qualities}
    for name in ["clean", *(f"jpeg{q}" for q in args.qualities), "camera", *webp]:
        scores = {k: [] for k in ["bicubic", *sorted(levels), "auto", "best"]}
        picks = []
        for stem, hr in hrs:
            lr = downscale(hr, scale)
            data = webp_bytes(lr, webp[name]) if name in webp else degraded_file(lr, name, image_seed(stem))
            with Image.open(io.BytesIO(data)) as img:
                decoded = np.array(img.convert("RGB"))
            # a larger model's output is Lanczos-downscaled to the scale, as the service serves it
            size = (decoded.shape[1] * scale, decoded.shape[0] * scale)
            per_level = {lv: psnr_y(super_resolve(fwd, decoded, size=size), hr, scale) for lv, fwd in forwards.items()}
            choice = choose_for_probe("auto", probe(data, decoded.shape[0] * decoded.shape[1]), levels)
            scores["bicubic"].append(psnr_y(upscale(decoded, scale), hr, scale))
            for lv, v in per_level.items():
                scores[lv].append(v)
            scores["auto"].append(per_level[choice.level])
            scores["best"].append(max(per_level.values()))
            picks.append(choice.level)
        row = {"input": name, **{k: float(np.mean(v)) for k, v in scores.items()}}
        row["auto_picks"] = {lv: picks.count(lv) for lv in sorted(set(picks))}
        rows.append(row)
        print(_line(row, levels), flush=True)

    jpeg = [r for r in rows if r["input"].startswith("jpeg")]
    loss = float(np.mean([r["best"] - r["auto"] for r in jpeg]))
    qualities = f"q {min(args.qualities)}..{max(args.qualities)}"
    header = f"CPU: {cpu_description()}; images: {len(hrs)} ({', '.join(args.data)}); x{scale}, width 1, fp32"
    summary = f"auto on JPEG {qualities}: {loss:.3f} dB below the best level per input on average"
    print(summary)
    if args.out:
        write_report(
            args.out, {"header": header, "rows": rows, "summary": summary}, _markdown(rows, levels, header, summary)
        )


def _line(row: dict, levels: set[str]) -> str:
    cols = " ".join(f"{lv} {row[lv]:.2f}" for lv in sorted(levels))
    return f"{row['input']:>7}: bicubic {row['bicubic']:.2f} {cols} auto {row['auto']:.2f} ({row['auto_picks']})"


def _markdown(rows: list[dict], levels: set[str], header: str, summary: str) -> str:
    names = sorted(levels)
    lines = [
        header,
        "",
        f"| LR as sent | bicubic | {' | '.join(names)} | auto | auto picks | auto - bicubic |",
        "|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[n]:.2f}" for n in names)
        picks = ", ".join(f"{k} {v}" for k, v in r["auto_picks"].items())
        gain = r["auto"] - r["bicubic"]
        lines.append(f"| {r['input']} | {r['bicubic']:.2f} | {cells} | {r['auto']:.2f} | {picks} | {gain:+.2f} |")
    return "\n".join([*lines, "", summary, ""])


if __name__ == "__main__":
    main()
