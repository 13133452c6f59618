"""The sharp style's objective: every width of the CSD network learns the GAN teacher's output.

Per width ``w`` (the full width included: here the teacher is the external GAN, not width 1), on images
scaled to 0..1 so the weights read as Real-ESRGAN's (L1 1, perceptual 1, GAN 0.1):

    loss_w = l1 * L1(B(S_w), B(T)) + l1_hr * L1(S_w, HR) + perceptual * P(S_w, T) + gan * G(S_w)
             + fft * F(S_w, T) + contrast * CL(S_w; positive T, negatives bicubic(LR))

B is the identity, or a Gaussian blur of ``l1_sigma`` px (the detail above it left to F and G), P the L1
between feature maps of the frozen feature network, G the generator's side of a vanilla GAN
against a discriminator of :mod:`model.discriminator` whose real samples are the teacher's outputs
(optionally judging their high frequencies alone),
F the L1 between the amplitude spectra (phase-free: texture energy without exact placement; per window of
``fft_window`` px, so the energy goes where the teacher has it and not into its flat areas), CL the
method's contrastive term with the teacher's output as the positive.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from model.discriminator import GaussianBlur, build_discriminator
from model.edsr import EDSR
from model.losses import ContrastiveLoss, bicubic_negatives

PERCEPTUAL_WEIGHTS = (0.1, 0.1, 1.0, 1.0, 1.0)  # Real-ESRGAN's VGG weights, shallow to deep


class DistillWeights(BaseModel):
    """The terms' weights (0 switches a term off) and the discriminator's settings."""

    model_config = ConfigDict(extra="forbid")

    l1: float = 1.0
    # > 0: L1 to the teacher compares the images' Gaussian blurs of this sigma, leaving the detail above it to
    # the phase-free and adversarial terms (the frequency separation of Fritsche et al. 2019)
    l1_sigma: float = 0.0
    l1_hr: float = 0.0
    perceptual: float = 1.0
    gan: float = 0.1
    fft: float = 0.0
    # 0: one spectrum per patch (stages 1-4: a grid in flat areas at fft 2); N: per N x N window
    fft_window: int = 0
    contrast: float = 0.0
    neg_num: int = 4
    # widths whose outputs meet the discriminator (its passes cost about what the network's do on a CPU;
    # the narrower widths share these weights and learn the look through them and the other terms)
    gan_widths: tuple[float, ...] = (1.0,)
    disc: Literal["unet", "patch"] = "unet"
    disc_feats: int = 16
    disc_lr: float = 1e-4
    # discriminator updates per generator update, on the same outputs (a patch discriminator's cost little)
    disc_steps: int = 1
    # > 0: the discriminator judges the image minus its Gaussian blur of this sigma (model.discriminator.HighPass)
    disc_highpass: float = 0.0


def amplitude_l1(a: torch.Tensor, b: torch.Tensor, window: int = 0) -> torch.Tensor:
    """Mean absolute difference of the 2-D amplitude spectra (orthonormal FFT, per channel): of the whole
    image, or of each non-overlapping ``window`` x ``window`` block (a remainder at the edges is left out)."""
    if window:
        a, b = (_blocks(x, window) for x in (a, b))
    return (torch.fft.rfft2(a, norm="ortho").abs() - torch.fft.rfft2(b, norm="ortho").abs()).abs().mean()


def as_8bit(x01: torch.Tensor) -> torch.Tensor:
    """``x01`` clamped and rounded to the 8-bit grid the teacher's outputs are on, the gradient passing as if
    unrounded. Without it a discriminator could tell a float output from an 8-bit one by the rounding's dither in
    flat areas alone (in a probe at GAN 0.03, flat noise 4.61 without, 3.41 with it: bench/results/sharp)."""
    x01 = x01.clamp(0, 1)
    return x01 + (torch.round(x01 * 255) / 255 - x01).detach()


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """N x C x H x W -> N x C x H/size x W/size x size x size (the last two dims: one block)."""
    return x.unfold(2, size, size).unfold(3, size, size)


class DistillObjective(nn.Module):
    """One step's generator loss over every width, and the discriminator's loss on the same outputs."""

    def __init__(self, model: EDSR, weights: DistillWeights, features: nn.Module | None) -> None:
        super().__init__()
        self.model, self.w = model, weights
        needs_features = weights.perceptual > 0 or weights.contrast > 0
        if needs_features and features is None:
            raise ValueError("the perceptual and contrastive terms need a feature network")
        self.contrastive = ContrastiveLoss(features) if needs_features else None
        self.disc = (
            build_discriminator(weights.disc, weights.disc_feats, weights.disc_highpass) if weights.gan > 0 else None
        )
        self.l1_view = GaussianBlur(weights.l1_sigma) if weights.l1_sigma > 0 else nn.Identity()

    def _perceptual(self, feats: list[torch.Tensor], ref: list[torch.Tensor]) -> torch.Tensor:
        return sum(v * F.l1_loss(a, r) for v, a, r in zip(PERCEPTUAL_WEIGHTS, feats, ref, strict=True))

    def forward(
        self, lr: torch.Tensor, target: torch.Tensor, hr: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
        """(generator loss, the ``gan_widths`` outputs detached for the discriminator, logged terms)."""
        w, total, terms, outputs = self.w, lr.new_zeros(()), {}, {}
        t01, hr01 = target / 255, hr / 255
        t01_l1 = self.l1_view(t01)
        reference = None
        if self.contrastive is not None:
            negatives = bicubic_negatives(lr, self.model.cfg.scale, w.neg_num, generator)
            reference = self.contrastive.reference(target, negatives)
        for width in self.model.widths:
            out = self.model(lr, width).float()
            out01, tag = out / 255, f"@{width:g}"
            if width in w.gan_widths:
                served = as_8bit(out01)
                outputs[tag] = served.detach()
            parts = {"l1": w.l1 * F.l1_loss(self.l1_view(out01), t01_l1)}
            if w.l1_hr:
                parts["l1_hr"] = w.l1_hr * F.l1_loss(out01, hr01)
            if w.fft:
                parts["fft"] = w.fft * amplitude_l1(out01, t01, w.fft_window)
            if reference is not None:
                feats = self.contrastive.features(out)
                if w.perceptual:
                    parts["perc"] = w.perceptual * self._perceptual(feats, reference[0])
                if w.contrast:
                    parts["cl"] = w.contrast * self.contrastive.ratio(feats, reference)
            if self.disc is not None and width in w.gan_widths:
                logits = self.disc(served)
                parts["gan"] = w.gan * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            for name, value in parts.items():
                total = total + value
                terms[name + tag] = value.item()
        return total, outputs, terms

    def disc_loss(self, target: torch.Tensor, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        """Vanilla GAN loss of the discriminator: the teacher's outputs real, every width's fake."""
        real = self.disc(target / 255)
        loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        for out in outputs.values():
            fake = self.disc(out)
            loss = loss + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)) / len(outputs)
        return loss, loss.item()
