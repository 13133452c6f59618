"""What the int8 rungs' fp32 layers (the layers accuracy control kept out of int8) should run in on a bf16 CPU.

Each int8 IR is compiled twice, with OpenVINO's ``INFERENCE_PRECISION_HINT`` f32 (what the service uses)
and bf16, and both are scored on Set5 and timed on one 268x268 LR tile (the served tile: 256 + 2 x 6
margin) in the same run. Prints the CPU flags and a markdown table; needs a CPU with native bf16.

    python -m bench.int8_hint --weights weights/csd-edsr-x4.safetensors weights/csd-edsr-x2.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import openvino as ov

from bench.common import DATA, cpu_description, median_ms
from model.edsr import EDSR
from model.evaluate import compiled_forward, evaluate_sets
from model.openvino import cpu_config, int8_models, native_bf16
from model.rungs import Rung
from model.weights import load_weights

HINTS = ("f32", "bf16")


def tile_ms(compiled: ov.CompiledModel, side: int = 268, repeats: int = 7) -> float:
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, side, side)).astype(np.float32)
    return median_ms(lambda: compiled([x]), repeats)


def set_psnr(model: EDSR, data: Path, rung: Rung, compiled: ov.CompiledModel) -> float:
    rows = evaluate_sets(model, [data], {rung: compiled_forward(compiled)}, timing=False)[data.parent.name]["rows"]
    return rows[rung.key]["psnr"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, nargs="+", required=True)
    ap.add_argument("--data", type=Path, default=DATA / "Set5" / "HR")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    if not native_bf16():
        raise SystemExit("this CPU has no native bf16: nothing to compare")
    core = ov.Core()
    configs = {h: cpu_config(args.threads) | {"INFERENCE_PRECISION_HINT": h} for h in HINTS}
    lines = [
        "| model | rung | Set5 f32 layers | Set5 bf16 layers | ms/tile f32 layers | ms/tile bf16 layers | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for weights in args.weights:
        model, _ = load_weights(weights)
        irs, missing = int8_models(weights, model.widths)
        if missing:
            print(missing)
        for rung, ir in sorted(irs.items()):
            compiled = {h: core.compile_model(ir, "CPU", config) for h, config in configs.items()}
            psnr = {h: set_psnr(model, args.data, rung, c) for h, c in compiled.items()}
            ms = {h: tile_ms(c) for h, c in compiled.items()}
            lines.append(
                f"| {weights.stem} | {rung.key} | {psnr['f32']:.3f} | {psnr['bf16']:.3f} | {ms['f32']:.1f} | "
                f"{ms['bf16']:.1f} | {ms['f32'] / ms['bf16']:.2f}x |"
            )
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
