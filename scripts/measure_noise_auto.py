"""How well ``noise=auto`` picks the level: every noise model on JPEG inputs of quality 30..95 (and the
clean and camera inputs), side by side with bicubic, and the level ``auto`` picks from each file.

python scripts/measure_noise_auto.py --data ../shared/data/Set5/HR ../shared/data/Set14/HR \
    --out bench/results/noise-auto

Each HR is bicubic-downscaled x4 (the evaluation protocol), the LR saved as a real JPEG file of
quality q (Pillow), decoded, and upscaled by each model at full width (fp32, OpenVINO). ``auto``
reads the file (its quantization tables, and its detail where the blur check applies) exactly as the
service does (``service.noise.choose_for_probe``). Y-PSNR with
the standard shave; means over all images.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import openvino as ov
from PIL import Image

from model.data import as_rgb, downscale, list_images, load_image, mod_crop, upscale
from model.degradations import degraded_file, image_seed
from model.metrics import psnr_y
from model.openvino import cpu_config, rung_models
from model.rungs import Rung
from model.weights import load_weights
from service.hardware import cpu_info
from service.images import probe
from service.noise import choose_for_probe

QUALITIES = tuple(range(30, 100, 5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", required=True, help="HR folders")
    ap.add_argument(
        "--weights",
        nargs="+",
        type=Path,
        default=[Path("weights/csd-edsr-x4.safetensors"), Path("weights/csd-edsr-x4-real.safetensors")],
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    core = ov.Core()
    forwards, scale = {}, None
    for path in args.weights:
        model, card = load_weights(path)
        scale = model.cfg.scale
        level = str(card.get("noise", "none"))
        models, _ = rung_models(model, path, ("fp32",))
        compiled = core.compile_model(models[Rung(1.0)], "CPU", cpu_config(args.threads))
        forwards[level] = lambda x, c=compiled: c(x)[0]
    levels = set(forwards)
    hrs = [(p.stem, mod_crop(as_rgb(load_image(p)), scale)) for folder in args.data for p in list_images(folder)]

    rows = []
    for name in ["clean", *(f"jpeg{q}" for q in QUALITIES), "camera"]:
        scores = {k: [] for k in ["bicubic", *sorted(levels), "auto", "best"]}
        picks = []
        for stem, hr in hrs:
            data = degraded_file(downscale(hr, scale), name, image_seed(stem))
            with Image.open(io.BytesIO(data)) as img:
                decoded = np.array(img.convert("RGB"))
            per_level = {lv: psnr_y(_run(fwd, decoded), hr, scale) for lv, fwd in forwards.items()}
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

    jpeg = [r for r in rows if r["input"].startswith("jpeg") and 30 <= int(r["input"][4:]) <= 95]
    loss = float(np.mean([r["best"] - r["auto"] for r in jpeg]))
    header = f"CPU: {json.dumps(cpu_info())}; images: {len(hrs)} ({', '.join(args.data)}); x{scale}, width 1, fp32"
    summary = f"auto on JPEG q 30..95: {loss:.3f} dB below the best level per input on average"
    print(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps({"header": header, "rows": rows, "summary": summary}, indent=2)
        )
        args.out.with_suffix(".md").write_text(_markdown(rows, levels, header, summary))


def _run(forward, lr: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None], dtype=np.float32)
    return np.clip(np.round(forward(x)[0]), 0, 255).astype(np.uint8).transpose(1, 2, 0)


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
