"""The teacher loader: a small RRDBNet written in ncnn's file format reads back into the same network."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from model.degradations import RealWorld
from model.ncnn import FP16_TAG, FP32_TAG, read_param
from model.rrdbnet import RRDBConfig, RRDBNet
from model.teacher import load_teacher, teacher_upscale
from model.teacher_data import CropSpec, DistillSampler, build_targets

SMALL = RRDBConfig(num_feat=8, num_block=2, num_grow_ch=4)


def write_ncnn(net: RRDBNet, folder: Path, tag: int) -> tuple[Path, Path]:
    """``net``'s convolutions as an ncnn ``.param`` / ``.bin`` pair, weights stored under ``tag``."""
    lines, blobs = ["7767517", "0 0", "Input  input.1  0 1 data"], []
    prev = "data"
    for i, conv in enumerate(net.convs()):
        w = conv.weight.detach().numpy().ravel()
        options = f"0={conv.out_channels} 1=3 4=1 5=1 6={w.size} 9=2 -23310=1,0.2"
        lines.append(f"Convolution  Conv_{i}  1 1 {prev} c{i} {options}")
        prev = f"c{i}"
        if tag == FP16_TAG:
            data = w.astype(np.float16).tobytes()
            data += b"\0" * (-len(data) % 4)
        else:
            data = w.astype(np.float32).tobytes()
        blobs.append(struct.pack("<I", tag) + data + conv.bias.detach().numpy().astype(np.float32).tobytes())
    lines[1] = f"{len(lines) - 2} {len(lines) - 2}"
    param, weights = folder / "net.param", folder / "net.bin"
    param.write_text("\n".join(lines) + "\n")
    weights.write_bytes(b"".join(blobs))
    return param, weights


def small_net(seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(SMALL).eval()


def test_param_lists_every_convolution(tmp_path: Path) -> None:
    net = small_net()
    param, _ = write_ncnn(net, tmp_path, FP32_TAG)
    specs = read_param(param)
    assert len(specs) == len(net.convs()) == 1 + 2 * 15 + 5  # head, 3 x 5 per block, body, 2 up, hr, last
    assert [s.out_channels for s in specs] == [c.out_channels for c in net.convs()]


@pytest.mark.parametrize(("tag", "atol"), [(FP32_TAG, 1e-6), (FP16_TAG, 2e-3)])
def test_loaded_network_matches_the_written_one(tmp_path: Path, tag: int, atol: float) -> None:
    source = small_net(0)
    param, weights = write_ncnn(source, tmp_path, tag)
    loaded = RRDBNet(SMALL)
    from model.ncnn import load_convs

    load_convs(loaded.convs(), param, weights)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), source(x).numpy(), atol=atol)
    assert not torch.equal(small_net(1).conv_first.weight, loaded.conv_first.weight)  # a real copy, not a default


def test_a_mismatched_network_is_refused(tmp_path: Path) -> None:
    param, weights = write_ncnn(small_net(), tmp_path, FP32_TAG)
    from model.ncnn import load_convs

    with pytest.raises(ValueError, match="convolutions"):
        load_convs(RRDBNet(RRDBConfig(num_feat=8, num_block=1, num_grow_ch=4)).convs(), param, weights)
    with pytest.raises(ValueError, match="do not fit"):
        load_convs(RRDBNet(RRDBConfig(num_feat=8, num_block=2, num_grow_ch=8)).convs(), param, weights)
    weights.write_bytes(weights.read_bytes() + b"\0\0\0\0")
    with pytest.raises(ValueError, match="bytes left"):
        load_convs(RRDBNet(SMALL).convs(), param, weights)


def test_unknown_weight_tag_is_refused(tmp_path: Path) -> None:
    param, weights = write_ncnn(small_net(), tmp_path, 0x000D4B38)  # ncnn's int8 tag
    from model.ncnn import load_convs

    with pytest.raises(ValueError, match="tag"):
        load_convs(RRDBNet(SMALL).convs(), param, weights)


def test_targets_cache_is_resumable_and_seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards are a pure function of (seed, index): a rebuilt shard is identical; the sampler cuts aligned patches."""
    from model import teacher_data

    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    monkeypatch.setattr(teacher_data, "teacher_upscale", lambda net, lr: teacher_upscale(net, lr, bf16=False))
    spec = CropSpec(lr_size=16, shard_size=3, seed=1)
    teacher = load_teacher(*write_ncnn(small_net(), tmp_path, FP32_TAG), SMALL)
    build_targets(teacher, [folder], tmp_path / "cache", 2, None, spec)
    first = np.load(tmp_path / "cache" / "shard-0001.npz")["target"]
    (tmp_path / "cache" / "shard-0001.npz").unlink()
    build_targets(teacher, [folder], tmp_path / "cache", 2, None, spec)
    np.testing.assert_array_equal(np.load(tmp_path / "cache" / "shard-0001.npz")["target"], first)
    with pytest.raises(ValueError, match="recipe"):  # one cache, one recipe: resuming with another is refused
        build_targets(teacher, [folder], tmp_path / "cache", 3, RealWorld(), spec)

    sampler = DistillSampler(tmp_path / "cache", patch_size=16, margin=4)
    assert len(sampler) == 6
    lr, target, hr = sampler.sample(2, torch.Generator().manual_seed(0))
    assert lr.shape == (2, 3, 4, 4) and target.shape == hr.shape == (2, 3, 16, 16)
    with torch.no_grad():  # the cached target is the teacher's output on the cached LR
        crop = sampler.lr[0]
        np.testing.assert_array_equal(teacher_upscale(teacher, crop, bf16=False), sampler.target[0])
