"""The fold loop: focal loss, AdamW with cosine warmup, mixed precision, early stopping, exact-resume checkpoints.

`train_fold` is a plain function, read top to bottom. It knows nothing of Ray: the Ray worker calls it and passes
a `report` function that forwards each epoch's metrics and checkpoint folder.
"""

from __future__ import annotations

import contextlib
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
from reuters_ray.config import RunConfig
from reuters_ray.data.features import TokenArrays
from reuters_ray.errors import CheckpointError, ConfigError
from reuters_ray.fold.checkpoint import (
    cpu_state,
    first_loadable,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from reuters_ray.fold.inference import (
    collate,
    default_device,
    eval_batch_size,
    forward_mode,
    longest_first,
    predict_logits,
)
from reuters_ray.fold.loss import distillation_loss, distillation_loss_multilabel, focal_loss
from reuters_ray.fold.models import build_model
from reuters_ray.fold.optim import (
    EarlyStopping,
    build_optimizer,
    build_scheduler,
    length_grouped_batches,
    micro_batches,
)
from reuters_ray.fold.parallel import Group, epoch_seed
from reuters_ray.fold.plan import FUSED, Plan, eval_precision, plan_fold
from reuters_ray.scoring.metrics import classification_metrics
from reuters_ray.scoring.multilabel import validation_metrics


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
    # A student's (reuters_ray.recipes.distill): the teacher's probabilities for every row of `labels` [N, K] float32, the
    # soft targets its loss mixes with the true labels (cfg.distill). None: a fold of a cross-validation.
    soft_targets: np.ndarray | None = None
    # A student's: bool [N], which rows have true labels (the others are transfer texts: soft targets alone).
    labelled: np.ndarray | None = None
    # The test split's tokens, or None: scored once by the fold's best model when the fold finishes (final_scores),
    # so that the run's ensemble needs no model loaded after the folds. Never seen by training or validation.
    test_tokens: TokenArrays | None = None


@dataclass
class FoldResult:
    history: list[dict[str, Any]]  # one metrics row per epoch
    best_epoch: int
    best_score: float  # the monitored validation figure (cfg.monitor(): f1_weighted by default) of best_epoch
    model: torch.nn.Module = field(repr=False)  # holding the best epoch's weights


# --- small pure helpers ---------------------------------------------------------------------------------------


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
    workers: int = 1,
) -> tuple[dict, dict, dict, dict] | None:
    """(weights, best weights, training state, progress) of the checkpoint to continue from, or None to start
    fresh. Records in `restarts` (replaced by the checkpoint's own record, then extended) why the fold continues
    or starts over, and [before, now] under "workers" when the fold's number of workers changed; raises
    CheckpointError for a single damaged `resume_from` or one of another model or data."""
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
        before = progress["history"][-1].get(R.WORKERS, 1) if progress["history"] else workers
        changed = {"workers": [before, workers]} if before != workers else {}
        restarts.append({"after_epoch": progress["epoch"], "kind": kind, "at": time.time(), **changed})
        with_workers = f" with {workers} worker(s) instead of {before}" if changed else ""
        log(f"fold {fold}: {kind}: continuing from {path} after epoch {progress['epoch']}{with_workers}")
    return loaded


# --- builders: each takes explicit arguments and returns one object --------------------------------------------


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
    # Several workers: the model wrapped for data parallelism (DDP), which training steps go through; `model` stays
    # the plain one (checkpoints, validation, the result).
    wrapped: torch.nn.Module | None = None
    best_val_logits: np.ndarray | None = None  # the fold's out-of-fold predictions
    test_logits: np.ndarray | None = None  # the best model's on data.test_tokens, once the fold finished
    history: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    next_epoch: int = 1
    finished: bool = False


def build_fold_state(cfg: RunConfig, data: FoldData, plan: Plan) -> FoldState:
    tc = cfg.train
    labels = data.labels[data.train_idx]
    prior = labels.mean(axis=0) if labels.ndim == 2 else None  # multi-label: each topic's share
    model = build_fold_model(cfg, data.label_names, plan, data.tokens.ids.shape[1], prior)
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay, plan.profile.fused_adamw and plan.device.type in FUSED)
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


