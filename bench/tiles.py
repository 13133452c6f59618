"""Tile margins and sizes: seam error against the whole-image pass, and the cost and memory of larger tiles.

Part 1 (cost): for each tile side at ``--margin``, seconds per input megapixel and
the process's peak RSS after it (tile sides ascending, so each peak is that
side's), per width, on one input of ``--cost-side`` LR pixels.
Part 2 (error): every image of ``--data`` (HR images fed as LR inputs, several
tiles large) is upscaled whole and tiled with each of ``--margins`` at
``--tile``; the 8-bit outputs are compared: PSNR over all images and channels,
the worst image's PSNR and the largest difference in levels.

    python -m bench.tiles --data ../shared/data/Set5/HR ../shared/data/Set14/HR --out bench/results/tiles
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import available_cpus, cpu_description
from model.report import write_report
from model.rungs import Rung
from model.weights import load_weights
from service.inference.backends import Cores, create_backend
from service.inference.tiles import Engine
from service.settings import DEFAULT_WEIGHTS

WHOLE = 1 << 20  # a tile side no input reaches: the whole-image pass


def to_u8(y: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def load_inputs(folders: list[Path]) -> list[tuple[str, np.ndarray]]:
    paths = sorted(p for f in folders for p in f.glob("*.png"))
    return [(p.stem, np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)) for p in paths]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cost_rows(backend, cfg, args) -> list[dict]:
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (args.cost_side, args.cost_side, 3)).astype(np.float32)
    megapixels = args.cost_side**2 / 1e6
    rows = []
    for tile in sorted(args.tiles):
        engine = Engine(backend, cfg, tile, args.margin)
        for width in cfg.widths:
            engine.run(img, Rung(width))  # first call at these shapes
            start = time.perf_counter()
            engine.run(img, Rung(width))
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "tile": tile,
                    "width": width,
                    "s_per_megapixel": seconds / megapixels,
                    "work_ratio": engine.work_pixels(*img.shape[:2]) / img.shape[0] / img.shape[1],
                    "peak_rss_mb": peak_rss_mb(),
                }
            )
            print(rows[-1], flush=True)
    return rows


def error_rows(backend, cfg, inputs, args) -> list[dict]:
    rows = []
    for width in cfg.widths:
        whole = {name: to_u8(Engine(backend, cfg, WHOLE).run(img, Rung(width))) for name, img in inputs}
        for margin in args.margins:
            engine = Engine(backend, cfg, args.tile, margin)
            sq_err, count, worst_psnr, max_diff, work, pixels = 0.0, 0, float("inf"), 0, 0, 0
            for name, img in inputs:
                diff = to_u8(engine.run(img, Rung(width))).astype(np.int32) - whole[name]
                mse = float(np.mean(diff.astype(np.float64) ** 2))
                sq_err, count = sq_err + mse * diff.size, count + diff.size
                worst_psnr = min(worst_psnr, psnr(mse))
                max_diff = max(max_diff, int(np.abs(diff).max()))
                work, pixels = work + engine.work_pixels(*img.shape[:2]), pixels + img.shape[0] * img.shape[1]
            rows.append(
                {
                    "width": width,
                    "margin": margin,
                    "psnr_db": psnr(sq_err / count),
                    "worst_image_psnr_db": worst_psnr,
                    "max_diff": max_diff,
                    "work_ratio": work / pixels,
                }
            )
            print(rows[-1], flush=True)
    return rows


def psnr(mse: float) -> float:
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def to_markdown(cost: list[dict], error: list[dict], header: str, args) -> str:
    lines = [header, "", f"Seam error at tile {args.tile} against the whole-image pass (8-bit outputs):", ""]
    lines += ["| width | margin | PSNR dB (all) | worst image dB | max diff (levels) | computed / returned |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in error:
        lines.append(
            f"| {r['width']:g} | {r['margin']} | {r['psnr_db']:.1f} | {r['worst_image_psnr_db']:.1f} "
            f"| {r['max_diff']} | {r['work_ratio']:.2f} |"
        )
    lines += ["", f"Cost of tile sides at margin {args.margin} ({args.cost_side}x{args.cost_side} input):", ""]
    lines += ["| tile | width | s per input MP | computed / returned | peak RSS MB |", "|---|---|---|---|---|"]
    for r in cost:
        lines.append(
            f"| {r['tile']} | {r['width']:g} | {r['s_per_megapixel']:.2f} | {r['work_ratio']:.2f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--backend", default="openvino", choices=["openvino", "torch"])
    ap.add_argument("--data", type=Path, nargs="*", default=[], help="folders of PNG inputs (none: cost part only)")
    ap.add_argument("--margins", type=int, nargs="+", default=[4, 8, 12, 16, 24, 36])
    ap.add_argument("--tile", type=int, default=128, help="tile side of the error study (more seams: worst case)")
    ap.add_argument("--tiles", type=int, nargs="+", default=[128, 192, 256, 384, 512])
    ap.add_argument("--margin", type=int, default=16, help="margin of the cost study")
    ap.add_argument("--cost-side", type=int, default=768)
    ap.add_argument("--out", type=Path, default=Path("bench/results/tiles"))
    args = ap.parse_args()

    model, _ = load_weights(args.weights)
    threads = available_cpus()
    backend = create_backend(args.backend, model, Cores(threads=threads, workers=1, torch_threads=threads))
    backend.init_worker()
    header = f"{args.backend} backend, {threads} threads, CPU {cpu_description()}, weights {args.weights.name}"
    print(header, flush=True)
    cost = cost_rows(backend, model.cfg, args)
    error = error_rows(backend, model.cfg, load_inputs(args.data), args) if args.data else []
    markdown = to_markdown(cost, error, header, args)
    write_report(args.out, {"header": header, "cost": cost, "error": error}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
