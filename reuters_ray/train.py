"""The fold loop: focal loss, AdamW with cosine warmup, mixed precision, early stopping, exact-resume checkpoints.

`train_fold` is a plain function, read top to bottom. It knows nothing of Ray: the Ray worker calls it and passes
a `report` function that forwards each epoch's metrics and checkpoint folder.
"""

from __future__ import annotations

import functools
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

from reuters_ray import rows as R
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
from reuters_ray.inference import collate, default_device, eval_batch_size, forward_mode, predict_logits
from reuters_ray.loss import distillation_loss, distillation_loss_multilabel, focal_loss
from reuters_ray.metrics import classification_metrics
from reuters_ray.models import build_model
from reuters_ray.multilabel import validation_metrics


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
    # A student's (reuters_ray.distill): the teacher's probabilities for every row of `labels` [N, K] float32, the
    # soft targets its loss mixes with the true labels (cfg.distill). None: a fold of a cross-validation.
    soft_targets: np.ndarray | None = None
    # A student's: bool [N], which rows have true labels (the others are transfer texts: soft targets alone).
    labelled: np.ndarray | None = None


@dataclass
class FoldResult:
    history: list[dict[str, Any]]  # one metrics row per epoch
    best_epoch: int
    best_score: float  # the monitored validation metric (cfg.monitor(): val/f1_weighted by default) of best_epoch
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


def _identity(cfg: RunConfig, data: FoldData) -> dict[str, Any]:
    return {
        "model": cfg.model.name,
        "label_names": data.label_names,
        "train_rows": len(data.train_idx),
        "val_rows": len(data.val_idx),
    }


def _where(device: torch.device, worker_info: dict[str, Any] | None) -> dict[str, Any]:
    """Where the fold runs, for every epoch row: host, pid, device, and what the caller adds (the Ray node id)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "device": _device_name(device), **(worker_info or {})}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n > 1 else ''})"


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


# --- builders: each takes explicit arguments and returns one object --------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How a fold computes, derived once from the config and the device (torchtune's set-up step)."""

    seed: int  # train.seed + fold
    device: torch.device
    profile: Profile
    precision: str  # resolved: bf16, fp16 or fp32
    checkpointing: bool
    why_checkpointing: str
    micro: int  # examples per forward pass
    accum: int  # forward passes per optimizer step
    steps_per_epoch: int


def plan_fold(cfg: RunConfig, n_train: int, fold: int, device: torch.device, gpu_share: float) -> Plan:
    tc = cfg.train
    profile = PROFILES[tc.profile]
    checkpointing, why = decide_checkpointing(profile, cfg.model.gradient_checkpointing, device, gpu_share)
    # Same math either way: the loss of a step is a mean over its batch_size x grad_accum examples.
    micro, accum = (tc.batch_size * tc.grad_accum, 1) if profile.merge_accumulation else (tc.batch_size, tc.grad_accum)
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
    )


def build_fold_model(
    cfg: RunConfig, label_names: list[str], plan: Plan, max_length: int, prior: np.ndarray | None = None
) -> torch.nn.Module:
    """The fold's classifier on its device; its head (and a random-init model) drawn from the fold's seed. Raises
    ConfigError when the model reads fewer positions than `max_length` (its first forward pass would fail).
    prior: for multi-label data, each topic's share of the fold's training texts [K]; the head's biases start at
    its (smoothed) logit, so that the first steps do not spend large gradients pushing every topic's output down
    through the pretrained encoder ("prior" initialization, Lin et al. 2017, "Focal Loss for Dense Object
    Detection", section 4.1; without it the quick multi-label run's folds collapsed to one output for every text)."""
    mc = cfg.model
    torch.manual_seed(plan.seed)
    model = build_model(mc.name, label_names, mc.hidden_dropout, mc.attention_dropout, plan.checkpointing, mc.layers)
    if prior is not None:
        model.config.problem_type = "multi_label_classification"  # for transformers' own users of the saved model
        smoothing = cfg.train.label_smoothing
        p = np.clip(prior * (1 - smoothing) + smoothing / len(prior), 1e-4, 1 - 1e-4)  # as the loss smooths
        head = getattr(model.classifier, "out_proj", model.classifier)  # RoBERTa-style heads: dense, then out_proj
        with torch.no_grad():
            head.bias.copy_(torch.from_numpy(np.log(p / (1 - p))).to(head.bias))
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and max_length > positions:
        raise ConfigError(f"tokens of length {max_length} but model {mc.name!r} reads at most {positions}")
    if cfg.train.compile:
        model.forward = torch.compile(model.forward, dynamic=True)  # lengths vary per batch; keeps state_dict keys
    return model.to(plan.device)


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


