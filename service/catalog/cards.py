"""A model card's figures: the tables ``csd-sr evaluate`` writes (``card["metrics"][set][rung.key]``, and per
degradation under ``card["metrics_degraded"]``), read per rung. Pure logic, no I/O."""

from __future__ import annotations

from model.rungs import Rung

HEADER_SETS = ("Set5", "Set14")  # the expected PSNR a response reports (X-Expected-PSNR)


def card_tables(card: dict, degradation: str = "clean") -> dict:
    """The card's tables ``{set: {rung key: row}}`` under ``degradation`` (``csd-sr evaluate --degradation``)."""
    if degradation == "clean":
        return card.get("metrics") or {}
    return (card.get("metrics_degraded") or {}).get(degradation) or {}


def card_quality(card: dict, rung: Rung, degradation: str = "clean") -> dict[str, dict[str, float]]:
    """PSNR/SSIM of one rung per eval set, from ``card["metrics"][set][rung.key]`` (or the degraded tables)."""
    out = {}
    for name, rows in card_tables(card, degradation).items():
        row = rows.get(rung.key) if isinstance(rows, dict) else None
        if row is None and rung.precision == "bf16" and isinstance(rows, dict):
            # bf16 computes the fp32 graph: a card without bf16 rows ranks it by the fp32 figures (the shipped
            # cards' bf16 rows are within 0.015 dB of fp32; tests/model/test_bf16.py holds it to 0.02)
            row = rows.get(f"{rung.width:g}")
        if isinstance(row, dict):
            out[name] = {k: float(row[k]) for k in ("psnr", "ssim") if k in row}
    return out


def expected_psnr(
    card: dict, rung: Rung, sets: tuple[str, ...] = HEADER_SETS, degradation: str = "clean"
) -> dict[str, float]:
    """The card's PSNR of ``rung`` on each of ``sets`` that has one, with LR under ``degradation``."""
    quality = card_quality(card, rung, degradation)
    return {name: quality[name]["psnr"] for name in sets if "psnr" in quality.get(name, {})}
