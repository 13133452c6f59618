from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.cli import main as cli_main
from model.degradations import TRAINING_RECIPES
from model.train import TrainConfig, Trainer, auto_bf16, bf16_speedup, lr_factor, native_bf16
from model.weights import load_weights
from tests.conftest import synthetic_image, write_png

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path) -> Path:
    folder = tmp_path / "HR"
    folder.mkdir()
    write_png(folder / "a.png", synthetic_image(48, 48, seed=1))
    return folder


def tiny_cfg(data_dir: Path, out_dir: Path, **kw) -> TrainConfig:
    base = dict(
        n_resblocks=2,
        n_feats=16,
        train_dirs=[str(data_dir)],
        val_dir=None,
        patch_size=32,
        batch_size=4,
        contra_lambda=0.0,
        steps=4,
        lr=1e-3,
        out_dir=str(out_dir),
        ckpt_every=2,
        log_every=1,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_overfit_one_image_lowers_l1_for_every_width(tmp_path) -> None:
    folder = tmp_path / "HR"
    folder.mkdir()
    write_png(folder / "clean.png", synthetic_image(32, 32, seed=2, noise=0))
    cfg = tiny_cfg(folder, tmp_path / "run", n_feats=32, steps=300, lr=2e-3, lr_schedule="constant")
    trainer = Trainer(cfg)
    first = trainer.train_step()
    for _ in range(298):
        trainer.train_step()
    last = trainer.train_step()
    for key in ("l1@1", "l1@0.5", "l1@0.25"):
        assert last[key] < first[key] / 5, (key, first[key], last[key])


def test_resume_continues_exactly(data_dir, tmp_path) -> None:
    straight = Trainer(tiny_cfg(data_dir, tmp_path / "a"))
    straight.run()
    interrupted = Trainer(tiny_cfg(data_dir, tmp_path / "b"))
    interrupted.train_step()
    interrupted.train_step()
    interrupted.save_checkpoint()
    torch.manual_seed(123)  # a fresh process would not share the interrupted one's global RNG
    resumed = Trainer(tiny_cfg(data_dir, tmp_path / "b"))
    assert resumed.step == 2
    resumed.run()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_contrastive_run_validates_and_exports(data_dir, tmp_path) -> None:
    export = tmp_path / "w" / "model.safetensors"
    cfg = tiny_cfg(data_dir, tmp_path / "run", contra_lambda=200.0, neg_num=2, val_dir=str(data_dir), val_every=2)
    cfg.export = str(export)
    trainer = Trainer(cfg)
    trainer.run()
    assert [h["step"] for h in trainer.history] == [2, 4]
    model, card = load_weights(export)
    assert model.cfg == trainer.model.cfg
    for a, b in zip(model.state_dict().values(), trainer.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert card["training"]["objective"]["feature_net"] == "efficientnet-lite0"
    assert card["training"]["steps"] == 4
    assert set(card["per_width"]) == {"0.25", "0.5", "1"}


def test_card_carries_the_init_weights_history_and_training_time(data_dir, tmp_path) -> None:
    weights = tmp_path / "model.safetensors"
    Trainer(tiny_cfg(data_dir, tmp_path / "stage1", steps=2, export=str(weights))).run()
    stage1 = json.loads(weights.with_suffix(".json").read_text())["training"]
    # stage 2 overwrites the file it started from, as a new training cycle of the shipped model does
    stage2 = tiny_cfg(data_dir, tmp_path / "stage2", steps=3, init_weights=str(weights), export=str(weights))
    Trainer(stage2).run()
    reexported = tmp_path / "re.safetensors"
    cli_main(["export", "--checkpoint", str(tmp_path / "stage2" / "last.pt"), "--out", str(reexported)])
    for exported in (weights, reexported):
        card = json.loads(exported.with_suffix(".json").read_text())["training"]
        assert card["steps"] == 3 and card["init"] == stage1 and card["init"]["init"] is None
        assert card["train_seconds"] > 0 and "threads" in card["hardware"]


def test_lr_schedules() -> None:
    cfg = TrainConfig(steps=100, lr_schedule="step", lr_milestones=(50,), warmup_steps=10)
    assert lr_factor(cfg, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 20) == 1.0 and lr_factor(cfg, 60) == pytest.approx(0.1)
    cosine = TrainConfig(steps=100)
    assert lr_factor(cosine, 0) == 1.0 and lr_factor(cosine, 100) == pytest.approx(0.01)


def test_auto_bf16_times_bf16_only_where_the_cpu_has_it() -> None:
    cpu = torch.device("cpu")
    bf16, why = auto_bf16(cpu)
    if not native_bf16(cpu):
        assert not bf16 and "emulated" in why
        return
    speedup = bf16_speedup(torch.get_num_threads())
    assert speedup > 0 and bf16 is (speedup >= 1.1) and f"{speedup:.2f}x" in why
    rng = torch.get_rng_state()
    bf16_speedup.cache_clear()
    bf16_speedup(1)
    assert torch.equal(torch.get_rng_state(), rng)  # timing does not move the seeded stream


def test_cli_train_with_toml_and_flag_overrides(data_dir, tmp_path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f'n_resblocks = 1\nn_feats = 8\ntrain_dirs = ["{data_dir}"]\npatch_size = 32\nbatch_size = 2\n'
        f'contra_lambda = 0.0\nsteps = 50\nout_dir = "{tmp_path / "run"}"\nbf16 = "auto"\n'
    )
    cli_main(["train", "--config", str(config), "--steps", "2", "--student-widths", "0.5", "--val-dir", "none"])
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 2
    config_ran = json.loads(state["config"])
    assert config_ran["student_widths"] == [0.5]
    assert config_ran["bf16"] is auto_bf16(torch.device("cpu"))[0]  # "auto" is resolved before it is recorded
    cli_main(["export", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "m.safetensors")])
    model, card = load_weights(tmp_path / "m.safetensors")
    assert model.cfg.n_feats == 8 and card["training"]["steps"] == 2


@pytest.mark.slow
def test_torchrun_two_processes_keep_weights_identical(data_dir, tmp_path) -> None:
    cfg = tiny_cfg(data_dir, tmp_path, steps=3).model_dump()
    # a fresh LR cache: both ranks fill it at once, as on a first run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CSD_SR_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run([*cmd, str(ROOT / "tests/model/ddp_worker.py"), json.dumps(cfg)], check=True, env=env, timeout=300)
    w0, w1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    for name in w0:
        torch.testing.assert_close(w0[name], w1[name], rtol=0, atol=0, msg=name)
    n0, n1 = (load_file(tmp_path / f"rank{r}-next.safetensors")["next_patch"] for r in (0, 1))
    assert not torch.equal(n0, n1)  # ranks sample different data
    torch.manual_seed(cfg["seed"])
    from model.edsr import EDSR

    init = EDSR(TrainConfig(**cfg).edsr()).state_dict()
    assert not torch.equal(init["head.weight"], w0["head.weight"])  # training really happened


@pytest.mark.parametrize("config", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml")))
def test_every_shipped_config_is_a_valid_run(config: Path) -> None:
    """Each configs/*.toml parses (no unknown key), builds its architecture, and starts from a file that exists."""
    cfg = TrainConfig.from_toml(config)
    assert cfg.edsr().scale == cfg.scale and cfg.patch_size % cfg.scale == 0
    root = config.parents[1]
    if cfg.init_weights:
        assert (root / cfg.init_weights).is_file(), cfg.init_weights
    assert cfg.degradation in TRAINING_RECIPES and (cfg.export is None or cfg.export.startswith("weights/"))


def test_the_moving_average_resumes_exactly_and_is_what_ships(data_dir, tmp_path) -> None:
    """ema_decay: the average of the weights is checkpointed, resumed and exported (by the run and by
    ``csd-sr export``), and it is the average: after step 1 the first weights, then decay x old + rest x new."""
    cfg = tiny_cfg(data_dir, tmp_path / "a", ema_decay=0.5, export=str(tmp_path / "run.safetensors"))
    straight = Trainer(cfg)
    straight.train_step()
    first = {k: v.clone() for k, v in straight.model.state_dict().items()}
    torch.testing.assert_close(straight.exported_model.state_dict(), first)
    straight.train_step()
    for name, v in straight.model.state_dict().items():
        torch.testing.assert_close(straight.exported_model.state_dict()[name], 0.5 * first[name] + 0.5 * v)
    straight.run()
    interrupted = Trainer(tiny_cfg(data_dir, tmp_path / "b", ema_decay=0.5))
    interrupted.train_step()
    interrupted.train_step()
    interrupted.save_checkpoint()
    torch.manual_seed(123)
    resumed = Trainer(tiny_cfg(data_dir, tmp_path / "b", ema_decay=0.5))
    resumed.run()
    torch.testing.assert_close(
        resumed.exported_model.state_dict(), straight.exported_model.state_dict(), rtol=0, atol=0
    )
    shipped, _ = load_weights(tmp_path / "run.safetensors")
    torch.testing.assert_close(shipped.state_dict(), straight.exported_model.state_dict())
    cli_main(["export", "--checkpoint", str(tmp_path / "b" / "last.pt"), "--out", str(tmp_path / "cli.safetensors")])
    exported, _ = load_weights(tmp_path / "cli.safetensors")
    torch.testing.assert_close(exported.state_dict(), straight.exported_model.state_dict(), rtol=0, atol=0)
    assert not any(
        torch.equal(a, b)
        for a, b in zip(exported.state_dict().values(), straight.model.state_dict().values(), strict=True)
        if a.dtype.is_floating_point and a.numel() > 1
    )


def test_a_run_that_starts_averaging_at_a_checkpoint_averages_from_its_weights(data_dir, tmp_path) -> None:
    plain = Trainer(tiny_cfg(data_dir, tmp_path / "run"))
    plain.train_step()
    plain.save_checkpoint()
    averaging = Trainer(tiny_cfg(data_dir, tmp_path / "run", ema_decay=0.9))
    torch.testing.assert_close(averaging.exported_model.state_dict(), plain.model.state_dict(), rtol=0, atol=0)
