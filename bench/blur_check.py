"""How ``noise=auto`` tells a JPEG that was blurred before it was compressed: ``service.catalog.noise.detail_ratio``
of clean JPEGs of several qualities and of ``camera`` files (blur, noise, then q 80), per folder.

python -m bench.blur_check --data ../shared/data/train/Wiki49/HR ../shared/data/train/T91/HR \
    ../shared/data/train/BSDS500test/HR --out bench/results/noise-blur

Each HR is bicubic-downscaled x4 (the evaluation protocol) and saved as the file a user sends
(``model.degradations.degraded_file``); the ratio is read from the file as the service reads it. The
threshold is tuned on the training sets, never on Set5 / Set14 (``python -m bench.noise_auto``
measures what the rule does there, model by model). No model runs: a minute for 340 photos.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.common import cpu_description
from model.data import as_rgb, downscale, list_images, load_image, mod_crop
from model.degradations import degraded_file, image_seed
from model.report import write_report
from service.catalog.noise import BLUR_CHECK_QUALITY, BLURRED_DETAIL_RATIO, CLEAN_JPEG_QUALITY, jpeg_detail_ratio

INPUTS = ("jpeg30", "jpeg50", "jpeg60", "jpeg70", "jpeg75", "jpeg80", "jpeg85", "camera")
THRESHOLDS = (0.35, BLURRED_DETAIL_RATIO, 0.39, 0.41)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", required=True, help="HR folders")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    sets = {}
    for folder in args.data:
        ratios: dict[str, list[float]] = {name: [] for name in INPUTS}
        for p in list_images(folder):
            lr = downscale(mod_crop(as_rgb(load_image(p)), 4), 4)
            for name in INPUTS:
                ratio = jpeg_detail_ratio(degraded_file(lr, name, image_seed(p.stem)))
                if ratio is not None:
                    ratios[name].append(ratio)
        sets[folder] = {name: _row(np.array(v)) for name, v in ratios.items()}
        print(folder, json.dumps({k: round(v[f"below_{BLURRED_DETAIL_RATIO}"], 3) for k, v in sets[folder].items()}))

    header = (
        f"CPU: {cpu_description()}; x4 bicubic LRs; the service calls a JPEG of q "
        f"{BLUR_CHECK_QUALITY}-{CLEAN_JPEG_QUALITY - 1} "
        f"blurred below {BLURRED_DETAIL_RATIO}"
    )
    if args.out:
        write_report(args.out, {"header": header, "sets": sets}, _markdown(header, sets))


def _row(v: np.ndarray) -> dict[str, float]:
    row = {"images": int(v.size), **{f"p{q}": float(np.percentile(v, q)) for q in (5, 50, 95)}}
    return row | {f"below_{t}": float(np.mean(v < t)) for t in THRESHOLDS}


def _markdown(header: str, sets: dict) -> str:
    lines = [header, ""]
    for folder, rows in sets.items():
        cols = " | ".join(f"< {t}" for t in THRESHOLDS)
        lines += [f"### {folder}", "", f"| file | images | p5 | median | p95 | {cols} |"]
        lines.append("|---" * (5 + len(THRESHOLDS)) + "|")
        for name, r in rows.items():
            shares = " | ".join(f"{100 * r[f'below_{t}']:.0f} %" for t in THRESHOLDS)
            lines.append(f"| {name} | {r['images']} | {r['p5']:.3f} | {r['p50']:.3f} | {r['p95']:.3f} | {shares} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
