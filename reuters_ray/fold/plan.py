"""How a fold computes, decided once from the config and the device before it trains (torchtune's set-up step): the
precision, gradient checkpointing, the optimizer's kernel, the batches, the checkpoint interval. No training here:
reuters_ray.fold.train follows the Plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from reuters_ray.config import PROFILES, Profile, RunConfig, check_workers, forward_passes
from reuters_ray.fold.parallel import Group


def decide_checkpointing(
    profile: Profile, requested: bool | None, device: torch.device, gpu_share: float = 1.0
) -> tuple[bool, str]:
    """Gradient checkpointing on or off, and why. It saves memory at about a third more compute, so the
    default profile uses it only on a GPU with little memory for this fold (`gpu_share` of the card)."""
    if requested is not None:
        return requested, "set by model.gradient_checkpointing"
    if profile.gradient_checkpointing is not None:
        return profile.gradient_checkpointing, "the profile's choice"
    if device.type != "cuda":
        return False, "not needed on CPU (host memory)"
    gib = torch.cuda.get_device_properties(device).total_memory * gpu_share / 2**30
    # Small BERT at batch 32 x 512 tokens needs about 6 GiB without checkpointing (bench/grad_ckpt_memory.py)
    return (gib < 8, f"{gib:.0f} GiB of GPU memory for this fold")


def resolve_precision(requested: str, profile: Profile, device: torch.device) -> str:
    """auto -> bf16 on GPUs that support it, fp16 on older GPUs (and in the seed profile); on CPU bf16 where it has
    AMX bf16 units (cpu_has_amx_bf16) in the default profile, else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cpu":
        return "bf16" if cpu_has_amx_bf16() and not profile.fp16_on_cuda else "fp32"
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() and not profile.fp16_on_cuda else "fp16"


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), on which oneDNN runs bf16 matrix products:
    a MiniLM training step (16 x 32 tokens, fused AdamW) ran 1.42x faster under bf16 autocast than in fp32 with two
    threads and 1.65x with one (bench/cpu_step.py, docs/results.md issue 45). Without them bf16 is emulated, and
    autocast is not known to be faster."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3; private, hence the guard
    try:
        return bool(probe and probe() and torch.backends.mkldnn.is_available())
    except Exception:  # noqa: BLE001 - a probe that fails means no AMX to count on
        return False


def eval_precision(precision: str, device: torch.device) -> str:
    """The precision of validation (early stopping, the out-of-fold logits) and of the test logits for a fold trained
    in `precision`: the same on a GPU, fp32 on CPU, as the predictor (TorchFolds) and its exports answer there, so
    that the fold table's validation figures are the out-of-fold predictions' and the blend's weight, chosen out of
    fold, meets test logits of the same arithmetic. (bf16 validation would save about 1 s of a quick run's 2.5 s
    epoch validation per fold on 2 cores.)"""
    return precision if device.type == "cuda" else "fp32"


@dataclass(frozen=True)
class Plan:
    """How a fold computes, derived once from the config and the device (torchtune's set-up step)."""

    seed: int  # train.seed + fold
    device: torch.device
    profile: Profile
    precision: str  # resolved: bf16, fp16 or fp32
    checkpointing: bool
    why_checkpointing: str
    micro: int  # examples per forward pass, over all the fold's workers (each takes micro / workers)
    accum: int  # forward passes per optimizer step
    steps_per_epoch: int
    group: Group = field(default_factory=Group)  # the fold's data-parallel workers (one: Group())
    checkpoint_every_s: float = 0.0  # resolved train.checkpoint_every_s (checkpoint_interval)


# Devices with a fused AdamW kernel in torch (CPU since torch 2.4)
FUSED = ("cuda", "cpu")

# train.checkpoint_every_s unset, on a GPU: seconds of training between checkpoints
GPU_CHECKPOINT_EVERY_S = 30.0


def checkpoint_interval(tc, device: torch.device) -> float:
    """train.checkpoint_every_s, or when unset GPU_CHECKPOINT_EVERY_S on a GPU and 0 (every checkpoint_every
    epochs) on CPU: seconds."""
    if tc.checkpoint_every_s is not None:
        return tc.checkpoint_every_s
    return GPU_CHECKPOINT_EVERY_S if device.type == "cuda" else 0.0


def plan_fold(
    cfg: RunConfig, n_train: int, fold: int, device: torch.device, gpu_share: float, group: Group | None = None
) -> Plan:
    tc, group = cfg.train, group or Group()
    profile = PROFILES[tc.profile]
    checkpointing, why = decide_checkpointing(profile, cfg.model.gradient_checkpointing, device, gpu_share)
    check_workers(cfg.train, group.world)
    micro, accum = forward_passes(cfg.train)
    return Plan(
        seed=tc.seed + fold,
        device=device,
        profile=profile,
        precision=resolve_precision(tc.precision, profile, device),
        checkpointing=checkpointing,
        why_checkpointing=why,
        micro=micro,
        accum=accum,
        steps_per_epoch=math.ceil(math.ceil(n_train / micro) / accum),
        group=group,
        checkpoint_every_s=checkpoint_interval(tc, device),
    )
