"""evaluate-sharp's figures on a tiny network and a tiny teacher, and their place in the card."""

from __future__ import annotations

import torch

from model.data import Pair, downscale
from model.edsr import EDSR, EDSRConfig
from model.evaluate import torch_forwards
from model.evaluate_sharp import evaluate_sharp, rung_forwards
from model.rrdbnet import RRDBConfig, RRDBNet
from model.weights import merge_sharp_metrics
from tests.conftest import synthetic_image


def tiny_evaluation(side: int, scale: int, seed: int, degradations: tuple[str, ...]) -> dict:
    """evaluate-sharp of a tiny EDSR against a tiny teacher on one synthetic image of ``side`` px at ``scale``."""
    torch.manual_seed(0)
    hr = synthetic_image(side, side, seed=seed)
    pairs = {"tiny": [Pair("a", downscale(hr, scale), hr)]}
    teacher = RRDBNet(RRDBConfig(num_feat=8, num_block=1, num_grow_ch=4)).eval()
    forwards = rung_forwards(torch_forwards(EDSR(EDSRConfig(n_resblocks=1, n_feats=16))))
    return evaluate_sharp(pairs, forwards, teacher, degradations, scale)


def test_rows_frame_the_rungs_with_bicubic_and_the_teacher() -> None:
    result = tiny_evaluation(64, 4, 3, ("clean", "jpeg75"))
    rows = result["jpeg75"]["tiny"]
    assert set(rows) == {"bicubic", "teacher", "0.25", "0.5", "1"}
    assert rows["teacher"]["psnr_teacher"] == float("inf")  # its own output
    for row in rows.values():
        assert set(row) == {"sharpness", "piqe", "flat_noise", "psnr_teacher", "psnr", "ssim"}
        assert 0 <= row["sharpness"] <= 100


def test_sharp_figures_join_the_card_rows() -> None:
    card = {"metrics": {"Set5": {"1": {"psnr": 30.0, "ssim": 0.9, "ms_per_image": 12.0}}}}
    result = {
        "clean": {"Set5": {"1": {"psnr": 30.0, "psnr_teacher": 31.0, "sharpness": 4.0}}},
        "camera": {"Set5": {"1": {"psnr": 25.0, "psnr_teacher": 27.0}}},
    }
    merged = merge_sharp_metrics(card, result)
    assert merged["metrics"]["Set5"]["1"] == {
        "psnr": 30.0,
        "ssim": 0.9,
        "ms_per_image": 12.0,
        "psnr_teacher": 31.0,
        "sharpness": 4.0,
    }
    assert merged["metrics_degraded"]["camera"]["Set5"]["1"]["psnr_teacher"] == 27.0


def test_below_x4_every_output_is_downscaled_to_the_hr_and_kept_under_at_scale() -> None:
    result = tiny_evaluation(48, 2, 4, ("clean",))  # shapes differing from the HR: raises
    assert result["clean"]["tiny"]["teacher"]["psnr_teacher"] == float("inf")
    card = {"architecture": {"scale": 4}, "metrics": {"Set5": {"1": {"psnr": 30.0}}}}
    merged = merge_sharp_metrics(card, {"clean": {"Set5": {"1": {"sharpness": 3.0}}}}, scale=2)
    assert merged["metrics"]["Set5"]["1"] == {"psnr": 30.0}  # x4's own figures untouched
    assert merged["at_scale"]["2"]["metrics"]["Set5"]["1"] == {"sharpness": 3.0}
