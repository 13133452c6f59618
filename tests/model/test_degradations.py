"""LR degradations (model.degradations) and where they plug in: the patch sampler, the trainer's
validation pairs, evaluation, the model card and ``csd-sr evaluate --degradation``."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from model.cli import main as cli_main
from model.data import Pair, PatchSampler, degrade_pairs, downscale, load_pairs, to_image, to_tensor
from model.degradations import (
    _KERNELS,
    EVAL_DEGRADATIONS,
    TRAINING_RECIPES,
    RealWorld,
    degrade,
    degraded_file,
    image_seed,
    jpeg,
    noise_level,
)
from model.edsr import EDSR, EDSRConfig
from model.evaluate import evaluate_sets
from model.rungs import Rung
from model.train import TrainConfig, Trainer
from model.weights import merge_metrics, save_weights
from tests.conftest import synthetic_image, write_png

# A recipe with every step off: tests switch on the one step they look at.
NOTHING = RealWorld(p_clean=0.0, p_kernel=0.0, p_blur=0.0, p_noise=0.0, p_gray_noise=0.0, p_jpeg=0.0)
KERNELS = (Image.Resampling.BILINEAR, Image.Resampling.BOX, Image.Resampling.LANCZOS)


def pillow_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.array(Image.open(buf))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


def roughness(img: np.ndarray) -> float:
    """Mean squared neighbour difference: falls as blur grows."""
    x = img.astype(np.float64)
    return float((np.diff(x, axis=0) ** 2).mean() + (np.diff(x, axis=1) ** 2).mean())


@pytest.fixture
def patch() -> tuple[np.ndarray, np.ndarray]:
    """A non-square (lr, hr) pair: 12x20 LR of a 48x80 HR (a swapped H/W shows up as a shape error)."""
    hr = synthetic_image(48, 80, seed=3)
    return downscale(hr, 4), hr


@pytest.fixture
def hr_folder(tmp_path):
    folder = tmp_path / "Tiny" / "HR"
    folder.mkdir(parents=True)
    for i in range(2):
        write_png(folder / f"img{i}.png", synthetic_image(64, 56, seed=i))
    return folder


# --- fixed evaluation degradations ---------------------------------------------------------------


def test_jpeg_degradations_are_pillow_round_trips_ordered_by_quality(patch) -> None:
    lr, _ = patch
    out = {q: degrade(lr, f"jpeg{q}") for q in (50, 75, 90)}
    np.testing.assert_array_equal(out[75], pillow_jpeg(lr, 75))
    np.testing.assert_array_equal(out[50], pillow_jpeg(lr, 50))
    for q, img in out.items():
        assert img.shape == lr.shape and img.dtype == np.uint8, q
    assert mse(out[50], lr) > mse(out[75], lr) > mse(out[90], lr) > 0


def test_clean_is_the_input_unchanged(patch) -> None:
    lr, _ = patch
    np.testing.assert_array_equal(degrade(lr, "clean"), lr)


def test_camera_matches_its_definition_step_by_step(patch) -> None:
    lr, _ = patch
    before = lr.copy()
    seed = 1234
    blurred = np.array(Image.fromarray(lr).filter(ImageFilter.GaussianBlur(0.8)))
    noise = np.random.default_rng(seed).normal(0.0, 4.0, blurred.shape)
    noisy = np.clip(np.round(blurred.astype(np.float64) + noise), 0, 255).astype(np.uint8)
    expected = pillow_jpeg(noisy, 80)
    out = degrade(lr, "camera", seed)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(lr, before)  # the clean LR is not modified in place
    # not just a JPEG q80: the blur and the noise are there
    assert mse(out, pillow_jpeg(lr, 80)) > 1


def test_camera_is_reproducible_per_seed(patch) -> None:
    lr, _ = patch
    np.testing.assert_array_equal(degrade(lr, "camera", 7), degrade(lr, "camera", 7))
    assert not np.array_equal(degrade(lr, "camera", 7), degrade(lr, "camera", 8))


@pytest.mark.parametrize("name", ["jpeg", "jpegXX", "JPEG75", "blur", "jpeg-5", ""])
def test_unknown_degradation_raises(patch, name) -> None:
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(patch[0], name)


def test_every_listed_degradation_runs_on_rgb_and_grayscale(patch) -> None:
    lr, _ = patch
    gray = lr[..., 0].copy()
    for name in EVAL_DEGRADATIONS:
        for img in (lr, gray):
            out = degrade(img, name, seed=1)
            assert out.shape == img.shape and out.dtype == np.uint8, (name, img.ndim)
    np.testing.assert_array_equal(jpeg(gray, 60), pillow_jpeg(gray, 60))
    assert jpeg(gray, 60).ndim == 2


def test_the_degraded_file_decodes_to_the_degradation(patch) -> None:
    lr, _ = patch
    for name in EVAL_DEGRADATIONS:
        with Image.open(io.BytesIO(degraded_file(lr, name, seed=3))) as img:
            assert img.format == ("PNG" if name == "clean" else "JPEG")
            np.testing.assert_array_equal(np.array(img.convert("RGB")), degrade(lr, name, seed=3), err_msg=name)


def test_image_seed_is_stable_across_processes() -> None:
    # The published camera figures depend on it: a salted hash() would change them every run.
    assert image_seed("baby") == 2272035134
    assert image_seed("baby") != image_seed("bird")


# --- the RealWorld training recipe ---------------------------------------------------------------


def test_shipped_recipes() -> None:
    assert TRAINING_RECIPES["none"] is None
    assert TRAINING_RECIPES["real"] == RealWorld()
    assert RealWorld().jpeg_quality == (30, 95) and RealWorld().p_clean == 0.2


def test_the_blurred_recipe_trains_the_real_level(patch) -> None:
    """``blurred`` pairs are mostly degraded, and a model trained on them serves the ``real`` level."""
    lr, hr = patch
    g = torch.Generator().manual_seed(0)
    outs = [TRAINING_RECIPES["blurred"](lr, hr, g) for _ in range(60)]
    assert np.mean([np.array_equal(out, lr) for out in outs]) < 0.15  # p_clean 0.05
    assert [noise_level(r) for r in ("none", "real", "jpeg", "blurred")] == ["none", "real", "jpeg", "real"]


def test_the_jpeg_recipe_only_compresses(patch) -> None:
    """Every ``jpeg`` pair is the clean LR, or a JPEG of q 25-90 of it or of another kernel's downscale."""
    lr, hr = patch
    recipe = TRAINING_RECIPES["jpeg"]
    sources = [lr, *(np.array(Image.fromarray(hr).resize(lr.shape[1::-1], k)) for k in _KERNELS)]
    candidates = [lr] + [jpeg(src, q) for src in sources for q in range(25, 91)]
    g = torch.Generator().manual_seed(0)
    outs = [recipe(lr, hr, g) for _ in range(60)]
    for out in outs:
        assert any(np.array_equal(out, c) for c in candidates)
    assert 0 < np.mean([np.array_equal(out, lr) for out in outs]) < 0.4  # p_clean 0.1


