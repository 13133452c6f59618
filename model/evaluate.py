"""Standard SR evaluation: Y-PSNR / SSIM per rung (width, precision; plus bicubic), params, MACs, speed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model.data import Pair, degrade_pairs, load_pairs, resize_lanczos, to_image, to_tensor, upscale
from model.edsr import EDSR, count_macs, count_params
from model.metrics import psnr_y, ssim_y
from model.rungs import Precision, Rung

Forward = Callable[[torch.Tensor], torch.Tensor]

# The eight dihedral transforms of the x8 self-ensemble: (transpose, flip H, flip W).
_DIHEDRAL = [(t, h, w) for t in (False, True) for h in (False, True) for w in (False, True)]


def _apply(x: torch.Tensor, t: bool, h: bool, w: bool) -> torch.Tensor:
    x = x.transpose(2, 3) if t else x
    x = x.flip(2) if h else x
    return x.flip(3) if w else x


def _invert(x: torch.Tensor, t: bool, h: bool, w: bool) -> torch.Tensor:
    x = x.flip(3) if w else x
    x = x.flip(2) if h else x
    return x.transpose(2, 3) if t else x


@torch.no_grad()
def super_resolve(
    forward: Forward, lr: np.ndarray, self_ensemble: bool = False, size: tuple[int, int] | None = None
) -> np.ndarray:
    """uint8 LR -> uint8 SR through ``forward`` (a 0..255 float network); ``size`` (width, height), below the
    network's output: its float output brought there by ``resize_lanczos``, as the service serves a lower scale."""
    x = to_tensor(lr)
    if self_ensemble:
        out = sum(_invert(forward(_apply(x, *tf)), *tf) for tf in _DIHEDRAL) / len(_DIHEDRAL)
    else:
        out = forward(x)
    if size is not None and size != (out.shape[3], out.shape[2]):
        out = torch.from_numpy(resize_lanczos(out[0].permute(1, 2, 0).numpy(), size)).permute(2, 0, 1)[None]
    return to_image(out)


def score(sr: np.ndarray, hr: np.ndarray, shave: int) -> dict[str, float]:
    return {"psnr": psnr_y(sr, hr, shave), "ssim": ssim_y(sr, hr, shave)}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


