"""Plot Set5 PSNR per width against training step from a model card's validation history.

    python -m bench.plot_training weights/csd-edsr-x4.json --out weights/training-curve.png

A card's ``training.init`` chain holds the stages before it (teacher, earlier cycles); they
are laid end to end, and a width is plotted only where its stage trained it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from model.weights import trained_widths


def stages(training: dict) -> list[dict]:
    """The training records from the first stage to this one."""
    chain = []
    while training:
        chain.append(training)
        training = training.get("init")
    return chain[::-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("card", help="model-card JSON file")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4))
    offset = 0
    series: dict[str, list[tuple[int, float]]] = {}
    card = json.loads(Path(args.card).read_text())
    for stage in stages(card["training"]):
        history = stage["validation_history"]
        trained = trained_widths(stage)
        for record in history:
            for width, psnr in record["psnr"].items():
                if width in trained:  # a stage's untrained students would only squash the axis
                    series.setdefault(width, []).append((offset + record["step"], psnr))
        ax.axvline(offset, color="grey", lw=0.5)
        offset += stage["steps"]
    for width, points in sorted(series.items(), key=lambda kv: float(kv[0])):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", ms=3, label=f"width {width}")
    bicubic = card.get("metrics", {}).get("Set5", {}).get("bicubic")
    if bicubic:  # measured by `csd-sr evaluate --update-card`
        ax.axhline(bicubic["psnr"], color="k", ls="--", lw=0.8, label=f"bicubic {bicubic['psnr']:.2f}")
    ax.set_xlabel("training step (stages end to end)")
    ax.set_ylabel("Set5 x4 Y-PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
