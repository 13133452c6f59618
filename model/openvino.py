"""The model on OpenVINO's CPU runtime: fp32 rungs converted from the weights, int8 rungs read from their files.

Shared by the service's OpenVINO backend, ``csd-sr evaluate --backend openvino``
and ``csd-sr quantize``, so a rung is scored, quantized and served by the same
conversion and the same compile settings.

int8 rungs live beside the weights in ``<stem>.int8/`` (``csd-sr quantize``
writes them): one OpenVINO IR per width plus ``manifest.json``, which records the
sha256 of the weights file they were quantized from. IR files from other
weights are never served (``int8_models`` refuses them).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Collection
from pathlib import Path

import openvino as ov
import openvino.opset13 as ops
import torch
from openvino.frontend import FrontEndManager, NodeContext
from openvino.frontend.pytorch import ConversionExtension
from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

from model.edsr import EDSR
from model.rungs import Precision, Rung
from model.weights import file_sha256

MANIFEST = "manifest.json"


def to_openvino(net: EDSR) -> ov.Model:
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


def cpu_config(threads: int, precision: Precision = "fp32") -> dict[str, object]:
    """One stream over ``threads`` cores, latency first; the inference precision asked for explicitly.

    bf16 for a bf16 rung; f32 for the others: on CPUs with BF16 the runtime would otherwise run
    fp32 layers (the fp32 rungs, and the layers int8 rungs keep in fp32) in bf16 too, and a rung
    would not be what its card measured.
    """
    return {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
    }


def capabilities(core: ov.Core | None = None) -> list[str]:
    """What OpenVINO's CPU plugin says this CPU computes well (``BF16``, ``INT8``, ``FP32``, ...)."""
    return list((core or ov.Core()).get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def native_bf16(core: ov.Core | None = None) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): OpenVINO lists BF16 among its
    optimization capabilities. Elsewhere bf16 is emulated, slower than fp32, and its rungs are left out."""
    return "BF16" in capabilities(core)


def cpu_description(core: ov.Core | None = None) -> str:
    """The CPU as OpenVINO names it, with its optimization capabilities: bf16 figures depend on both."""
    core = core or ov.Core()
    return f"{core.get_property('CPU', 'FULL_DEVICE_NAME')} ({', '.join(capabilities(core))})"


def int8_dir(weights: str | Path) -> Path:
    """Where the int8 rungs of ``weights`` live: ``weights/csd-edsr-x4.int8/`` for ``csd-edsr-x4.safetensors``."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".int8")


def int8_models(weights: str | Path, widths: tuple[float, ...]) -> tuple[dict[Rung, ov.Model], str | None]:
    """The int8 rungs quantized from ``weights``, and why there are none (``None`` when all were found).

    Returns no rung when the folder or its manifest is missing, or when the
    manifest names other weights (a stale folder after retraining).
    """
    folder = int8_dir(weights)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return {}, f"no {manifest_path} (run `csd-sr quantize`)"
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("weights_sha256") != file_sha256(weights):
        return {}, f"{manifest_path} was made from other weights (run `csd-sr quantize` again)"
    core = ov.Core()
    models, missing = {}, []
    for width in widths:
        rung = Rung(width, "int8")
        entry = manifest.get("rungs", {}).get(rung.key)
        if entry is None:
            missing.append(rung.key)
            continue
        models[rung] = core.read_model(folder / entry["model"])
    return models, (f"{manifest_path} lacks {', '.join(missing)}" if missing else None)


def rung_models(
    model: EDSR, weights: str | Path | None, precisions: Collection[Precision]
) -> tuple[dict[Rung, ov.Model], str | None]:
    """The ``precisions`` rungs of every width (fp32 converted from ``model``, bf16 the same graphs, int8 read
    beside ``weights``), and why rungs asked for are missing (``None``: none is)."""
    graphs = {w: to_openvino(model.dense(w)) for w in model.widths} if {"fp32", "bf16"} & set(precisions) else {}
    models = {Rung(w): g for w, g in graphs.items()} if "fp32" in precisions else {}
    notes = []
    if "bf16" in precisions:
        if native_bf16():
            models |= {Rung(w, "bf16"): g for w, g in graphs.items()}
        else:
            caps = ", ".join(capabilities())
            notes.append(f"bf16 rungs left out: this CPU computes bf16 only emulated (OpenVINO capabilities: {caps})")
    if "int8" in precisions:
        int8, missing = int8_models(weights, model.widths) if weights else ({}, "no weights path given")
        models |= int8
        if missing:
            notes.append(f"int8 rungs: {missing}")
    return models, "; ".join(notes) or None
