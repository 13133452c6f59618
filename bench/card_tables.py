"""Markdown tables of the shipped models' cards: per model, every rung under every evaluated degradation.

python -m bench.card_tables [weights/csd-edsr-x4.safetensors ...]   # default: every shipped model

Reads only the cards (``csd-sr evaluate --update-card`` wrote them): Y-PSNR on Set5 / Set14 per
rung and degradation, bicubic first, so docs/models.md shows exactly what the cards hold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.degradations import EVAL_DEGRADATIONS
from model.weights import card_path
from service.catalog.cards import card_tables
from service.settings import shipped_weights

SETS = ("Set5", "Set14")


def table(card: dict) -> str:
    degradations = [d for d in EVAL_DEGRADATIONS if card_tables(card, d)]
    rungs: list[str] = []
    for d in degradations:
        for rows in card_tables(card, d).values():
            rungs += [k for k in rows if k not in rungs]
    rungs.sort(key=lambda k: (k != "bicubic", float(k.split("-")[0]) if k != "bicubic" else 0, k))
    lines = [
        "| rung | " + " | ".join(degradations) + " |",
        "|---|" + "---|" * len(degradations),
    ]
    for key in rungs:
        cells = []
        for d in degradations:
            tables = card_tables(card, d)
            values = [tables.get(s, {}).get(key, {}).get("psnr") for s in SETS]
            cells.append(" / ".join("-" if v is None else f"{v:.2f}" for v in values))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights", nargs="*", type=Path)
    args = ap.parse_args()
    for path in args.weights or shipped_weights():
        card = json.loads(card_path(path).read_text())
        noise = card.get("noise", "none")
        print(f"### {path.stem} (x{card['architecture']['scale']}, noise {noise}): Y-PSNR Set5 / Set14\n")
        print(table(card) + "\n")


if __name__ == "__main__":
    main()
