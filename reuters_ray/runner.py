"""Ray orchestration of k-fold cross-validation: the only module that imports Ray.

    driver   load, preprocess and tokenize once; put the arrays in the object store; one TorchTrainer per fold
             (ScalingConfig(num_workers=1, use_gpu=...)), their fit() calls in driver threads so the folds run at once
    worker   calls reuters_ray.train.train_fold, reporting each epoch (and its checkpoint) to Ray storage
    callback on each fold's Train controller: forwards every registered report to the driver's console
    actor    the ensemble: loads each fold's best model from storage and scores the test split

Storage: <cv.storage_path>/<run name>/ holds fold_<k>/ (Ray Train's run of fold k: its checkpoints, its JSON
checkpoint snapshot, and our fold_result.json once the fold finished) and, at the end, the run's outputs
(reuters_ray.outputs, reuters_ray.report) and models/fold_<k>/. Running the same command with the same run name
resumes: finished folds (fold_result.json) are kept, and Ray Train restores each unfinished fold from its latest
registered checkpoint. Nothing read back from storage is unpickled: JSON and safetensors only.

The driver's phases are functions of their own: check_resumable, place_folds, summarize_fold, publish_outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import yaml

from reuters_ray.config import RunConfig
from reuters_ray.console import Console, duration
from reuters_ray.errors import ConfigError, DataError
from reuters_ray.storage import (
    LOCAL,
    copy_dir,
    read_bytes,
    read_text,
    storage_location,
    unreachable_endpoint,
    uri_join,
    write_atomic,
)

# Settings free to differ when a run is resumed, and left out of the derived run name: they change where a run
# goes, how fast, or how often it checkpoints, but not what any fold computes. (cv.baseline and cv.blend change
# what is fitted after the folds, from their kept results: a finished run resumed with another value scores again.)
RESUME_FREE_KEYS = {
    "cv": ("name", "storage_path", "gpus_per_fold", "cpus_per_fold", "max_failures", "baseline", "blend"),
    "train": ("eval_batch_size", "compile", "keep_checkpoints", "checkpoint_every"),
}


def result_config(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The config without RESUME_FREE_KEYS: what must match for a run to be resumed."""
    d = json.loads(json.dumps(cfg_dict))
    for section, keys in RESUME_FREE_KEYS.items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    return d


def run_name(cfg: RunConfig) -> str:
    """cv.name, else a name derived from everything that changes the result: same config, same name."""
    if cfg.cv.name:
        return cfg.cv.name
    d = result_config(cfg.to_dict())
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    model = re.sub(r"[^A-Za-z0-9]+", "-", cfg.model.name.split("/")[-1]).strip("-").lower()
    return f"{model}-{cfg.data.source}-{cfg.train.profile}-{cfg.cv.folds}fold-{digest}"


@dataclass(frozen=True)
class FoldTask:
    """Everything a fold's Ray worker needs besides the data: the run's config, which fold, where it runs."""

    run: RunConfig
    fold: int
    gpu_share: float  # of one GPU (1.0 = a whole one; 0 on CPU); folds sharing a card get 1 / folds
    cpus: float
    attempt: str  # new with each fit() of the fold, kept when Ray Train restarts a dead worker


# --- the driver's phases, each testable without Ray ------------------------------------------------------------


DATA_FILE = "data_fingerprint.json"  # in the run folder from its start: the data's identity (TextDataset.fingerprint)


def check_resumable(
    fs: pafs.FileSystem, run_path: str, cfg: RunConfig, name: str, data: dict[str, Any] | None = None
) -> bool:
    """Whether `run_path` holds a run of this config (and of this data: `data`, the data set's fingerprint) to
    resume. Raises ConfigError when it holds a run made with another config (what RESUME_FREE_KEYS leaves) or on
    other data. Reads only: a refused run leaves the existing one untouched."""
    previous = read_text(fs, f"{run_path}/config.yaml")
    if previous is None:
        return False
    old, new = result_config(yaml.safe_load(previous)), result_config(cfg.to_dict())
    if old != new:
        diff = [f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k) != new[s][k]]
        raise ConfigError(
            f"run {name!r} in {cfg.cv.storage_path} was made with another config (differs in {', '.join(diff)}); "
            f"use the same config to resume it, or another cv.name"
        )
    kept = read_text(fs, f"{run_path}/{DATA_FILE}")  # absent in runs made before it existed: those resume as before
    if data is not None and kept is not None and json.loads(kept)["sha256"] != data["sha256"]:

        def said(d: dict[str, Any]) -> str:
            return f"{d['train']} train / {d['test']} test texts, {d['classes']} classes, sha256 {d['sha256'][:12]}"

        raise ConfigError(
            f"run {name!r} in {cfg.cv.storage_path} was made with other data ({said(json.loads(kept))}; now "
            f"{said(data)}); use the same data to resume it, or another cv.name"
        )
    return True