def train_epoch(
    state: FoldState, data: FoldData, plan: Plan, tc, epoch: int, dc=None, should_stop=None
) -> tuple[float, int, int] | None:
    """One pass over the fold's training rows; (mean training loss, examples, real tokens), over all the fold's
    workers; None when `should_stop()` (rank 0's, every STOP_CHECK_STEPS steps over several workers) said to stop
    after an optimizer step: the epoch is left unfinished (the fold resumes from its last checkpoint). A student's
    rows (data with soft_targets) are trained on dc.alpha x the focal loss + (1 - dc.alpha) x the soft-target loss
    at dc.temperature (dc: the run's DistillConfig).

    Several workers (plan.group): the batches are the one-worker fold's, each cut into the workers' shards; a worker
    scales its shard's loss sum by workers / the step's examples and DDP averages the gradients over the workers,
    which makes the one-worker step's mean. Each worker's dropout is seeded by (fold seed, epoch, rank)."""
    ws = plan.group
    net = state.wrapped if state.wrapped is not None else state.model
    net.train()
    batch_seed = plan.seed * 100_003 + epoch  # batches are a pure function of (seed, epoch): resumable
    if ws.world > 1:
        torch.manual_seed(epoch_seed(plan.seed, epoch, ws.rank))
    if plan.profile.group_by_length:
        batches = length_grouped_batches(data.train_idx, data.tokens.lengths, plan.micro, batch_seed)
    else:
        batches = micro_batches(data.train_idx, plan.micro, batch_seed)
    alpha = torch.tensor(data.class_weights, dtype=torch.float32, device=plan.device)
    loss_sum, seen, tokens = torch.zeros((), device=plan.device), 0, 0  # summed on the device: no sync per step
    for g in range(0, len(batches), plan.accum):
        group = batches[g : g + plan.accum]
        n = sum(len(b) for b in group)  # the loss is a mean over the step's examples: 8x4 == 32x1
        for i, batch_rows in enumerate(group):
            rows = ws.shard(batch_rows)
            # A batch with fewer rows than workers (an epoch's last) leaves some shard empty: that worker passes one
            # row at weight 0, so its gradients (zeros) still join the all-reduce every worker waits on.
            factor = ws.world if len(rows) else 0
            rows = rows if len(rows) else batch_rows[:1]
            last = i == len(group) - 1  # gradients are all-reduced once per optimizer step
            with contextlib.nullcontext() if last or ws.world == 1 else net.no_sync():
                loss = _batch_loss(net, data, rows, alpha, plan, tc, dc)
                state.scaler.scale(loss * factor / n).backward()
            if factor:
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
        if _stop_now(should_stop, ws, g // plan.accum):
            return None
    if ws.world == 1:
        return loss_sum.item() / seen, seen, tokens
    total_loss, total_seen, total_tokens = ws.sum(np.array([loss_sum.item(), seen, tokens], dtype=np.float64))
    return float(total_loss / total_seen), int(total_seen), int(total_tokens)


# Over several workers a stop is agreed on (rank 0's answer broadcast) once in this many optimizer steps: a
# collective and a device sync every step would cost throughput for nothing.
STOP_CHECK_STEPS = 16


def _stop_now(should_stop, ws: Group, step: int | None = None) -> bool:
    """Whether the fold stops now (train_fold's `should_stop`, agreed by every worker): before an epoch (step None)
    or after optimizer step `step` of one."""
    if should_stop is None:
        return False
    if ws.world == 1:
        return bool(should_stop())
    if step is not None and step % STOP_CHECK_STEPS != STOP_CHECK_STEPS - 1:
        return False
    return ws.from_rank0(ws.rank == 0 and bool(should_stop()))


def _batch_loss(net, data: FoldData, rows: np.ndarray, alpha: torch.Tensor, plan: Plan, tc, dc) -> torch.Tensor:
    """The summed loss of rows `rows` (one forward pass)."""
    batch = collate(data.tokens, data.labels, rows, plan.profile.pad_to, plan.device)
    with forward_mode(plan.device, plan.precision):
        logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    if data.soft_targets is None:
        return focal_loss(logits, batch["labels"], alpha, tc.focal_gamma, tc.label_smoothing, reduction="sum")
    # a student: the true labels where a row has them, the teacher's probabilities on every row
    hard = focal_loss(logits, batch["labels"], alpha, tc.focal_gamma, tc.label_smoothing, reduction="none")
    if data.labelled is not None:
        hard = hard * torch.from_numpy(data.labelled[rows]).to(hard)
    soft = torch.from_numpy(data.soft_targets[rows]).to(plan.device)
    kd = distillation_loss_multilabel if data.labels.ndim == 2 else distillation_loss
    return dc.alpha * hard.sum() + (1.0 - dc.alpha) * kd(logits, soft, dc.temperature, reduction="sum")


def validate(model, data: FoldData, plan: Plan, tc) -> tuple[dict[str, float], float, np.ndarray]:
    """(metrics, focal loss, logits [n_val, K]) on the fold's validation rows: metrics.classification_metrics of the
    argmax, or for multi-hot labels multilabel.validation_metrics (at the global threshold best on these rows; the
    test thresholds are chosen after the folds, out of fold).

    Several workers: each scores every world-th of the one-worker validation's batches (the same rows in the same
    batches, so the same logits) and the logits are summed over the workers (all-reduce: the rows a worker left
    are 0), so every worker holds all of them and takes the same early-stopping decision."""
    batch_size, ws = eval_batch_size(tc.eval_batch_size, plan.device), plan.group
    shards = (
        None
        if ws.world == 1
        else list(longest_first(data.tokens.lengths[data.val_idx], batch_size))[ws.rank :: ws.world]
    )
    logits = predict_logits(
        model,
        data.tokens,
        data.val_idx,
        batch_size,
        plan.profile.pad_to,
        plan.device,
        eval_precision(plan.precision, plan.device),
        shards,
    )
    logits = ws.sum(logits)
    y = data.labels[data.val_idx]
    alpha = torch.tensor(data.class_weights, dtype=torch.float32)
    loss = focal_loss(torch.from_numpy(logits), torch.from_numpy(y), alpha, tc.focal_gamma, tc.label_smoothing)
    if y.ndim == 2:
        return validation_metrics(y, logits), float(loss), logits
    return classification_metrics(y, logits.argmax(1), len(data.label_names)), float(loss), logits


def epoch_row(
    fold: int,
    plan: Plan,
    epoch: int,
    state: FoldState,
    train: tuple,
    val: tuple,
    seconds: dict,
    max_epochs: int,
    monitor: str = "f1_weighted",
) -> dict[str, Any]:
    """The epoch's row (keys: reuters_ray.rows). train: (loss, examples, tokens); val: (metrics, loss);
    seconds: setup, train, val; monitor: the validation figure early stopping follows (RunConfig.monitor())."""
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
        R.MONITOR: monitor,
        R.BEST + monitor: state.stopper.best,
        R.BEST_EPOCH: state.stopper.best_epoch,
        R.FINISHED: state.finished,
        R.MAX_EPOCHS: max_epochs,
        R.RESTARTS: len(state.restarts),
    }


