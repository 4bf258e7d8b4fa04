"""Each loss against values computed by hand on tiny tensors."""
from __future__ import annotations

import math

import pytest
import torch

from tipsv2_sdk.pretrain.losses import ContrastiveLoss, DINOLoss, IBOTPatchLoss, KoLeoLoss


def test_contrastive_matches_hand_computation():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # normalised: (1, 0) and (0.7071, 0.7071)
    tau = 0.5
    c = math.sqrt(0.5) / tau  # cosine of 45 degrees / tau
    # logits[i, j] = cos(image_i, text_j) / tau = [[2, c], [0, c]]
    i2t = -math.log(math.exp(2) / (math.exp(2) + math.exp(c))) - math.log(math.exp(c) / (1 + math.exp(c)))
    t2i = -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(0.5)
    expected = 0.5 * (i2t / 2 + t2i / 2)
    got = ContrastiveLoss()(image, text, torch.tensor(tau))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_temperature_gets_gradient_and_is_clamped():
    image, text = torch.randn(4, 8), torch.randn(4, 8)
    tau = torch.tensor(0.07, requires_grad=True)
    ContrastiveLoss()(image, text, tau).backward()
    assert tau.grad is not None and tau.grad.abs() > 0
    clamped = ContrastiveLoss(min_temperature=0.1)
    assert clamped(image, text, torch.tensor(-1.0)).item() == pytest.approx(clamped(image, text, torch.tensor(0.1)).item())


def test_dino_loss_and_center_by_hand():
    loss = DINOLoss(out_dim=2, student_temp=0.1, center_momentum=0.9)
    teacher_logits = torch.tensor([[1.0, 0.0]])
    probs = loss.teacher_probs(teacher_logits, teacher_temp=1.0)
    p0 = math.e / (math.e + 1)
    assert probs[0, 0].item() == pytest.approx(p0)
    student = torch.tensor([[[0.2, 0.0]]])  # (B=1, M=1, K=2); /0.1 -> (2, 0)
    log_z = math.log(math.exp(2) + 1)
    expected = -(p0 * (2 - log_z) + (1 - p0) * (-log_z))
    assert loss(student, probs).item() == pytest.approx(expected, rel=1e-6)
    loss.update_center(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))
    assert loss.center.flatten().tolist() == pytest.approx([0.1 * 2.0, 0.1 * 1.0])
    # the centre is subtracted before sharpening
    assert loss.teacher_probs(torch.tensor([[0.2, 0.1]]), 1.0).flatten().tolist() == pytest.approx([0.5, 0.5])


def test_dino_averages_over_local_crops():
    loss = DINOLoss(out_dim=3)
    probs = torch.softmax(torch.randn(2, 3), -1)
    a, b = torch.randn(2, 1, 3), torch.randn(2, 1, 3)
    both = loss(torch.cat([a, b], 1), probs)
    assert both.item() == pytest.approx(0.5 * (loss(a, probs) + loss(b, probs)).item(), rel=1e-6)


def _ce(student, probs, tau=0.1):
    return -(probs * torch.log_softmax(student / tau, -1)).sum(-1)


def test_ibot_masked_only_by_hand():
    loss = IBOTPatchLoss(out_dim=2, all_tokens=False)
    student = torch.tensor([[[0.1, 0.0], [0.0, 0.3]]])  # B=1, N=2
    probs = torch.tensor([[[0.75, 0.25], [0.5, 0.5]]])
    mask = torch.tensor([[True, False]])
    # token 0 only: -(0.75 * log s(1, 0)_0 + 0.25 * log s(1, 0)_1)
    log_z = math.log(math.e + 1)
    expected = -(0.75 * (1 - log_z) + 0.25 * (-log_z))
    assert loss(student, probs, mask).item() == pytest.approx(expected, rel=1e-6)


