"""Focal loss: a hand-computed value, and the cross-entropy special case."""

import math

import torch
import torch.nn.functional as F

from reuters_ray.fold.loss import focal_loss


def test_matches_a_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([0])
    alpha = torch.tensor([0.5, 2.0, 1.0])
    e = [math.exp(2.0), 1.0, math.exp(-1.0)]
    p = [x / sum(e) for x in e]  # 0.8438, 0.1142, 0.0420
    y = [1 - 0.1 + 0.1 / 3, 0.1 / 3, 0.1 / 3]  # smoothing 0.1 over 3 classes
    expected = -sum(a * yc * (1 - pc) ** 0.5 * math.log(pc) for a, yc, pc in zip([0.5, 2.0, 1.0], y, p))
    got = focal_loss(logits, target, alpha, gamma=0.5, smoothing=0.1)
    assert abs(got.item() - expected) < 1e-6
    # by hand: 0.5*0.9333*0.1562^.5*0.1698 + 2*0.0333*0.8858^.5*2.1698 + 1*0.0333*0.9580^.5*3.1698
    #        = 0.0313 + 0.1362 + 0.1034
    assert abs(got.item() - 0.2709) < 1e-4


def test_reduces_to_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    fl = focal_loss(logits, target, alpha=None, gamma=0.0, smoothing=0.0)
    torch.testing.assert_close(fl, F.cross_entropy(logits, target))
    fl = focal_loss(logits, target, alpha=torch.ones(5), gamma=0.0, smoothing=0.1)
    torch.testing.assert_close(fl, F.cross_entropy(logits, target, label_smoothing=0.1))


def test_focusing_and_reductions():
    logits, target = torch.tensor([[4.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 0])
    per = focal_loss(logits, target, gamma=2.0, smoothing=0.0, reduction="none")
    ce = F.cross_entropy(logits, target, reduction="none")
    assert per[0] / ce[0] < 0.001 and abs(per[1] / ce[1] - 0.25) < 1e-6  # easy example down-weighted by (1-p)^2
    assert torch.isclose(focal_loss(logits, target, reduction="sum"), focal_loss(logits, target) * 2)
