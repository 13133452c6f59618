"""The shipped format: ``<name>.safetensors`` (weights + architecture) and ``<name>.json`` (model card).

Loading reads tensors and JSON only; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from model.edsr import EDSR, EDSRConfig, count_macs, count_params


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_weights(model: EDSR, path: str | Path, card: dict | None = None) -> None:
    """Write weights (architecture in the safetensors metadata) and the model card beside them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "csd-sr", "config": json.dumps(model.cfg.to_dict())})
    path.chmod(0o644)  # safetensors writes 0600; a server running as another user must read the file
    full_card = {**base_card(model.cfg), **(card or {})}
    card_path(path).write_text(json.dumps(full_card, indent=2) + "\n")


def base_card(cfg: EDSRConfig) -> dict:
    """Facts derivable from the architecture: params and MACs per width."""
    return {
        "architecture": {"name": "EDSR", **cfg.to_dict()},
        "per_width": {
            f"{w:g}": {
                "channels": cfg.channels(w),
                "params": count_params(cfg, w),
                "macs_128x128_input": count_macs(cfg, w, (128, 128)),
            }
            for w in cfg.widths
        },
    }


def merge_metrics(card: dict, results: Iterable[dict], self_ensemble: bool = False) -> dict:
    """``card`` with evaluation results merged in, row by row (rungs not evaluated keep their figures).

    Clean figures go to ``card["metrics"][set][rung]`` (the ladder's), degraded ones to
    ``card["metrics_degraded"][degradation][set][rung]``; figures at a scale below the model's (its
    output Lanczos-downscaled) to the same tables in ``card["at_scale"][scale]``.
    """
    for res in results:
        degradation = res.get("degradation", "clean")
        scale = res.get("scale")
        if scale is not None and scale != res.get("model_scale", scale):  # served below the model's scale
            at_scale = card.setdefault("at_scale", {}).setdefault(str(scale), {})
            merge_metrics(at_scale, [{**res, "model_scale": scale}], self_ensemble)
            continue
        if degradation == "clean":
            tables = card.setdefault("metrics_self_ensemble" if self_ensemble else "metrics", {})
        else:
            key = "metrics_degraded_self_ensemble" if self_ensemble else "metrics_degraded"
            tables = card.setdefault(key, {}).setdefault(degradation, {})
        tables.setdefault(res["set"], {}).update(res["rows"])
    return card


def merge_sharp_metrics(card: dict, result: dict, scale: int | None = None) -> dict:
    """``card`` with ``model.evaluate_sharp`` figures merged into the rows of its tables (``metrics`` for clean,
    ``metrics_degraded[degradation]`` otherwise): sharpness, PIQE and PSNR to the teacher beside PSNR / SSIM.
    The teacher's own row is kept under ``teacher``, so the card says what the style aims at. Figures at a
    ``scale`` below the model's go to the same tables in ``card["at_scale"][scale]``."""
    if scale is not None and scale != card["architecture"]["scale"]:
        merge_sharp_metrics(card.setdefault("at_scale", {}).setdefault(str(scale), {}), result)
        return card
    for degradation, sets in result.items():
        if degradation == "clean":
            tables = card.setdefault("metrics", {})
        else:
            tables = card.setdefault("metrics_degraded", {}).setdefault(degradation, {})
        for name, rows in sets.items():
            for key, row in rows.items():
                tables.setdefault(name, {}).setdefault(key, {}).update(row)
    return card


def trained_widths(training: dict) -> set[str]:
    """Widths (card keys, e.g. ``"0.25"``) a card's training record trained: its students, plus
    full width when the teacher term was on. Other widths of such a run are untrained slices."""
    objective = training["objective"]
    widths = {f"{w:g}" for w in objective["student_widths"]}
    return widths | {"1"} if objective["t_lambda"] > 0 else widths


def read_config(path: str | Path) -> EDSRConfig:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "csd-sr" or "config" not in meta:
        raise ValueError(f"{path} is not a csd-sr weights file (no csd-sr metadata)")
    raw = json.loads(meta["config"])
    return EDSRConfig(**{**raw, "widths": tuple(raw["widths"])})


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> tuple[EDSR, dict]:
    """Model (eval mode) and its card (``{}`` when the JSON is missing)."""
    model = EDSR(read_config(path))
    model.load_state_dict(load_file(str(path), device="cpu"))
    cp = card_path(path)
    card = json.loads(cp.read_text()) if cp.exists() else {}
    return model.to(device).eval(), card


def average_weights(sources: list[str | Path], out: str | Path, ratios: list[float] | None = None) -> None:
    """Write the weighted mean of ``sources`` (same architecture; ``ratios`` sum to 1, default uniform).

    Checkpoints of one run, one fine-tuned from the other, lie in one basin, so their mean is often
    better than either on inputs both were meant for (Wortsman et al. 2022, "model soups"); a sharp
    model and the faithful one it was fine-tuned from interpolate between their looks (what Real-ESRGAN's
    ``-dn`` does). The widths stay width-switchable: every slice is the mean of the same slices. The card
    is the last source's (its training record) with the average recorded; a mean of sharp and faithful
    weights is style sharp with ``sharpness`` = the sharp sources' share. Metrics are left out: evaluate again.
    """
    ratios = ratios or [1 / len(sources)] * len(sources)
    if len(ratios) != len(sources) or abs(sum(ratios) - 1) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"ratios must be one per source, >= 0, summing to 1: got {ratios}")
    models, cards = zip(*(load_weights(s) for s in sources), strict=True)
    if len({m.cfg for m in models}) != 1:
        raise ValueError("weights of different architectures cannot be averaged")
    states = [m.state_dict() for m in models]
    mean = {k: sum(r * st[k] for r, st in zip(ratios, states, strict=True)) for k in states[0]}
    model = EDSR(models[0].cfg)
    model.load_state_dict(mean)
    card = {
        k: v for k, v in cards[-1].items() if not k.startswith("metrics") and k not in ("architecture", "per_width")
    }
    card["weight_average"] = [
        {
            "file": Path(s).name,
            "sha256": file_sha256(s),
            "steps": c.get("training", {}).get("steps"),
            "ratio": round(r, 6),
        }
        for s, c, r in zip(sources, cards, ratios, strict=True)
    ]
    styles = [c.get("style", "faithful") for c in cards]
    if "sharp" in styles and "faithful" in styles:
        card["style"] = "sharp"
        card["sharpness"] = round(sum(r for r, st in zip(ratios, styles, strict=True) if st == "sharp"), 6)
    save_weights(model, out, card)


def load_matching(model: EDSR, path: str | Path) -> list[str]:
    """Copy every same-named, same-shaped tensor (e.g. an x2 model into an x4 one); returns skipped names."""
    source = load_file(str(path), device="cpu")
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return sorted(set(own) - set(matched))
