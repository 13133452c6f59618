"""CSD training loop: single process, or ``torchrun`` with DistributedDataParallel.

Checkpoints (``<out_dir>/last.pt``) hold model, optimizer, step and every RNG
state, so a resumed run continues exactly; the final model is exported in the
shipped safetensors + card format.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import time
import tomllib
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from model.data import PatchSampler, default_cache_dir, degrade_pairs, load_pairs
from model.degradations import TRAINING_RECIPES, noise_level
from model.distill import DistillWeights
from model.edsr import EDSR, EDSRConfig
from model.evaluate import evaluate_widths
from model.losses import ContrastiveLoss, CSDObjective
from model.weights import card_path, load_matching, save_weights

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class TrainConfig(BaseModel):
    """Every knob of a run; set by a TOML file and overridden by command-line flags."""

    model_config = ConfigDict(extra="forbid")

    # architecture
    scale: int = 4
    n_resblocks: int = 16
    n_feats: int = 64
    res_scale: float = 1.0
    widths: tuple[float, ...] = (0.25, 0.5, 1.0)
    # data
    train_dirs: list[str] = [str(SHARED_DATA / "train/T91/HR"), str(SHARED_DATA / "train/BSD200/HR")]
    val_dir: str | None = str(SHARED_DATA / "Set5/HR")
    patch_size: int = 192
    batch_size: int = 16
    # LR synthesis: "none" = clean bicubic pairs, else a model.degradations recipe (its names, one list)
    degradation: Literal[tuple(TRAINING_RECIPES)] = "none"
    val_degradation: str = "clean"  # one of model.degradations.EVAL_DEGRADATIONS, applied to val_dir
    # objective (student_widths None = every width below 1.0; [] = teacher alone)
    student_widths: tuple[float, ...] | None = None
    t_lambda: float = 1.0
    contra_lambda: float = 200.0
    neg_num: int = 10
    feature_net: Literal["efficientnet-lite0", "vgg19"] = "efficientnet-lite0"
    feature_weights: str | None = None
    # the sharp style: a cache of teacher outputs (model.teacher_data) makes the run a distillation
    # (model.distill_train.DistillTrainer) with these terms instead of the CSD objective above
    teacher_targets: str | None = None
    distill: DistillWeights = DistillWeights()
    # optimisation
    steps: int = 1000
    lr: float = 1e-4
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    # > 0: keep an exponential moving average of the weights (Real-ESRGAN's 0.999), checkpointed, and export it
    # instead of the last step's (a GAN's step-to-step oscillation averages out)
    ema_decay: float = 0.0
    init_weights: str | None = None
    # run
    out_dir: str = "runs/x4"
    export: str | None = None
    device: str = "cpu"
    bf16: bool | Literal["auto"] = False  # "auto": where bf16 is native and measured faster (auto_bf16)
    threads: int | None = None
    seed: int = 0
    val_every: int = 500
    ckpt_every: int = 200
    log_every: int = 10

    def edsr(self) -> EDSRConfig:
        return EDSRConfig(self.scale, self.n_resblocks, self.n_feats, self.res_scale, 255.0, self.widths)

    def students(self) -> tuple[float, ...]:
        ladder = self.edsr().widths
        chosen = self.student_widths if self.student_widths is not None else ladder
        return tuple(w for w in chosen if w != 1.0)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> TrainConfig:
        data = tomllib.loads(Path(path).read_text()) if path else {}
        return cls(**{**data, **overrides})


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier on ``cfg.lr`` at ``step`` (a pure function of the step, so resumes are exact)."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "constant":
        return warm
    if cfg.lr_schedule == "step":
        return warm * cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)
    progress = min(1.0, step / max(1, cfg.steps))
    return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def build_feature_net(cfg: TrainConfig) -> torch.nn.Module:
    from model.features import build_feature_extractor

    return build_feature_extractor(cfg.feature_net, cfg.feature_weights)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively. CPUs without AVX512-BF16 or AMX emulate it:
    there bf16 autocast is ~3x slower than fp32 (measured on a Xeon with ``bench/train_step.py``)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@functools.cache
def bf16_speedup(threads: int) -> float:
    """fp32 seconds / bf16-autocast seconds of one 3x3 conv's forward and backward at training size
    (batch 16, 64 channels, 48x48), on this CPU with ``threads`` threads; best of 3 each, after a
    warm-up. Cached, so one process decides once."""
    rng, previous = torch.get_rng_state(), torch.get_num_threads()
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(16, 64, 48, 48, requires_grad=True)

    def seconds(bf16: bool) -> float:
        times = []
        for _ in range(4):  # the first is the warm-up (oneDNN picks and caches its kernels)
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = conv(x)
            out.float().sum().backward()
            times.append(time.perf_counter() - start)
        return min(times[1:])

    torch.set_num_threads(threads)
    try:
        return seconds(False) / seconds(True)
    finally:  # the run's seeded RNG stream must not depend on this check
        torch.set_rng_state(rng)
        torch.set_num_threads(previous)


def auto_bf16(device: torch.device) -> tuple[bool, str]:
    """What ``bf16 = "auto"`` runs on ``device``, and why. On a CPU the flags are not enough:
    with AVX512-BF16 and no AMX a CSD step was 1.77x faster in bf16 on an AMD EPYC but 1.4x slower
    on an Intel Xeon (docs/training.md#bf16), so where bf16 is native it is also timed, and used
    only where it is clearly faster (>= 1.1x)."""
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        return supported, "the GPU supports bf16" if supported else "the GPU has no bf16"
    if not native_bf16(device):
        return False, "no AVX512-BF16 or AMX: bf16 would be emulated"
    speedup = bf16_speedup(torch.get_num_threads())
    return speedup >= 1.1, f"bf16 measured {speedup:.2f}x fp32 on a training-size conv"


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = torch.device(
            f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cfg.device == "cuda" and self.distributed else cfg.device
        )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        why = "set by the config"
        if cfg.bf16 == "auto":  # resolved once, so checkpoints and the card record what ran
            bf16, why = auto_bf16(self.device)
            if self.distributed and self.device.type == "cpu":  # rank 0's timing decides for all
                decision = torch.tensor([int(bf16)])
                dist.broadcast(decision, 0)
                bf16 = bool(decision.item())
            cfg = cfg.model_copy(update={"bf16": bf16})
        self.cfg = cfg
        self._log(f"bf16 autocast: {'on' if cfg.bf16 else 'off'} ({why})")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = EDSR(cfg.edsr()).to(self.device)
        # The init weights' own training record travels into this run's card (read now: an
        # export may later overwrite the init file), so a card holds the model's whole history.
        self.lineage: dict | None = None
        if cfg.init_weights:
            skipped = load_matching(self.model, cfg.init_weights)
            self._log(f"initialised from {cfg.init_weights}; not loaded: {skipped or 'none'}")
            init_card = card_path(cfg.init_weights)
            if init_card.exists():
                self.lineage = json.loads(init_card.read_text()).get("training")
        self.objective = self._build_objective().to(self.device)
        self.step_fn = (
            DistributedDataParallel(self.objective, broadcast_buffers=False) if self.distributed else self.objective
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
        # starts from the first step's weights (n_averaged 0), or from the checkpoint's average
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay
            else None
        )
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)
        self.sampler = self._build_sampler()
        self.val_pairs = degrade_pairs(load_pairs(cfg.val_dir, cfg.scale), cfg.val_degradation) if cfg.val_dir else []
        self.out_dir = Path(cfg.out_dir)
        self.step = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0  # wall time spent in training steps, summed over resumes
        self._resume()

    def _build_objective(self) -> torch.nn.Module:
        cfg = self.cfg
        contrastive = ContrastiveLoss(build_feature_net(cfg)) if cfg.contra_lambda > 0 else None
        return CSDObjective(self.model, cfg.students(), cfg.t_lambda, cfg.contra_lambda, cfg.neg_num, contrastive)

    def _build_sampler(self) -> PatchSampler:
        cfg = self.cfg
        return PatchSampler(
            cfg.train_dirs, cfg.scale, cfg.patch_size, default_cache_dir(), TRAINING_RECIPES[cfg.degradation]
        )

    def extra_state(self) -> dict:
        """What a subclass adds to the checkpoint (tensors and plain values only)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore :meth:`extra_state` from a checkpoint."""

    # -- checkpoints -------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "last.pt"

    def _resume(self) -> None:
        if not self.ckpt_path.exists():
            return
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history = state["step"], json.loads(state["history"])
        self.lineage = json.loads(state.get("lineage", "null"))
        self.train_seconds = state.get("train_seconds", 0.0)
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        elif self.ema is not None:  # a checkpoint without an average: it starts from the resumed weights
            self.ema.module.load_state_dict(self.model.state_dict())
        self.load_extra_state(state)
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generators"][self.rank])
        self._log(f"resumed from {self.ckpt_path} at step {self.step}")

    def save_checkpoint(self) -> None:
        generators = [self.generator.get_state()]
        if self.distributed:
            generators = [torch.empty_like(generators[0]) for _ in range(self.world)]
            dist.all_gather(generators, self.generator.get_state())
        if self.rank:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "history": json.dumps(self.history),
            "torch_rng": torch.get_rng_state(),
            "generators": generators,
            "config": json.dumps(self.cfg.model_dump()),
            "lineage": json.dumps(self.lineage),
            "train_seconds": self.train_seconds,
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            **self.extra_state(),
        }
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.ckpt_path)

    # -- loop --------------------------------------------------------------
    def _log(self, msg: str) -> None:
        if self.rank == 0:
            tqdm.write(msg)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def set_lr(self) -> None:
        """The schedule's learning rate for this step."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * lr_factor(self.cfg, self.step)

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """One step of the network's weights down ``loss`` (and of their moving average)."""
        descend(self.optimizer, loss)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    @property
    def exported_model(self) -> EDSR:
        """What an export ships: the moving average of the weights if kept, else the last step's."""
        return self.model if self.ema is None else self.ema.module

    def train_step(self) -> dict[str, float]:
        lr, hr = (t.to(self.device) for t in self.sampler.sample(self.cfg.batch_size, self.generator))
        self.set_lr()
        self.objective.train()
        with self._autocast():
            loss, terms = self.step_fn(lr, hr, self.generator)
        self.optimizer_step(loss)
        self.step += 1
        return {"loss": loss.item(), **terms}

    def validate(self) -> dict:
        scores = evaluate_widths(self.exported_model, self.val_pairs, self.model.widths)
        record = {"step": self.step, "psnr": {w: s["psnr"] for w, s in scores.items()}}
        self.history.append(record)
        self._log(f"step {self.step} val PSNR " + " ".join(f"{w}:{p:.3f}" for w, p in record["psnr"].items()))
        return record

    def run(self) -> None:
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, disable=self.rank != 0, dynamic_ncols=True)
        t0, s0 = time.perf_counter(), self.step
        while self.step < cfg.steps:
            t_step = time.perf_counter()
            terms = self.train_step()
            self.train_seconds += time.perf_counter() - t_step
            bar.update(1)
            if self.step % cfg.log_every == 0:
                sec = (time.perf_counter() - t0) / (self.step - s0)
                bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()} | {"s/step": f"{sec:.3f}"})
            if self.rank == 0 and self.val_pairs and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                self.validate()
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        bar.close()
        if cfg.export and self.rank == 0:
            self.export(cfg.export)
        if self.distributed:
            dist.barrier()

    def export(self, path: str | Path) -> None:
        card = training_card(self.cfg, self.step, self.history, self.lineage, self.train_seconds)
        save_weights(self.exported_model, path, card)
        self._log(f"exported {path}")


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One step of ``optimizer``'s parameters down ``loss``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def describe_hardware(device: str, threads: int | None) -> str:
    """What the card says the run ran on, e.g. ``Intel(R) Xeon(R) ... (2 threads)`` or a GPU name."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return f"{cpu} ({threads or torch.get_num_threads()} threads)"


def training_card(
    cfg: TrainConfig,
    step: int,
    history: list[dict],
    lineage: dict | None = None,
    train_seconds: float | None = None,
) -> dict:
    """The model card's training section: what, on which data, with which objective, how far, on
    what hardware, and (``init``) the training record of the weights this run started from."""
    return {
        "scale": cfg.scale,
        "noise": noise_level(cfg.degradation),  # the level it serves, from its LR recipe ("none": clean)
        "style": "sharp" if cfg.teacher_targets else "faithful",
        "widths": list(cfg.edsr().widths),
        "training": {
            "data": cfg.train_dirs,
            "steps": step,
            "objective": {
                "student_widths": list(cfg.students()),
                "t_lambda": cfg.t_lambda,
                "contra_lambda": cfg.contra_lambda,
                "neg_num": cfg.neg_num,
                "feature_net": cfg.feature_net if cfg.contra_lambda > 0 or cfg.teacher_targets else None,
                "distill": cfg.distill.model_dump() if cfg.teacher_targets else None,
            },
            "config": cfg.model_dump(exclude={"train_dirs"}),
            "validation_history": history,
            "hardware": describe_hardware(cfg.device, cfg.threads),
            "train_seconds": None if train_seconds is None else round(train_seconds, 3),
            "init": lineage,
        },
    }


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> None:
    """Turn a training checkpoint (``last.pt``) into the shipped safetensors + card."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = TrainConfig(**json.loads(state["config"]))
    model = EDSR(cfg.edsr())
    model.load_state_dict(state["model"])
    if "ema" in state:  # the moving average, as Trainer.export ships it
        averaged = AveragedModel(model, use_buffers=True)
        averaged.load_state_dict(state["ema"])
        model = averaged.module
    lineage = json.loads(state.get("lineage", "null"))
    card = training_card(cfg, state["step"], json.loads(state["history"]), lineage, state.get("train_seconds"))
    save_weights(model, out, card)