@torch.no_grad()
def evaluate_widths(
    model: EDSR, pairs: list[Pair], widths: tuple[float, ...], self_ensemble: bool = False
) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM per width over ``pairs`` with the width-sliced forward."""
    was_training = model.training
    model.eval()
    shave = model.cfg.scale
    device = next(model.parameters()).device
    out = {}
    for w in widths:
        rows = []
        for p in pairs:
            sr = super_resolve(lambda x, w=w: model(x.to(device), w).cpu(), p.lr, self_ensemble)
            rows.append(score(sr, p.hr, shave))
        out[f"{w:g}"] = _mean(rows)
    model.train(was_training)
    return out


def bicubic_scores(pairs: list[Pair], scale: int) -> dict[str, float]:
    return _mean([score(upscale(p.lr, scale), p.hr, scale) for p in pairs])


@torch.no_grad()
def time_forward(forward: Forward, pairs: list[Pair], repeats: int = 1) -> float:
    """Mean milliseconds per image (one warm-up pass first)."""
    inputs = [to_tensor(p.lr) for p in pairs]
    forward(inputs[0])
    start = time.perf_counter()
    for _ in range(repeats):
        for x in inputs:
            forward(x)
    return 1000 * (time.perf_counter() - start) / (repeats * len(inputs))


def torch_forwards(model: EDSR) -> dict[Rung, Forward]:
    """The fp32 rungs as PyTorch dense sub-networks (the training code's reference)."""
    model.eval()
    return {Rung(w): model.dense(w) for w in model.widths}


def openvino_forwards(
    model: EDSR, weights: str | Path, threads: int, precisions: tuple[Precision, ...] = ("fp32", "int8")
) -> dict[Rung, Forward]:
    """Every rung the service's OpenVINO backend would serve, built by the same code (``model.openvino``)."""
    import openvino as ov

    from model.openvino import cpu_config, rung_models

    models, missing = rung_models(model, weights, precisions)
    if missing:
        print(missing)
    core = ov.Core()
    return {
        r: compiled_forward(core.compile_model(m, "CPU", cpu_config(threads, r.precision)))
        for r, m in sorted(models.items())
    }


def compiled_forward(compiled: Callable) -> Forward:
    """An OpenVINO compiled model as a ``Forward`` (torch tensors in and out)."""
    return lambda x: torch.from_numpy(compiled(x.numpy())[0])


def evaluate_sets(
    model: EDSR,
    folders: list[str | Path],
    forwards: dict[Rung, Forward],
    self_ensemble: bool = False,
    timing: bool = True,
    degradation: str = "clean",
    scale: int | None = None,
) -> dict[str, dict]:
    """Full table: per set, bicubic and every rung of ``forwards`` (PSNR, SSIM, params, GMACs, ms per image).

    ``degradation`` (``model.degradations``) is applied to each LR; bicubic upscales the same degraded LR.
    ``scale`` below the model's: LR at that scale, the model's output Lanczos-downscaled to the HR (the
    service's path when it serves a scale with a larger model).
    """
    cfg = model.cfg
    scale = scale or cfg.scale
    if scale > cfg.scale:
        raise ValueError(f"a x{cfg.scale} model cannot serve x{scale}")
    # bf16 rows record the CPU that computed them: bf16 kernels (AMX, AVX512-BF16) differ between CPUs
    bf16_cpu = {"cpu": _cpu_description()} if any(r.precision == "bf16" for r in forwards) else {}
    results: dict[str, dict] = {}
    for folder in folders:
        pairs = degrade_pairs(load_pairs(folder, scale), degradation)
        name = set_name(folder)
        rows = {"bicubic": bicubic_scores(pairs, scale)}
        for rung, forward in forwards.items():
            srs = [super_resolve(forward, p.lr, self_ensemble, (p.hr.shape[1], p.hr.shape[0])) for p in pairs]
            scores = _mean([score(sr, p.hr, scale) for sr, p in zip(srs, pairs, strict=True)])
            macs = np.mean([count_macs(cfg, rung.width, p.lr.shape[:2]) for p in pairs])
            rows[rung.key] = {
                **scores,
                "params": count_params(cfg, rung.width),
                "gmacs_per_image": float(macs / 1e9),
                **({"ms_per_image": time_forward(forward, pairs)} if timing else {}),
                **(bf16_cpu if rung.precision == "bf16" else {}),
            }
        results[name] = {
            "set": name,
            "images": len(pairs),
            "scale": scale,
            "model_scale": cfg.scale,
            "degradation": degradation,
            "self_ensemble": self_ensemble,
            "rows": rows,
        }
    return results


def set_name(folder: str | Path) -> str:
    """``Set5`` for ``.../Set5/HR``, the folder's own name otherwise."""
    return Path(folder).parent.name if Path(folder).name.upper() == "HR" else Path(folder).name


def _cpu_description() -> str:
    from model.openvino import cpu_description  # bf16 rungs are OpenVINO's: only then is it imported

    return cpu_description()


def to_markdown(results: dict[str, dict]) -> str:
    lines = []
    for name, res in results.items():
        suffix = " (x8 self-ensemble)" if res["self_ensemble"] else ""
        degradation = res.get("degradation", "clean")
        lr = "" if degradation == "clean" else f", LR {degradation}"
        model_scale = res.get("model_scale", res["scale"])
        via = "" if model_scale == res["scale"] else f" (x{model_scale} model + Lanczos)"
        lines += [
            f"### {name} x{res['scale']}{via}{lr}{suffix}, {res['images']} images",
            "",
            "| rung | PSNR (dB) | SSIM | params | GMACs/image | ms/image |",
            "|---|---|---|---|---|---|",
        ]
        for key, r in res["rows"].items():
            params = f"{r['params']:,}" if "params" in r else "-"
            gmacs = f"{r['gmacs_per_image']:.2f}" if "gmacs_per_image" in r else "-"
            ms = f"{r['ms_per_image']:.1f}" if "ms_per_image" in r else "-"
            lines.append(f"| {key} | {r['psnr']:.2f} | {r['ssim']:.4f} | {params} | {gmacs} | {ms} |")
        lines.append("")
    return "\n".join(lines)
