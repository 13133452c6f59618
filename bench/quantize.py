"""What each choice of the int8 recipe (model/quantize.py) is worth: Set5/Set14 Y-PSNR and speed per width and variant.

Variants, each quantized from the same weights and calibration patches:
``naive`` (NNCF defaults: every convolution int8, per-patch mean activation
ranges), ``ends`` (first and last convolution fp32), ``ends+minmax`` (and
min/max activation ranges over all patches: the recipe before the last conv
went int8), ``minmax`` (every convolution int8, min/max ranges), ``first+minmax``
(only the first convolution fp32) and ``recipe`` (plus accuracy control: the
shipped recipe). Scored by ``model.evaluate`` on the OpenVINO rungs as the
service builds them; timed on one LR input, all variants' rungs in turn for
``--rounds`` rounds (median; the machine's noise hits every variant alike).
Writes OUT.md and OUT.json.

    python -m bench.quantize --train ../shared/data/train/T91/HR ../shared/data/train/BSD200/HR \\
        --data ../shared/data/Set5/HR ../shared/data/Set14/HR --out bench/results/quantize
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import available_cpus, cpu_description
from model.evaluate import Forward, evaluate_sets, openvino_forwards
from model.quantize import Recipe, quantize
from model.report import write_report
from model.weights import load_weights
from service.settings import DEFAULT_WEIGHTS

VARIANTS = {
    "naive": Recipe(max_drop_db=None, fp32_convs="none", activation_ranges="mean_minmax"),
    "ends": Recipe(max_drop_db=None, fp32_convs="first+last", activation_ranges="mean_minmax"),
    "ends+minmax": Recipe(max_drop_db=None, fp32_convs="first+last"),
    "minmax": Recipe(max_drop_db=None, fp32_convs="none"),
    "first+minmax": Recipe(max_drop_db=None),
    "recipe": Recipe(),
}


def interleaved_ms(forwards: dict[str, Forward], x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median milliseconds per call of each model, all called in turn every round (after one warm-up call)."""
    times: dict[str, list[float]] = {key: [] for key in forwards}
    for round_ in range(rounds + 1):
        for key, fn in forwards.items():
            start = time.perf_counter()
            fn(x)
            if round_:
                times[key].append(1000 * (time.perf_counter() - start))
    return {key: float(np.median(t)) for key, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--train", nargs="+", required=True, help="training HR folders (calibration + validation)")
    ap.add_argument("--data", nargs="+", required=True, help="evaluation HR folders")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--side", type=int, default=256, help="LR side of the timed input")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()

    model, _ = load_weights(args.weights)
    threads = available_cpus()
    results: dict[str, dict] = {}
    timed: dict[str, Forward] = {}  # "<variant> <width>" -> the rung evaluated, timed together at the end
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in VARIANTS.items():
            weights = Path(tmp) / name / args.weights.name
            weights.parent.mkdir()
            shutil.copy(args.weights, weights)
            quantize(model, weights, args.train, recipe, model.widths)
            forwards = openvino_forwards(model, weights, threads=threads, precisions=("int8",))
            results[name] = evaluate_sets(model, args.data, forwards, timing=False)
            timed |= {f"{name} {rung.width:g}": forward for rung, forward in forwards.items()}
        fp32 = openvino_forwards(model, args.weights, threads=threads, precisions=("fp32",))
        results["fp32"] = evaluate_sets(model, args.data, fp32, timing=False)
        timed |= {f"fp32 {rung.width:g}": forward for rung, forward in fp32.items()}
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (1, 3, args.side, args.side)).astype(np.float32))
    ms = interleaved_ms(timed, x, args.rounds)
    results["ms"] = {"side": args.side, "threads": threads, "rounds": args.rounds, "median": ms}
    sets = list(results["fp32"])
    lines = [
        f"int8 recipe ablation, weights {args.weights.name}, CPU {cpu_description()}",
        "",
        f"Y-PSNR dB (difference to fp32 at that width); ms per {args.side}x{args.side} LR input, {threads} threads,"
        f" median of {args.rounds} rounds with every model in turn (speed-up over fp32 at that width)",
        "",
        "| variant | width | " + " | ".join(sets) + " | ms |",
        "|---|---|" + "---|" * (len(sets) + 1),
    ]
    for width in model.widths:
        key = f"{width:g}"
        ref = {s: results["fp32"][s]["rows"][key]["psnr"] for s in sets}
        ref_ms = ms[f"fp32 {key}"]
        lines.append(f"| fp32 | {key} | " + " | ".join(f"{ref[s]:.2f}" for s in sets) + f" | {ref_ms:.0f} |")
        for name in VARIANTS:
            psnr = {s: results[name][s]["rows"][f"{key}-int8"]["psnr"] for s in sets}
            cells = " | ".join(f"{psnr[s]:.2f} ({psnr[s] - ref[s]:+.2f})" for s in sets)
            variant_ms = ms[f"{name} {key}"]
            lines.append(f"| {name} | {key} | {cells} | {variant_ms:.0f} ({ref_ms / variant_ms:.2f}x) |")
    markdown = "\n".join(lines) + "\n"
    write_report(args.out, results, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
