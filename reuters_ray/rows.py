"""The epoch row: one flat dict per fold epoch, its namespaced keys defined here once. The fold loop
(reuters_ray.fold.train.epoch_row) writes it; Ray's reports, the console, the fold table and the report read it.
No torch, no Ray: the driver's console imports it.
"""

FOLD, SEED, EPOCH, LR = "fold", "seed", "epoch", "lr"
FINISHED, MAX_EPOCHS, RESTARTS = "finished", "max_epochs", "restarts"  # restarts: how many so far
TRAIN_LOSS, VAL_LOSS = "train/loss", "val/loss"
VAL = "val/"  # + each of metrics.classification_metrics' keys: val/accuracy, val/f1_weighted, ...
VAL_ACCURACY, VAL_F1, VAL_F1_MACRO = "val/accuracy", "val/f1_weighted", "val/f1_macro"
VAL_PRECISION, VAL_RECALL = "val/precision_weighted", "val/recall_weighted"
VAL_SUBSET_ACCURACY = "val/subset_accuracy"  # multi-label rows: the whole label set right (rows before: val/accuracy)
# The validation figure the fold stops on (RunConfig.monitor(): f1_weighted, f1_micro, subset_accuracy, ...), and its
# best value so far under best/<that key> (rows written before MONITOR: best/f1_weighted, whatever they followed).
MONITOR, BEST, BEST_EPOCH = "monitor", "best/", "best/epoch"
# What each validation figure is called in console lines and reports.
NAMES = {
    "accuracy": "accuracy",
    "subset_accuracy": "subset accuracy",
    "f1_weighted": "weighted F1",
    "f1_macro": "macro F1",
    "f1_micro": "micro-F1",
    "f1_samples": "samples-F1",
    "hamming_loss": "Hamming loss",
}
# Where an epoch's time goes: epoch_s = train + val + checkpoint (the write); report_s (the caller's report, for Ray
# the upload into storage) is filled in once it returns; setup_s only in a process's first epoch (model, device).
EPOCH_S, SETUP_S, TRAIN_S, VAL_S = "time/epoch_s", "time/setup_s", "time/train_s", "time/val_s"
CHECKPOINT_S, REPORT_S = "time/checkpoint_s", "time/report_s"
WORKER_STARTED_AT = "time/worker_started_at"  # added by the Ray worker: when Ray had started it (driver's clock)
EXAMPLES_PER_S, TOKENS_PER_S, PEAK_GIB = "train/examples_per_s", "train/tokens_per_s", "memory/peak_gib"
WORKER = "worker/"  # + host, pid, device, node_id: where the epoch ran (the fold's rank 0, when it has several workers)
# The fold's data-parallel workers (cv.workers_per_fold): how many, and each one's Ray node id, host and pid
WORKERS, WORKER_NODE_IDS = "worker/workers", "worker/node_ids"
WORKER_HOSTS, WORKER_PIDS = "worker/hosts", "worker/pids"

# What the driver forwards of a Ray report to its console: the plain keys and every namespaced one.
PLAIN = (FOLD, SEED, EPOCH, LR, FINISHED, MAX_EPOCHS, RESTARTS, MONITOR)


def best_key(row: dict) -> str:
    """The key of an epoch row's best monitored validation figure so far: best/<row[MONITOR]>."""
    return BEST + row.get(MONITOR, "f1_weighted")


def forwarded(row: dict) -> dict:
    """The part of a reported row the driver's console and progress line use."""
    return {k: v for k, v in row.items() if k in PLAIN or "/" in k}