def test_recipe_draws_only_from_the_generator(patch) -> None:
    lr, hr = patch
    recipe = RealWorld()

    def run(seed: int) -> list[np.ndarray]:
        g = torch.Generator().manual_seed(seed)
        return [recipe(lr, hr, g) for _ in range(8)]

    first = run(0)
    np.random.seed(99)  # the global numpy / torch RNGs play no part
    torch.manual_seed(99)
    for a, b in zip(first, run(0), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, run(1), strict=True))
    # a saved generator state resumes the exact sequence
    g = torch.Generator().manual_seed(0)
    recipe(lr, hr, g)
    state = g.get_state()
    nxt = recipe(lr, hr, g)
    np.testing.assert_array_equal(recipe(lr, hr, torch.Generator().set_state(state)), nxt)


def test_recipe_output_shape_dtype_and_clean_share(patch) -> None:
    lr, hr = patch
    g = torch.Generator().manual_seed(0)
    outs = [RealWorld()(lr, hr, g) for _ in range(150)]
    for out in outs:
        assert out.shape == lr.shape and out.dtype == np.uint8
    unchanged = np.mean([np.array_equal(out, lr) for out in outs])
    # p_clean 0.2, plus the ~2 % of draws where no step fires
    assert 0.08 < unchanged < 0.36, unchanged
    always_clean = RealWorld(p_clean=1.0)
    assert all(np.array_equal(always_clean(lr, hr, g), lr) for _ in range(20))
    never_clean = RealWorld(p_clean=0.0, p_jpeg=1.0)
    assert not any(np.array_equal(never_clean(lr, hr, g), lr) for _ in range(40))
    gray_lr, gray_hr = lr[..., 1].copy(), hr[..., 1].copy()  # every step also takes HxW images
    everything = RealWorld(p_clean=0.0, p_kernel=1.0, p_blur=1.0, p_noise=1.0, p_gray_noise=0.5, p_jpeg=1.0)
    for _ in range(8):
        out = everything(gray_lr, gray_hr, g)
        assert out.shape == gray_lr.shape and out.dtype == np.uint8


