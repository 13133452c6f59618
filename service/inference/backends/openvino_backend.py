"""OpenVINO on the CPU: every rung compiled at start-up (fp32 from the shipped weights, int8 from their files).

One compiled model per rung, one stream over all ``threads`` cores, and one
lane: one image's tiles at a time whatever their rung, each tile on every core.
A lone request's tiles use all the cores; concurrent requests take turns, image
by image, instead of splitting the cores (no oversubscription) or interleaving
tiles (which would delay the request ahead past its predicted completion), and
one infer request per rung holds that rung's intermediate buffers (one set, not
one per worker thread).
"""

from __future__ import annotations

import threading

import numpy as np
import openvino as ov

from model.openvino import capabilities, cpu_config
from model.rungs import Rung


class OpenVINOBackend:
    name = "openvino"
    lanes = 1

    def __init__(
        self,
        models: dict[Rung, ov.Model],
        *,
        threads: int,
        missing: str | None = None,
        lane: threading.Lock | None = None,
    ) -> None:
        self.threads = threads
        self.missing = missing  # why rungs asked for are missing (bf16 on a CPU without it, int8 files), if any
        self.core = ov.Core()
        self.compiled = {
            r: self.core.compile_model(m, "CPU", cpu_config(threads, r.precision)) for r, m in sorted(models.items())
        }
        self.rungs = tuple(self.compiled)
        # Read once: a compiled model answers get_property only between inferences, and /v1/model must not
        # wait for a running image. The inference precisions in use, e.g. "f32", or "bf16,f32" with bf16 rungs.
        self.precision = ",".join(
            sorted({c.get_property("INFERENCE_PRECISION_HINT").to_string() for c in self.compiled.values()})
        )
        self._requests = {r: c.create_infer_request() for r, c in self.compiled.items()}
        self._lane = lane or threading.Lock()

    def init_worker(self) -> None:
        pass

    def lane(self) -> threading.Lock:
        return self._lane

    def release(self, rung: Rung) -> None:
        self.compiled[rung].release_memory()

    def infer(self, rung: Rung, x: np.ndarray) -> np.ndarray:
        request = self._requests[rung]  # not thread-safe: the caller holds the lane
        request.infer({0: x}, share_inputs=True)
        return request.get_output_tensor(0).data.copy()  # the output buffer is reused by the next call

    def describe(self) -> dict[str, object]:
        compiled = next(iter(self.compiled.values()))
        return {
            "backend": self.name,
            "version": ov.get_version(),
            "device": self.core.get_property("CPU", "FULL_DEVICE_NAME"),
            "capabilities": capabilities(self.core),
            "threads": compiled.get_property("INFERENCE_NUM_THREADS"),
            "streams": compiled.get_property("NUM_STREAMS"),
            "precision": self.precision,
            "rungs": [r.key for r in self.rungs],
            **({"missing": self.missing} if self.missing else {}),
        }
