"""The sharp style's training data: degraded LR crops, the teacher's output on each, and the HR.

Crops are drawn from the training folders (a few images held out, :data:`HOLDOUT`), degraded with a
``model.degradations`` recipe, and run through the teacher once; the result is cached on disk in shards
of ``shard_size`` crops (``shard-NNNN.npz``: ``lr`` N x s x s x 3, ``target`` and ``hr`` N x 4s x 4s x 3,
uint8). Shard ``k`` is a pure function of ``(seed, k)``, so an interrupted build resumes where it stopped
and a rebuilt cache is identical. :class:`DistillSampler` cuts training patches from the cache's
interior, away from the borders where the teacher saw zero padding.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.data import as_rgb, augment, downscale, list_images, load_image
from model.degradations import RealWorld
from model.rrdbnet import RRDBNet
from model.teacher import teacher_upscale

# Held out from the teacher's crops, for measuring the sharp models on photographs they never saw.
HOLDOUT = {"Wiki49": 9, "BSDS500test": 20}  # the last N images of each folder


def split_folder(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """(training, held-out) images of one folder: the last :data:`HOLDOUT` images are held out."""
    paths = list_images(folder)
    held = next((n for name, n in HOLDOUT.items() if name in Path(folder).parts), 0)
    return (paths[:-held], paths[-held:]) if held else (paths, [])


@dataclass(frozen=True)
class CropSpec:
    lr_size: int = 80
    scale: int = 4
    shard_size: int = 40
    seed: int = 0


def _shard_crops(images: list[np.ndarray], spec: CropSpec, recipe: RealWorld | None, index: int) -> tuple:
    generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + index)
    hr_size = spec.lr_size * spec.scale
    lrs, hrs = [], []
    for _ in range(spec.shard_size):
        img = images[int(torch.randint(len(images), (), generator=generator))]
        h, w = img.shape[:2]
        y, x = (int(torch.randint(s - hr_size + 1, (), generator=generator)) for s in (h, w))
        hr = np.ascontiguousarray(img[y : y + hr_size, x : x + hr_size])
        lr = downscale(hr, spec.scale)
        lrs.append(recipe(lr, hr, generator) if recipe is not None else lr)
        hrs.append(hr)
    return np.stack(lrs), np.stack(hrs)


def _recipe_record(recipe: RealWorld | None) -> dict | None:
    """The recipe as the manifest stores it (JSON: tuples become lists), so a resumed cache keeps one recipe."""
    return None if recipe is None else json.loads(json.dumps(dataclasses.asdict(recipe)))


def build_targets(
    teacher: RRDBNet,
    folders: list[str | Path],
    out_dir: str | Path,
    shards: int,
    recipe: RealWorld | None,
    spec: CropSpec = CropSpec(),
) -> None:
    """Fill ``out_dir`` with ``shards`` shards, skipping those already there (resumable)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [as_rgb(load_image(p)) for f in folders for p in split_folder(f)[0]]
    images = [img for img in images if min(img.shape[:2]) >= spec.lr_size * spec.scale]
    log = out / "manifest.json"
    made = {"spec": spec.__dict__, "recipe": _recipe_record(recipe)}
    manifest = json.loads(log.read_text()) if log.exists() else {**made, "shards": {}}
    manifest.setdefault("recipe", made["recipe"])  # a cache from before the manifest named its recipe
    if {k: manifest[k] for k in made} != made:
        raise ValueError(f"{out} was built with {manifest['spec']} and recipe {manifest['recipe']}, not {made}")
    for k in range(shards):
        path = out / f"shard-{k:04d}.npz"
        if path.exists():
            continue
        lr, hr = _shard_crops(images, spec, recipe, k)
        start = time.perf_counter()
        target = np.concatenate([teacher_upscale(teacher, lr[i : i + 8]) for i in range(0, len(lr), 8)])
        seconds = time.perf_counter() - start
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, lr=lr, target=target, hr=hr)
        tmp.replace(path)
        manifest["shards"][path.name] = {"teacher_seconds": round(seconds, 3), "crops": len(lr)}
        log.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{path.name}: {seconds / len(lr):.3f} s per {spec.lr_size}x{spec.lr_size} LR crop", flush=True)


class DistillSampler:
    """Random aligned (LR, teacher output, HR) patches from a target cache, flipped and transposed."""

    def __init__(self, cache_dir: str | Path, patch_size: int, margin: int = 8, scale: int = 4) -> None:
        shards = sorted(Path(cache_dir).glob("shard-*.npz"))
        if not shards:
            raise FileNotFoundError(f"no teacher targets in {cache_dir}: run `csd-sr teacher-targets` first")
        data = [np.load(p) for p in shards]
        self.lr = np.concatenate([d["lr"] for d in data])
        self.target = np.concatenate([d["target"] for d in data])
        self.hr = np.concatenate([d["hr"] for d in data])
        self.scale, self.lr_patch, self.margin = scale, patch_size // scale, margin
        if self.lr.shape[1] - 2 * margin < self.lr_patch:
            raise ValueError(f"patch {patch_size} does not fit crops of {self.lr.shape[1]} LR px with margin {margin}")

    def __len__(self) -> int:
        return len(self.lr)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lr, teacher output, hr) float tensors in 0..255."""
        s, p, m = self.scale, self.lr_patch, self.margin
        span = self.lr.shape[1] - 2 * m - p + 1
        out: list[list[torch.Tensor]] = [[], [], []]
        for _ in range(batch_size):
            i = int(torch.randint(len(self.lr), (), generator=generator))
            y, x = (m + int(torch.randint(span, (), generator=generator)) for _ in range(2))
            crops = (
                self.lr[i, y : y + p, x : x + p],
                self.target[i, y * s : (y + p) * s, x * s : (x + p) * s],
                self.hr[i, y * s : (y + p) * s, x * s : (x + p) * s],
            )
            flips = torch.randint(2, (3,), generator=generator).tolist()
            for bucket, crop in zip(out, crops, strict=True):
                bucket.append(augment(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1), *flips))
        lr, target, hr = (torch.stack(b).float() for b in out)
        return lr, target, hr