def test_recipe_jpeg_quality_covers_its_inclusive_range(patch) -> None:
    lr, hr = patch
    candidates = {q: jpeg(lr, q) for q in range(38, 45)}
    assert len({c.tobytes() for c in candidates.values()}) == len(candidates)  # each quality is recognisable
    recipe = replace(NOTHING, p_jpeg=1.0, jpeg_quality=(40, 42))
    g = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(40):
        out = recipe(lr, hr, g)
        (q,) = [q for q, c in candidates.items() if np.array_equal(out, c)]
        seen.append(q)
    assert set(seen) == {40, 41, 42}


def test_recipe_kernel_step_downscales_the_hr_with_each_kernel(patch) -> None:
    lr, hr = patch
    size = (lr.shape[1], lr.shape[0])
    candidates = [np.array(Image.fromarray(hr).resize(size, k)) for k in KERNELS]
    recipe = replace(NOTHING, p_kernel=1.0)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        out = recipe(lr, hr, g)
        assert out.shape == lr.shape
        (k,) = [i for i, c in enumerate(candidates) if np.array_equal(out, c)]
        seen.add(k)
    assert seen == {0, 1, 2}


def test_recipe_blur_strength_is_within_its_range(patch) -> None:
    lr, hr = patch
    lo, hi = 0.5, 1.0
    recipe = replace(NOTHING, p_blur=1.0, blur_sigma=(lo, hi))
    g = torch.Generator().manual_seed(0)
    sharpest = roughness(np.array(Image.fromarray(lr).filter(ImageFilter.GaussianBlur(lo))))
    softest = roughness(np.array(Image.fromarray(lr).filter(ImageFilter.GaussianBlur(hi))))
    values = [roughness(recipe(lr, hr, g)) for _ in range(12)]
    assert all(softest - 1 <= v <= sharpest + 1 for v in values), (softest, values, sharpest)
    assert len(set(values)) > 1  # the strength is drawn, not fixed