@dataclass
class FoldState:
    """What the loop updates and a checkpoint holds: the model and its optimizer, schedule and scaler, early
    stopping, the epoch rows so far, the best model's weights and validation logits."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor]
    best_val_logits: np.ndarray | None = None  # the fold's out-of-fold predictions
    history: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    next_epoch: int = 1
    finished: bool = False


def build_fold_state(cfg: RunConfig, data: FoldData, plan: Plan) -> FoldState:
    tc = cfg.train
    labels = data.labels[data.train_idx]
    prior = labels.mean(axis=0) if labels.ndim == 2 else None  # multi-label: each topic's share
    model = build_fold_model(cfg, data.label_names, plan, data.tokens.ids.shape[1], prior)
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay, plan.profile.fused_adamw and plan.device.type == "cuda")
    return FoldState(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, plan.steps_per_epoch * tc.max_epochs, tc.warmup_ratio),
        scaler=torch.amp.GradScaler(plan.device.type, enabled=plan.precision == "fp16"),
        stopper=EarlyStopping(tc.patience, tc.min_delta),
        best_state=cpu_state(model),
    )


def restore(state: FoldState, loaded: tuple[dict, dict, dict, dict]) -> None:
    """Puts a loaded checkpoint (load_checkpoint's weights, best weights, training state, progress) into `state`."""
    weights, state.best_state, training, progress = loaded
    state.model.load_state_dict(weights)
    state.optimizer.load_state_dict(training["optimizer"])
    state.scheduler.load_state_dict(training["scheduler"])
    if training["scaler"]:
        state.scaler.load_state_dict(training["scaler"])
    set_rng_state(training["rng"])
    for k, v in progress["early_stopping"].items():
        setattr(state.stopper, k, v)
    state.best_val_logits = training["best_val_logits"]
    state.history, state.finished, state.next_epoch = progress["history"], progress["finished"], progress["epoch"] + 1


# --- one epoch: training, validation, its row, its checkpoint --------------------------------------------------


def train_epoch(state: FoldState, data: FoldData, plan: Plan, tc, epoch: int, dc=None) -> tuple[float, int, int]:
    """One pass over the fold's training rows; (mean training loss, examples, real tokens). A student's rows (data
    with soft_targets) are trained on dc.alpha x the focal loss + (1 - dc.alpha) x the soft-target loss at
    dc.temperature (dc: the run's DistillConfig)."""
    state.model.train()
    epoch_seed = plan.seed * 100_003 + epoch  # batches are a pure function of (seed, epoch): resumable
    if plan.profile.group_by_length:
        batches = length_grouped_batches(data.train_idx, data.tokens.lengths, plan.micro, epoch_seed)
    else:
        batches = micro_batches(data.train_idx, plan.micro, epoch_seed)
    alpha = torch.tensor(data.class_weights, dtype=torch.float32, device=plan.device)
    loss_sum, seen, tokens = torch.zeros((), device=plan.device), 0, 0  # summed on the device: no sync per step
    for g in range(0, len(batches), plan.accum):
        group = batches[g : g + plan.accum]
        n = sum(len(b) for b in group)  # the loss is a mean over the step's examples: 8x4 == 32x1
        for rows in group:
            batch = collate(data.tokens, data.labels, rows, plan.profile.pad_to, plan.device)
            with forward_mode(plan.device, plan.precision):
                logits = state.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            if data.soft_targets is None:
                loss = focal_loss(logits, batch["labels"], alpha, tc.focal_gamma, tc.label_smoothing, reduction="sum")
            else:  # a student: the true labels where a row has them, the teacher's probabilities on every row
                hard = focal_loss(logits, batch["labels"], alpha, tc.focal_gamma, tc.label_smoothing, reduction="none")
                if data.labelled is not None:
                    hard = hard * torch.from_numpy(data.labelled[rows]).to(hard)
                soft = torch.from_numpy(data.soft_targets[rows]).to(plan.device)
                kd = distillation_loss_multilabel if data.labels.ndim == 2 else distillation_loss
                loss = dc.alpha * hard.sum() + (1.0 - dc.alpha) * kd(logits, soft, dc.temperature, reduction="sum")
            state.scaler.scale(loss / n).backward()
            loss_sum += loss.detach()
            seen += len(rows)
            tokens += int(data.tokens.lengths[rows].sum())
        if tc.max_grad_norm:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), tc.max_grad_norm)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
    return loss_sum.item() / seen, seen, tokens


