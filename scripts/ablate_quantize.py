"""What each choice of the int8 recipe (model/quantize.py) is worth: Set5/Set14 Y-PSNR per width and variant.

Variants, each quantized from the same weights and calibration patches:
``naive`` (NNCF defaults: every convolution int8, per-patch mean activation
ranges), ``ends`` (first and last convolution fp32), ``ends+minmax`` (and
min/max activation ranges over all patches) and ``recipe`` (plus accuracy
control: the shipped recipe). Scored by ``model.evaluate`` on the OpenVINO rungs
as the service builds them. Writes OUT.md and OUT.json.

    python scripts/ablate_quantize.py --train ../shared/data/train/T91/HR ../shared/data/train/BSD200/HR \\
        --data ../shared/data/Set5/HR ../shared/data/Set14/HR --out bench/results/quantize
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from model.evaluate import evaluate_sets, openvino_forwards
from model.quantize import Recipe, quantize
from model.weights import load_weights
from service.hardware import available_cpus, cpu_info
from service.settings import DEFAULT_WEIGHTS

VARIANTS = {
    "naive": Recipe(max_drop_db=None, ends_fp32=False, activation_ranges="mean_minmax"),
    "ends": Recipe(max_drop_db=None, activation_ranges="mean_minmax"),
    "ends+minmax": Recipe(max_drop_db=None),
    "recipe": Recipe(),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--train", nargs="+", required=True, help="training HR folders (calibration + validation)")
    ap.add_argument("--data", nargs="+", required=True, help="evaluation HR folders")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    model, _ = load_weights(args.weights)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in VARIANTS.items():
            weights = Path(tmp) / name / args.weights.name
            weights.parent.mkdir()
            shutil.copy(args.weights, weights)
            quantize(model, weights, args.train, recipe, model.widths)
            forwards = openvino_forwards(model, weights, threads=available_cpus(), precisions=("int8",))
            results[name] = evaluate_sets(model, args.data, forwards, timing=False)
        fp32 = openvino_forwards(model, args.weights, threads=available_cpus(), precisions=("fp32",))
        results["fp32"] = evaluate_sets(model, args.data, fp32, timing=False)
    sets = list(results["fp32"])
    lines = [
        f"int8 recipe ablation, weights {args.weights.name}, CPU {json.dumps(cpu_info())}",
        "",
        "Y-PSNR dB (difference to fp32 at that width)",
        "",
        "| variant | width | " + " | ".join(sets) + " |",
        "|---|---|" + "---|" * len(sets),
    ]
    for width in model.widths:
        key = f"{width:g}"
        ref = {s: results["fp32"][s]["rows"][key]["psnr"] for s in sets}
        lines.append(f"| fp32 | {key} | " + " | ".join(f"{ref[s]:.2f}" for s in sets) + " |")
        for name in VARIANTS:
            psnr = {s: results[name][s]["rows"][f"{key}-int8"]["psnr"] for s in sets}
            cells = " | ".join(f"{psnr[s]:.2f} ({psnr[s] - ref[s]:+.2f})" for s in sets)
            lines.append(f"| {name} | {key} | {cells} |")
    markdown = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(markdown)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
