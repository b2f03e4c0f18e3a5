"""What a fold's optimizer steps follow, each a small pure builder the fold loop (reuters_ray.fold.train) calls: the
order of the batches (shuffled, or grouped by length to cut padding), AdamW with decay on matrices only, the
learning-rate schedule (linear warm-up, then cosine decay to 0) and early stopping on the monitored validation
figure. No Ray here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup from 0 to 1 over warmup_steps, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class EarlyStopping:
    """Stops after `patience` epochs without an improvement of more than `min_delta` (higher is better)."""

    patience: int
    min_delta: float
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Records one epoch's score; returns True when it is a new best."""
        if score > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def micro_batches(idx: np.ndarray, batch_size: int, seed: int | None) -> list[np.ndarray]:
    """`idx` cut into batches; shuffled by a generator seeded with `seed` (None keeps the order)."""
    if seed is not None:
        idx = np.random.default_rng(seed).permutation(idx)
    return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]


def length_grouped_batches(
    idx: np.ndarray, lengths: np.ndarray, batch_size: int, seed: int, pool: int = 50
) -> list[np.ndarray]:
    """Batches of similar lengths: shuffle, cut into pools of `pool` batches, sort each pool by length, cut it
    into batches, shuffle the batch order. Which examples share a batch is random apart from their length,
    so batches stay mixed across classes; padding falls to a few percent (bench/padding.py, docs/results.md)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(idx)
    batches = []
    for start in range(0, len(idx), batch_size * pool):
        chunk = idx[start : start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, fused: bool) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (none on biases and LayerNorm weights)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def build_scheduler(optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over warmup_ratio of all steps, then cosine decay to 0 (lr_factor)."""
    warmup_steps = math.ceil(total_steps * warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(_lr_at, warmup_steps, total_steps))


def _lr_at(warmup_steps: int, total_steps: int, step: int) -> float:
    return lr_factor(step, warmup_steps, total_steps)
