"""U-Net discriminator with spectral normalisation (Real-ESRGAN's), for the sharp style's adversarial term.

It scores every output pixel real or fake, so it judges local texture where a patch discriminator's
few outputs average it away. ``num_feat`` 64 in Real-ESRGAN; narrower here for a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class UNetDiscriminatorSN(nn.Module):
    def __init__(self, num_in_ch: int = 3, num_feat: int = 32) -> None:
        super().__init__()
        f = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.down = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 4, 2, 1, bias=False)) for a, b in ((f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f))
        )
        self.up = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 3, 1, 1, bias=False)) for a, b in ((8 * f, 4 * f), (4 * f, 2 * f), (2 * f, f))
        )
        self.extra = nn.ModuleList(spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False)) for _ in range(2))
        self.out = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits for ``x`` in 0..1, shape Bx1xHxW (H, W multiples of 8)."""
        skips = [F.leaky_relu(self.conv0(x), 0.2)]
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), 0.2))
        h = skips.pop()
        for conv in self.up:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = F.leaky_relu(conv(h), 0.2) + skips.pop()
        for conv in self.extra:
            h = F.leaky_relu(conv(h), 0.2)
        return self.out(h)
