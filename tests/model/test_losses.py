from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.edsr import EDSR, EDSRConfig
from model.features import build_feature_extractor, vgg19_features
from model.losses import ContrastiveLoss, CSDObjective, bicubic_negatives


@pytest.fixture(scope="module")
def effnet() -> torch.nn.Module:
    return build_feature_extractor("efficientnet-lite0")


@pytest.fixture(scope="module")
def random_vgg(tmp_path_factory) -> torch.nn.Module:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in vgg19_features().state_dict().items()}, path)
    return build_feature_extractor("vgg19", str(path))


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 255


@pytest.mark.parametrize("net", ["effnet", "random_vgg"])
def test_five_feature_maps(net: str, request) -> None:
    feats = request.getfixturevalue(net)(_images(2))
    assert len(feats) == 5


@pytest.mark.parametrize("net", ["effnet", "random_vgg"])
def test_contrastive_zero_when_student_equals_teacher_and_grows_with_distance(net: str, request) -> None:
    loss = ContrastiveLoss(request.getfixturevalue(net))
    teacher, negatives = _images(4, seed=1), _images(3, seed=2)
    ref = loss.reference(teacher, negatives)
    assert loss(teacher.clone(), ref).item() == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(teacher.shape, generator=torch.Generator().manual_seed(3))
    values = [loss((teacher + s * noise).clamp(0, 255), ref).item() for s in (2, 8, 32)]
    assert 0 < values[0] < values[1] < values[2]


def test_no_gradient_into_teacher_or_negatives(effnet) -> None:
    loss = ContrastiveLoss(effnet)
    student = _images(2).requires_grad_()
    teacher = _images(2, seed=1).requires_grad_()
    negatives = _images(3, seed=2).requires_grad_()
    loss(student, loss.reference(teacher, negatives)).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and negatives.grad is None
    assert all(p.grad is None for p in effnet.parameters())


def test_feature_network_stays_frozen_in_train_mode(effnet) -> None:
    loss = ContrastiveLoss(effnet).train()
    assert not loss.features.training
    before = effnet.stem[1].running_mean.clone()
    loss(_images(2), loss.reference(_images(2, seed=1), _images(2, seed=2)))
    torch.testing.assert_close(effnet.stem[1].running_mean, before)


def test_negatives_are_bicubic_upsamplings_of_distinct_batch_images() -> None:
    lr = _images(5, size=8)
    neg = bicubic_negatives(lr, 4, 3, torch.Generator().manual_seed(0))
    assert neg.shape == (3, 3, 32, 32)
    ups = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 255)
    matches = [[torch.equal(n, u) for u in ups].index(True) for n in neg]
    assert len(set(matches)) == 3


def test_objective_trains_every_width_and_all_branches_reach_shared_weights(effnet) -> None:
    torch.manual_seed(0)
    model = EDSR(EDSRConfig(n_resblocks=1, n_feats=16))
    objective = CSDObjective(model, (0.25, 0.5), contrastive=ContrastiveLoss(effnet), neg_num=2)
    lr = _images(3, size=8)
    loss, terms = objective(lr, _images(3, size=32, seed=5), torch.Generator().manual_seed(0))
    assert set(terms) == {"l1@1", "l1@0.25", "cl@0.25", "l1@0.5", "cl@0.5"}
    loss.backward()
    grad = model.head.weight.grad
    assert grad[:4].abs().sum() > 0 and grad[8:].abs().sum() > 0  # students' slice and teacher-only channels


def test_contrastive_gradient_reaches_student_weights(effnet) -> None:
    torch.manual_seed(0)
    model = EDSR(EDSRConfig(n_resblocks=1, n_feats=16))
    objective = CSDObjective(model, (0.25,), t_lambda=0.0, contrastive=ContrastiveLoss(effnet), neg_num=2)
    lr, hr = _images(2, size=8), _images(2, size=32, seed=5)
    student = model(lr, 0.25)
    ref = objective.contrastive.reference(model(lr, 1.0), bicubic_negatives(lr, 4, 2, None))
    objective.contrastive(student, ref).backward()
    assert model.head.weight.grad[:4].abs().sum() > 0
    assert model.head.weight.grad[4:].abs().sum() == 0  # teacher detached: nothing beyond the student slice
    del hr


def test_unknown_student_width_is_refused() -> None:
    with pytest.raises(ValueError):
        CSDObjective(EDSR(EDSRConfig(n_resblocks=1, n_feats=16)), (0.3,), contra_lambda=0)


def _photo(name: str) -> torch.Tensor:
    from skimage import data

    img = Image.fromarray(getattr(data, name)()).resize((224, 224), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.mark.parametrize(("name", "label"), [("coffee", 967), ("chelsea", 285)])
def test_efficientnet_lite0_weights_are_imagenet_weights(name: str, label: int) -> None:
    """967 = espresso, 285 = Egyptian cat: only real ImageNet weights get these right."""
    from model.efficientnet_lite import efficientnet_lite0

    with torch.no_grad():
        probs = efficientnet_lite0()(_photo(name)).softmax(1)
    assert probs.argmax().item() == label
    assert probs.max().item() > 0.5