@pytest.mark.parametrize("gray", [True, False])
def test_recipe_noise_strength_and_gray_noise(gray) -> None:
    lr = np.full((24, 40, 3), 128, np.uint8)  # flat mid-grey: no clipping, the residual is the noise
    recipe = replace(NOTHING, p_noise=1.0, noise_sigma=(3.0, 6.0), p_gray_noise=1.0 if gray else 0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        out = recipe(lr, lr, g)
        assert out.shape == lr.shape and out.dtype == np.uint8
        residual = out.astype(np.float64) - 128
        assert 2.5 < residual.std() < 6.6, residual.std()
        same_in_every_channel = (residual == residual[..., :1]).all()
        assert same_in_every_channel == gray


# --- the sampler and the trainer ----------------------------------------------------------------


def test_degraded_sampler_is_deterministic_and_resumes_exactly(hr_folder) -> None:
    sampler = PatchSampler([hr_folder], 4, 32, None, RealWorld())
    g = torch.Generator().manual_seed(5)
    first = sampler.sample(6, g)
    state = g.get_state()
    second = sampler.sample(6, g)
    fresh = PatchSampler([hr_folder], 4, 32, None, RealWorld())
    again = fresh.sample(6, torch.Generator().manual_seed(5))
    resumed = fresh.sample(6, torch.Generator().set_state(state))
    for a, b in ((first, again), (second, resumed)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert first[0].shape == (6, 3, 8, 8) and first[1].shape == (6, 3, 32, 32)


def test_sampler_hands_each_patch_and_its_own_generator_to_the_recipe(hr_folder) -> None:
    calls = []

    def spy(lr: np.ndarray, hr: np.ndarray, generator: torch.Generator) -> np.ndarray:
        calls.append((lr.shape, hr.shape, lr.dtype, generator))
        return RealWorld()(lr, hr, generator)

    g = torch.Generator().manual_seed(0)
    PatchSampler([hr_folder], 4, 32, None, spy).sample(5, g)
    assert len(calls) == 5
    for lr_shape, hr_shape, dtype, generator in calls:
        assert lr_shape == (8, 8, 3) and hr_shape == (32, 32, 3) and dtype == np.uint8
        assert generator is g  # a private generator would repeat the same draws for every patch


def test_degraded_sampler_changes_the_lr(hr_folder) -> None:
    always_jpeg = replace(NOTHING, p_jpeg=1.0)
    clean_lr, _ = PatchSampler([hr_folder], 4, 32, None).sample(4, torch.Generator().manual_seed(0))
    lr, _ = PatchSampler([hr_folder], 4, 32, None, always_jpeg).sample(4, torch.Generator().manual_seed(0))
    assert lr.shape == clean_lr.shape and lr.dtype == clean_lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 255
    assert not torch.equal(lr, clean_lr)


def test_degraded_lr_stays_aligned_with_its_hr_patch(hr_folder) -> None:
    """The degradation sees the crop's HR and the flips act on both: the LR is a downscale of its HR."""
    sampler = PatchSampler([hr_folder], 4, 32, None, replace(NOTHING, p_kernel=1.0))
    lr, hr = sampler.sample(8, torch.Generator().manual_seed(1))
    for lo, hi in zip(lr, hr, strict=True):
        hr_img, lr_img = to_image(hi[None]), to_image(lo[None]).astype(np.float64)
        errors = [np.abs(np.array(Image.fromarray(hr_img).resize((8, 8), k)) - lr_img).mean() for k in KERNELS]
        assert min(errors) < 1.0, errors


def test_trainer_uses_the_configured_recipe_and_val_degradation(hr_folder, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CSD_SR_CACHE", str(tmp_path / "cache"))
    base = dict(
        n_resblocks=1,
        n_feats=8,
        train_dirs=[str(hr_folder)],
        val_dir=str(hr_folder),
        patch_size=32,
        batch_size=2,
        contra_lambda=0.0,
        steps=1,
    )
    real = Trainer(TrainConfig(**base, degradation="real", val_degradation="jpeg75", out_dir=str(tmp_path / "a")))
    assert real.sampler.degradation == RealWorld()
    clean = load_pairs(hr_folder, 4)
    for got, ref in zip(real.val_pairs, clean, strict=True):
        assert got.name == ref.name
        np.testing.assert_array_equal(got.lr, jpeg(ref.lr, 75))
        np.testing.assert_array_equal(got.hr, ref.hr)
    plain = Trainer(TrainConfig(**base, out_dir=str(tmp_path / "b")))
    assert plain.sampler.degradation is None
    for got, ref in zip(plain.val_pairs, clean, strict=True):
        np.testing.assert_array_equal(got.lr, ref.lr)
    with pytest.raises(ValueError):
        TrainConfig(**base, degradation="bogus")


def test_degrade_pairs_keeps_names_and_hr_and_seeds_by_name() -> None:
    lr = synthetic_image(16, 16, seed=1)
    hr = synthetic_image(64, 64, seed=1)
    pairs = [Pair("a", lr, hr), Pair("b", lr.copy(), hr)]
    out = degrade_pairs(pairs, "camera")
    assert [p.name for p in out] == ["a", "b"]
    for p, q in zip(pairs, out, strict=True):
        np.testing.assert_array_equal(q.hr, p.hr)
        np.testing.assert_array_equal(q.lr, degrade(p.lr, "camera", image_seed(p.name)))
        assert not np.array_equal(q.lr, p.lr)
    assert not np.array_equal(out[0].lr, out[1].lr)  # same LR, other name: other noise
    for p, q in zip(out, degrade_pairs(pairs, "camera"), strict=True):
        np.testing.assert_array_equal(p.lr, q.lr)
    np.testing.assert_array_equal(pairs[0].lr, lr)  # the input pairs are untouched


# --- evaluation, the model card and the CLI -----------------------------------------------------


def test_evaluate_sets_measures_on_the_degraded_lr(hr_folder) -> None:
    model = EDSR(EDSRConfig(n_resblocks=1, n_feats=8))
    seen: list[torch.Tensor] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return F.interpolate(x, scale_factor=4, mode="nearest")

    results = {
        d: evaluate_sets(model, [hr_folder], {Rung(1.0): forward}, timing=False, degradation=d)
        for d in ("clean", "jpeg50")
    }
    for d, res in results.items():
        assert set(res) == {"Tiny"}
        assert res["Tiny"]["set"] == "Tiny" and res["Tiny"]["degradation"] == d
        assert set(res["Tiny"]["rows"]) == {"bicubic", "1"}
    clean, degraded = results["clean"]["Tiny"]["rows"], results["jpeg50"]["Tiny"]["rows"]
    assert degraded["bicubic"]["psnr"] < clean["bicubic"]["psnr"] - 0.1
    assert degraded["1"]["psnr"] < clean["1"]["psnr"]
    # the rungs' forwards got the very LR the degradation defines (clean run first, then jpeg50)
    pairs = load_pairs(hr_folder, 4)
    expected = [to_tensor(p.lr) for p in pairs] + [to_tensor(jpeg(p.lr, 50)) for p in pairs]
    assert len(seen) == len(expected)
    for got, want in zip(seen, expected, strict=True):
        assert torch.equal(got, want)


def test_merge_metrics_places_clean_and_degraded_rows() -> None:
    card = {
        "architecture": {"name": "EDSR"},
        "metrics": {"Set5": {"0.25-int8": {"psnr": 1.0}, "1": {"psnr": 0.0}}, "Urban": {"1": {"psnr": 9.0}}},
        "metrics_degraded": {"jpeg75": {"Set5": {"0.25": {"psnr": 2.0}}}},
    }
    results = [
        {"set": "Set5", "degradation": "clean", "rows": {"1": {"psnr": 30.0}}},
        {"set": "Set5", "degradation": "jpeg75", "rows": {"1": {"psnr": 28.0}}},
        {"set": "Set5", "degradation": "camera", "rows": {"bicubic": {"psnr": 25.0}}},
        {"set": "B100", "rows": {"1": {"psnr": 27.0}}},  # a result without the key is clean
    ]
    out = merge_metrics(card, results)
    assert out["architecture"] == {"name": "EDSR"}
    assert out["metrics"] == {
        "Set5": {"0.25-int8": {"psnr": 1.0}, "1": {"psnr": 30.0}},
        "Urban": {"1": {"psnr": 9.0}},
        "B100": {"1": {"psnr": 27.0}},
    }
    assert out["metrics_degraded"] == {
        "jpeg75": {"Set5": {"0.25": {"psnr": 2.0}, "1": {"psnr": 28.0}}},
        "camera": {"Set5": {"bicubic": {"psnr": 25.0}}},
    }
    assert "metrics_self_ensemble" not in out and "metrics_degraded_self_ensemble" not in out
    ens = merge_metrics({}, results[:2], self_ensemble=True)
    assert ens == {
        "metrics_self_ensemble": {"Set5": {"1": {"psnr": 30.0}}},
        "metrics_degraded_self_ensemble": {"jpeg75": {"Set5": {"1": {"psnr": 28.0}}}},
    }


def test_evaluate_cli_measures_every_degradation_and_fills_the_card(hr_folder, tmp_path, capsys) -> None:
    weights = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_weights(EDSR(EDSRConfig(n_resblocks=1, n_feats=8)), weights)
    card_file = weights.with_suffix(".json")
    card = json.loads(card_file.read_text())
    card["metrics_degraded"] = {"jpeg75": {"Tiny": {"1-int8": {"psnr": 1.5}}}}  # an earlier run's row
    card_file.write_text(json.dumps(card))
    args = ["evaluate", "--weights", str(weights), "--data", str(hr_folder), "--no-timing"]
    cli_main([*args, "--degradation", "clean", "jpeg75", "--out", str(tmp_path / "r"), "--update-card"])
    table = capsys.readouterr().out
    assert "### Tiny x4, 2 images" in table and "LR jpeg75" in table
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results) == {"Tiny", "Tiny/jpeg75"}
    assert results["Tiny"]["degradation"] == "clean" and results["Tiny/jpeg75"]["degradation"] == "jpeg75"
    clean, degraded = results["Tiny"]["rows"], results["Tiny/jpeg75"]["rows"]
    assert set(clean) == set(degraded) == {"bicubic", "0.25", "0.5", "1"}
    assert degraded["bicubic"]["psnr"] < clean["bicubic"]["psnr"]
    assert "LR jpeg75" in (tmp_path / "r.md").read_text()
    card = json.loads(card_file.read_text())
    assert card["metrics"]["Tiny"] == clean
    assert card["metrics_degraded"]["jpeg75"]["Tiny"] == {"1-int8": {"psnr": 1.5}, **degraded}
    assert set(card["metrics_degraded"]) == {"jpeg75"}
    assert "per_width" in card  # the rest of the card is kept
    with pytest.raises(SystemExit):  # argparse: not one of EVAL_DEGRADATIONS
        cli_main([*args, "--degradation", "jpeg10"])
