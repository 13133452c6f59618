"""bf16 rungs: built only where the CPU computes bf16 natively, and then, for every shipped model, within 0.02 dB
of fp32 on Set5."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.edsr import EDSR, EDSRConfig
from model.evaluate import evaluate_sets, openvino_forwards
from model.openvino import native_bf16, rung_models
from model.rungs import Rung
from model.weights import load_weights
from service.settings import shipped_weights

ROOT = Path(__file__).resolve().parents[2]
SET5 = ROOT.parent / "shared" / "data" / "Set5" / "HR"


def test_bf16_rungs_exist_exactly_where_the_cpu_has_bf16() -> None:
    model = EDSR(EDSRConfig(n_resblocks=1, n_feats=8))
    models, note = rung_models(model, None, ("fp32", "bf16"))
    bf16 = {r for r in models if r.precision == "bf16"}
    if native_bf16():
        assert bf16 == {Rung(w, "bf16") for w in model.widths} and note is None
    else:  # left out, and the reason names the CPU's capabilities
        assert not bf16 and note is not None and "bf16 rungs left out" in note and "capabilities" in note
    assert {r for r in models if r.precision == "fp32"} == {Rung(w) for w in model.widths}


@pytest.mark.shared_data
@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 (no AVX512-BF16 or AMX): no bf16 rungs")
@pytest.mark.parametrize("weights", shipped_weights(), ids=lambda p: p.stem)
def test_every_bf16_rung_is_within_0_02_db_of_fp32_on_set5(weights: Path) -> None:
    model, _ = load_weights(weights)
    forwards = openvino_forwards(model, weights, threads=2, precisions=("fp32", "bf16"))
    rows = evaluate_sets(model, [SET5], forwards, timing=False)["Set5"]["rows"]
    for w in model.widths:
        fp32, bf16 = rows[Rung(w).key]["psnr"], rows[Rung(w, "bf16").key]["psnr"]
        assert abs(fp32 - bf16) <= 0.02, (w, fp32, bf16)
