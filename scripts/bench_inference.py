"""Milliseconds per 128x128 -> 512x512 x4 image per width, sliced vs dense, measured side by side.

python scripts/bench_inference.py [--weights W] [--threads 1 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from model.cli import DEFAULT_WEIGHTS
from model.edsr import EDSR, EDSRConfig, count_macs
from model.weights import load_weights


@torch.no_grad()
def ms_per_call(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None, help=f"default: random EDSR-baseline (or {DEFAULT_WEIGHTS.name})")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--size", type=int, default=128, help="LR side in pixels")
    args = ap.parse_args()
    model = load_weights(args.weights)[0] if args.weights else EDSR(EDSRConfig()).eval()
    x = torch.rand(1, 3, args.size, args.size) * 255
    print("| threads | width | GMACs | sliced ms | dense ms | speed-up vs width 1 (dense) |")
    print("|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        dense = {w: model.dense(w) for w in model.widths}
        full = ms_per_call(dense[1.0], x, args.repeats)
        for w in model.widths:
            sliced = ms_per_call(lambda t, w=w: model(t, w), x, args.repeats)
            d = ms_per_call(dense[w], x, args.repeats)
            gmacs = count_macs(model.cfg, w, (args.size, args.size)) / 1e9
            print(f"| {threads} | {w:g} | {gmacs:.2f} | {sliced:.1f} | {d:.1f} | {full / d:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