def validate(model, data: FoldData, plan: Plan, tc) -> tuple[dict[str, float], float, np.ndarray]:
    """(metrics, focal loss, logits [n_val, K]) on the fold's validation rows: metrics.classification_metrics of the
    argmax, or for multi-hot labels multilabel.validation_metrics (at the global threshold best on these rows; the
    test thresholds are chosen after the folds, out of fold)."""
    batch_size = eval_batch_size(tc.eval_batch_size, plan.device)
    logits = predict_logits(
        model, data.tokens, data.val_idx, batch_size, plan.profile.pad_to, plan.device, plan.precision
    )
    y = data.labels[data.val_idx]
    alpha = torch.tensor(data.class_weights, dtype=torch.float32)
    loss = focal_loss(torch.from_numpy(logits), torch.from_numpy(y), alpha, tc.focal_gamma, tc.label_smoothing)
    if y.ndim == 2:
        return validation_metrics(y, logits), float(loss), logits
    return classification_metrics(y, logits.argmax(1), len(data.label_names)), float(loss), logits


def epoch_row(
    fold: int, plan: Plan, epoch: int, state: FoldState, train: tuple, val: tuple, seconds: dict, max_epochs: int
) -> dict[str, Any]:
    """The epoch's row (keys: reuters_ray.rows). train: (loss, examples, tokens); val: (metrics, loss);
    seconds: setup, train, val."""
    (loss, seen, tokens), (metrics, val_loss) = train, val
    device = plan.device
    return {
        R.FOLD: fold,
        R.SEED: plan.seed,
        R.EPOCH: epoch,
        R.TRAIN_LOSS: loss,
        R.VAL_LOSS: val_loss,
        **{R.VAL + k: v for k, v in metrics.items()},
        R.LR: state.scheduler.get_last_lr()[0],
        R.EPOCH_S: seconds["train"] + seconds["val"],  # the checkpoint's write is added once it is written
        R.SETUP_S: seconds["setup"],
        R.TRAIN_S: seconds["train"],
        R.VAL_S: seconds["val"],
        R.CHECKPOINT_S: 0.0,
        R.REPORT_S: None,
        R.EXAMPLES_PER_S: seen / seconds["train"],
        R.TOKENS_PER_S: tokens / seconds["train"],
        R.PEAK_GIB: torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        R.BEST_F1: state.stopper.best,
        R.BEST_EPOCH: state.stopper.best_epoch,
        R.FINISHED: state.finished,
        R.MAX_EPOCHS: max_epochs,
        R.RESTARTS: len(state.restarts),
    }


def write_checkpoint(folder: Path, state: FoldState, row: dict[str, Any], progress: dict[str, Any]) -> Path:
    """The epoch's checkpoint (reuters_ray.checkpoint); its write time goes into `row` before progress.json, which
    holds the rows, is written."""
    t = time.perf_counter()

    def progress_after_the_weights() -> dict[str, Any]:
        row[R.CHECKPOINT_S] = time.perf_counter() - t
        row[R.EPOCH_S] += row[R.CHECKPOINT_S]
        return {**progress, "history": state.history}

    training = {
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else None,
    }
    return save_checkpoint(
        folder, state.model, state.best_state, training, progress_after_the_weights, state.best_val_logits
    )


def progress_of(state: FoldState, epoch: int, cfg: RunConfig, identity: dict, attempt: str | None, plan: Plan) -> dict:
    """progress.json of a checkpoint after `epoch` (its history is added as it is written)."""
    stopper = state.stopper
    return {
        "epoch": epoch,
        "finished": state.finished,
        "identity": identity,
        "early_stopping": {"best": stopper.best, "best_epoch": stopper.best_epoch, "bad_epochs": stopper.bad_epochs},
        "config": cfg.to_dict(),
        "attempt": attempt,
        "restarts": state.restarts,
        "setup": {"precision": plan.precision, "gradient_checkpointing": plan.checkpointing},
    }


# --- the loop -------------------------------------------------------------------------------------------------


