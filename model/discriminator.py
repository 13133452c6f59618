"""Discriminators for the sharp style's adversarial term.

:class:`UNetDiscriminatorSN` is Real-ESRGAN's (``num_feat`` 64 there; narrower here for a CPU): one logit per
output pixel. On this project's CPU budget it stayed at chance for thousands of steps (stages 1-6 of
``bench/results/sharp/recipes.md``) and cost about as much as the generator's step. :class:`PatchDiscriminator`
(pix2pix's PatchGAN without normalisation) costs a fourteenth of it and, on the same batches, told the teacher's
outputs from the student's on batches it had not seen within a few hundred steps, slower still inside the
training loop. :class:`HighPass` in front of it (the Frequency Separation of Fritsche et al., ICCVW 2019: the
adversarial term on the high frequencies, whose absence is what blurs) separated them within 50 steps.
"""

from __future__ import annotations

import math

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


class PatchDiscriminator(nn.Module):
    """PatchGAN: three stride-2 convolutions and two 3x3, one logit per 8x8 output block (a receptive field of
    54 px). No normalisation layer: batch statistics would mix the real and fake batches it scores apart."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 32) -> None:
        super().__init__()
        f = num_feat
        layers: list[nn.Module] = []
        for a, b in ((num_in_ch, f), (f, 2 * f), (2 * f, 4 * f)):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(4 * f, 8 * f, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(8 * f, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` in 0..1, shape Bx1x(H/8)x(W/8)."""
        return self.net(x)


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of ``sigma`` px, reflect-padded: an image's coarse content alone."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        radius = math.ceil(3 * sigma)
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        self.register_buffer("kernel", kernel / kernel.sum(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, r = x.shape[1], self.kernel.numel() // 2
        k = self.kernel.to(x.dtype)
        x = F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class HighPass(nn.Module):
    """``gain`` x (the image minus its :class:`GaussianBlur` of ``sigma`` px): its fine detail alone.

    The detail is a few levels of 255 beside content of hundreds; on the image itself a discriminator spends
    its first hundreds of steps on the content, which teacher and student share (``gain`` 4: the probe's)."""

    def __init__(self, sigma: float, gain: float = 4.0) -> None:
        super().__init__()
        self.blur, self.gain = GaussianBlur(sigma), gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (x - self.blur(x))


DISCRIMINATORS: dict[str, type[nn.Module]] = {"unet": UNetDiscriminatorSN, "patch": PatchDiscriminator}


def build_discriminator(kind: str, num_feat: int, highpass_sigma: float = 0.0) -> nn.Module:
    """A discriminator of ``DISCRIMINATORS``, judging the :class:`HighPass` of its input if ``highpass_sigma`` > 0."""
    disc = DISCRIMINATORS[kind](num_feat=num_feat)
    return nn.Sequential(HighPass(highpass_sigma), disc) if highpass_sigma > 0 else disc
