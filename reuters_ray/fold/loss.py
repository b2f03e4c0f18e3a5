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
    Multi-hot targets [N, K] (data.task multi) go to focal_loss_multilabel with the same arguments.
    """
    if targets.dim() == 2:
        return focal_loss_multilabel(logits, targets, alpha, gamma, smoothing, reduction)
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


def focal_loss_multilabel(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    gamma: float = 0.5,
    smoothing: float = 0.05,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss on sigmoid outputs, per topic, summed over topics (Lin et al. 2017, "Focal Loss for Dense Object
    Detection", eq. 5, without its alpha balance: the class weights take that role as positive weights).

    With p = sigmoid(logits) and the targets smoothed as the single-label loss smooths them, a share `smoothing` of
    each text's target spread evenly over the K topics, y = (1 - smoothing) * target + smoothing / K, each example's
    loss is

        loss_i = - sum_k [ w_k * y_ik * (1 - p_ik)^gamma * log p_ik  +  (1 - y_ik) * p_ik^gamma * log(1 - p_ik) ]

    gamma = 0, smoothing = 0, w = 1 is exactly binary cross-entropy summed over the K topics
    (torch.nn.functional.binary_cross_entropy_with_logits(..., reduction="none").sum(-1)).
    Each topic's focusing term is its own: (1 - p)^gamma on its positive side, p^gamma on its negative side.

    logits: [N, K] (computed in float32), targets: [N, K] of 0/1 (any dtype), pos_weight: [K] or None.
    reduction: "mean" over examples, "sum", or "none" ([N]).
    """
    z = logits.float()
    # smoothing / K, not the binary / 2: with 90 topics and 1.2 true ones per text, every negative's target at 0.025
    # pulled the quick ModApte run's folds toward one answer for all (micro-F1 0.26 against 0.49 after one epoch)
    y = targets.to(z) * (1.0 - smoothing) + smoothing / z.shape[-1]
    logp, log1mp = F.logsigmoid(z), F.logsigmoid(-z)
    pos = y * logp
    if gamma:
        pos = pos * (1.0 - logp.exp()).clamp_min(0.0).pow(gamma)
    if pos_weight is not None:
        pos = pos * pos_weight.to(z)
    neg = (1.0 - y) * log1mp
    if gamma:
        neg = neg * logp.exp().pow(gamma)
    per_example = -(pos + neg).sum(dim=-1)
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example


def distillation_loss(
    logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 2.0, reduction: str = "mean"
) -> torch.Tensor:
    """The soft-target loss of knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a
    Neural Network", section 2): the KL divergence from the teacher's distribution to the student's, both softened
    by `temperature`, times temperature^2 (the soft targets' gradients scale as 1 / T^2: the product keeps their
    size when T changes).

    The teacher is given by its probabilities p (a run's predictor: a blend of probabilities has no logits); softened,
    they are softmax(log p / T) for single-label data, and sigmoid(logit(p) / T) per topic for multi-label data,
    whose KL is the binary one summed over the topics:

        single:  loss_i = T^2 * sum_c q_ic * (log q_ic - log softmax(z_i / T)_c)
        multi:   loss_i = T^2 * sum_k [ q_ik log(q_ik / s_ik) + (1 - q_ik) log((1 - q_ik) / (1 - s_ik)) ],
                 s = sigmoid(z / T)

    logits: [N, K] student logits (computed in float32); teacher_probs: [N, K] probabilities (rows summing to 1 for
    single-label data; any in [0, 1] per topic for multi-label data); distillation_loss_multilabel is the multi-label one.
    reduction: "mean" over examples, "sum", or "none" ([N]). Zero when the student's softened output equals the
    teacher's.
    """
    return _distillation(logits, teacher_probs, temperature, reduction, multi_label=False)


def distillation_loss_multilabel(
    logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 2.0, reduction: str = "mean"
) -> torch.Tensor:
    """distillation_loss for multi-label data: per topic, the binary KL of the softened sigmoids, summed over topics."""
    return _distillation(logits, teacher_probs, temperature, reduction, multi_label=True)


def _distillation(logits, teacher_probs, temperature: float, reduction: str, multi_label: bool) -> torch.Tensor:
    z = logits.float() / temperature
    eps = 1e-7  # a probability of exactly 0 (a class the linear model never saw) has no logarithm
    p = teacher_probs.to(z).clamp(eps, 1.0 - (eps if multi_label else 0.0))
    if multi_label:
        q = torch.sigmoid(torch.log(p / (1.0 - p)) / temperature)
        log_q, log_1mq = torch.log(q.clamp_min(eps)), torch.log((1.0 - q).clamp_min(eps))
        per_example = (q * (log_q - F.logsigmoid(z)) + (1.0 - q) * (log_1mq - F.logsigmoid(-z))).sum(dim=-1)
    else:
        log_q = F.log_softmax(torch.log(p) / temperature, dim=-1)
        per_example = (log_q.exp() * (log_q - F.log_softmax(z, dim=-1))).sum(dim=-1)
    per_example = per_example * temperature**2
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example
