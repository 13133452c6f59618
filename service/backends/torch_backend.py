"""The reference backend: PyTorch eager, one dense sub-network per width, one lane per worker thread."""

from __future__ import annotations

import numpy as np
import torch

from model.edsr import EDSR


class TorchBackend:
    name = "torch"

    def __init__(self, model: EDSR, *, lanes: int, threads: int) -> None:
        self.nets = {w: model.dense(w) for w in model.widths}
        self.lanes = lanes
        self.threads = threads

    def init_worker(self) -> None:
        # torch's intra-op thread count belongs to the calling thread: set it in every worker.
        torch.set_num_threads(self.threads)

    @torch.inference_mode()
    def infer(self, width: float, x: np.ndarray) -> np.ndarray:
        return self.nets[width](torch.from_numpy(x)).numpy()

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "version": torch.__version__,
            "lanes": self.lanes,
            "threads_per_lane": self.threads,
        }
