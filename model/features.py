"""Frozen feature networks for the contrastive term; each returns five feature maps.

* ``vgg19``: the method's network. torchvision-layout ``features.*`` weights from a
  local file; outputs after relu1_1, relu2_1, relu3_1, relu4_1, relu5_1, fed
  0..255 values without normalisation as the public CSD code does.
* ``efficientnet-lite0``: CPU-affordable stand-in with offline ImageNet weights.
  Outputs (shallow to deep, like VGG's five): the stem (32 ch, 1/2), block 0
  (16 ch, 1/2), block 2 (24 ch, 1/4), block 4 (40 ch, 1/8), block 7 (80 ch, 1/16);
  the blocks after 7 are never run, which keeps the cost down. Inputs are mapped
  from 0..255 to [-1, 1], the range the checkpoint was trained on.
"""

from __future__ import annotations

import torch
from torch import nn

from model.efficientnet_lite import efficientnet_lite0

VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
VGG19_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
EFFNET_TAPS = (0, 2, 4, 7)  # blocks whose outputs are taken (after the stem)


def vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features`` layout (same module indices)."""
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG19_LAYOUT:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers)


class VGG19Features(nn.Module):
    def __init__(self, weights: str | None) -> None:
        super().__init__()
        features = vgg19_features()
        if weights:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            features.load_state_dict(state, strict=True)
        self.slices = nn.ModuleList(features[a:b] for a, b in VGG19_SLICES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s in self.slices:
            x = s(x)
            outs.append(x)
        return outs


class EfficientNetLite0Features(nn.Module):
    def __init__(self, weights: str | None) -> None:
        super().__init__()
        net = efficientnet_lite0(weights)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks[: EFFNET_TAPS[-1] + 1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x / 127.5 - 1.0)
        outs = [h]
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in EFFNET_TAPS:
                outs.append(h)
        return outs


def build_feature_extractor(name: str, weights: str | None = None) -> nn.Module:
    """Frozen, eval-mode feature network by name."""
    if name == "vgg19":
        if not weights:
            raise ValueError("vgg19 needs --feature-weights: a torchvision VGG-19 state dict (e.g. vgg19-dcbb9e9d.pth)")
        net: nn.Module = VGG19Features(weights)
    elif name == "efficientnet-lite0":
        net = EfficientNetLite0Features(weights)
    else:
        raise ValueError(f"unknown feature network {name!r}")
    return net.eval().requires_grad_(False)
