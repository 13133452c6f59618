"""Training loop of the sharp style: :class:`model.train.Trainer` with the distillation objective.

Adds what a GAN needs to the CSD loop: the discriminator's own Adam (Real-ESRGAN's betas 0.9 / 0.99),
``disc_steps`` discriminator updates per generator update on the same outputs, both in the checkpoint so a resumed
run continues exactly. The shared weights and every width train as in CSD (one weight file).
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.distill import DistillObjective
from model.teacher_data import DistillSampler
from model.train import TrainConfig, Trainer, build_feature_net, descend


class DistillTrainer(Trainer):
    def _build_objective(self) -> torch.nn.Module:
        weights = self.cfg.distill
        features = build_feature_net(self.cfg) if weights.perceptual > 0 or weights.contrast > 0 else None
        objective = DistillObjective(self.model, weights, features)
        disc = objective.disc
        self.disc_optimizer = (
            torch.optim.Adam(disc.parameters(), lr=weights.disc_lr, betas=(0.9, 0.99)) if disc is not None else None
        )
        return objective

    def _build_sampler(self) -> DistillSampler:
        return DistillSampler(Path(self.cfg.teacher_targets).expanduser(), self.cfg.patch_size, scale=self.cfg.scale)

    def extra_state(self) -> dict:
        if self.disc_optimizer is None:
            return {}
        return {"disc": self.objective.disc.state_dict(), "disc_optimizer": self.disc_optimizer.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        """The discriminator and its optimizer, at this config's ``disc_lr``; a discriminator of another kind or
        size (``disc``, ``disc_feats`` changed between stages) starts afresh against the resumed generator."""
        if self.disc_optimizer is None or "disc" not in state:
            return
        disc = self.objective.disc
        shapes = {k: v.shape for k, v in disc.state_dict().items()}
        if shapes != {k: v.shape for k, v in state["disc"].items()}:
            weights = self.cfg.distill
            self._log(f"{weights.disc} discriminator of {weights.disc_feats} features: starts afresh")
            return
        disc.load_state_dict(state["disc"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        for group in self.disc_optimizer.param_groups:
            group["lr"] = self.cfg.distill.disc_lr

    def train_step(self) -> dict[str, float]:
        batch = self.sampler.sample(self.cfg.batch_size, self.generator)
        lr, target, hr = (t.to(self.device) for t in batch)
        self.set_lr()
        self.objective.train()
        disc = self.objective.disc
        if disc is not None:
            disc.requires_grad_(False)  # the generator's step must not move the discriminator
        with self._autocast():
            loss, outputs, terms = self.objective(lr, target, hr, self.generator)
        self.optimizer_step(loss)
        if disc is not None:
            disc.requires_grad_(True)
            for _ in range(self.cfg.distill.disc_steps):
                with self._autocast():
                    d_loss, terms["d"] = self.objective.disc_loss(target, outputs)
                descend(self.disc_optimizer, d_loss)
        self.step += 1
        return {"loss": loss.item(), **terms}


def train(cfg: TrainConfig) -> Trainer:
    """Run ``cfg``: a distillation when it names teacher targets, CSD's own objective otherwise."""
    trainer = DistillTrainer(cfg) if cfg.teacher_targets else Trainer(cfg)
    trainer.run()
    return trainer
