"""The fold loop: focal loss, AdamW with cosine warmup, mixed precision, early stopping, exact-resume checkpoints.

`train_fold` is a plain function, read top to bottom. It knows nothing of Ray: the Ray worker calls it and passes
a `report` function that forwards each epoch's metrics and checkpoint folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from reuters_ray.checkpoint import (
    cpu_state,
    first_loadable,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from reuters_ray.config import RunConfig
from reuters_ray.errors import CheckpointError, ConfigError
from reuters_ray.features import TokenArrays
from reuters_ray.loss import focal_loss
from reuters_ray.metrics import classification_metrics
from reuters_ray.models import build_model


@dataclass
class FoldData:
    """What one fold trains on. `tokens` and `labels` cover the whole training split (shared, never copied);
    train_idx and val_idx pick this fold's rows."""

    tokens: TokenArrays
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    class_weights: np.ndarray
    label_names: list[str]


@dataclass
class FoldResult:
    history: list[dict[str, Any]]  # one metrics row per epoch
    best_epoch: int
    best_score: float  # val/f1_weighted of best_epoch
    model: torch.nn.Module = field(repr=False)  # holding the best epoch's weights


# --- small pure helpers ---------------------------------------------------------------------------------------


@dataclass
class Profile:
    """How a fold computes, not what: both profiles make the same updates from the same examples."""

    pad_to: str  # "max_length" (every batch padded to max_length) or "longest" (to the batch's longest, x8)
    group_by_length: bool  # batches of similar lengths (random within buckets), so padding stays small
    merge_accumulation: bool  # one micro-batch of batch_size x grad_accum instead of grad_accum small ones
    gradient_checkpointing: bool | None  # None: decided by memory (see decide_checkpointing)
    fp16_on_cuda: bool  # the seed's T4 had no bf16; its profile keeps fp16 everywhere
    fused_adamw: bool  # one fused CUDA kernel for the optimizer step


PROFILES = {
    "seed": Profile(
        pad_to="max_length",
        group_by_length=False,
        merge_accumulation=False,
        gradient_checkpointing=True,
        fp16_on_cuda=True,
        fused_adamw=False,
    ),
    "default": Profile(
        pad_to="longest",
        group_by_length=True,
        merge_accumulation=True,
        gradient_checkpointing=None,
        fp16_on_cuda=False,
        fused_adamw=True,
    ),
}


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
    """auto -> bf16 on GPUs that support it, fp16 on older GPUs (and in the seed profile), fp32 on CPU."""
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() and not profile.fp16_on_cuda else "fp16"


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


def collate(
    tokens: TokenArrays, labels: np.ndarray, idx: np.ndarray, pad_to: str, device: torch.device
) -> dict[str, torch.Tensor]:
    """Input ids, attention mask and labels for rows `idx`, padded as the profile says."""
    max_length = tokens.ids.shape[1]
    lengths = tokens.lengths[idx]
    width = max_length if pad_to == "max_length" else min(max_length, -(-int(lengths.max()) // 8) * 8)
    ids = torch.from_numpy(tokens.ids[idx, :width].astype(np.int64))
    mask = torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(labels[idx])}
    if device.type == "cuda":  # pinned host memory lets the copy overlap with the previous step's kernels
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def eval_batch_size(requested: int | None, device: torch.device) -> int:
    """Inference batch: large on a GPU (fewer launches), small on CPU (cache-sized batches measured faster)."""
    return requested or (256 if device.type == "cuda" else 16)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n > 1 else ''})"


