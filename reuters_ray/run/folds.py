"""What the folds left in storage, read back after they trained: each fold's row of the fold table and epoch rows
from its last registered checkpoint (collect_folds), and the training split's out-of-fold logits. No Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from reuters_ray import rows as R
from reuters_ray.config import monitor_key
from reuters_ray.fold.checkpoint import TEST_LOGITS_FILE, VAL_LOGITS_FILE, read_val_logits
from reuters_ray.run.place import RunPlace
from reuters_ray.storage import (
    read_bytes,
    read_text,
)


@dataclass
class Folds:
    """What the folds left: the fold table (a row per fold), every epoch row, and each fold's best model."""

    table: list[dict[str, Any]]
    history: list[dict[str, Any]]
    best_paths: list[str]  # best/ of each fold's last checkpoint, in storage


def fold_timing(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a fold's time went, from its epoch rows: seconds of set-up (model, device), training, validation,
    checkpoint writing and reporting (the upload into storage; the last epoch's is not in its own checkpoint),
    throughput, peak GPU memory."""

    def total(key: str) -> float:
        return float(sum(r.get(key) or 0.0 for r in history))

    def mean(key: str) -> float | None:
        values = [r[key] for r in history if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    peaks = [r[R.PEAK_GIB] for r in history if r.get(R.PEAK_GIB) is not None]
    return {
        "setup_s": total(R.SETUP_S),
        "train_s": total(R.TRAIN_S),
        "val_s": total(R.VAL_S),
        "checkpoint_s": total(R.CHECKPOINT_S),
        "report_s": total(R.REPORT_S),
        "wall_s": total(R.SETUP_S) + total(R.EPOCH_S) + total(R.REPORT_S),
        "examples_per_s": mean(R.EXAMPLES_PER_S),
        "tokens_per_s": mean(R.TOKENS_PER_S),
        "peak_gpu_gib": max(peaks) if peaks else None,
    }


def summarize_fold(fold: int, progress: dict[str, Any], patience: int) -> dict[str, Any]:
    """A fold's row of the fold table, from the progress.json of its last checkpoint.
    Raises RuntimeError when that checkpoint is not the fold's last epoch."""
    if not progress["finished"]:
        raise RuntimeError(f"fold {fold}'s last checkpoint is not finished (epoch {progress['epoch']})")
    hist, es = progress["history"], progress["early_stopping"]
    best, last = hist[es["best_epoch"] - 1], hist[-1]
    multi = R.VAL + "hamming_loss" in best
    # multi-label: the subset accuracy (rows before it was named so: val/accuracy)
    accuracy = {"val_subset_accuracy": best.get(R.VAL_SUBSET_ACCURACY, best.get(R.VAL_ACCURACY))} if multi else {}
    return {
        "fold": fold,
        "best_epoch": es["best_epoch"],
        "val_f1_weighted": best[R.VAL_F1],
        **(accuracy or {"val_accuracy": best[R.VAL_ACCURACY]}),
        "val_f1_macro": best[R.VAL_F1_MACRO],
        "val_monitor": es["best"],  # the best epoch's monitored figure (train.monitor): what the fold stopped on
        "monitor": fold_monitor(progress),  # which figure that is, by its key (rows.NAMES)
        **({"val_f1_micro": best[R.VAL + "f1_micro"]} if multi else {}),
        "epochs_run": len(hist),
        "stopped_early": es["bad_epochs"] >= patience,
        **fold_timing(hist),
        "device": last.get(R.WORKER + "device", ""),
        "host": last.get(R.WORKER + "host", ""),
        "node_id": last.get(R.WORKER + "node_id", ""),  # the Ray node of the fold's last epoch (its rank 0's)
        # every Ray node the fold's workers trained on, in order: two after a restart on another node (a node lost)
        "node_ids": list(dict.fromkeys(n for r in hist for n in _row_nodes(r))),
        "workers": last.get(R.WORKERS, 1),  # data-parallel workers in the fold's last epoch (rows before issue 32: 1)
        # the numbers of workers it trained with, in order: two when a resume changed cv.workers_per_fold
        "worker_counts": list(dict.fromkeys(r.get(R.WORKERS, 1) for r in hist)),
        **progress.get("setup", {}),
        "restarts": progress.get("restarts", []),
    }


def fold_monitor(progress: dict[str, Any]) -> str:
    """The key of the validation figure a fold stopped on (RunConfig.monitor()), from its progress.json: its config,
    else its rows (f1_micro for multi-label rows, f1_weighted otherwise)."""

    cfg, last = progress.get("config"), progress["history"][-1]
    if cfg:
        return monitor_key(cfg.get("train", {}).get("monitor"), cfg.get("data", {}).get("task"))
    return last.get(R.MONITOR) or ("f1_micro" if R.VAL + "hamming_loss" in last else "f1_weighted")


def _row_nodes(row: dict[str, Any]) -> list[str]:
    """The Ray node ids of an epoch row's workers (rows written before several workers per fold: rank 0's)."""
    nodes = row.get(R.WORKER_NODE_IDS) or [row.get(R.WORKER + "node_id")]
    return [n for n in nodes if n]


def read_fold_checkpoint(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    """progress.json of the fold checkpoint at `path` (a folder in storage)."""
    text = read_text(fs, f"{path}/progress.json")
    if text is None:
        raise RuntimeError(f"fold checkpoint {path} has no progress.json")
    return json.loads(text)


def collect_folds(place: RunPlace, folders: list[str], patience: int, names: list[str] | None = None) -> Folds:
    """Each fold's summary, epoch rows (without the worker/ keys) and best model, from its last checkpoint as Ray
    Train registered it (a checkpoint folder uploaded but not registered when a driver died is never used: Ray
    trained that epoch again). names: the folds' folders (fold_names), default fold_<k>."""
    folds = Folds([], [], [])
    for k, folder in enumerate(folders):
        path = place.at(names[k] if names else f"fold_{k}", folder)
        progress = read_fold_checkpoint(place.fs, path)
        folds.table.append(summarize_fold(k, progress, patience))
        folds.history += [
            {c: v for c, v in r.items() if c == R.WORKERS or not c.startswith(R.WORKER)} for r in progress["history"]
        ]  # where an epoch ran stays in the checkpoints; how many workers ran it goes into history.csv
        folds.best_paths.append(f"{path}/best")
    return folds


def out_of_fold_logits(fs: pafs.FileSystem, best_paths: list[str], folds, n: int) -> np.ndarray:
    """The training split's out-of-fold logits: each row scored by the best model of the fold that validated on it
    (best/val_logits.safetensors in storage). Raises RuntimeError when a fold's file is missing or does not fit."""

    out = None
    for k, (best, (_, val_idx)) in enumerate(zip(best_paths, folds)):
        data = read_bytes(fs, f"{best}/{VAL_LOGITS_FILE}")
        if data is None:
            raise RuntimeError(f"fold {k}: {best}/{VAL_LOGITS_FILE} is missing")
        logits = read_val_logits(data, f"{best}/{VAL_LOGITS_FILE}")
        if logits.shape[0] != len(val_idx):
            raise RuntimeError(f"fold {k}: {logits.shape[0]} validation logits for {len(val_idx)} validation rows")
        if out is None:
            out = np.full((n, logits.shape[1]), np.nan, dtype=np.float32)
        out[val_idx] = logits
    return out


def kept_test_logits(fs: pafs.FileSystem, best_paths: list[str], n_test: int) -> np.ndarray | None:
    """[folds, n_test, K] test logits the folds' workers kept (best/test_logits.safetensors, scored by each fold's best
    model when it finished), or None when a fold has none or none of that length (a fold finished by an older
    version, another test split): the ensemble actor then scores the test split."""
    out = []
    for best in best_paths:
        data = read_bytes(fs, f"{best}/{TEST_LOGITS_FILE}")
        if data is None:
            return None
        logits = read_val_logits(data, f"{best}/{TEST_LOGITS_FILE}")
        if logits.shape[0] != n_test or (out and logits.shape != out[0].shape):
            return None
        out.append(logits)
    return np.stack(out) if out else None