def test_ibot_vs_ibot_plus_plus_differ_by_visible_term():
    torch.manual_seed(0)
    B, N, K = 3, 8, 5
    student, probs = torch.randn(B, N, K), torch.softmax(torch.randn(B, N, K), -1)
    mask = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        mask[b, torch.randperm(N)[:6]] = True  # same masked count per image: r = 6/8
    ibot = IBOTPatchLoss(K, all_tokens=False)(student, probs, mask)
    plus = IBOTPatchLoss(K, all_tokens=True)(student, probs, mask)
    ce = _ce(student, probs)
    visible = (ce * ~mask).sum(1) / (~mask).sum(1)  # per-image mean over visible tokens
    r = 6 / 8
    assert plus.item() == pytest.approx((r * ibot + (1 - r) * visible.mean()).item(), rel=1e-6)
    # with nothing visible the two losses coincide
    full = torch.ones(B, N, dtype=torch.bool)
    plus_all = IBOTPatchLoss(K, all_tokens=True)(student, probs, full).item()
    assert IBOTPatchLoss(K, all_tokens=False)(student, probs, full).item() == pytest.approx(plus_all, rel=1e-6)
    assert plus_all == pytest.approx(ce.mean().item(), rel=1e-6)


def test_ibot_center_uses_the_tokens_of_the_loss():
    logits = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])
    mask = torch.tensor([[True, False]])
    masked_only = IBOTPatchLoss(2, center_momentum=0.5, all_tokens=False)
    masked_only.update_center(logits, mask)
    assert masked_only.center.flatten().tolist() == pytest.approx([0.5, 0.0])
    every = IBOTPatchLoss(2, center_momentum=0.5, all_tokens=True)
    every.update_center(logits, mask)
    assert every.center.flatten().tolist() == pytest.approx([1.0, 1.0])


def test_koleo_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # nearest neighbours: 0 -> 2 (dist sqrt(.8)), 1 -> 2 (sqrt(.4)), 2 -> 1 (sqrt(.4))
    expected = -(math.log(math.sqrt(0.8)) + 2 * math.log(math.sqrt(0.4))) / 3
    assert KoLeoLoss(eps=0.0)(x * 3.0).item() == pytest.approx(expected, rel=1e-5)
    dup = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    KoLeoLoss()(dup).backward()
    assert torch.isfinite(dup.grad).all()
    with pytest.raises(ValueError, match="at least 2"):
        KoLeoLoss()(torch.ones(1, 3))


def test_sinkhorn_balances_prototypes_and_normalises_samples():
    from tipsv2_sdk.pretrain.losses import sinkhorn_knopp

    torch.manual_seed(0)
    logits = torch.randn(16, 4) * 0.05 + torch.tensor([0.3, 0.0, 0.0, 0.0])  # prototype 0 favoured for everyone
    probs = sinkhorn_knopp(logits, teacher_temp=0.05, iterations=50)
    assert torch.allclose(probs.sum(1), torch.ones(16), atol=1e-5)
    assert torch.allclose(probs.mean(0), torch.full((4,), 0.25), atol=1e-4)  # equipartition
    plain = torch.softmax(logits / 0.05, -1)
    assert plain.mean(0)[0] > 0.9  # plain softmax would put almost all mass on prototype 0
    assert torch.allclose(sinkhorn_knopp(logits + 7.0, 0.05), sinkhorn_knopp(logits, 0.05), atol=1e-6)
    # two samples, two prototypes, mirrored preferences: each keeps its own preference
    two = sinkhorn_knopp(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), teacher_temp=1.0)
    assert torch.allclose(two, two.flip(0).flip(1)) and two[0, 0] > 0.5


def test_sinkhorn_centering_in_the_losses():
    dino = DINOLoss(4, centering="sinkhorn")
    logits = torch.randn(8, 4)
    assert torch.allclose(dino.teacher_probs(logits, 0.1).sum(1), torch.ones(8), atol=1e-5)
    dino.update_center(logits)
    assert torch.equal(dino.center, torch.zeros(1, 4))  # Sinkhorn keeps no centre
    ibot = IBOTPatchLoss(4, all_tokens=False, centering="sinkhorn")
    mask = torch.tensor([[True, False, True], [False, True, True]])
    probs = ibot.teacher_probs(torch.randn(2, 3, 4), 0.1, mask)
    assert probs.shape == (2, 3, 4) and torch.allclose(probs.sum(-1), torch.ones(2, 3), atol=1e-5)
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(4, centering="mean")
