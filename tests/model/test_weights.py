"""The shipped weights format: averaging two weight files of one architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.cli import main
from model.weights import load_weights, save_weights
from tests.model.test_edsr import tiny


def average(tmp_path: Path, *names: str) -> None:
    """``csd-sr average`` of ``tmp_path/<name>.safetensors`` into ``tmp_path/m.safetensors``."""
    sources = [str(tmp_path / f"{n}.safetensors") for n in names]
    main(["average", "--weights", *sources, "--out", str(tmp_path / "m.safetensors")])


def test_average_is_the_tensor_mean_and_records_its_sources(tmp_path: Path) -> None:
    a, b = tiny(), tiny()
    torch.manual_seed(1)
    for p in b.parameters():
        p.data.normal_()
    save_weights(a, tmp_path / "a.safetensors", {"training": {"steps": 900}, "metrics": {"Set5": {}}})
    save_weights(b, tmp_path / "b.safetensors", {"training": {"steps": 2700}, "noise": "real"})
    average(tmp_path, "a", "b")
    mean, card = load_weights(tmp_path / "m.safetensors")
    for name, t in mean.state_dict().items():
        torch.testing.assert_close(t, (a.state_dict()[name] + b.state_dict()[name]) / 2)
    assert [s["file"] for s in card["weight_average"]] == ["a.safetensors", "b.safetensors"]
    assert [s["steps"] for s in card["weight_average"]] == [900, 2700] and len(
        card["weight_average"][0]["sha256"]
    ) == 64
    assert card["noise"] == "real" and card["training"]["steps"] == 2700  # the last source's record
    assert "metrics" not in card  # measured on other weights: evaluate the mean again


def test_average_refuses_different_architectures(tmp_path: Path) -> None:
    save_weights(tiny(scale=4), tmp_path / "x4.safetensors")
    save_weights(tiny(scale=2), tmp_path / "x2.safetensors")
    with pytest.raises(ValueError, match="architectures"):
        average(tmp_path, "x4", "x2")


def test_a_weighted_mean_of_faithful_and_sharp_is_a_sharpness_step(tmp_path: Path) -> None:
    faithful, sharp = tiny(), tiny()
    torch.manual_seed(2)
    for p in sharp.parameters():
        p.data.normal_()
    save_weights(faithful, tmp_path / "real.safetensors", {"noise": "real"})
    save_weights(sharp, tmp_path / "sharp.safetensors", {"style": "sharp", "training": {"steps": 975}})
    sources = [str(tmp_path / f"{n}.safetensors") for n in ("real", "sharp")]
    main(["average", "--weights", *sources, "--ratios", "0.75", "0.25", "--out", str(tmp_path / "m.safetensors")])
    mean, card = load_weights(tmp_path / "m.safetensors")
    for name, t in mean.state_dict().items():
        torch.testing.assert_close(t, 0.75 * faithful.state_dict()[name] + 0.25 * sharp.state_dict()[name])
    assert card["style"] == "sharp" and card["sharpness"] == 0.25
    assert [s["ratio"] for s in card["weight_average"]] == [0.75, 0.25]


def test_average_refuses_ratios_that_do_not_sum_to_one(tmp_path: Path) -> None:
    for name in ("a", "b"):
        save_weights(tiny(), tmp_path / f"{name}.safetensors")
    sources = [str(tmp_path / f"{n}.safetensors") for n in ("a", "b")]
    with pytest.raises(ValueError, match="summing to 1"):
        main(["average", "--weights", *sources, "--ratios", "0.5", "0.6", "--out", str(tmp_path / "m.safetensors")])
