"""The reference backend: PyTorch eager, one dense sub-network per width (fp32 rungs), one lane per worker thread."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from model.edsr import EDSR
from model.rungs import Rung


class TorchBackend:
    name = "torch"

    def __init__(self, model: EDSR, *, lanes: int, threads: int) -> None:
        self.nets = {Rung(w): model.dense(w) for w in model.widths}
        self.rungs = tuple(self.nets)
        self.lanes = lanes
        self.threads = threads

    def init_worker(self) -> None:
        # torch's intra-op thread count belongs to the calling thread: set it in every worker.
        torch.set_num_threads(self.threads)

    def lane(self) -> nullcontext[None]:
        return nullcontext()  # every worker thread is a lane of its own

    def release(self, rung: Rung) -> None:
        pass  # eager torch frees activations as it goes

    @torch.inference_mode()
    def infer(self, rung: Rung, x: np.ndarray) -> np.ndarray:
        return self.nets[rung](torch.from_numpy(x)).numpy()

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "version": torch.__version__,
            "lanes": self.lanes,
            "threads_per_lane": self.threads,
            "rungs": [r.key for r in self.rungs],
        }