def write_checkpoint(folder: Path, state: FoldState, row: dict[str, Any], progress: dict[str, Any]) -> Path:
    """The epoch's checkpoint (reuters_ray.fold.checkpoint); its write time goes into `row` before progress.json, which
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
        folder,
        state.model,
        state.best_state,
        training,
        progress_after_the_weights,
        state.best_val_logits,
        state.test_logits if state.finished else None,
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


def final_scores(state: FoldState, data: FoldData, plan: Plan, epoch: int) -> None:
    """Once the fold finished after `epoch` (rank 0 alone, no collective): the best model's logits on
    data.test_tokens (when given), scored as the run's ensemble scores them (TorchFolds: longest-first batches of
    eval_batch_size(None) padded to the longest row, in eval_precision) into state.test_logits."""
    if data.test_tokens is None:
        return
    model, current = state.model, None
    if state.stopper.best_epoch != epoch:
        current = cpu_state(model)  # the last epoch's weights stay the model's (the checkpoint's, resume's)
        model.load_state_dict(state.best_state)
    every = np.arange(len(data.test_tokens))
    precision = eval_precision(plan.precision, plan.device)
    state.test_logits = predict_logits(
        model, data.test_tokens, every, eval_batch_size(None, plan.device), "longest", plan.device, precision
    )
    if current is not None:
        model.load_state_dict(current)


def run_epoch(
    cfg: RunConfig, data: FoldData, plan: Plan, state: FoldState, fold: int, epoch: int, setup_s: float, stop=None
):
    """Trains and validates one epoch, keeps the model when it is the best so far, and returns the epoch's row
    (setup_s: the set-up seconds to put in it); None when `stop()` said to stop during its training."""
    tc = cfg.train
    t0 = time.perf_counter()
    trained = train_epoch(state, data, plan, tc, epoch, cfg.distill, stop)
    if trained is None:
        return None
    t1 = time.perf_counter()
    metrics, val_loss, logits = validate(state.model, data, plan, tc)
    if state.stopper.update(metrics[cfg.monitor()], epoch):
        state.best_state, state.best_val_logits = cpu_state(state.model), logits
    state.finished = state.stopper.should_stop or epoch == tc.max_epochs
    if state.finished and plan.group.rank == 0:  # the last epoch's validation seconds include this scoring
        final_scores(state, data, plan, epoch)
    seconds = {"setup": setup_s, "train": t1 - t0, "val": time.perf_counter() - t1}
    return epoch_row(fold, plan, epoch, state, trained, (metrics, val_loss), seconds, tc.max_epochs, cfg.monitor())


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
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FoldResult:
    """Trains one fold; returns its epoch rows (reuters_ray.rows) and its best model.

    Writes out_dir/epoch_NNN every train.checkpoint_every epochs, at most one every train.checkpoint_every_s seconds
    of training (checkpoint_interval), and after the last (train.keep_checkpoints kept), and calls report(row,
    checkpoint folder or None) after every epoch (a true answer stops the fold there, as if interrupted).
    resume_from: a checkpoint folder to continue from exactly (weights, optimizer, schedule, scaler, RNG, early
    stopping), or several, newest first: the first that loads is used, damaged ones skipped; none: the fold starts
    over (logged, and in "restarts"). attempt: the id of the process running this call (the Ray run's): a resume
    from a checkpoint of the same id is a worker restart. stop_after_epoch: return after it as if interrupted;
    should_stop: asked before each epoch and after each optimizer step (the driver was stopped): true, it returns
    at once, the epoch in progress unfinished. gpu_share: this fold's share of the GPU (for the checkpointing
    decision). worker_info: in every row, worker/. Data parallel (a torch.distributed process group: Ray Train's,
    torchrun's): every worker calls this alike and trains its shard of each batch through `wrap(model)` (default
    DDP); rank 0 alone logs and writes checkpoints; rank 0's answers (report, should_stop) stop them all.
    Raises CheckpointError for a single damaged resume_from or one of another model or data set, ConfigError when
    the model reads fewer positions than the tokens hold or a batch cannot be split over the workers."""
    t_setup, tc = time.perf_counter(), cfg.train
    device = default_device(device)
    ws = Group.current(device)
    log = log if ws.rank == 0 else _quiet
    plan = plan_fold(cfg, len(data.train_idx), fold, device, gpu_share, ws)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = build_fold_state(cfg, data, plan)
    identity = _identity(cfg, data)  # what a checkpoint must match to be resumed
    worker = _worker_columns(ws, _where(plan.device, worker_info))
    loaded = _resume(resume_from, identity, fold, attempt, state.restarts, log, ws.world)
    if loaded is not None:
        restore(state, loaded)
    else:
        log(_plan_line(fold, cfg, data, plan))
    if ws.world > 1:  # after the restore: DDP starts every worker from rank 0's weights
        state.wrapped = (wrap or _ddp)(state.model)
    setup_s = time.perf_counter() - t_setup  # model built and moved to the device (CUDA start-up), resume loaded

    last_checkpoint = time.perf_counter()  # or the first step: train.checkpoint_every_s counts from here
    for epoch in range(state.next_epoch, tc.max_epochs + 1):
        if state.finished or (stop_after_epoch is not None and epoch > stop_after_epoch) or _stop_now(should_stop, ws):
            break
        row = run_epoch(cfg, data, plan, state, fold, epoch, setup_s if epoch == state.next_epoch else 0.0, should_stop)
        if row is None:  # stopped during its training
            break
        row.update(worker)
        state.history.append(row)
        checkpoint = None
        due = epoch % tc.checkpoint_every == 0 and time.perf_counter() - last_checkpoint >= plan.checkpoint_every_s
        if ws.rank == 0 and (state.finished or due):
            progress = progress_of(state, epoch, cfg, identity, attempt, plan)
            checkpoint = write_checkpoint(out_dir / f"epoch_{epoch:03d}", state, row, progress)
            last_checkpoint = time.perf_counter()
        asked_to_stop = _report(report, row, checkpoint)
        if checkpoint is not None:
            prune_checkpoints(out_dir, tc.keep_checkpoints)
        # the caller's report said so (a search's scheduler ended the trial): as if interrupted; all workers together
        if ws.from_rank0(asked_to_stop):
            break
        if state.finished and state.stopper.should_stop:
            log(f"fold {fold}: early stop after epoch {epoch}: {_no_gain(cfg)}")

    if state.best_state is not None:
        state.model.load_state_dict(state.best_state)
    return FoldResult(state.history, state.stopper.best_epoch, state.stopper.best, state.model)


def _no_gain(cfg: RunConfig) -> str:
    return f"no val {cfg.monitor()} gain over {cfg.train.min_delta} for {cfg.train.patience} epochs"


def _report(report, row: dict[str, Any], checkpoint: Path | None) -> bool:
    """Calls train_fold's `report(row, checkpoint)`, timing it into the row; True when it asks the fold to stop."""
    if report is None:
        return False
    t = time.perf_counter()
    asked = bool(report(row, checkpoint))
    row[R.REPORT_S] = time.perf_counter() - t  # reaches the next checkpoint's history
    return asked


