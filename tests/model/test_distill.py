"""The sharp style's objective and trainer on a tiny network and a tiny target cache made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.discriminator import HighPass, PatchDiscriminator, build_discriminator
from model.distill import DistillObjective, DistillWeights, amplitude_l1, as_8bit
from model.distill_train import DistillTrainer, train
from model.edsr import EDSR, EDSRConfig
from model.train import TrainConfig
from model.weights import load_weights

SMALL = EDSRConfig(scale=4, n_resblocks=1, n_feats=16)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """Two shards of 32x32 LR crops whose 'teacher' is a nearest-neighbour x4 (any fixed map will do)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "targets"
    folder.mkdir()
    for k in range(2):
        lr = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
        target = lr.repeat(4, 1).repeat(4, 2)
        np.savez(folder / f"shard-{k:04d}.npz", lr=lr, target=target, hr=target)
    return folder


def tiny_cfg(cache: Path, out_dir: Path, **distill) -> TrainConfig:
    return TrainConfig(
        n_resblocks=1,
        n_feats=16,
        val_dir=None,
        teacher_targets=str(cache),
        patch_size=32,
        batch_size=2,
        steps=4,
        out_dir=str(out_dir),
        ckpt_every=2,
        distill=DistillWeights(**{"perceptual": 0.0, "fft": 1.0, "gan": 0.1, **distill}),
    )


def test_amplitude_l1_ignores_a_shift_but_not_a_blur() -> None:
    x = torch.rand(1, 3, 32, 32)
    shifted = torch.roll(x, shifts=(3, 5), dims=(2, 3))  # circular: the same amplitudes
    assert amplitude_l1(shifted, x) < 1e-5
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert amplitude_l1(blurred, x) > 0.05


def test_every_width_gets_a_gradient_and_the_disc_only_its_own() -> None:
    torch.manual_seed(0)
    model = EDSR(SMALL)
    objective = DistillObjective(model, DistillWeights(perceptual=0.0, fft=1.0, gan=0.1), None)
    lr = torch.rand(2, 3, 8, 8) * 255
    target = torch.rand(2, 3, 32, 32) * 255
    loss, outputs, terms = objective(lr, target, target)
    assert set(outputs) == {"@1"}  # gan_widths: full width alone meets the discriminator
    assert {"l1@0.25", "l1@0.5", "l1@1", "fft@1", "gan@1"} <= set(terms)
    loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    d_loss, _ = objective.disc_loss(target, outputs)
    assert torch.isfinite(d_loss)


def test_features_are_required_for_the_perceptual_term() -> None:
    with pytest.raises(ValueError, match="feature network"):
        DistillObjective(EDSR(SMALL), DistillWeights(perceptual=1.0), None)


def test_distillation_resumes_exactly_with_the_discriminator(cache: Path, tmp_path: Path) -> None:
    straight = DistillTrainer(tiny_cfg(cache, tmp_path / "a"))
    straight.run()
    interrupted = DistillTrainer(tiny_cfg(cache, tmp_path / "b"))
    interrupted.train_step()
    interrupted.train_step()
    interrupted.save_checkpoint()
    torch.manual_seed(123)
    resumed = DistillTrainer(tiny_cfg(cache, tmp_path / "b"))
    assert resumed.step == 2
    resumed.run()
    for a, b in ((straight.model, resumed.model), (straight.objective.disc, resumed.objective.disc)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_a_distilled_export_is_a_sharp_card(cache: Path, tmp_path: Path) -> None:
    export = tmp_path / "x4-sharp.safetensors"
    train(tiny_cfg(cache, tmp_path / "run").model_copy(update={"export": str(export)}))
    _, card = load_weights(export)
    assert card["style"] == "sharp"
    assert card["training"]["objective"]["distill"]["fft"] == 1.0


def test_a_windowed_amplitude_l1_sees_texture_moved_into_a_flat_area() -> None:
    flat = torch.full((1, 1, 32, 32), 0.5)
    texture = flat.clone()
    texture[..., :16, :16] += 0.2 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 8)  # a checker, top left
    moved = torch.roll(texture, shifts=(16, 16), dims=(2, 3))  # the same checker, bottom right
    assert amplitude_l1(moved, texture) < 1e-5  # one spectrum: the same energy, wherever it is
    assert amplitude_l1(moved, texture, window=16) > 1e-2  # per window: energy where the other is flat
    assert amplitude_l1(texture, texture, window=16) == 0


