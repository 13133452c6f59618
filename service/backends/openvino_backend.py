"""OpenVINO on the CPU: each width's dense sub-network converted from the shipped weights at start-up.

One compiled model per width, one stream over all ``threads`` cores, and one
lane: tiles run one at a time whatever their width, each on every core. A lone
request's tiles use all the cores; concurrent requests' tiles take turns instead
of splitting the cores (no oversubscription), and one infer request per width
holds that width's intermediate buffers (one set, not one per worker thread).
fp32 is asked for explicitly: on CPUs with BF16 the runtime would otherwise
pick bf16.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import torch
from openvino.frontend import FrontEndManager, NodeContext
from openvino.frontend.pytorch import ConversionExtension
from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

from model.edsr import EDSR

PRECISION = "f32"


class OpenVINOBackend:
    name = "openvino"
    lanes = 1

    def __init__(self, model: EDSR, *, threads: int) -> None:
        self.threads = threads
        self.core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": PRECISION,
        }
        self.compiled = {w: self.core.compile_model(convert(model.dense(w)), "CPU", config) for w in model.widths}
        self._requests = {w: c.create_infer_request() for w, c in self.compiled.items()}
        self._lane = threading.Lock()

    def init_worker(self) -> None:
        pass

    def infer(self, width: float, x: np.ndarray) -> np.ndarray:
        request = self._requests[width]
        with self._lane:
            request.infer({0: x}, share_inputs=True)
            return request.get_output_tensor(0).data.copy()  # the output buffer is reused by the next call

    def describe(self) -> dict[str, object]:
        compiled = next(iter(self.compiled.values()))
        return {
            "backend": self.name,
            "version": ov.get_version(),
            "device": self.core.get_property("CPU", "FULL_DEVICE_NAME"),
            "capabilities": list(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
            "threads": compiled.get_property("INFERENCE_NUM_THREADS"),
            "streams": compiled.get_property("NUM_STREAMS"),
            "precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        }


def convert(net: EDSR) -> ov.Model:
    """Trace a dense sub-network into an OpenVINO model with a dynamic ``(1, 3, h, w)`` input.

    The PyTorch frontend directly, not ``openvino.convert_model``: that wrapper sends usage
    telemetry from wherever it runs unless opted out, and a server must not call home.
    """
    with warnings.catch_warnings(), torch.no_grad():  # the tracer flags SlimConv2d's width check, constant here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's notice that tracing gives way to export
        decoder = TorchScriptPythonDecoder(net, example_input=(torch.zeros(1, 3, 32, 32),))
    frontend = FrontEndManager().load_by_framework("pytorch")
    frontend.add_extension(ConversionExtension("aten::pixel_shuffle", _depth_to_space))
    model = frontend.convert(frontend.load(decoder))
    model.reshape([1, 3, -1, -1])
    return model


def _depth_to_space(node: NodeContext) -> list[ov.Output]:
    """``pixel_shuffle`` as one DepthToSpace op (PyTorch's channel order is OpenVINO's ``depth_first``).

    The frontend's default is reshape -> 6-D transpose -> reshape; with a dynamic
    input the CPU plugin cannot fuse that back, runs the transpose on planar
    layout and reorders every feature map around it: 1.2x (full width) to 2x
    (width 0.25) slower per tile than this (measured per layer with PERF_COUNT).
    """
    factor = int(node.get_values_from_const_input(1))
    return [ops.depth_to_space(node.get_input(0), "depth_first", factor).output(0)]
