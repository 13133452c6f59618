"""Run by ``torchrun`` in tests: train a few steps with DDP, then dump this rank's weights."""

from __future__ import annotations

import json
import sys

import torch.distributed as dist
from safetensors.torch import save_file

from model.train import TrainConfig, Trainer

if __name__ == "__main__":
    cfg = TrainConfig(**json.loads(sys.argv[1]))
    trainer = Trainer(cfg)
    trainer.run()
    rank = dist.get_rank()
    save_file(
        {k: v.contiguous() for k, v in trainer.model.state_dict().items()}, f"{cfg.out_dir}/rank{rank}.safetensors"
    )
    lr, _ = trainer.sampler.sample(1, trainer.generator)  # each rank must draw its own data
    save_file({"next_patch": lr}, f"{cfg.out_dir}/rank{rank}-next.safetensors")
    dist.destroy_process_group()
