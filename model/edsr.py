"""Width-switchable EDSR (CSD's channel-sharing "self-distillation" network).

A student of width ``w`` is the same network restricted to the first
``int(n_feats * w)`` channels of every feature layer (see docs/csd-method.md).
``forward(x, width)`` slices on the fly, which is what training needs; serving
uses :meth:`EDSR.dense`, a narrower EDSR holding contiguous copies of the slice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

RGB_MEAN = (0.4488, 0.4371, 0.4040)


@dataclass(frozen=True)
class EDSRConfig:
    """Architecture hyper-parameters; serialised into the model card."""

    scale: int = 4
    n_resblocks: int = 16
    n_feats: int = 64
    res_scale: float = 1.0
    rgb_range: float = 255.0
    widths: tuple[float, ...] = field(default=(0.25, 0.5, 1.0))

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}")
        widths = tuple(sorted(float(w) for w in self.widths))
        if not widths or widths[-1] != 1.0 or widths[0] <= 0:
            raise ValueError(f"widths must lie in (0, 1] and include 1.0, got {self.widths}")
        object.__setattr__(self, "widths", widths)

    def channels(self, width: float) -> int:
        """Feature channels used at ``width`` (the method's ``int(C * w)``)."""
        return int(self.n_feats * width)

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}


class SlimConv2d(nn.Conv2d):
    """3x3 conv whose forward may use only the first input/output channels."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor, out_ch: int | None = None) -> torch.Tensor:
        out_ch = self.out_channels if out_ch is None else out_ch
        in_ch = x.shape[1]
        if (out_ch, in_ch) == (self.out_channels, self.in_channels):
            return super().forward(x)
        return F.conv2d(x, self.weight[:out_ch, :in_ch], self.bias[:out_ch], padding=1)


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = SlimConv2d(n_feats, n_feats)
        self.conv2 = SlimConv2d(n_feats, n_feats)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        res = self.conv2(F.relu(self.conv1(x, c)), c)
        return x + res * self.res_scale


class Upsampler(nn.Module):
    """conv -> PixelShuffle, once for x2/x3, twice (x2, x2) for x4.

    Taking the first ``r*r*c`` conv outputs gives exactly the first ``c``
    shuffled channels, so slicing stays consistent through the shuffle.
    """

    def __init__(self, scale: int, n_feats: int) -> None:
        super().__init__()
        factors = [2, 2] if scale == 4 else [scale]
        self.factors = factors
        self.convs = nn.ModuleList(SlimConv2d(n_feats, r * r * n_feats) for r in factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        for r, conv in zip(self.factors, self.convs, strict=True):
            x = F.pixel_shuffle(conv(x, r * r * c), r)
        return x


class EDSR(nn.Module):
    """EDSR whose ``forward(x, width)`` runs the width-``width`` student.

    Inputs and outputs are RGB in ``[0, rgb_range]`` (255 as in EDSR/CSD, so the
    published loss weights keep their meaning).
    """

    def __init__(self, cfg: EDSRConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or EDSRConfig()
        C = cfg.n_feats
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1) * cfg.rgb_range, persistent=False)
        self.head = SlimConv2d(3, C)
        self.blocks = nn.ModuleList(ResBlock(C, cfg.res_scale) for _ in range(cfg.n_resblocks))
        self.body_conv = SlimConv2d(C, C)
        self.upsampler = Upsampler(cfg.scale, C)
        self.tail = SlimConv2d(C, 3)

    @property
    def widths(self) -> tuple[float, ...]:
        return self.cfg.widths

    def forward(self, x: torch.Tensor, width: float = 1.0) -> torch.Tensor:
        c = self.cfg.channels(width)
        x = x - self.rgb_mean
        h = self.head(x, c)
        res = h
        for block in self.blocks:
            res = block(res)
        res = self.body_conv(res, c) + h
        return self.tail(self.upsampler(res), 3) + self.rgb_mean

    def sliced_state_dict(self, width: float) -> dict[str, torch.Tensor]:
        """Contiguous copies of the weights the width-``width`` student uses."""
        c = self.cfg.channels(width)
        out: dict[str, torch.Tensor] = {}
        for name, p in self.state_dict().items():
            module = self.get_submodule(name.rsplit(".", 1)[0])
            out_full, in_full = module.out_channels, module.in_channels
            out_c = 3 if out_full == 3 else out_full * c // self.cfg.n_feats
            in_c = 3 if in_full == 3 else c
            out[name] = (p[:out_c, :in_c] if p.ndim == 4 else p[:out_c]).clone().contiguous()
        return out

    def dense(self, width: float) -> EDSR:
        """A standalone full-width EDSR equal to this network's ``width`` student."""
        cfg = EDSRConfig(
            scale=self.cfg.scale,
            n_resblocks=self.cfg.n_resblocks,
            n_feats=self.cfg.channels(width),
            res_scale=self.cfg.res_scale,
            rgb_range=self.cfg.rgb_range,
            widths=(1.0,),
        )
        sub = EDSR(cfg).to(self.head.weight.device)
        sub.load_state_dict(self.sliced_state_dict(width))
        return sub.eval().requires_grad_(False)


def count_params(cfg: EDSRConfig, width: float = 1.0) -> int:
    """Trainable parameters of the width-``width`` student, from the architecture."""
    c = cfg.channels(width)

    def conv(cin: int, cout: int) -> int:
        return cout * cin * 9 + cout

    factors = [2, 2] if cfg.scale == 4 else [cfg.scale]
    total = conv(3, c) + 2 * cfg.n_resblocks * conv(c, c) + conv(c, c) + conv(c, 3)
    return total + sum(conv(c, r * r * c) for r in factors)


def count_macs(cfg: EDSRConfig, width: float, lr_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass on an ``lr_hw`` input, from the architecture."""
    c = cfg.channels(width)
    pixels = lr_hw[0] * lr_hw[1]
    macs = pixels * 9 * (3 * c + (2 * cfg.n_resblocks + 1) * c * c)
    for r in [2, 2] if cfg.scale == 4 else [cfg.scale]:
        macs += pixels * 9 * c * r * r * c
        pixels *= r * r
    return macs + pixels * 9 * c * 3
