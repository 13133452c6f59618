"""A model card's figures: the tables ``csd-sr evaluate`` writes (``card["metrics"][set][rung.key]``, and per
degradation under ``card["metrics_degraded"]``), read per rung. Pure logic, no I/O."""

from __future__ import annotations

from model.rungs import Rung

HEADER_SETS = ("Set5", "Set14")  # the expected PSNR a response reports (X-Expected-PSNR)
# The figure that ranks a style's rungs and that a response reports: PSNR to the HR for the faithful style;
# for the sharp style the output's sharpness (``csd-sr evaluate-sharp``: % of the luma's spectral power above
# a quarter of Nyquist). PSNR to the teacher ranked x4-sharp's full width last (Set5 jpeg75: 26.91 dB vs 27.50 at
# 0.25), as MSE rewards blur wherever texture is not at the teacher's pixels, while by eye and by PIQE the wider
# rungs are the crisper ones; sharpness orders them as both do (bench/results/sharp/recipes.md).
STYLE_METRIC = {"faithful": "psnr", "sharp": "sharpness"}
# The inputs the sharp ladder is ranked on: typical web photos (a sharp model serves every noise level).
SHARP_LADDER_DEGRADATION = "jpeg75"
FIGURES = ("psnr", "ssim", "psnr_teacher", "sharpness", "piqe", "flat_noise")


def card_tables(card: dict, degradation: str = "clean") -> dict:
    """The card's tables ``{set: {rung key: row}}`` under ``degradation`` (``csd-sr evaluate --degradation``)."""
    if degradation == "clean":
        return card.get("metrics") or {}
    return (card.get("metrics_degraded") or {}).get(degradation) or {}


def card_quality(card: dict, rung: Rung, degradation: str = "clean") -> dict[str, dict[str, float]]:
    """PSNR/SSIM (a sharp card's PSNR to the teacher, sharpness and PIQE too) of one rung per eval set, from
    ``card["metrics"][set][rung.key]`` (or the degraded tables)."""
    out = {}
    for name, rows in card_tables(card, degradation).items():
        row = rows.get(rung.key) if isinstance(rows, dict) else None
        if row is None and rung.precision == "bf16" and isinstance(rows, dict):
            # bf16 computes the fp32 graph: a card without bf16 rows ranks it by the fp32 figures (the shipped
            # cards' bf16 rows are within 0.015 dB of fp32; tests/model/test_bf16.py holds it to 0.02)
            row = rows.get(f"{rung.width:g}")
        if isinstance(row, dict):
            out[name] = {k: float(row[k]) for k in FIGURES if k in row}
    return out


def expected_psnr(
    card: dict, rung: Rung, sets: tuple[str, ...] = HEADER_SETS, degradation: str = "clean", metric: str = "psnr"
) -> dict[str, float]:
    """The card's ``metric`` (``STYLE_METRIC``) of ``rung`` on each of ``sets`` having it, LR under ``degradation``."""
    quality = card_quality(card, rung, degradation)
    return {name: quality[name][metric] for name in sets if metric in quality.get(name, {})}