# cuDNN's attention builds a plan for every new batch shape: 0.33 s each on the H100, 17 s of a fold's first epoch
# with length-grouped batches. Flash and memory-efficient attention need none; steady epochs were within 3% of
# cuDNN's there (bench/shape_warmup.py, docs/results.md).
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@contextlib.contextmanager
def forward_mode(device: torch.device, precision: str):
    """Mixed precision as `precision` says (bf16/fp16 autocast, or none), attention without cuDNN's backend."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), sdpa_kernel(ATTENTION_BACKENDS):
        yield


@torch.inference_mode()
def predict_logits(
    model, tokens: TokenArrays, idx: np.ndarray, batch_size: int, pad_to: str, device: torch.device, precision: str
) -> np.ndarray:
    """Float32 logits for rows `idx`, in that order. Rows are batched longest-first, so padding stays small."""
    model.eval()
    order = np.argsort(-tokens.lengths[idx], kind="stable")
    out = np.empty((len(idx), model.config.num_labels), dtype=np.float32)
    dummy = np.zeros(len(tokens), dtype=np.int64)
    for start in range(0, len(idx), batch_size):
        rows = order[start : start + batch_size]
        batch = collate(tokens, dummy, idx[rows], pad_to, device)
        with forward_mode(device, precision):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out[rows] = logits.float().cpu().numpy()
    return out


def _resume(
    resume_from: Path | Iterable[Path] | None,
    identity: dict[str, Any],
    fold: int,
    attempt: str | None,
    restarts: list[dict[str, Any]],
    log: Callable[[str], None],
) -> tuple[dict, dict, dict, dict] | None:
    """(weights, best weights, training state, progress) of the checkpoint to continue from, or None to start
    fresh. Records in `restarts` (replaced by the checkpoint's own record, then extended) why the fold continues
    or starts over; raises CheckpointError for a single damaged `resume_from` or one of another model or data."""
    if resume_from is None:
        return None
    if isinstance(resume_from, (str, Path)):
        found = (Path(resume_from), load_checkpoint(resume_from))
    else:
        found = first_loadable(resume_from, log)
    if found is None:
        log(f"fold {fold}: no kept checkpoint loads; starting the fold over")
        restarts.append({"after_epoch": 0, "kind": "started over: no loadable checkpoint", "at": time.time()})
        return None
    path, loaded = found
    progress = loaded[3]
    if progress["identity"] != identity:
        raise CheckpointError(f"checkpoint {path} belongs to another run: {progress['identity']} != {identity}")
    restarts[:] = progress.get("restarts", [])
    if not progress["finished"]:
        same = attempt is not None and progress.get("attempt") == attempt
        kind = "worker restart" if same else "resumed by a new run"
        restarts.append({"after_epoch": progress["epoch"], "kind": kind, "at": time.time()})
        log(f"fold {fold}: {kind}: continuing from {path} after epoch {progress['epoch']}")
    return loaded


# --- the loop -------------------------------------------------------------------------------------------------


def train_fold(
    cfg: RunConfig,
    data: FoldData,
    out_dir: Path,
    *,
    fold: int = 0,
    resume_from: Path | Iterable[Path] | None = None,
    attempt: str | None = None,
    report: Callable[[dict[str, Any], Path | None], None] | None = None,
    stop_after_epoch: int | None = None,
    device: str | torch.device | None = None,
    gpu_share: float = 1.0,
    log: Callable[[str], None] = print,
    worker_info: dict[str, Any] | None = None,
) -> FoldResult:
    """Trains one fold and returns its history and best model.

    Writes a checkpoint folder out_dir/epoch_NNN every train.checkpoint_every epochs and after the last one (the
    latest train.keep_checkpoints are kept), and calls report(metrics, checkpoint_folder or None) after every epoch.
    Each epoch's metrics say where its time went (time/train_s, val_s, checkpoint_s, report_s).
    resume_from: a checkpoint folder to continue from exactly
    (weights, optimizer, schedule, scaler, RNG, early-stopping state); a finished fold returns at once. Several
    folders, newest first: the first that loads is used and damaged ones are skipped; when none loads the fold
    starts over (both logged and recorded in the checkpoints' "restarts").
    attempt: an id of the process that runs this call (the Ray trial's): a resume from a checkpoint written under
    the same id is a worker restart, otherwise a new run continuing an old one. Recorded for the report.
    stop_after_epoch: return after that epoch as if interrupted (for time-boxed runs and resume tests).
    gpu_share: the share of the GPU this fold has (folds sharing a card), for the checkpointing decision.
    Raises CheckpointError when a single resume_from is damaged, or when the one resumed from belongs to another
    model or data set.
    """
    t_setup = time.perf_counter()
    tc, mc = cfg.train, cfg.model
    seed = tc.seed + fold
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    profile = PROFILES[tc.profile]
    precision = resolve_precision(tc.precision, profile, device)
    checkpointing, why_checkpointing = decide_checkpointing(profile, mc.gradient_checkpointing, device, gpu_share)
    # Same math either way: the loss of a step is a mean over its batch_size x grad_accum examples.
    micro, accum = (tc.batch_size * tc.grad_accum, 1) if profile.merge_accumulation else (tc.batch_size, tc.grad_accum)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)  # the classifier head (and a random-init model) is drawn from this
    model = build_model(mc.name, data.label_names, mc.hidden_dropout, mc.attention_dropout, checkpointing).to(device)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and data.tokens.ids.shape[1] > positions:  # else the first forward pass dies on a tensor size
        raise ConfigError(
            f"tokens of length {data.tokens.ids.shape[1]} but model {mc.name!r} reads at most {positions}"
        )
    decay = [p for p in model.parameters() if p.ndim >= 2]  # matrices; no decay on biases and LayerNorm
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    fused = profile.fused_adamw and device.type == "cuda"
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tc.lr,
        fused=fused or None,
    )
    if tc.compile:
        model.forward = torch.compile(model.forward, dynamic=True)  # lengths vary per batch; keeps state_dict keys
    steps_per_epoch = math.ceil(math.ceil(len(data.train_idx) / micro) / accum)
    total_steps = steps_per_epoch * tc.max_epochs
    warmup_steps = math.ceil(total_steps * tc.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps, total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    alpha = torch.tensor(data.class_weights, dtype=torch.float32, device=device)
    stopper = EarlyStopping(tc.patience, tc.min_delta)
    history: list[dict[str, Any]] = []
    best_state = cpu_state(model)
    identity = {
        "model": mc.name,
        "label_names": data.label_names,
        "train_rows": len(data.train_idx),
        "val_rows": len(data.val_idx),
    }
    start_epoch, finished, restarts = 1, False, []
    # Where the fold ran, in every epoch row (worker_info: what the caller adds, e.g. the Ray node id).
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "device": _device_name(device), **(worker_info or {})}

    found = _resume(resume_from, identity, fold, attempt, restarts, log)
    best_val_logits = None  # the best model's validation logits: the fold's out-of-fold predictions
    if found is not None:
        weights, best_state, state, progress = found
        best_val_logits = state["best_val_logits"]
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        for k, v in progress["early_stopping"].items():
            setattr(stopper, k, v)
        history, finished, start_epoch = progress["history"], progress["finished"], progress["epoch"] + 1
    if found is None:
        log(
            f"fold {fold}: {mc.name}, {len(data.train_idx)} train / {len(data.val_idx)} val, {tc.profile} profile, "
            f"{precision}, gradient checkpointing {'on' if checkpointing else 'off'} ({why_checkpointing}), "
            f"pad to {profile.pad_to}{', length-grouped batches' if profile.group_by_length else ''}, "
            f"{steps_per_epoch} steps/epoch of {micro}x{accum}, device {device}"
        )

    setup_s = time.perf_counter() - t_setup  # model built and moved to the device (CUDA start-up), resume loaded
    for epoch in range(start_epoch, tc.max_epochs + 1):
        if finished or (stop_after_epoch is not None and epoch > stop_after_epoch):
            break
        t0 = time.perf_counter()
        model.train()
        epoch_seed = seed * 100_003 + epoch  # batches are a pure function of (seed, epoch): resumable
        if profile.group_by_length:
            batches = length_grouped_batches(data.train_idx, data.tokens.lengths, micro, epoch_seed)
        else:
            batches = micro_batches(data.train_idx, micro, epoch_seed)
        loss_sum, seen, tokens = torch.zeros((), device=device), 0, 0  # summed on the device: no sync per step
        for g in range(0, len(batches), accum):
            group = batches[g : g + accum]
            n = sum(len(b) for b in group)  # the loss is a mean over the step's examples: 8x4 == 32x1
            for rows in group:
                batch = collate(data.tokens, data.labels, rows, profile.pad_to, device)
                with forward_mode(device, precision):
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = focal_loss(logits, batch["labels"], alpha, tc.focal_gamma, tc.label_smoothing, reduction="sum")
                scaler.scale(loss / n).backward()
                loss_sum += loss.detach()
                seen += len(rows)
                tokens += int(data.tokens.lengths[rows].sum())
            if tc.max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        train_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        logits = predict_logits(
            model,
            data.tokens,
            data.val_idx,
            eval_batch_size(tc.eval_batch_size, device),
            profile.pad_to,
            device,
            precision,
        )
        y_val = data.labels[data.val_idx]
        val_loss = focal_loss(
            torch.from_numpy(logits), torch.from_numpy(y_val), alpha.cpu(), tc.focal_gamma, tc.label_smoothing
        )
        val = classification_metrics(y_val, logits.argmax(1), len(data.label_names))
        if stopper.update(val["f1_weighted"], epoch):
            best_state, best_val_logits = cpu_state(model), logits
        finished = stopper.should_stop or epoch == tc.max_epochs
        val_s = time.perf_counter() - t1
        row = {
            "fold": fold,
            "seed": seed,
            "epoch": epoch,
            "train/loss": loss_sum.item() / seen,
            "val/loss": float(val_loss),
            **{f"val/{k}": v for k, v in val.items()},
            "lr": scheduler.get_last_lr()[0],
            # where the epoch's time goes: epoch_s = train + val + checkpoint (the write); report_s (the caller's
            # report, for Ray the upload into storage) is filled in once it returns, so it reaches later checkpoints
            "time/epoch_s": train_s + val_s,
            "time/setup_s": setup_s if epoch == start_epoch else 0.0,  # before this process's first epoch
            "time/train_s": train_s,
            "time/val_s": val_s,
            "time/checkpoint_s": 0.0,
            "time/report_s": None,
            "train/examples_per_s": seen / train_s,
            "train/tokens_per_s": tokens / train_s,
            "memory/peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "best/f1_weighted": stopper.best,
            "best/epoch": stopper.best_epoch,
            "finished": finished,
            "max_epochs": tc.max_epochs,
            "restarts": len(restarts),
            **{f"worker/{k}": v for k, v in worker.items()},
        }
        history.append(row)

        ckpt_now = None
        if finished or epoch % tc.checkpoint_every == 0:
            t2 = time.perf_counter()

            # called after the weights are written, so the row records their cost (defaults bind this epoch's values)
            def progress(row=row, t2=t2, epoch=epoch, finished=finished) -> dict[str, Any]:
                row["time/checkpoint_s"] = time.perf_counter() - t2
                row["time/epoch_s"] += row["time/checkpoint_s"]
                return {
                    "epoch": epoch,
                    "finished": finished,
                    "identity": identity,
                    "history": history,
                    "early_stopping": {
                        "best": stopper.best,
                        "best_epoch": stopper.best_epoch,
                        "bad_epochs": stopper.bad_epochs,
                    },
                    "config": cfg.to_dict(),
                    "attempt": attempt,
                    "restarts": restarts,
                    "setup": {"precision": precision, "gradient_checkpointing": checkpointing},
                }

            ckpt_now = save_checkpoint(
                out_dir / f"epoch_{epoch:03d}",
                model,
                best_state,
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                },
                progress,
                best_val_logits,
            )
        if report is not None:
            t3 = time.perf_counter()
            report(row, ckpt_now)
            row["time/report_s"] = time.perf_counter() - t3
        if ckpt_now is not None:
            prune_checkpoints(out_dir, tc.keep_checkpoints)
        if finished and stopper.should_stop:
            log(
                f"fold {fold}: early stop after epoch {epoch}: no val F1 gain over {tc.min_delta} for {tc.patience} epochs"
            )

    model.load_state_dict(best_state)
    return FoldResult(history, stopper.best_epoch, stopper.best, model)