def train_fold(
    cfg: RunConfig,
    data: FoldData,
    out_dir: Path,
    *,
    fold: int = 0,
    resume_from: Path | Iterable[Path] | None = None,
    attempt: str | None = None,
    report: Callable[[dict[str, Any], Path | None], bool | None] | None = None,
    stop_after_epoch: int | None = None,
    device: str | torch.device | None = None,
    gpu_share: float = 1.0,
    log: Callable[[str], None] = print,
    worker_info: dict[str, Any] | None = None,
) -> FoldResult:
    """Trains one fold; returns its epoch rows (reuters_ray.rows) and its best model.

    Writes out_dir/epoch_NNN every train.checkpoint_every epochs and after the last (train.keep_checkpoints kept)
    and calls report(row, checkpoint folder or None) after every epoch (a true answer stops the fold there, as if
    interrupted). resume_from: a checkpoint folder to continue
    from exactly (weights, optimizer, schedule, scaler, RNG, early stopping), or several, newest first: the first
    that loads is used, damaged ones skipped; none: the fold starts over (logged, and recorded in "restarts").
    attempt: the id of the process running this call (the Ray run's): a resume from a checkpoint of the same id is
    a worker restart, else a new run continuing an old one. stop_after_epoch: return after it as if interrupted.
    gpu_share: this fold's share of the GPU (for the checkpointing decision). worker_info: in every row, worker/.
    Raises CheckpointError for a single damaged resume_from or one of another model or data set, ConfigError when
    the model reads fewer positions than the tokens hold."""
    t_setup, tc = time.perf_counter(), cfg.train
    plan = plan_fold(cfg, len(data.train_idx), fold, default_device(device), gpu_share)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = build_fold_state(cfg, data, plan)
    identity = _identity(cfg, data)  # what a checkpoint must match to be resumed
    worker = {R.WORKER + k: v for k, v in _where(plan.device, worker_info).items()}
    loaded = _resume(resume_from, identity, fold, attempt, state.restarts, log)
    if loaded is not None:
        restore(state, loaded)
    else:
        log(_plan_line(fold, cfg, data, plan))
    setup_s = time.perf_counter() - t_setup  # model built and moved to the device (CUDA start-up), resume loaded

    for epoch in range(state.next_epoch, tc.max_epochs + 1):
        if state.finished or (stop_after_epoch is not None and epoch > stop_after_epoch):
            break
        t0 = time.perf_counter()
        trained = train_epoch(state, data, plan, tc, epoch, cfg.distill)
        t1 = time.perf_counter()
        metrics, val_loss, logits = validate(state.model, data, plan, tc)
        if state.stopper.update(metrics[cfg.monitor()], epoch):
            state.best_state, state.best_val_logits = cpu_state(state.model), logits
        state.finished = state.stopper.should_stop or epoch == tc.max_epochs
        seconds = {
            "setup": setup_s if epoch == state.next_epoch else 0.0,
            "train": t1 - t0,
            "val": time.perf_counter() - t1,
        }
        row = epoch_row(fold, plan, epoch, state, trained, (metrics, val_loss), seconds, tc.max_epochs)
        row.update(worker)
        state.history.append(row)
        checkpoint = None
        if state.finished or epoch % tc.checkpoint_every == 0:
            progress = progress_of(state, epoch, cfg, identity, attempt, plan)
            checkpoint = write_checkpoint(out_dir / f"epoch_{epoch:03d}", state, row, progress)
        asked_to_stop = False
        if report is not None:
            t3 = time.perf_counter()
            asked_to_stop = bool(report(row, checkpoint))
            row[R.REPORT_S] = time.perf_counter() - t3  # reaches the next checkpoint's history
        if checkpoint is not None:
            prune_checkpoints(out_dir, tc.keep_checkpoints)
        if asked_to_stop:  # the caller's report said so (a search's scheduler ended the trial): as if interrupted
            break
        if state.finished and state.stopper.should_stop:
            log(
                f"fold {fold}: early stop after epoch {epoch}: no val {cfg.monitor()} gain over {tc.min_delta} "
                f"for {tc.patience} epochs"
            )

    state.model.load_state_dict(state.best_state)
    return FoldResult(state.history, state.stopper.best_epoch, state.stopper.best, state.model)


def _plan_line(fold: int, cfg: RunConfig, data: FoldData, plan: Plan) -> str:
    """What a fresh fold logs first: how it will compute."""
    profile = plan.profile
    return (
        f"fold {fold}: {cfg.model.name}, {len(data.train_idx)} train / {len(data.val_idx)} val, {cfg.train.profile} "
        f"profile, {plan.precision}, gradient checkpointing {'on' if plan.checkpointing else 'off'} "
        f"({plan.why_checkpointing}), pad to {profile.pad_to}{', length-grouped batches' if profile.group_by_length else ''}, "
        f"{plan.steps_per_epoch} steps/epoch of {plan.micro}x{plan.accum}, device {plan.device}"
    )
