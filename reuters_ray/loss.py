"""Focal loss with class weights and label smoothing (seed report, section 4.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: torch.Tensor | None = None,
    gamma: float = 0.5,
    smoothing: float = 0.05,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss over smoothed targets.

    With p = softmax(logits), K classes and smoothed targets y = (1 - smoothing) * onehot(target) + smoothing / K,
    each example's loss is

        loss_i = - sum_c  alpha_c * y_ic * (1 - p_ic)^gamma * log p_ic

    i.e. the seed's FL(p_t) = -alpha_t (1 - p_t)^gamma log p_t applied to every class in proportion to its
    smoothed target weight. gamma = 0, smoothing = 0, alpha = 1 is exactly cross-entropy.

    logits: [N, K] (any float dtype; computed in float32), targets: [N] class indices, alpha: [K] or None.
    reduction: "mean" over examples, "sum", or "none" ([N]).
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    k = logits.shape[-1]
    y = torch.full_like(logp, smoothing / k)
    y.scatter_(1, targets.view(-1, 1), 1.0 - smoothing + smoothing / k)
    if alpha is not None:
        y = y * alpha.to(logp)
    focus = (1.0 - logp.exp()).clamp_min(0.0).pow(gamma) if gamma else 1.0
    per_example = -(y * focus * logp).sum(dim=-1)
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example
