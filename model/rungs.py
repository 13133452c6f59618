"""Rungs of the quality ladder: a width of the shared weights at a numeric precision.

fp32 rungs run the width-``w`` dense sub-network as trained; bf16 rungs the same
graph computed in bf16 (only where the CPU does bf16 natively, ``model.openvino``);
int8 rungs the same sub-network post-training quantized (``model.quantize``). A rung's ``key``
names it in the model card (``card["metrics"][set][key]``), in ``/v1/model``
and in the ``fixed:`` policy: the bare width for fp32 (the keys the card has
always used), ``<width>-bf16`` and ``<width>-int8`` for the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")


@dataclass(frozen=True, order=True)
class Rung:
    width: float
    precision: Precision = "fp32"

    @property
    def key(self) -> str:
        return f"{self.width:g}" if self.precision == "fp32" else f"{self.width:g}-{self.precision}"

    @classmethod
    def parse(cls, key: str) -> Rung:
        """``"0.5"`` -> fp32 width 0.5; ``"0.5-int8"`` -> int8 width 0.5."""
        width, _, precision = key.partition("-")
        precision = precision or "fp32"
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} in rung {key!r}: expected one of {PRECISIONS}")
        return cls(float(width), precision)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.key
