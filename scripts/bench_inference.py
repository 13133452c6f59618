"""Inference speed: every backend x rung x thread count, beside OpenCV's x4 models and an fp32 matmul peak.

All figures come from one run on one machine (the CPU model differs between
machines: compare only inside a run). Per backend, rung (width, precision) and
thread count: median ms per image through the service's engine (default tiles)
for each input size, the useful GOP/s (2 x the model's MACs on the input, tile
margins not counted), for fp32 rungs its share of the fp32 matmul peak measured
at the same thread count, for int8 rungs the speed-up over fp32 at that width. OpenCV's
dnn_superres FSRCNN / ESPCN / LapSRN (``--peers``) run on the same inputs.
Writes OUT.md, OUT.json and OUT.png.

    python scripts/bench_inference.py --out bench/results/inference
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model.edsr import count_macs
from model.rungs import Rung
from model.weights import load_weights
from service.backends import create_backend
from service.engine import Engine
from service.hardware import available_cpus, cpu_info
from service.settings import DEFAULT_WEIGHTS, Settings

PEERS = {"FSRCNN": "FSRCNN_x4.pb", "ESPCN": "ESPCN_x4.pb", "LapSRN": "LapSRN_x4.pb"}
ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # first call: shapes, caches, thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GEMM rate of torch (oneDNN/MKL) on ``threads`` threads: the machine's practical peak."""
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    best = min(median_ms(lambda: a @ b, 1) for _ in range(repeats))
    return 2 * n**3 / (best / 1000) / 1e9


def inputs(sizes: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        w, h = (int(v) for v in size.split("x"))
        out[size] = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    return out


def bench_model(args, images: dict[str, np.ndarray], peaks: dict[int, float]) -> list[dict]:
    model, _ = load_weights(args.weights)
    defaults = Settings()
    rows = []
    for name in args.backends:
        for threads in args.threads:
            backend = create_backend(
                name,
                model,
                threads=threads,
                workers=1,
                torch_threads=threads,
                weights=args.weights,
                precisions=("fp32", "int8"),  # torch runs the fp32 rungs only
            )
            backend.init_worker()
            engine = Engine(backend, model.cfg, defaults.tile_size, defaults.tile_overlap)
            for rung in engine.rungs:
                for size, img in images.items():
                    repeats = args.repeats if img.size <= 128 * 128 * 3 else max(2, args.repeats // 3)
                    ms = median_ms(lambda e=engine, i=img, r=rung: e.run(i, r), repeats)
                    gflops = 2 * count_macs(model.cfg, rung.width, img.shape[:2]) / (ms / 1000) / 1e9
                    rows.append(row(name, rung, threads, size, ms, gflops, peaks[threads]))
                    print(rows[-1], flush=True)
    return rows


def bench_peers(args, images: dict[str, np.ndarray], peaks: dict[int, float]) -> list[dict]:
    import cv2

    rows = []
    for name, file in PEERS.items():
        sr = cv2.dnn_superres.DnnSuperResImpl_create()
        sr.readModel(str(args.peers / file))
        sr.setModel(name.lower(), 4)
        for threads in args.threads:
            cv2.setNumThreads(threads)
            for size, img in images.items():
                bgr = np.ascontiguousarray(img[..., ::-1].astype(np.uint8))
                ms = median_ms(lambda s=sr, b=bgr: s.upsample(b), args.repeats)
                rows.append(row(f"OpenCV {name}", None, threads, size, ms, None, peaks[threads]))
                print(rows[-1], flush=True)
    return rows


def row(backend: str, rung: Rung | None, threads: int, size: str, ms: float, gflops, peak: float) -> dict:
    return {
        "backend": backend,
        "rung": None if rung is None else rung.key,
        "threads": threads,
        "input": size,
        "ms": ms,
        "gflops": gflops,
        "peak_share": None if rung is None or rung.precision != "fp32" else gflops / peak,
    }


def to_markdown(rows: list[dict], sizes: list[str], header: str) -> str:
    lines = [
        header,
        "",
        "| backend | rung | threads | "
        + " | ".join(f"ms {s}" for s in sizes)
        + f" | GOP/s {sizes[-1]} | "
        + " | ".join(f"% of fp32 peak {s}" for s in sizes)
        + " | x fp32 (same width) |",
    ]
    lines.append("|---" * (5 + 2 * len(sizes)) + "|")
    ms_of = {(r["backend"], r["rung"], r["threads"], r["input"]): r["ms"] for r in rows}
    for key in dict.fromkeys((r["backend"], r["rung"], r["threads"]) for r in rows):
        mine = {r["input"]: r for r in rows if (r["backend"], r["rung"], r["threads"]) == key}
        last = mine[sizes[-1]]
        rate = "-" if last["gflops"] is None else f"{last['gflops']:.0f}"
        shares = " | ".join(
            "-" if mine[s]["peak_share"] is None else f"{100 * mine[s]['peak_share']:.0f} %" for s in sizes
        )
        rung = "-" if key[1] is None else Rung.parse(key[1])
        fp32_ms = (
            None
            if rung == "-" or rung.precision == "fp32"
            else ms_of[(key[0], Rung(rung.width).key, key[2], sizes[-1])]
        )
        speedup = "-" if fp32_ms is None else f"{fp32_ms / last['ms']:.2f}x"
        ms = " | ".join(f"{mine[s]['ms']:.1f}" for s in sizes)
        lines.append(f"| {key[0]} | {rung} | {key[2]} | {ms} | {rate} | {shares} | {speedup} |")
    return "\n".join(lines) + f"\n\nGOP/s and speed-up: on the {sizes[-1]} input.\n"


def plot(rows: list[dict], size: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["input"] == size]
    labels = [f"{r['backend']}{'' if r['rung'] is None else ' ' + r['rung']} x{r['threads']}" for r in mine]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(mine) + 1))
    ax.barh(range(len(mine)), [r["ms"] for r in mine], color=["C0" if "openvino" in lb else "C1" for lb in labels])
    ax.set_yticks(range(len(mine)), labels=labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"ms per {size} input (log scale; fewer is better)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, available_cpus()}))
    ap.add_argument("--sizes", nargs="+", default=["128x128", "480x360"], help="LR inputs, WxH")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--peers", type=Path, default=ROOT.parent / "shared" / "peers" / "models")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference")
    args = ap.parse_args()

    header = f"CPU: {json.dumps(cpu_info())}; weights {args.weights.name}"
    print(header, flush=True)
    peaks = {t: matmul_peak_gflops(t) for t in args.threads}
    print(f"fp32 matmul peak (torch, 2048^3): {peaks}", flush=True)
    images = inputs(args.sizes)
    rows = bench_model(args, images, peaks)
    if args.peers.is_dir():
        rows += bench_peers(args, images, peaks)
    header += "; fp32 matmul peak " + ", ".join(f"{v:.0f} GFLOP/s on {t} thread(s)" for t, v in peaks.items())
    markdown = to_markdown(rows, args.sizes, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(markdown)
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "peaks": peaks, "rows": rows}, indent=2))
    plot(rows, args.sizes[-1], args.out.with_suffix(".png"))
    print(markdown)


if __name__ == "__main__":
    main()
