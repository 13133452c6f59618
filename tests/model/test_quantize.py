"""int8 rungs: the quantize command on a small model, the weights check, and the shipped rungs against their card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.edsr import EDSR, EDSRConfig
from model.evaluate import evaluate_sets, openvino_forwards
from model.openvino import MANIFEST, cpu_config, int8_dir, int8_models, to_openvino
from model.quantize import Recipe, quantize, split
from model.rungs import Rung
from model.weights import load_weights, save_weights
from tests.conftest import SHARED_DATA, synthetic_image, write_png

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "csd-edsr-x4.safetensors"


def test_rung_keys_round_trip() -> None:
    assert Rung(1.0).key == "1" and Rung(0.25, "int8").key == "0.25-int8"
    assert Rung.parse("0.5-int8") == Rung(0.5, "int8") and Rung.parse("1") == Rung(1.0)
    with pytest.raises(ValueError):
        Rung.parse("1-int4")


def test_split_holds_out_every_kth_image() -> None:
    calib, val = split(list(range(10)), 4)
    assert val == [0, 4, 8] and calib == [1, 2, 3, 5, 6, 7, 9]


def small_setup(root: Path) -> tuple[EDSR, Path, Path]:
    """A small trained-like model, its weights file, and synthetic 'training' images."""
    torch.manual_seed(3)
    model = EDSR(EDSRConfig(scale=4, n_resblocks=2, n_feats=16)).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    weights = root / "small.safetensors"
    save_weights(model, weights)
    train = root / "train"
    train.mkdir()
    for i in range(8):
        write_png(train / f"{i}.png", synthetic_image(96, 128, seed=i))
    return model, weights, train


SMALL = {"calibration_patches": 16, "patch_side": 16, "validation_every": 4}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> tuple[EDSR, Path, dict]:
    model, weights, train = small_setup(tmp_path_factory.mktemp("quantize"))
    # A generous drop: the test is about the mechanics, the shipped rungs' quality is checked below.
    out = quantize(model, weights, [train], Recipe(max_drop_db=1.0, **SMALL), (0.5, 1.0))
    return model, weights, json.loads((out / MANIFEST).read_text())


def test_quantize_writes_int8_rungs_that_track_fp32(quantized) -> None:
    model, weights, manifest = quantized
    assert int8_dir(weights).is_dir() and set(manifest["rungs"]) == {"0.5-int8", "1-int8"}
    assert manifest["validation_images"] == ["0", "4"]  # held out from calibration
    models, missing = int8_models(weights, (0.5, 1.0))
    assert missing is None and set(models) == {Rung(0.5, "int8"), Rung(1.0, "int8")}
    import openvino as ov

    core = ov.Core()
    x = synthetic_image(24, 32, seed=9).transpose(2, 0, 1)[None].astype(np.float32)
    for width in (0.5, 1.0):
        report = manifest["rungs"][Rung(width, "int8").key]
        assert report["int8_convolutions"] > 0
        assert report["fp32_convolutions"] == ["head"]  # the recipe's one; a 1 dB allowance returns no other
        fp32 = core.compile_model(to_openvino(model.dense(width)), "CPU", cpu_config(1))(x)[0]
        int8 = core.compile_model(models[Rung(width, "int8")], "CPU", cpu_config(1))(x)[0]
        error = np.abs(int8 - fp32)
        assert 0 < error.mean() < 0.02 * np.ptp(fp32)  # quantized (not identical), and close


@pytest.mark.parametrize(("fp32_convs", "kept"), [("none", []), ("first+last", ["head", "tail"])])
def test_plain_ptq_keeps_only_the_named_convolutions_in_fp32(tmp_path: Path, fp32_convs: str, kept: list) -> None:
    """The ablation's variants without accuracy control: every convolution int8, or all but the first and last."""
    model, weights, train = small_setup(tmp_path)
    recipe = Recipe(max_drop_db=None, fp32_convs=fp32_convs, activation_ranges="mean_minmax", **SMALL)
    manifest = json.loads((quantize(model, weights, [train], recipe, (1.0,)) / MANIFEST).read_text())
    report = manifest["rungs"]["1-int8"]
    assert report["fp32_convolutions"] == kept and report["int8_convolutions"] == report["convolutions"] - len(kept)
    assert report["recipe"]["fp32_convs"] == fp32_convs  # each rung records the recipe that made it


def test_int8_rungs_of_other_weights_are_refused(quantized, tmp_path: Path) -> None:
    model, weights, _ = quantized
    other = tmp_path / weights.name
    save_weights(EDSR(model.cfg), other)
    (tmp_path / int8_dir(weights).name).symlink_to(int8_dir(weights))
    models, why = int8_models(other, (0.5, 1.0))
    assert models == {} and "other weights" in why
    models, why = int8_models(tmp_path / "absent.safetensors", (1.0,))
    assert models == {} and "csd-sr quantize" in why


@pytest.mark.shared_data
def test_shipped_rungs_meet_their_recorded_set5_psnr() -> None:
    """Every rung the service would serve, built as it builds them, scores what the card says on Set5."""
    if not (SHARED_DATA / "Set5").exists():
        pytest.skip(f"{SHARED_DATA / 'Set5'} is absent")
    model, card = load_weights(SHIPPED)
    forwards = openvino_forwards(model, SHIPPED, threads=1)
    assert {r.precision for r in forwards} == {"fp32", "int8"}
    assert {r.width for r in forwards if r.precision == "int8"} == set(model.widths)
    rows = evaluate_sets(model, [SHARED_DATA / "Set5" / "HR"], forwards, timing=False)["Set5"]["rows"]
    for rung in forwards:
        assert rows[rung.key]["psnr"] == pytest.approx(card["metrics"]["Set5"][rung.key]["psnr"], abs=0.01), rung