def test_a_new_stage_may_resize_the_discriminator_and_set_its_learning_rate(cache: Path, tmp_path: Path) -> None:
    first = DistillTrainer(tiny_cfg(cache, tmp_path / "run"))
    first.train_step()
    first.save_checkpoint()
    faster = DistillTrainer(tiny_cfg(cache, tmp_path / "run", disc_lr=4e-4))
    assert [g["lr"] for g in faster.disc_optimizer.param_groups] == [4e-4]  # the stage's, not the checkpoint's
    for x, y in zip(first.objective.disc.parameters(), faster.objective.disc.parameters(), strict=True):
        torch.testing.assert_close(x, y)  # the discriminator resumed
    wider = DistillTrainer(tiny_cfg(cache, tmp_path / "run", disc_feats=8))
    assert wider.step == 1 and wider.objective.disc.conv0.out_channels == 8  # a fresh one of the new size
    wider.train_step()


def test_a_stage_may_switch_to_the_patch_discriminator(cache: Path, tmp_path: Path) -> None:
    first = DistillTrainer(tiny_cfg(cache, tmp_path / "run"))
    first.train_step()
    first.save_checkpoint()
    patch = DistillTrainer(tiny_cfg(cache, tmp_path / "run", disc="patch", disc_feats=8))
    assert patch.step == 1 and isinstance(patch.objective.disc, PatchDiscriminator)  # the generator resumed
    patch.train_step()


def test_the_patch_discriminator_learns_to_tell_texture_from_its_blur() -> None:
    """The property the U-Net lacked on a CPU budget: it separates sharp from soft within a few dozen steps."""
    torch.manual_seed(0)
    disc = PatchDiscriminator(num_feat=8)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.9, 0.99))
    for _ in range(60):
        sharp = torch.rand(4, 3, 32, 32)
        soft = F.avg_pool2d(sharp, 3, 1, 1)
        real, fake = disc(sharp), disc(soft)
        assert real.shape == (4, 1, 4, 4)  # one logit per 8x8 block
        loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        loss = loss + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sharp = torch.rand(4, 3, 32, 32)  # unseen
    with torch.no_grad():
        p_real = torch.sigmoid(disc(sharp)).mean()
        p_fake = torch.sigmoid(disc(F.avg_pool2d(sharp, 3, 1, 1))).mean()
    assert p_real > 0.8 and p_fake < 0.2


def test_the_high_pass_discriminator_is_blind_to_what_the_l1_term_covers() -> None:
    torch.manual_seed(0)
    disc = build_discriminator("patch", 8, highpass_sigma=1.0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(disc(x + 0.2), disc(x))  # a brightness change is low frequency
        assert HighPass(1.0)(torch.full((1, 3, 16, 16), 0.7)).abs().max() < 1e-6
        checker = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat(8, 8).expand(1, 3, 16, 16)
        assert HighPass(1.0)(checker).abs().mean() > 1.0  # gain 4 x a residual of ~0.4


def test_l1_sigma_leaves_the_detail_above_it_to_the_other_terms() -> None:
    torch.manual_seed(0)
    model = EDSR(SMALL)
    lr = torch.rand(1, 3, 8, 8) * 255
    with torch.no_grad():
        out = model(lr, 1.0)
    checker = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat(16, 16).expand_as(out)
    target = out + 20 * (checker - 0.5)  # the teacher's output: the student's plus a fine texture
    only_l1 = {"perceptual": 0.0, "gan": 0.0, "fft": 0.0, "contrast": 0.0}
    terms = {
        sigma: DistillObjective(model, DistillWeights(l1_sigma=sigma, **only_l1), None)(lr, target, target)[2]["l1@1"]
        for sigma in (0.0, 1.5)
    }
    assert terms[0.0] > 0.035  # 10 / 255: the texture counts in full
    assert terms[1.5] < 0.002  # blurred away: only the border's reflect padding leaves a trace


def test_the_discriminator_sees_outputs_as_8_bit_with_a_straight_through_gradient() -> None:
    x = torch.tensor([0.1234, 0.5, -0.2, 1.3], requires_grad=True)
    y = as_8bit(x)
    torch.testing.assert_close(y * 255, torch.round(y * 255))
    assert y[2] == 0 and y[3] == 1
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 1.0, 0.0, 0.0]))  # clamped values pass none


def test_disc_steps_updates_the_discriminator_that_many_times(cache: Path, tmp_path: Path) -> None:
    trainer = DistillTrainer(tiny_cfg(cache, tmp_path / "run", disc="patch", disc_feats=8, disc_steps=3))
    trainer.train_step()
    assert {int(s["step"]) for s in trainer.disc_optimizer.state.values()} == {3}
