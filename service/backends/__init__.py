"""Inference backends: one width's dense sub-network on a ``(1, 3, h, w)`` float32 batch. No HTTP here.

Every backend is built from the one shipped weights file at start-up; the engine
cuts tiles and calls :meth:`Backend.infer`, so backends only differ in how fast
they turn a tile into pixels.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from model.edsr import EDSR

BackendName = Literal["openvino", "torch"]


class Backend(Protocol):
    name: str
    lanes: int  # tiles that run at once without sharing cores (the scheduler's parallel servers)

    def infer(self, width: float, x: np.ndarray) -> np.ndarray:
        """``(1, 3, h, w)`` float32 in 0..255 -> ``(1, 3, s*h, s*w)`` float32, unclamped."""
        ...

    def init_worker(self) -> None:
        """Per-thread set-up, run once in each worker thread before its first call."""
        ...

    def describe(self) -> dict[str, object]:
        """Runtime, version, threads and precision actually in use (start-up log and ``/v1/model``)."""
        ...


def create_backend(name: BackendName, model: EDSR, *, threads: int, workers: int, torch_threads: int) -> Backend:
    """``openvino``: every width compiled from ``model``, one lane on ``threads`` cores.

    ``torch``: the reference path, ``workers`` lanes of ``torch_threads`` threads each.
    """
    if name == "openvino":
        from service.backends.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(model, threads=threads)
    if name == "torch":
        from service.backends.torch_backend import TorchBackend

        return TorchBackend(model, lanes=workers, threads=torch_threads)
    raise ValueError(f"unknown backend {name!r}: expected 'openvino' or 'torch'")
