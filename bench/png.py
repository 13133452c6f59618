"""PNG encoding of 4x outputs: Pillow (zlib, adaptive filters) against the service's writer (ISA-L, strips).

Each image of ``--data`` is upscaled 4x by bicubic (an output's size and smoothness)
and encoded; the table gives the best of ``--repeats`` in ms and the size relative
to Pillow's level 1, per writer, level and thread count.

    python -m bench.png --data ../shared/data/Set5/HR ../shared/data/Set14/HR --out bench/results/png
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import cpu_description, cpu_info
from model.report import write_report
from service.inference.png import encode_png


def best_ms(fn: Callable[[], bytes], repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        size = len(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * min(times), size


def pillow(pixels: np.ndarray, level: int) -> Callable[[], bytes]:
    def run() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/png"))
    args = ap.parse_args()
    paths = sorted(p for folder in args.data for p in folder.glob("*.png"))
    outputs = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        outputs.append(np.asarray(img.resize((img.width * 4, img.height * 4), Image.BICUBIC)))
    writers: dict[str, Callable[[np.ndarray], Callable[[], bytes]]] = {
        "Pillow zlib 1": lambda x: pillow(x, 1),
        "Pillow zlib 6": lambda x: pillow(x, 6),
    }
    for level in range(4):
        for threads in (1, 2):
            writers[f"ISA-L {level}, {threads} thr"] = lambda x, lv=level, t=threads: lambda: encode_png(x, lv, t)
    megapixels = sum(x.shape[0] * x.shape[1] for x in outputs) / 1e6
    rows = []
    for name, make in writers.items():
        ms, size = zip(*(best_ms(make(x), args.repeats) for x in outputs), strict=True)
        rows.append({"writer": name, "ms_per_output_mp": sum(ms) / megapixels, "bytes": sum(size)})
    ref = rows[0]
    lines = [
        f"{len(outputs)} images of {' '.join(str(d) for d in args.data)} upscaled 4x by bicubic "
        f"({megapixels:.1f} output MP), best of {args.repeats}; CPU {cpu_description()}",
        "",
        "| writer | ms per output MP | speed vs Pillow 1 | size vs Pillow 1 |",
        "|---|---|---|---|",
    ]
    for r in rows:
        speed, size = ref["ms_per_output_mp"] / r["ms_per_output_mp"], r["bytes"] / ref["bytes"]
        lines.append(f"| {r['writer']} | {r['ms_per_output_mp']:.1f} | {speed:.2f}x | {size:.3f} |")
    markdown = "\n".join(lines) + "\n"
    write_report(args.out, {"cpu": cpu_info(), "rows": rows}, markdown, indent=1)
    print(markdown)


if __name__ == "__main__":
    main()