def _quiet(_: str) -> None:
    """The log of a fold's workers other than rank 0."""


def _ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The model in DistributedDataParallel, on its device (train_fold's default `wrap`)."""
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _worker_columns(ws: Group, where: dict[str, Any]) -> dict[str, Any]:
    """The worker/ columns of every epoch row: where this worker runs (host, pid, device, node id), and how many
    workers the fold has and each one's node id, host and pid (rank order; one worker: its own)."""
    everyone = ws.gather(where)
    return {
        **{R.WORKER + k: v for k, v in where.items()},
        R.WORKERS: ws.world,
        R.WORKER_NODE_IDS: [w.get("node_id") for w in everyone],
        R.WORKER_HOSTS: [w["host"] for w in everyone],
        R.WORKER_PIDS: [w["pid"] for w in everyone],
    }


def _plan_line(fold: int, cfg: RunConfig, data: FoldData, plan: Plan) -> str:
    """What a fresh fold logs first: how it will compute."""
    profile = plan.profile
    return (
        f"fold {fold}: {cfg.model.name}, {len(data.train_idx)} train / {len(data.val_idx)} val, {cfg.train.profile} "
        f"profile, {plan.precision}, gradient checkpointing {'on' if plan.checkpointing else 'off'} "
        f"({plan.why_checkpointing}), pad to {profile.pad_to}{', length-grouped batches' if profile.group_by_length else ''}, "
        f"{plan.steps_per_epoch} steps/epoch of {plan.micro}x{plan.accum}"
        + (f" over {plan.group.world} workers ({plan.micro // plan.group.world} each)" if plan.group.world > 1 else "")
        + f", device {plan.device}"
    )
