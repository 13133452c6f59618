from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from model.cli import main as cli_main
from model.edsr import EDSR, EDSRConfig
from model.evaluate import super_resolve
from model.openvino import cpu_description, native_bf16
from model.weights import save_weights
from tests.conftest import synthetic_image, write_png


def test_self_ensemble_inverts_every_transform() -> None:
    lr = synthetic_image(9, 14)
    nearest = lambda x: F.interpolate(x, scale_factor=2, mode="nearest")  # noqa: E731 (equivariant under flips)
    torch.testing.assert_close(
        torch.from_numpy(super_resolve(nearest, lr, self_ensemble=True)),
        torch.from_numpy(super_resolve(nearest, lr)),
    )


def test_evaluate_cli_writes_tables_and_updates_card(tmp_path, capsys) -> None:
    folder = tmp_path / "Tiny" / "HR"
    folder.mkdir(parents=True)
    for i in range(2):
        write_png(folder / f"{i}.png", synthetic_image(40, 36, seed=i))
    weights = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_weights(EDSR(EDSRConfig(n_resblocks=1, n_feats=8)), weights)
    cli_main(
        ["evaluate", "--weights", str(weights), "--data", str(folder), "--out", str(tmp_path / "r"), "--update-card"]
    )
    table = capsys.readouterr().out
    assert "### Tiny x4" in table and "| bicubic |" in table and "| 0.25 |" in table
    result = json.loads((tmp_path / "r.json").read_text())
    rows = result["Tiny"]["rows"]
    assert set(rows) == {"bicubic", "0.25", "0.5", "1"}
    assert rows["1"]["params"] > rows["0.25"]["params"] and rows["1"]["ms_per_image"] > 0
    assert 5 < rows["bicubic"]["psnr"] < 60
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["metrics"]["Tiny"]["1"]["psnr"] == rows["1"]["psnr"]


def test_a_model_is_measured_at_a_lower_scale_through_a_lanczos_downscale(tmp_path, capsys) -> None:
    folder = tmp_path / "Tiny" / "HR"
    folder.mkdir(parents=True)
    write_png(folder / "0.png", synthetic_image(42, 36))
    weights = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_weights(EDSR(EDSRConfig(n_resblocks=1, n_feats=8)), weights, {"metrics": {"Tiny": {"1": {"psnr": 1.0}}}})
    args = ["evaluate", "--weights", str(weights), "--data", str(folder), "--no-timing", "--update-card"]
    cli_main([*args, "--scale", "3"])
    assert "### Tiny x3 (x4 model + Lanczos)" in capsys.readouterr().out
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["metrics"]["Tiny"] == {"1": {"psnr": 1.0}}  # the model's own figures stay its own
    at_x3 = card["at_scale"]["3"]["metrics"]["Tiny"]
    assert set(at_x3) == {"bicubic", "0.25", "0.5", "1"} and 5 < at_x3["1"]["psnr"] < 60
    # the x3 LR of a 42x36 HR is 14x12: the x4 output, 56x48, is brought to the HR's 42x36
    out = super_resolve(
        lambda x: F.interpolate(x, scale_factor=4, mode="bicubic"), synthetic_image(12, 14), size=(42, 36)
    )
    assert out.shape == (36, 42, 3) and out.dtype == "uint8"
    x2 = tmp_path / "x2.safetensors"
    save_weights(EDSR(EDSRConfig(scale=2, n_resblocks=1, n_feats=8)), x2)
    with pytest.raises(SystemExit, match="cannot serve x4"):
        cli_main(["evaluate", "--weights", str(x2), "--data", str(folder), "--scale", "4"])


def test_openvino_evaluation_names_the_cpu_of_its_bf16_rows(tmp_path) -> None:
    folder = tmp_path / "Tiny" / "HR"
    folder.mkdir(parents=True)
    write_png(folder / "0.png", synthetic_image(40, 36))
    weights = tmp_path / "m.safetensors"
    save_weights(EDSR(EDSRConfig(n_resblocks=1, n_feats=8)), weights)
    args = ["evaluate", "--backend", "openvino", "--precisions", "fp32", "bf16", "--no-timing", "--update-card"]
    cli_main([*args, "--weights", str(weights), "--data", str(folder)])
    rows = json.loads(weights.with_suffix(".json").read_text())["metrics"]["Tiny"]
    bf16 = {k: row for k, row in rows.items() if k.endswith("-bf16")}
    if native_bf16():  # bf16 figures differ between CPUs (AMX, AVX512-BF16): each row says which computed it
        assert set(bf16) == {"0.25-bf16", "0.5-bf16", "1-bf16"}
        assert all(row["cpu"] == cpu_description() and "BF16" in row["cpu"] for row in bf16.values())
    else:
        assert not bf16
    assert not any("cpu" in row for k, row in rows.items() if k not in bf16)
