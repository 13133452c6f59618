from __future__ import annotations

import pytest
import torch
from torch import nn

from model.edsr import EDSR, EDSRConfig, count_macs, count_params

WIDTHS = (0.25, 0.5, 1.0)


def tiny(scale: int = 4, **kw) -> EDSR:
    torch.manual_seed(0)
    return EDSR(EDSRConfig(scale=scale, n_resblocks=2, n_feats=16, widths=WIDTHS, **kw))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("width", WIDTHS)
def test_output_shape_every_scale_and_width(scale: int, width: float) -> None:
    model = tiny(scale)
    out = model(torch.rand(2, 3, 9, 13) * 255, width)
    assert out.shape == (2, 3, 9 * scale, 13 * scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("width", WIDTHS)
def test_dense_subnetwork_equals_sliced_forward(scale: int, width: float) -> None:
    model = tiny(scale, res_scale=0.1).eval()
    x = torch.rand(1, 3, 12, 10) * 255
    with torch.no_grad():
        sliced = model(x, width)
        dense = model.dense(width)(x)
    assert dense.shape == sliced.shape
    torch.testing.assert_close(dense, sliced, rtol=0, atol=1e-4)


def test_dense_weights_are_contiguous_copies() -> None:
    model = tiny()
    dense = model.dense(0.5)
    for p in dense.parameters():
        assert p.is_contiguous()
    dense.head.weight.data.zero_()
    assert model.head.weight.abs().sum() > 0  # a copy, not a view


def test_widths_change_the_output() -> None:
    model = tiny()
    x = torch.rand(1, 3, 8, 8) * 255
    assert not torch.allclose(model(x, 0.25), model(x, 1.0))


@pytest.mark.parametrize("width", WIDTHS)
def test_gradient_reaches_exactly_the_shared_slice(width: float) -> None:
    model = tiny()
    model(torch.rand(1, 3, 8, 8) * 255, width).abs().mean().backward()
    c = model.cfg.channels(width)
    g = model.head.weight.grad
    assert g[:c].abs().sum() > 0
    assert g[c:].abs().sum() == 0
    for block in model.blocks:
        assert block.conv2.weight.grad[:c, :c].abs().sum() > 0
    assert model.tail.weight.grad[:, :c].abs().sum() > 0


def _direct_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += out.numel() * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("width", WIDTHS)
def test_param_and_mac_counts_match_a_direct_count(scale: int, width: float) -> None:
    model = tiny(scale)
    dense = model.dense(width)
    assert count_params(model.cfg, width) == sum(p.numel() for p in dense.parameters())
    assert count_macs(model.cfg, width, (7, 5)) == _direct_macs(dense, torch.rand(1, 3, 7, 5))


def test_edsr_baseline_size() -> None:
    cfg = EDSRConfig()  # 16 x 64, x4
    assert 1.5e6 < count_params(cfg, 1.0) < 1.55e6
    assert count_params(cfg, 0.25) < count_params(cfg, 0.5) < count_params(cfg, 1.0)


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        EDSRConfig(scale=5)
    with pytest.raises(ValueError):
        EDSRConfig(widths=(0.25, 0.5))
