"""Throughput of the sharp style against its teacher: x4-sharp's rungs through OpenVINO vs Real-ESRGAN x4plus
in PyTorch (fp32 and bf16 autocast), on the same LR input, all cores each, in one run.

    python -m bench.sharp --out bench/results/sharp/speed

Prints the CPU, median ms per image per row and each row's throughput over the teacher's best.
"""

from __future__ import annotations

import argparse
import os

import torch

from bench.common import median_ms
from model.evaluate import openvino_forwards
from model.openvino import cpu_description
from model.report import write_report
from model.rungs import PRECISIONS
from model.teacher import load_teacher
from model.weights import load_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="weights/csd-edsr-x4-sharp.safetensors")
    parser.add_argument("--size", type=int, default=128, help="LR side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="write OUT.json and OUT.md")
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    x = torch.rand(1, 3, args.size, args.size) * 255
    rows: dict[str, float] = {}
    teacher = load_teacher()
    with torch.no_grad():
        for bf16 in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                rows[f"teacher torch {'bf16' if bf16 else 'fp32'}"] = median_ms(lambda: teacher(x / 255), args.repeats)
    model, _ = load_weights(args.weights)
    for rung, forward in openvino_forwards(model, args.weights, threads, PRECISIONS).items():
        rows[f"x4-sharp openvino {rung.key}"] = median_ms(lambda f=forward: f(x), args.repeats)
    best_teacher = min(v for k, v in rows.items() if k.startswith("teacher"))
    lines = [
        f"CPU: {cpu_description()}, {threads} threads; LR {args.size}x{args.size} -> x4; median of {args.repeats}",
        "",
        "| row | ms / image | throughput vs the teacher's best |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} | {best_teacher / v:.1f}x |" for k, v in rows.items()]
    print("\n".join(lines))
    if args.out:
        meta = {"cpu": cpu_description(), "threads": threads, "lr": args.size, "repeats": args.repeats}
        write_report(args.out, {**meta, "ms": rows}, "\n".join(lines) + "\n", indent=1)


if __name__ == "__main__":
    main()
