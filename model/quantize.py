"""int8 rungs: post-training quantization of each width's dense sub-network, accuracy-controlled.

The recipe (``csd-sr quantize``), per width:

- Convert the fp32 sub-network to OpenVINO (``model.openvino.to_openvino``: the
  graph the fp32 rung serves).
- Calibrate NNCF's int8 quantizers (per-channel symmetric weights, per-tensor
  asymmetric activations: the ``MIXED`` preset) on LR patches of the training
  images. Set5/Set14 are never seen.
- Activation ranges are the min/max over all calibration patches, not NNCF's
  default for per-tensor activations (the mean of each patch's min/max): that
  clips the feature maps of saturated colours, which are rarer than the mean
  patch, and cost Set14's ``pepper`` 0.86 dB at full width.
- At x2 and x3 (``--activation-ranges histogram``) NNCF's histogram ranges instead: int8 adds
  an image-independent noise (about 0.5 MSE in 8-bit levels at x2), which costs the most where
  PSNR is high (Set5 ``bird``, 41 dB: 0.46 dB); ranges chosen to minimise the quantization error
  halve it (Set5 drop at x2 0.205 -> 0.098 dB at width 0.25, 0.13 -> 0.055 at width 1).
- Keep the first convolution in fp32 from the start: it reads pixels (3
  channels, 0.1 % of the MACs), and int8 there costs 0.04-0.05 dB on Set5 at every
  width. The last one, which writes pixels, is int8: kept in fp32 it made the
  rung 1.25-1.4x slower (it and the pixel shuffle before it run at HR resolution,
  where an fp32 feature map is 4x the bytes of an int8 one) for under 0.01 dB.
- Hand the rest to NNCF's accuracy control: it ranks the quantized layers by the
  error they add and returns them to fp32 one group at a time until Y-PSNR on a
  validation split of the training images (whole images, the quantity served) is
  within ``max_drop`` dB of fp32. Which layers go back is recorded in the
  manifest. For the shipped model none had to (every width within 0.04 dB on
  validation); with NNCF's default activation ranges the same control put the
  last residual blocks, the body conv and an upsampler conv back in fp32.

What each choice is worth, measured per width on Set5/Set14:
``bench/quantize.py`` -> bench/results/quantize.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import openvino as ov

from model.data import Pair, load_pairs, to_tensor
from model.edsr import EDSR
from model.evaluate import compiled_forward, score, super_resolve
from model.openvino import MANIFEST, cpu_config, int8_dir, to_openvino
from model.rungs import Rung
from model.weights import file_sha256


@dataclass(frozen=True)
class Recipe:
    max_drop_db: float | None = 0.05  # Y-PSNR the int8 rung may lose on validation; None: plain PTQ
    fp32_convs: Literal["none", "first", "first+last"] = "first"  # convolutions kept in fp32 from the start
    activation_ranges: Literal["minmax", "mean_minmax", "histogram"] = "minmax"
    calibration_patches: int = 300
    patch_side: int = 64  # LR pixels
    validation_every: int = 10  # every k-th training image is held out for validation
    seed: int = 0


def split(pairs: list[Pair], every: int) -> tuple[list[Pair], list[Pair]]:
    """(calibration images, validation images): every ``every``-th image validates, the rest calibrate."""
    return [p for i, p in enumerate(pairs) if i % every], pairs[::every]


def calibration_set(pairs: list[Pair], count: int, side: int, seed: int) -> list[np.ndarray]:
    """``count`` random ``side`` x ``side`` LR crops drawn from ``pairs`` (images smaller than that skipped)."""
    rng = np.random.default_rng(seed)
    usable = [p for p in pairs if min(p.lr.shape[:2]) >= side]
    crops = []
    for _ in range(count):
        lr = usable[rng.integers(len(usable))].lr
        y, x = rng.integers(lr.shape[0] - side + 1), rng.integers(lr.shape[1] - side + 1)
        crops.append(to_tensor(lr[y : y + side, x : x + side]).numpy())
    return crops


def kept_fp32(convs: list[str], which: str) -> list[str]:
    """The convolutions (in graph order) that ``Recipe.fp32_convs`` names."""
    return {"none": [], "first": convs[:1], "first+last": [convs[0], convs[-1]]}[which]


def mean_psnr(compiled: ov.CompiledModel, pairs: list[Pair], scale: int) -> float:
    """Mean Y-PSNR of ``compiled`` (whole images) against the HR images, by the evaluation protocol."""
    forward = compiled_forward(compiled)
    return float(np.mean([score(super_resolve(forward, p.lr), p.hr, scale)["psnr"] for p in pairs]))


def quantize_width(
    net: EDSR, calibration: list[np.ndarray], validation: list[Pair], recipe: Recipe
) -> tuple[ov.Model, dict]:
    """The int8 model of one dense sub-network and what was done: layers kept in fp32, validation PSNR."""
    import nncf  # only this command needs it (the `quantize` extra)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    fp32 = to_openvino(net)
    convs = [op.get_friendly_name() for op in fp32.get_ordered_ops() if op.get_type_name() == "Convolution"]
    scale = net.cfg.scale

    def validate(compiled: ov.CompiledModel, data: list[Pair]) -> float:
        return mean_psnr(compiled, data, scale)

    ranges = {
        "minmax": RangeEstimatorParametersSet.MINMAX,
        "mean_minmax": RangeEstimatorParametersSet.MEAN_MINMAX,
        "histogram": RangeEstimatorParametersSet.HISTOGRAM,
    }
    common = {
        "preset": nncf.QuantizationPreset.MIXED,
        "target_device": nncf.TargetDevice.CPU,
        "subset_size": len(calibration),
        "ignored_scope": nncf.IgnoredScope(names=kept_fp32(convs, recipe.fp32_convs)),
    }
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=ranges[recipe.activation_ranges])
    start = time.perf_counter()
    if recipe.max_drop_db is None:
        int8 = nncf.quantize(fp32, nncf.Dataset(calibration), advanced_parameters=advanced, **common)
    else:
        int8 = nncf.quantize_with_accuracy_control(
            fp32,
            nncf.Dataset(calibration),
            nncf.Dataset(validation),
            validate,
            max_drop=recipe.max_drop_db,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced,
            **common,
        )
    seconds = time.perf_counter() - start
    quantized = _quantized_convs(int8)
    core = ov.Core()
    report = {
        "convolutions": len(convs),
        "int8_convolutions": len(quantized),
        "fp32_convolutions": [_module(c) for c in convs if c not in quantized],
        "validation_psnr": {
            "fp32": validate(core.compile_model(fp32, "CPU", cpu_config(1)), validation),
            "int8": validate(core.compile_model(int8, "CPU", cpu_config(1)), validation),
        },
        "seconds": round(seconds, 1),
    }
    return int8, report


def _quantized_convs(model: ov.Model) -> set[str]:
    """Convolutions whose weights pass through a FakeQuantize (int8 at run time)."""
    names = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        weights = op.input_value(1).get_node()
        while weights.get_type_name() in ("Convert", "Multiply", "Subtract", "Reshape"):  # decompression chain
            weights = weights.input_value(0).get_node()
        if weights.get_type_name() == "FakeQuantize" or weights.get_element_type() == ov.Type.i8:
            names.add(op.get_friendly_name())
    return names


def _module(conv_name: str) -> str:
    """``__module.blocks.15.conv1/aten::_convolution/Convolution`` -> ``blocks.15.conv1``."""
    return conv_name.split("/")[0].removeprefix("__module.")


def quantize(
    model: EDSR, weights: str | Path, train_folders: list[str | Path], recipe: Recipe, widths: tuple[float, ...]
) -> Path:
    """Quantize ``widths`` of ``model`` (loaded from ``weights``); write the IRs and the manifest beside it."""
    pairs = [p for folder in train_folders for p in load_pairs(folder, model.cfg.scale)]
    calib_pairs, validation = split(pairs, recipe.validation_every)
    calibration = calibration_set(calib_pairs, recipe.calibration_patches, recipe.patch_side, recipe.seed)
    out = int8_dir(weights)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    sha = file_sha256(weights)
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest.get("weights_sha256") != sha:  # rungs of other weights must not survive next to new ones
        manifest = {"weights_sha256": sha, "rungs": {}}
    manifest |= {
        "weights": Path(weights).name,
        "calibration": {"folders": [str(f) for f in train_folders], "images": len(calib_pairs)},
        "validation_images": [p.name for p in validation],
    }
    for width in widths:
        rung = Rung(width, "int8")
        int8, report = quantize_width(model.dense(width), calibration, validation, recipe)
        file = f"{rung.key}.xml"
        ov.save_model(int8, out / file, compress_to_fp16=False)  # fp16 would alter the layers kept in fp32
        # the recipe per rung: a width may be requantized alone with its own (e.g. a tighter max_drop)
        manifest["rungs"][rung.key] = {"model": file, "recipe": vars(recipe), **report}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(json.dumps({rung.key: report}), flush=True)
    return out
