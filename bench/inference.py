"""Inference speed: every backend x rung x thread count, beside OpenCV's x4 models and a matmul peak per precision.

All figures come from one run on one machine (the CPU model differs between
machines: compare only inside a run; the CPU flags head the table). Per backend,
rung (width, precision: fp32, int8, and bf16 where the CPU computes it natively)
and thread count: median ms per image through the service's engine (default
tiles) for each input size, the useful GOP/s (2 x the model's MACs on the input,
tile margins not counted), its share of its own precision's matmul peak at the
same thread count, and the speed-up over fp32 at that width. The peaks: one 3x3
convolution of 256 channels on 64x64 (an implicit GEMM) compiled by OpenVINO as
the rungs are (f32; bf16 by the precision hint; int8 with FakeQuantize on both
operands, run as u8 x i8), and torch's 2048^3 fp32 matmul for the torch rows.
OpenCV's dnn_superres FSRCNN / ESPCN / LapSRN (``--peers``) run on the same
inputs. Writes OUT.md, OUT.json and OUT.png.

    python -m bench.inference --out bench/results/inference
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.common import DATA, ROOT, available_cpus, cpu_description, median_ms
from model.edsr import count_macs
from model.openvino import cpu_config, native_bf16
from model.report import report_path, write_report
from model.rungs import Rung
from model.weights import load_weights
from service.inference.backends import Cores, create_backend
from service.inference.tiles import Engine
from service.settings import DEFAULT_WEIGHTS, Settings

PEERS = {"FSRCNN": "FSRCNN_x4.pb", "ESPCN": "ESPCN_x4.pb", "LapSRN": "LapSRN_x4.pb"}


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GEMM rate of torch (oneDNN/MKL) on ``threads`` threads: the torch rows' practical peak."""
    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    best = min(median_ms(lambda: a @ b, 1) for _ in range(repeats))
    return 2 * n**3 / (best / 1000) / 1e9


def openvino_peak_gops(threads: int, precision: str, channels: int = 256, side: int = 64, repeats: int = 5) -> float:
    """Best rate of one 3x3 convolution (``channels`` in and out, ``side`` x ``side``: an implicit GEMM of
    2 x 4.8 GOP) compiled by OpenVINO at ``precision`` on ``threads`` threads, the rungs' own kind of kernel.

    Not a MatMul: at int8 the CPU plugin runs a MatMul as a FullyConnected whose kernel is slower than its
    convolutions on AVX2 (58 against 110 GOP/s here), and rungs then ran at "169 %" of that peak.
    """
    import openvino as ov
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    x_in = ops.parameter([1, channels, side, side], ov.Type.f32)
    a, w = x_in, ops.constant(rng.uniform(-1, 1, (channels, channels, 3, 3)).astype(np.float32))
    if precision == "int8":  # the CPU plugin's low-precision pass runs FakeQuantize + Convolution as u8 x i8
        lo, hi = ops.constant(np.float32(-1)), ops.constant(np.float32(1))
        a, w = ops.fake_quantize(a, lo, hi, lo, hi, 256), ops.fake_quantize(w, lo, hi, lo, hi, 255)
    model = ov.Model([ops.convolution(a, w, [1, 1], [1, 1], [1, 1], [1, 1])], [x_in])
    request = ov.Core().compile_model(model, "CPU", cpu_config(threads, precision)).create_infer_request()
    x = rng.uniform(-1, 1, (1, channels, side, side)).astype(np.float32)
    best = min(median_ms(lambda: request.infer([x]), 1) for _ in range(repeats))
    return 2 * 9 * channels**2 * side**2 / (best / 1000) / 1e9


def peaks_for(threads: int, precisions: tuple[str, ...]) -> dict[str, float]:
    """Peaks at ``threads``: torch's fp32 matmul (``torch``, for the torch rows) and OpenVINO's convolution
    per precision."""
    return {"torch": matmul_peak_gflops(threads)} | {p: openvino_peak_gops(threads, p) for p in precisions}


def inputs(sizes: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        w, h = (int(v) for v in size.split("x"))
        out[size] = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    return out


def bench_model(args, images: dict[str, np.ndarray], peaks: dict[int, dict[str, float]]) -> list[dict]:
    model, _ = load_weights(args.weights)
    defaults = Settings()
    rows = []
    for name in args.backends:
        for threads in args.threads:
            backend = create_backend(
                name,
                model,
                Cores(threads=threads, workers=1, torch_threads=threads),
                weights=args.weights,
                precisions=("fp32", "int8", "bf16") if name == "openvino" else ("fp32",),  # bf16: native only
            )
            backend.init_worker()
            engine = Engine(backend, model.cfg, defaults.tile_size, defaults.tile_overlap)
            for rung in engine.rungs:
                for size, img in images.items():
                    repeats = args.repeats if img.size <= 128 * 128 * 3 else max(2, args.repeats // 3)
                    ms = median_ms(lambda e=engine, i=img, r=rung: e.run(i, r), repeats)
                    gflops = 2 * count_macs(model.cfg, rung.width, img.shape[:2]) / (ms / 1000) / 1e9
                    peak = peaks[threads]["torch" if name == "torch" else rung.precision]
                    rows.append(row(name, rung, threads, size, ms, gflops, peak))
                    print(rows[-1], flush=True)
    return rows


def bench_peers(args, images: dict[str, np.ndarray]) -> list[dict]:
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
                rows.append(row(f"OpenCV {name}", None, threads, size, ms, None, None))
                print(rows[-1], flush=True)
    return rows


def row(backend: str, rung: Rung | None, threads: int, size: str, ms: float, gflops, peak: float | None) -> dict:
    return {
        "backend": backend,
        "rung": None if rung is None else rung.key,
        "threads": threads,
        "input": size,
        "ms": ms,
        "gflops": gflops,
        "peak_share": None if peak is None else gflops / peak,  # of its own precision's peak
    }


def to_markdown(rows: list[dict], sizes: list[str], header: str) -> str:
    lines = [
        header,
        "",
        "| backend | rung | threads | "
        + " | ".join(f"ms {s}" for s in sizes)
        + f" | GOP/s {sizes[-1]} | "
        + " | ".join(f"% of its precision's peak {s}" for s in sizes)
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
    ap.add_argument("--peers", type=Path, default=DATA.parent / "peers" / "models")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference")
    args = ap.parse_args()

    header = f"CPU: {cpu_description()}; weights {args.weights.name}"
    print(header, flush=True)
    precisions = ("fp32", "int8", "bf16") if native_bf16() else ("fp32", "int8")  # emulated bf16: no rung
    peaks = {t: peaks_for(t, precisions) for t in args.threads}
    print(f"peaks (GOP/s): {peaks}", flush=True)
    images = inputs(args.sizes)
    rows = bench_model(args, images, peaks)
    if args.peers.is_dir():
        rows += bench_peers(args, images)
    header += "; peaks (GOP/s; OpenVINO 3x3 conv 256 ch 64x64, torch 2048^3 matmul) " + "; ".join(
        f"{t} thread(s): " + ", ".join(f"{p} {v:.0f}" for p, v in by.items()) for t, by in peaks.items()
    )
    markdown = to_markdown(rows, args.sizes, header)
    write_report(args.out, {"header": header, "peaks": peaks, "rows": rows}, markdown)
    plot(rows, args.sizes[-1], report_path(args.out, ".png"))
    print(markdown)


if __name__ == "__main__":
    main()
