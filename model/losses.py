"""CSD objective: L1 for the teacher and every student, plus the contrastive term.

    loss = sum_w [ L1(S_w, HR) + contra_lambda * CL(S_w) ] + t_lambda * L1(T, HR)
    CL   = sum_i v_i * d(phi_i(S), phi_i(T)) / (sum_k d(phi_i(S), phi_i(N_k)) + 1e-7)

with d the mean absolute difference, T detached, and negatives N_k the bicubic
upsamplings of K LR images of the batch (shared by every batch element).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.edsr import EDSR

LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


class ContrastiveLoss(nn.Module):
    """Anchor = student output, positive = teacher output, negatives = bicubic upsamplings."""

    def __init__(self, features: nn.Module, layer_weights: tuple[float, ...] = LAYER_WEIGHTS) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.layer_weights = layer_weights

    def train(self, mode: bool = True) -> ContrastiveLoss:
        super().train(mode)
        self.features.eval()  # frozen network: BatchNorm statistics must not move
        return self

    def reference(self, positive: torch.Tensor, negatives: torch.Tensor) -> tuple[list, list]:
        """Features of the (detached) positive and negatives, computed once per step."""
        with torch.no_grad():
            return self.features(positive.detach()), self.features(negatives.detach())

    def forward(self, anchor: torch.Tensor, reference: tuple[list, list]) -> torch.Tensor:
        return self.ratio(self.features(anchor), reference)

    def ratio(self, anchor_feats: list[torch.Tensor], reference: tuple[list, list]) -> torch.Tensor:
        """The contrastive term for an anchor's features already computed (shared with other terms)."""
        pos_feats, neg_feats = reference
        anchor = anchor_feats[0]
        if len(anchor_feats) != len(self.layer_weights):
            raise ValueError(f"{len(anchor_feats)} feature layers but {len(self.layer_weights)} weights")
        loss = anchor.new_zeros(())
        for v, a, p, n in zip(self.layer_weights, anchor_feats, pos_feats, neg_feats, strict=True):
            d_pos = (a - p).abs().mean()
            d_neg = (a.unsqueeze(1) - n.unsqueeze(0)).abs().mean(dim=(0, 2, 3, 4)).sum()
            loss = loss + v * d_pos / (d_neg + 1e-7)
        return loss


def bicubic_negatives(lr: torch.Tensor, scale: int, neg_num: int, generator: torch.Generator | None) -> torch.Tensor:
    """Bicubic xscale upsamplings of the first ``neg_num`` batch LR images in random order."""
    idx = torch.randperm(lr.shape[0], generator=generator)[:neg_num]
    return F.interpolate(lr[idx], scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 255)


class CSDObjective(nn.Module):
    """One training step's forward: teacher, every student, all loss terms.

    Wrapping all branches in one module means a single forward per backward,
    which is what DistributedDataParallel expects.
    """

    def __init__(
        self,
        model: EDSR,
        student_widths: tuple[float, ...],
        t_lambda: float = 1.0,
        contra_lambda: float = 200.0,
        neg_num: int = 10,
        contrastive: ContrastiveLoss | None = None,
    ) -> None:
        super().__init__()
        if contra_lambda > 0 and contrastive is None:
            raise ValueError("contra_lambda > 0 needs a feature network")
        unknown = set(student_widths) - set(model.widths)
        if unknown:
            raise ValueError(f"student widths {sorted(unknown)} are not in the ladder {model.widths}")
        self.model = model
        self.student_widths = tuple(w for w in student_widths if w != 1.0)
        self.t_lambda, self.contra_lambda, self.neg_num = t_lambda, contra_lambda, neg_num
        self.contrastive = contrastive if contra_lambda > 0 else None

    @property
    def runs_teacher(self) -> bool:
        return self.t_lambda > 0 or self.contrastive is not None

    def forward(
        self, lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total, terms = lr.new_zeros(()), {}
        reference = None
        if self.runs_teacher:
            teacher = self.model(lr, 1.0).float()
            if self.t_lambda > 0:
                l1 = F.l1_loss(teacher, hr)
                total = total + self.t_lambda * l1
                terms["l1@1"] = l1.item()
            if self.contrastive is not None:
                negatives = bicubic_negatives(lr, self.model.cfg.scale, self.neg_num, generator)
                reference = self.contrastive.reference(teacher, negatives)
        for w in self.student_widths:
            student = self.model(lr, w).float()
            l1 = F.l1_loss(student, hr)
            total = total + l1
            terms[f"l1@{w:g}"] = l1.item()
            if reference is not None:
                cl = self.contrastive(student, reference)
                total = total + self.contra_lambda * cl
                terms[f"cl@{w:g}"] = cl.item()
        return total, terms
