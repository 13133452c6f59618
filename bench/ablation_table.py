"""The ablation table from bench/ablation.sh's outputs: per run ``<run>.json`` (``csd-sr
evaluate``) and ``<run>.card.json`` (the run's model card).

    python -m bench.ablation_table weights/ablation

Only widths a run trained are listed (its card's ``student_widths``, plus 1 when the teacher
term is on); the other widths of such a run are the teacher's untrained slices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.weights import trained_widths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path, help="where ablation.sh put the evaluations and cards")
    args = ap.parse_args()
    rows, sets, bicubic = [], [], []
    for card_file in sorted(args.folder.glob("*.card.json")):
        run = card_file.name.removesuffix(".card.json")
        results = json.loads((args.folder / f"{run}.json").read_text())
        card = json.loads(card_file.read_text())
        steps = card["training"]["steps"]
        sets = list(results)
        bicubic = ["{psnr:.2f} / {ssim:.4f}".format(**results[s]["rows"]["bicubic"]) for s in sets]
        for width in sorted(trained_widths(card["training"]), key=float):
            scores = ["{psnr:.2f} / {ssim:.4f}".format(**results[s]["rows"][width]) for s in sets]
            rows.append(f"| {run} | {width} | {steps} | " + " | ".join(scores) + " |")
    print("| run | width | steps | " + " | ".join(f"{s} x4 PSNR / SSIM" for s in sets) + " |")
    print("|---|---|---|" + "---|" * len(sets))
    print("| bicubic | | | " + " | ".join(bicubic) + " |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