def write_test(fs: pafs.FileSystem, run_path: str) -> str | None:
    """Why folder `run_path` on `fs` cannot be written (a probe file written, moved and deleted), or None. The
    probe's name is unique: the nodes of a cluster test the same folder at once."""
    probe = f"{run_path}/.write_test_{uuid.uuid4().hex[:8]}"
    try:
        write_atomic(probe, "ok", fs)
        fs.delete_file(probe)
    except OSError as e:
        return str(e)
    return None


def check_writable(fs: pafs.FileSystem, run_path: str, storage_path: str) -> None:
    if (why := write_test(fs, run_path)) is not None:
        raise ConfigError(f"cv.storage_path {storage_path!r} cannot be written: {why}")


def place_folds(cv, cluster: dict[str, float]) -> float:
    """The GPU share of each fold on a cluster with resources `cluster` (ray.cluster_resources()).

    cv.gpus_per_fold unset: a whole GPU per fold when there are enough, else GPUs / folds so the folds share them
    and run at once (on one H100 that pays the minute of fold start-up once, not per fold: docs/results.md), 0
    without GPUs. Raises ConfigError when a fold could never be placed (it would wait forever)."""
    gpus = cv.gpus_per_fold
    have_gpu, have_cpu = cluster.get("GPU", 0), cluster.get("CPU", 0)
    if gpus is None:
        gpus = min(1.0, int(have_gpu) / cv.folds) if have_gpu >= 1 else 0.0
    if cv.cpus_per_fold > have_cpu + 1e-9:
        raise ConfigError(f"cv.cpus_per_fold={cv.cpus_per_fold} does not fit this Ray cluster's {have_cpu:g} CPUs")
    if gpus > have_gpu + 1e-9:
        raise ConfigError(f"cv.gpus_per_fold={gpus} but this Ray cluster has {have_gpu:g} GPUs")
    return gpus


