"""Inference backends: one rung (width, precision) on a ``(1, 3, h, w)`` float32 batch. No HTTP here.

Every backend is built at start-up from the one shipped weights file (and, for
int8 rungs, the files ``csd-sr quantize`` made from it); the engine cuts tiles and
calls :meth:`Backend.infer`, so backends only differ in which rungs they run and
how fast they turn a tile into pixels.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from model.edsr import EDSR
from model.rungs import Precision, Rung

BackendName = Literal["openvino", "torch"]


class Backend(Protocol):
    name: str
    lanes: int  # tiles that run at once without sharing cores (the scheduler's parallel servers)
    rungs: tuple[Rung, ...]  # what it can run, ascending by (width, precision)

    def lane(self) -> AbstractContextManager[object]:
        """Held around all the tiles of one image: images take turns in the lane(s), whole, as the policy plans."""
        ...

    def infer(self, rung: Rung, x: np.ndarray) -> np.ndarray:
        """``(1, 3, h, w)`` float32 in 0..255 -> ``(1, 3, s*h, s*w)`` float32, unclamped; call inside ``lane()``."""
        ...

    def release(self, rung: Rung) -> None:
        """Free the rung's intermediate buffers after an image (call inside ``lane()``): held rungs cost
        their weights only, so many models fit in memory; the next image allocates them again."""
        ...

    def init_worker(self) -> None:
        """Per-thread set-up, run once in each worker thread before its first call."""
        ...

    def describe(self) -> dict[str, object]:
        """Runtime, version, threads and precision actually in use (start-up log and ``/v1/model``)."""
        ...


@dataclass(frozen=True)
class Cores:
    """How a backend spreads over the CPU: ``threads`` for OpenVINO's one lane; for torch, ``workers`` lanes of
    ``torch_threads`` threads each."""

    threads: int
    workers: int = 1
    torch_threads: int = 1


def create_backend(
    name: BackendName,
    model: EDSR,
    cores: Cores,
    weights: Path | None = None,
    precisions: Collection[Precision] = ("fp32",),
    lane: threading.Lock | None = None,
) -> Backend:
    """``openvino``: the ``precisions`` rungs of every width, one lane on ``cores.threads`` cores; int8 rungs
    come from the files quantized from ``weights`` (left out, with the reason in ``describe()``, when
    there are none). ``lane``: a lock shared with other models' backends (default: its own).

    ``torch``: the reference path (fp32 only), ``cores.workers`` lanes of ``cores.torch_threads`` threads each.
    """
    if name == "openvino":
        from model.openvino import rung_models
        from service.inference.backends.openvino_backend import OpenVINOBackend

        models, note = rung_models(model, weights, precisions)
        if not models:
            raise ValueError(f"no rung to serve for precisions {list(precisions)}: {note}")
        return OpenVINOBackend(models, threads=cores.threads, missing=note, lane=lane)
    if name == "torch":
        from service.inference.backends.torch_backend import TorchBackend

        if "fp32" not in precisions:
            raise ValueError("the torch backend runs fp32 rungs only: include fp32 in the precisions")
        return TorchBackend(model, lanes=cores.workers, threads=cores.torch_threads)
    raise ValueError(f"unknown backend {name!r}: expected 'openvino' or 'torch'")
