"""Seconds per training step for a few recipes, measured side by side in one run.

python -m bench.train_step --steps 5 [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from model.train import TrainConfig, Trainer

RECIPES = {
    "default TrainConfig (CSD fp32 p192 neg10)": dict(patch_size=192),
    "teacher L1 fp32 p128 b16": dict(student_widths=[], contra_lambda=0, bf16=False),
    "teacher L1 bf16 p128 b16": dict(student_widths=[], contra_lambda=0, bf16=True),
    "joint L1 bf16 p128 b16": dict(contra_lambda=0, bf16=True),
    "CSD effnet bf16 p128 b16 neg10": dict(bf16=True),
    "CSD effnet bf16 p128 b16 neg4": dict(bf16=True, neg_num=4),
    "CSD effnet fp32 p128 b16 neg4": dict(bf16=False, neg_num=4),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="substring filters on recipe names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name, overrides in RECIPES.items():
        if args.only and not any(o in name for o in args.only):
            continue
        cfg = TrainConfig(**{"patch_size": 128, "val_dir": None, "out_dir": "/tmp/csd-bench-unused", **overrides})
        trainer = Trainer(cfg)
        trainer.train_step()  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        print(f"{name:44s} {(time.perf_counter() - start) / args.steps:.3f} s/step", flush=True)


if __name__ == "__main__":
    main()