def fold_timing(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a fold's time went, from its epoch rows: seconds of set-up (model, device), training, validation,
    checkpoint writing and reporting (the upload into storage; the last epoch's is not in its own checkpoint),
    throughput, peak GPU memory."""

    def total(key: str) -> float:
        return float(sum(r.get(key) or 0.0 for r in history))

    def mean(key: str) -> float | None:
        values = [r[key] for r in history if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    peaks = [r["memory/peak_gib"] for r in history if r.get("memory/peak_gib") is not None]
    return {
        "setup_s": total("time/setup_s"),
        "train_s": total("time/train_s"),
        "val_s": total("time/val_s"),
        "checkpoint_s": total("time/checkpoint_s"),
        "report_s": total("time/report_s"),
        "wall_s": total("time/setup_s") + total("time/epoch_s") + total("time/report_s"),
        "examples_per_s": mean("train/examples_per_s"),
        "tokens_per_s": mean("train/tokens_per_s"),
        "peak_gpu_gib": max(peaks) if peaks else None,
    }


def summarize_fold(fold: int, progress: dict[str, Any], patience: int) -> dict[str, Any]:
    """A fold's row of the fold table, from the progress.json of its last checkpoint.
    Raises RuntimeError when that checkpoint is not the fold's last epoch."""
    if not progress["finished"]:
        raise RuntimeError(f"fold {fold}'s last checkpoint is not finished (epoch {progress['epoch']})")
    hist, es = progress["history"], progress["early_stopping"]
    best, last = hist[es["best_epoch"] - 1], hist[-1]
    return {
        "fold": fold,
        "best_epoch": es["best_epoch"],
        "val_f1_weighted": best["val/f1_weighted"],
        "val_accuracy": best["val/accuracy"],
        "val_f1_macro": best["val/f1_macro"],
        "epochs_run": len(hist),
        "stopped_early": es["bad_epochs"] >= patience,
        **fold_timing(hist),
        "device": last.get("worker/device", ""),
        "host": last.get("worker/host", ""),
        "node_id": last.get("worker/node_id", ""),  # the Ray node of the fold's last epoch
        # every Ray node the fold trained on, in order: two after a restart on another node (a node lost)
        "node_ids": list(dict.fromkeys(r["worker/node_id"] for r in hist if r.get("worker/node_id"))),
        **progress.get("setup", {}),
        "restarts": progress.get("restarts", []),
    }


def fold_of_rows(folds: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """For each of the n training rows, the fold whose validation split holds it."""
    fold = np.full(n, -1, dtype=np.int64)
    for k, (_, val_idx) in enumerate(folds):
        fold[val_idx] = k
    return fold


def out_of_fold_logits(fs: pafs.FileSystem, best_paths: list[str], folds, n: int) -> np.ndarray:
    """The training split's out-of-fold logits: each row scored by the best model of the fold that validated on it
    (best/val_logits.safetensors in storage). Raises RuntimeError when a fold's file is missing or does not fit."""
    from reuters_ray.checkpoint import VAL_LOGITS_FILE, read_val_logits

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


def out_of_fold_metrics(y, oof_logits, label_names, fold_rows) -> dict[str, Any]:
    """Accuracy, weighted and macro F1 of the out-of-fold predictions, beside the folds' mean validation figures."""
    from reuters_ray.metrics import evaluate_scores

    m = evaluate_scores(y, oof_logits, label_names)
    keys = {"accuracy": "val_accuracy", "f1_weighted": "val_f1_weighted", "f1_macro": "val_f1_macro"}
    return {
        **{k: m[k] for k in keys},
        "n": int(len(y)),
        "folds_mean": {k: float(np.mean([r[v] for r in fold_rows])) for k, v in keys.items()},
    }


# Copy order into storage: metrics.json, then the report, report.md last (its presence means the run is complete).
OUTPUT_ORDER = {"metrics.json": 1, "report.html": 2, "report.md": 3}


def publish_outputs(local: Path, fs: pafs.FileSystem, run_path: str) -> None:
    """Copies a locally written run folder into storage, report.md last."""
    for item in sorted(local.iterdir(), key=lambda p: OUTPUT_ORDER.get(p.name, 0)):
        dst = f"{run_path}/{item.name}"
        if item.is_dir():
            copy_dir(str(item), dst, LOCAL, fs)
        else:
            write_atomic(dst, item.read_bytes(), fs)


def read_fold_checkpoint(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    """progress.json of the fold checkpoint at `path` (a folder in storage)."""
    text = read_text(fs, f"{path}/progress.json")
    if text is None:
        raise RuntimeError(f"fold checkpoint {path} has no progress.json")
    return json.loads(text)


def fit_linear(ds, folds) -> tuple[Any, np.ndarray, float]:
    """The linear model fitted on each fold's training rows and on the whole training split (baseline.fit_cv),
    and its seconds. CPU work on the driver: run_cv runs it in a thread while the folds train."""
    from reuters_ray.baseline import fit_cv

    t = time.perf_counter()
    try:
        linear, oof_scores = fit_cv(ds.train_texts, ds.train_labels, folds, ds.num_classes)
    except ValueError as e:  # checked before the folds (baseline.check_fittable); should anything else fail:
        raise DataError(
            f"the linear model could not be fitted ({str(e).splitlines()[0]}); the folds are kept: rerun the same "
            f"command with --cv.blend false --cv.baseline false to finish the run without it"
        ) from None
    return linear, oof_scores, time.perf_counter() - t


def blend_phase(cfg: RunConfig, ds, fitted, oof_logits, ensemble, ensemble_probs, timing, console: Console):
    """With the linear model (`fitted`: fit_linear's result), adds the baseline's test figures (cv.baseline) and,
    with cv.blend, blends its probabilities with the ensemble's by the weight the out-of-fold predictions chose.
    Returns (the run's test metrics, its test probabilities, the linear model)."""
    from reuters_ray.baseline import NAME, baseline_metrics
    from reuters_ray.blend import blend_of_fitted, combine
    from reuters_ray.metrics import evaluate_scores

    linear, oof_scores, fit_s = fitted
    blend = blend_of_fitted(ds, linear, oof_scores, oof_logits)
    scores = linear.scores(ds.test_texts)
    timing["baseline_s"] = fit_s  # the linear model's fits (one per fold, one on everything), during the folds
    metrics, probs = dict(ensemble), ensemble_probs
    if cfg.cv.blend:
        probs = combine(ensemble_probs, linear.proba_of_scores(scores), blend["weight"])
        metrics = {**evaluate_scores(ds.test_labels, probs, ds.label_names), "blend": blend}
        oof = blend["out_of_fold"]
        console.info(
            f"blend: weight {blend['weight']:.2f} on the ensemble, {1 - blend['weight']:.2f} on the linear model, "
            f"chosen out of fold (weighted F1 {oof['blend']['f1_weighted']:.4f} against the ensemble's "
            f"{oof['ensemble']['f1_weighted']:.4f} and the linear model's {oof['linear']['f1_weighted']:.4f})",
            blend_weight=blend["weight"],
        )
    if cfg.cv.baseline:
        metrics["baseline"] = baseline_metrics(ds, scores)
        console.info(
            f"baseline ({NAME}): weighted F1 {metrics['baseline']['f1_weighted']:.4f}",
            baseline_f1_weighted=metrics["baseline"]["f1_weighted"],
        )
    return metrics, probs, linear


def predictor_line(m: dict[str, Any]) -> str:
    """What the run's test figures are of, with the others' weighted F1 for comparison."""
    blend = m.get("predictor") == "blend"
    others = [f"ensemble {m['ensemble']['f1_weighted']:.4f}"] if blend else []
    others += [f"baseline {m['baseline']['f1_weighted']:.4f}"] if "baseline" in m else []
    what = f"blend, weight {m['blend']['weight']:.2f} on the ensemble" if blend else "ensemble"
    return what + (f"; weighted F1 of the {' and the '.join(others)}" if others else "")


# --- code that runs in Ray workers ----------------------------------------------------------------------------


def _fold_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: one fold's training loop, each epoch (and its checkpoint) reported into Ray storage."""
    started_at = time.time()  # against the driver's clock: how long Ray took to start this worker
    import ray
    import ray.train
    import ray.train.torch

    from reuters_ray.console import format_row
    from reuters_ray.features import TokenArrays
    from reuters_ray.train import FoldData, train_fold

    task: FoldTask = config["task"]
    arrays = ray.get(config["data_ref"][0])  # numpy arrays come back zero-copy from the object store
    train_idx, val_idx = arrays["folds"][task.fold]
    tokens = TokenArrays(arrays["ids"], arrays["lengths"], arrays["pad_id"])
    data = FoldData(tokens, arrays["labels"], train_idx, val_idx, arrays["class_weights"], arrays["label_names"])
    print(format_row(), flush=True)  # the epoch table in the worker's log too (dashboard, Ray's log files)

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        print(format_row(metrics), flush=True)
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report({**metrics, "time/worker_started_at": started_at}, checkpoint=checkpoint)

    with tempfile.TemporaryDirectory() as tmp:
        resume = None
        checkpoint = ray.train.get_checkpoint()  # set when Ray restores this fold (driver rerun or worker restart)
        if checkpoint is not None:
            resume = resume_candidates(checkpoint.filesystem, checkpoint.path, tmp)
        device = ray.train.torch.get_device()
        train_fold(
            task.run,
            data,
            Path(tmp) / "checkpoints",
            fold=task.fold,
            resume_from=resume,
            attempt=task.attempt,
            report=report,
            device=device,
            gpu_share=task.gpu_share or 1.0,
            worker_info={"node_id": ray.get_runtime_context().get_node_id()},
        )


def resume_candidates(fs: pafs.FileSystem, latest: str, local_root: str):
    """Yields local copies of checkpoint `latest` (the one Ray restored) and then of the fold's older kept
    checkpoints, newest first, each fetched only when asked for (train_fold takes the first that loads).
    Ray names checkpoint folders checkpoint_<timestamp>, so name order is age order; newer folders than
    `latest` are ones Ray never registered and are not used."""
    parent, name = latest.rstrip("/").rsplit("/", 1)
    older = sorted(
        (
            i.base_name
            for i in fs.get_file_info(pafs.FileSelector(parent))
            if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_") and i.base_name < name
        ),
        reverse=True,
    )
    for k, folder in enumerate([name, *older]):
        dst = os.path.join(local_root, f"resume_{k}")
        os.makedirs(dst)
        copy_dir(f"{parent}/{folder}", dst, fs, LOCAL)
        yield Path(dst)


def _fit_fold(task: FoldTask, data_ref: list, run_uri: str, progress) -> str:
    """Fits fold `task.fold` as a Ray Train run named <run>/fold_<k>, i.e. in the folder fold_<k> of `run_uri`
    (blocking; the driver calls it in a thread per fold). The name is what the dashboard's Train API lists: it says
    the run. Started again with the same name, Ray Train restores the fold from its latest registered checkpoint
    (its own JSON snapshot). Returns the folder name of the fold's last checkpoint."""
    import ray.train
    from ray.train.torch import TorchTrainer

    location, sep, query = run_uri.partition("?")  # an S3-compatible store's options stay last
    parent, run_name = location.rstrip("/").rsplit("/", 1)

    resources = {"CPU": task.cpus, **({"GPU": task.gpu_share} if task.gpu_share else {})}
    trainer = TorchTrainer(
        _fold_worker,
        train_loop_config={"task": task, "data_ref": data_ref},
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=bool(task.gpu_share), resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"{run_name}/fold_{task.fold}",
            storage_path=parent + sep + query,
            callbacks=[_forward_reports(progress)],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=task.run.train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=task.run.cv.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"fold {task.fold} reported no checkpoint")
    return result.checkpoint.path.rstrip("/").rsplit("/", 1)[-1]


def _node_write_test(run_uri: str) -> str | None:
    """Run as a Ray task on one node: why the run folder at `run_uri` cannot be written from there, or None."""
    fs, path, _ = storage_location(run_uri)
    return write_test(fs, path)


def check_nodes_can_write(storage_path: str, run_uri: str) -> None:
    """Raises ConfigError unless every live node of the Ray cluster can write the run folder: the driver's own
    credentials are not its workers' (they have the environment `ray start` ran in, or the node's instance
    profile), and a fold that cannot write its checkpoints would fail only after its Train start-up. One task
    (no CPU) per node, pinned there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_node_write_test)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    answers = ray.get(
        [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(run_uri)
            for n in nodes
        ]
    )
    for node, why in zip(nodes, answers):
        if why is not None:
            raise ConfigError(
                f"cv.storage_path {storage_path!r} cannot be written from Ray node {node}: {why} (every node needs "
                "the bucket's credentials: an instance profile, or AWS_* variables where `ray start` ran)"
            )


# Detached actors that every Train controller of Ray 2.60 gets or creates (they outlive jobs): the state actor behind
# Train's state tracking, and the autoscaling coordinator. Controllers started at once race to create them, and
# the losers' creations are FAILED tasks in a healthy run's job.
TRAIN_SHARED_ACTORS = ("train_v2_state_actor", "AutoscalingCoordinator")


def _await_train_shared_actors(first_fold, timeout: float = 30.0) -> None:
    """Waits until the first fold's Train controller has created Ray Train's shared actors (at most `timeout`
    seconds, and not past that fold's end), unless they exist already; the other folds start after. Seen through
    Ray's public list of named actors; if Ray renames them, this only waits. (Creating them from the driver
    instead was tried: the folds then raced for the coordinator; docs/results.md.)"""
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not first_fold.done():
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        if names.issuperset(TRAIN_SHARED_ACTORS):
            return
        time.sleep(0.2)


def _forward_reports(progress):
    """A Train callback (it runs on the fold's Train controller) that sends each registered epoch row to the
    driver's progress actor."""
    from ray.train import UserCallback

    class _Forward(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            progress.put.remote({k: v for k, v in metrics[0].items() if k in ROW_KEYS or "/" in k})

    return _Forward()


class _Progress:
    """An async actor between the folds' Train controllers and the driver: rows in, rows out. take() waits at most
    `timeout` seconds and returns what arrived (possibly nothing): a poll that never fails a task."""

    def __init__(self):
        import asyncio

        self._rows: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    async def put(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._arrived.set()

    async def take(self, timeout: float) -> list[dict[str, Any]]:
        import asyncio

        if not self._rows:
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        rows, self._rows = self._rows, []
        self._arrived.clear()
        return rows


class _EnsembleActor:
    """Holds the fold models (copied from storage) on this actor's device and scores token arrays."""

    def __init__(self, storage_uri: str, best_paths: list[str], precision: str, profile: str):
        import torch

        from reuters_ray.ensemble import Ensemble
        from reuters_ray.train import PROFILES, resolve_precision

        fs, _, _ = storage_location(storage_uri)
        self._tmp = tempfile.mkdtemp(prefix="reuters-ray-ensemble-")
        local = []
        for k, path in enumerate(best_paths):
            dst = os.path.join(self._tmp, f"fold_{k}")
            os.makedirs(dst)
            copy_dir(path, dst, fs, LOCAL)
            local.append(dst)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = resolve_precision(precision, PROFILES[profile], device)
        self.ensemble = Ensemble(local, device=str(device), precision=precision)

    def fold_logits(self, arrays: dict[str, Any]) -> np.ndarray:
        from reuters_ray.features import TokenArrays

        return self.ensemble.fold_logits(TokenArrays(arrays["ids"], arrays["lengths"], arrays["pad_id"]))


# --- the driver -----------------------------------------------------------------------------------------------


def run_cv(cfg: RunConfig, console: Console | None = None) -> dict[str, Any]:
    """Runs (or resumes) k-fold CV plus the ensemble on a local or remote Ray cluster; returns metrics.json's dict.

    Everything about the input (model name, data, folds, storage path, a run name used by another config) is
    checked before anything is written, and raises ConfigError or DataError. RuntimeError when a fold fails (the
    run then resumes when started again). Connects to Ray (or starts it) only when not connected already, and
    then disconnects at the end.
    """
    ray = sys.modules.get("ray")  # not imported here: bad input is refused without importing Ray at all
    connected_before = ray is not None and ray.is_initialized()
    try:
        return _run_cv(cfg, console or Console())
    finally:
        ray = sys.modules.get("ray")
        if not connected_before and ray is not None and ray.is_initialized():
            ray.shutdown()  # also ends Ray's message thread, which would print after the result otherwise


def _run_cv(cfg: RunConfig, console: Console) -> dict[str, Any]:
    from reuters_ray.baseline import check_fittable
    from reuters_ray.ensemble import Ensemble
    from reuters_ray.features import class_weights, stratified_folds, tokenize
    from reuters_ray.metrics import evaluate_scores, softmax
    from reuters_ray.models import check_fits, check_model, load_tokenizer
    from reuters_ray.outputs import write_run_outputs
    from reuters_ray.preprocess import prepare
    from reuters_ray.report import write_report

    t0 = time.perf_counter()
    timing: dict[str, float] = {}  # the run's wall time by phase, in seconds (metrics.json "timing")
    name = run_name(cfg)

    # The input, checked before anything is written: a bad run leaves nothing behind.
    check_model(cfg.model.name)
    dc = cfg.data
    ds = prepare(dc)
    ds.check_folds(cfg.cv.folds)
    tokenizer = load_tokenizer(dc.tokenizer or cfg.model.name)
    check_fits(cfg.model.name, dc.max_length, tokenizer, dc.tokenizer)
    folds = stratified_folds(ds.train_labels, cfg.cv.folds, cfg.train.seed)
    if cfg.cv.blend or cfg.cv.baseline:  # else it would fail only once the folds have trained
        try:
            check_fittable(ds.train_texts, folds)
        except DataError as e:
            raise DataError(f"{e}; to train without it: --cv.blend false --cv.baseline false") from None
    data_id = ds.fingerprint()
    try:
        fs, base, base_uri = storage_location(cfg.cv.storage_path)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError: a URI it does not take
        raise ConfigError(f"cv.storage_path {cfg.cv.storage_path!r}: {e}") from None
    if why := unreachable_endpoint(cfg.cv.storage_path):
        raise ConfigError(f"cv.storage_path {cfg.cv.storage_path!r}: {why}")
    run_path, run_uri = f"{base}/{name}", uri_join(base_uri, name)
    resuming = check_resumable(fs, run_path, cfg, name, data_id)
    check_writable(fs, run_path, cfg.cv.storage_path)
    write_atomic(f"{run_path}/config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=True), fs)
    write_atomic(f"{run_path}/{DATA_FILE}", json.dumps(data_id), fs)
    console.info(f"run {name}: {run_uri}", run=name, uri=run_uri)
    for line in ds.notes():
        console.info(line)

    tokens = tokenize(ds.train_texts + ds.test_texts, tokenizer, dc.max_length)
    n_train = len(ds.train_texts)
    weights = class_weights(ds.train_labels, ds.num_classes)
    row_fold = fold_of_rows(folds, n_train)
    assignment = dict(zip(ds.train_ids, row_fold.tolist()))
    write_atomic(f"{run_path}/fold_assignment.json", json.dumps(assignment), fs)
    console.info(
        f"data: {n_train} train / {len(ds.test_texts)} test texts, {ds.num_classes} classes, {cfg.cv.folds} folds, "
        f"tokens {tokens.ids.shape} {tokens.ids.dtype} ({tokens.ids.nbytes / 2**20:.1f} MiB)",
        train=n_train,
        test=len(ds.test_texts),
        classes=ds.num_classes,
        folds=cfg.cv.folds,
    )
    timing["data_s"] = time.perf_counter() - t0  # checks, loading, preprocessing, tokenization

    t = time.perf_counter()
    import ray  # only now: bad input is refused without starting (or even importing) Ray

    # Ray Train's state tracking: the dashboard's Train API (/api/train/v2/runs/v1) lists each fold's Train run.
    # Read by TorchTrainer.fit in this process; _run_folds keeps the folds from racing to create its actor.
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")

    if not ray.is_initialized():
        # Joins a running cluster (ray start, ray job submit) or starts a local one. Worker output stays in Ray's
        # logs (dashboard, /tmp/ray/session_latest/logs): the driver prints each epoch itself, once.
        ray.init(log_to_driver=False)
    try:
        gpu_share = place_folds(cfg.cv, ray.cluster_resources())
        if "://" in cfg.cv.storage_path:  # a local folder is this machine's; a bucket must take every node's writes
            check_nodes_can_write(cfg.cv.storage_path, run_uri)
    except ConfigError:
        if not resuming:
            fs.delete_dir(run_path)  # refused before any training: a new run leaves nothing behind
        raise
    timing["ray_start_s"] = time.perf_counter() - t

    t = time.perf_counter()
    train_ref = ray.put(
        {
            "ids": tokens.ids[:n_train],
            "lengths": tokens.lengths[:n_train],
            "pad_id": tokens.pad_id,
            "labels": ds.train_labels,
            "class_weights": weights,
            "label_names": ds.label_names,
            "folds": folds,
        }
    )
    if resuming:
        console.info(
            f"run {name}: resuming (finished folds are kept, unfinished ones continue from their last checkpoint)",
            resuming=True,
        )
    linear_fit = None  # CPU work on the driver while the folds train: it then costs the run no wall time
    if cfg.cv.blend or cfg.cv.baseline:
        pool = ThreadPoolExecutor(1, thread_name_prefix="linear-model")
        linear_fit = pool.submit(fit_linear, ds, folds)
        pool.shutdown(wait=False)
    fold_rows, best_paths, history = [], [], []
    for k, folder in enumerate(_run_folds(cfg, run_path, run_uri, fs, gpu_share, train_ref, console, name)):
        # Each fold's summary, from its last checkpoint as Ray Train registered it (a checkpoint folder uploaded
        # but not registered when a driver died is never used: Ray trained that epoch again).
        path = f"{run_path}/fold_{k}/{folder}"
        progress = read_fold_checkpoint(fs, path)
        fold_rows.append(summarize_fold(k, progress, cfg.train.patience))
        history += [{k2: v for k2, v in r.items() if not k2.startswith("worker/")} for r in progress["history"]]
        best_paths.append(f"{path}/best")
    oof_logits = out_of_fold_logits(fs, best_paths, folds, n_train)
    timing["folds_s"] = time.perf_counter() - t

    # Ensemble on the test split, in an actor on a GPU when there is one.
    t = time.perf_counter()
    test = {"ids": tokens.ids[n_train:], "lengths": tokens.lengths[n_train:], "pad_id": tokens.pad_id}
    actor_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    actor_cls = ray.remote(num_cpus=1, num_gpus=actor_gpus)(_EnsembleActor)
    actor = actor_cls.options(name=f"{name}:ensemble").remote(  # the name the dashboard's Actors page shows
        base_uri, best_paths, cfg.train.precision, cfg.train.profile
    )
    fold_logits = ray.get(actor.fold_logits.remote(ray.put(test)))
    ray.kill(actor)
    mean, _ = Ensemble.combine(fold_logits)
    ensemble = evaluate_scores(ds.test_labels, mean, ds.label_names)
    for row, logits in zip(fold_rows, fold_logits):
        row["test_f1_weighted"] = evaluate_scores(ds.test_labels, logits, ds.label_names)["f1_weighted"]
    timing["ensemble_s"] = time.perf_counter() - t

    # The linear model inside the same folds: the baseline's figures, and the blend's weight chosen out of fold.
    metrics, probs, linear = dict(ensemble), softmax(mean), None
    if cfg.cv.blend or cfg.cv.baseline:
        metrics, probs, linear = blend_phase(cfg, ds, linear_fit.result(), oof_logits, ensemble, probs, timing, console)
    metrics["ensemble"] = ensemble
    metrics["out_of_fold"] = out_of_fold_metrics(ds.train_labels, oof_logits, ds.label_names, fold_rows)
    metrics.update(
        {
            "predictor": "blend" if cfg.cv.blend else "ensemble",  # what the top-level figures are of
            "run": name,
            "label_names": ds.label_names,
            "max_length": dc.max_length,
            "folds": fold_rows,
            "wall_s": time.perf_counter() - t0,
            "timing": timing,
            "class_weights": weights.tolist(),
            "cluster": {
                **{k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
                "job_id": ray.get_runtime_context().get_job_id(),  # the run's job in the dashboard and `ray list`
            },
        }
    )

    # Outputs: written locally, then copied into storage (a plain copy for a local storage path). Their own time
    # cannot be in metrics.json (written first), so the result line and event carry it.
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for k, path in enumerate(best_paths):
            dst = out / "models" / f"fold_{k}"
            dst.mkdir(parents=True)
            copy_dir(path, str(dst), fs, LOCAL)
            tokenizer.save_pretrained(str(dst))
        config = cfg.to_dict()
        oof = (ds.train_ids, ds.train_labels, row_fold, softmax(oof_logits))
        write_run_outputs(
            out, metrics, fold_rows, history, ds.test_ids, ds.test_labels, probs, ds.label_names, config,
            {**ds.provenance, "fingerprint": data_id}, oof,
        )  # fmt: skip
        if linear is not None and cfg.cv.blend:
            linear.save(out / "linear")
        write_report(out)
        publish_outputs(out, fs, run_path)
    timing = {**timing, "outputs_s": time.perf_counter() - t, "total_s": time.perf_counter() - t0}
    console.done(
        f"run {name}: accuracy {metrics['accuracy']:.4f}, weighted F1 {metrics['f1_weighted']:.4f}, "
        f"macro F1 {metrics['f1_macro']:.4f} on {metrics['n_test']} test texts ({predictor_line(metrics)}) "
        f"in {duration(timing['total_s'])}; report: {uri_join(run_uri, 'report.html')}",
        run=name,
        uri=run_uri,
        accuracy=metrics["accuracy"],
        f1_weighted=metrics["f1_weighted"],
        f1_macro=metrics["f1_macro"],
        timing=timing,
    )
    return metrics


ROW_KEYS = ("fold", "seed", "epoch", "lr", "finished", "max_epochs", "restarts")
FOLD_RESULT = "fold_result.json"  # in fold_<k>/ once the fold finished: {"checkpoint": its last checkpoint's folder}


def _run_folds(cfg: RunConfig, run_path, run_uri, fs, gpu_share, train_ref, console: Console, name) -> list[str]:
    """Fits the unfinished folds at once (a thread per fold waits on its TorchTrainer) while printing their epoch
    rows; returns each fold's last checkpoint folder. Raises RuntimeError naming the folds that failed, once the
    others are done (their results are kept: the rerun resumes only what failed)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folders: dict[int, str] = {}
    for k in range(cfg.cv.folds):
        done = read_text(fs, f"{run_path}/fold_{k}/{FOLD_RESULT}")
        if done is not None:
            folders[k] = json.loads(done)["checkpoint"]
    # On the driver's node, as Ray Train attaches each fold's controller: the driver lives only as long as that node
    # does, and elsewhere a lost node would take the folds' reports with it. Hard: a soft preference was seen
    # spilled to another node (no CPU asked, so the driver's node always has room).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    progress = ray.remote(num_cpus=0)(_Progress).options(name=f"{name}:progress", scheduling_strategy=here).remote()
    errors: dict[int, BaseException] = {}
    console.expected = {k for k in range(cfg.cv.folds) if k not in folders}
    with ThreadPoolExecutor(max_workers=cfg.cv.folds) as pool:
        futures = {}
        for k in [k for k in range(cfg.cv.folds) if k not in folders]:
            task = FoldTask(cfg, k, gpu_share, cfg.cv.cpus_per_fold, uuid.uuid4().hex[:12])
            futures[pool.submit(_fit_fold, task, [train_ref], run_uri, progress)] = k
            if len(futures) == 1:
                _await_train_shared_actors(next(iter(futures)))
        pending = set(futures)
        while pending:
            for row in ray.get(progress.take.remote(1.0)):
                console.epoch(row)
            for future in [f for f in pending if f.done()]:
                pending.discard(future)
                k = futures[future]
                if future.exception() is not None:
                    errors[k] = future.exception()
                    continue
                folders[k] = future.result()
                write_atomic(f"{run_path}/fold_{k}/{FOLD_RESULT}", json.dumps({"checkpoint": folders[k]}), fs)
    for row in ray.get(progress.take.remote(0)):  # the last rows, sent just before their fold's fit returned
        console.epoch(row)
    ray.kill(progress)
    if errors:
        k, first = min(errors.items())
        raise RuntimeError(
            f"run {name}: fold(s) {', '.join(map(str, sorted(errors)))} failed; rerun the same command to resume. "
            f"Fold {k}: {first}"
        )
    return [folders[k] for k in range(cfg.cv.folds)]
