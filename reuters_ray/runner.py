"""Ray orchestration of k-fold cross-validation: the only module that imports Ray Train and Tune.

    driver   load, preprocess and tokenize once; put the arrays in the object store; one Tune trial per fold
    trial    builds and fits a TorchTrainer (ScalingConfig(num_workers=1, use_gpu=...)) for its fold
    worker   calls reuters_ray.train.train_fold, reporting each epoch's checkpoint to Ray storage
    actor    the ensemble: loads each fold's best model from storage and scores the test split

Storage: <cv.storage_path>/<run name>/ holds Tune's experiment state, fold_<k>/ (Ray Train checkpoints of fold k)
and, at the end, the run's outputs (see reuters_ray.report) and models/fold_<k>/. Running the same command with
the same run name resumes: Tune restores finished and unfinished trials, and Ray Train restores each unfinished
fold from its latest checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import yaml

from reuters_ray.config import RunConfig, from_dict
from reuters_ray.console import Console, duration
from reuters_ray.errors import ConfigError

TRIAL_CPU = 0.01  # the trial function only waits on its TorchTrainer; its worker holds the real resources


# Settings that change where and how fast a run goes, not what it computes: free to differ on resume.
PLACEMENT_KEYS = ("name", "storage_path", "gpus_per_fold", "cpus_per_fold", "max_failures", "baseline")


def result_config(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The config without PLACEMENT_KEYS: what must match for a run to be resumed."""
    d = json.loads(json.dumps(cfg_dict))
    for k in PLACEMENT_KEYS:
        d.get("cv", {}).pop(k, None)
    return d


def run_name(cfg: RunConfig) -> str:
    """cv.name, else a name derived from everything that changes the result: same config, same name."""
    if cfg.cv.name:
        return cfg.cv.name
    d = result_config(cfg.to_dict())
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    model = re.sub(r"[^A-Za-z0-9]+", "-", cfg.model.name.split("/")[-1]).strip("-").lower()
    return f"{model}-{cfg.data.source}-{cfg.train.profile}-{cfg.cv.folds}fold-{digest}"


def storage_location(storage_path: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, base path on it, URI Ray accepts) for a local folder or a pyarrow/fsspec URI."""
    if "://" in storage_path:
        fs, base = pafs.FileSystem.from_uri(storage_path)
        return fs, base.rstrip("/"), storage_path.rstrip("/")
    base = os.path.abspath(os.path.expanduser(storage_path))
    return pafs.LocalFileSystem(), base, base


def _read_text(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def _write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Writes through a temporary name and a move, so readers never see half a file."""
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = path + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def _write_text(fs: pafs.FileSystem, path: str, text: str) -> None:
    _write_bytes(fs, path, text.encode())


def _check_writable(fs: pafs.FileSystem, run_path: str, storage_path: str) -> None:
    try:
        _write_text(fs, f"{run_path}/.write_test", "ok")
        fs.delete_file(f"{run_path}/.write_test")
    except OSError as e:
        raise ConfigError(f"cv.storage_path {storage_path!r} cannot be written: {e}") from None


def read_fold_checkpoint(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    """progress.json of the fold checkpoint at `path` (a folder in storage)."""
    text = _read_text(fs, f"{path}/progress.json")
    if text is None:
        raise RuntimeError(f"fold checkpoint {path} has no progress.json")
    return json.loads(text)


def fold_timing(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a fold's time went, from its epoch rows: seconds of training, validation, checkpoint writing and
    reporting (the upload into storage; the last epoch's is not in its own checkpoint), throughput, peak GPU memory."""
    def total(key: str) -> float:
        return float(sum(r.get(key) or 0.0 for r in history))

    def mean(key: str) -> float | None:
        values = [r[key] for r in history if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    peaks = [r["memory/peak_gib"] for r in history if r.get("memory/peak_gib") is not None]
    return {
        "train_s": total("time/train_s"), "val_s": total("time/val_s"), "checkpoint_s": total("time/checkpoint_s"),
        "report_s": total("time/report_s"), "wall_s": total("time/epoch_s") + total("time/report_s"),
        "examples_per_s": mean("train/examples_per_s"), "tokens_per_s": mean("train/tokens_per_s"),
        "peak_gpu_gib": max(peaks) if peaks else None,
    }  # fmt: skip


# --- code that runs in Ray workers ----------------------------------------------------------------------------


def _fold_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: one fold's training loop, checkpoints reported into Ray storage."""
    import ray
    import ray.train
    import ray.train.torch

    from reuters_ray.features import TokenArrays
    from reuters_ray.train import FoldData, train_fold

    cfg = from_dict(RunConfig, config["run"])
    arrays = ray.get(config["data_ref"][0])  # numpy arrays come back zero-copy from the object store
    fold = config["fold"]
    train_idx, val_idx = arrays["folds"][fold]
    data = FoldData(
        TokenArrays(arrays["ids"], arrays["lengths"], arrays["pad_id"]), arrays["labels"], train_idx, val_idx,
        arrays["class_weights"], arrays["label_names"],
    )  # fmt: skip

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    with tempfile.TemporaryDirectory() as tmp:
        resume = None
        checkpoint = ray.train.get_checkpoint()  # set when Ray restores this fold (driver rerun or worker restart)
        if checkpoint is not None:
            resume = resume_candidates(checkpoint.filesystem, checkpoint.path, tmp)
        train_fold(cfg, data, Path(tmp) / "checkpoints", fold=fold, resume_from=resume, attempt=config["attempt"],
                   report=report, device=ray.train.torch.get_device(), gpu_share=config["gpu_share"] or 1.0)  # fmt: skip


def resume_candidates(fs: pafs.FileSystem, latest: str, local_root: str):
    """Yields local copies of checkpoint `latest` (the one Ray restored) and then of the fold's older kept
    checkpoints, newest first, each fetched only when asked for (train_fold takes the first that loads).
    Ray names checkpoint folders checkpoint_<timestamp>, so name order is age order; newer folders than
    `latest` are ones Ray never registered and are not used."""
    parent, name = latest.rstrip("/").rsplit("/", 1)
    older = sorted(
        (i.base_name for i in fs.get_file_info(pafs.FileSelector(parent))
         if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_") and i.base_name < name),
        reverse=True,
    )  # fmt: skip
    for k, folder in enumerate([name, *older]):
        dst = os.path.join(local_root, f"resume_{k}")
        os.makedirs(dst)
        pafs.copy_files(f"{parent}/{folder}", dst, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield Path(dst)


def _fold_trial(config: dict[str, Any], data_ref: list) -> dict[str, Any]:
    """Tune trial: builds and fits the TorchTrainer of one fold."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    fold, cv = config["fold"], config["run"]["cv"]
    gpus = config["gpus_per_fold"]
    resources = {"CPU": cv["cpus_per_fold"], **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        _fold_worker,
        # attempt: new with each start of this trial function, kept when Ray Train restarts a dead worker
        train_loop_config={"run": config["run"], "fold": fold, "data_ref": data_ref, "gpu_share": gpus, "attempt": uuid.uuid4().hex[:12]},
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=bool(gpus), resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"fold_{fold}",
            storage_path=config["run_uri"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config["run"]["train"]["keep_checkpoints"]),
            failure_config=ray.train.FailureConfig(max_failures=cv["max_failures"]),
        ),
    )
    result = trainer.fit()
    return {"fold": fold, "fold_checkpoint": result.checkpoint.path if result.checkpoint else ""}


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
            pafs.copy_files(path, dst, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            local.append(dst)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.ensemble = Ensemble(local, device=str(device), precision=resolve_precision(precision, PROFILES[profile], device))

    def fold_logits(self, arrays: dict[str, Any]) -> np.ndarray:
        from reuters_ray.features import TokenArrays

        return self.ensemble.fold_logits(TokenArrays(arrays["ids"], arrays["lengths"], arrays["pad_id"]))

    def device(self) -> str:
        return str(self.ensemble.device)


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
    from reuters_ray.features import class_weights, stratified_folds, tokenize
    from reuters_ray.models import check_model, load_tokenizer
    from reuters_ray.preprocess import prepare
    from reuters_ray.report import ensemble_metrics, write_run_outputs
    from reuters_ray.reporting import write_report

    t0 = time.perf_counter()
    timing: dict[str, float] = {}  # the run's wall time by phase, in seconds (metrics.json "timing")
    name = run_name(cfg)

    # The input, checked before anything is written: a bad run leaves nothing behind.
    check_model(cfg.model.name)
    dc = cfg.data
    ds = prepare(dc)
    ds.check_folds(cfg.cv.folds)
    tokenizer = load_tokenizer(dc.tokenizer or cfg.model.name)
    fs, base, base_uri = storage_location(cfg.cv.storage_path)
    run_path, run_uri = f"{base}/{name}", f"{base_uri}/{name}"
    previous = _read_text(fs, f"{run_path}/config.yaml")
    if previous is not None and result_config(yaml.safe_load(previous)) != result_config(cfg.to_dict()):
        old, new = result_config(yaml.safe_load(previous)), result_config(cfg.to_dict())
        diff = [f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k) != new[s][k]]
        raise ConfigError(f"run {name!r} in {cfg.cv.storage_path} was made with another config (differs in {', '.join(diff)}); "
                          f"use the same config to resume it, or another cv.name")  # fmt: skip
    _check_writable(fs, run_path, cfg.cv.storage_path)
    _write_text(fs, f"{run_path}/config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=True))
    console.info(f"run {name}: {run_uri}", run=name, uri=run_uri)

    tokens = tokenize(ds.train_texts + ds.test_texts, tokenizer, dc.max_length)
    n_train = len(ds.train_texts)
    folds = stratified_folds(ds.train_labels, cfg.cv.folds, cfg.train.seed)
    weights = class_weights(ds.train_labels, ds.num_classes)
    _write_text(fs, f"{run_path}/fold_assignment.json", json.dumps(
        {ds.train_ids[i]: k for k, (_, va) in enumerate(folds) for i in va}))  # fmt: skip
    console.info(f"data: {n_train} train / {len(ds.test_texts)} test texts, {ds.num_classes} classes, {cfg.cv.folds} folds, "
                 f"tokens {tokens.ids.shape} {tokens.ids.dtype} ({tokens.ids.nbytes / 2**20:.1f} MiB)",
                 train=n_train, test=len(ds.test_texts), classes=ds.num_classes, folds=cfg.cv.folds)  # fmt: skip

    timing["data_s"] = time.perf_counter() - t0  # checks, loading, preprocessing, tokenization
    t = time.perf_counter()
    import ray  # only now: bad input is refused without starting (or even importing) Ray
    from ray import tune

    if not ray.is_initialized():
        # Joins a running cluster (ray start, ray job submit) or starts a local one. Worker output stays in Ray's
        # logs (dashboard, /tmp/ray/session_latest/logs): the driver prints each epoch itself, once.
        ray.init(log_to_driver=False)
    gpus = cfg.cv.gpus_per_fold
    have = ray.cluster_resources()
    if gpus is None:
        # One GPU per fold when there are enough; otherwise the folds share them and run at once: on CPU that beat
        # one after another, and on one H100 it pays the minute of fold start-up once, not per fold (docs/results.md;
        # the steady-state ratio on the GPU is still to be measured).
        gpus = min(1.0, int(have.get("GPU", 0)) / cfg.cv.folds) if have.get("GPU", 0) >= 1 else 0.0
    # A fold that cannot fit would wait forever: say so now. (The trials themselves hold TRIAL_CPU each.)
    if cfg.cv.cpus_per_fold + cfg.cv.folds * TRIAL_CPU > have.get("CPU", 0) + 1e-9:
        raise ConfigError(f"cv.cpus_per_fold={cfg.cv.cpus_per_fold} does not fit this Ray cluster's {have.get('CPU', 0):g} CPUs "
                          f"(leave {cfg.cv.folds * TRIAL_CPU:g} for the fold trials)")  # fmt: skip
    if gpus > have.get("GPU", 0) + 1e-9:
        raise ConfigError(f"cv.gpus_per_fold={gpus} but this Ray cluster has {have.get('GPU', 0):g} GPUs")
    timing["ray_start_s"] = time.perf_counter() - t
    t = time.perf_counter()
    train_ref = ray.put({
        "ids": tokens.ids[:n_train], "lengths": tokens.lengths[:n_train], "pad_id": tokens.pad_id,
        "labels": ds.train_labels, "class_weights": weights, "label_names": ds.label_names, "folds": folds,
    })  # fmt: skip

    # Tune's own tables and status lines would repeat what the console prints (and break JSON-lines output).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    trainable = tune.with_resources(tune.with_parameters(_fold_trial, data_ref=[train_ref]), {"CPU": TRIAL_CPU})
    callbacks = [_progress_callback(console)]
    if tune.Tuner.can_restore(run_uri):
        console.info(f"run {name}: resuming (finished folds are kept, unfinished ones continue from their last checkpoint)", resuming=True)
        tuner = tune.Tuner.restore(run_uri, trainable=trainable, resume_unfinished=True, resume_errored=True)
        tuner._local_tuner.get_run_config().callbacks = callbacks  # restore brings back the old run's (pickled) console
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"fold": tune.grid_search(list(range(cfg.cv.folds))), "run": cfg.to_dict(), "run_uri": run_uri, "gpus_per_fold": gpus},
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.cv.folds),
            run_config=tune.RunConfig(name=name, storage_path=base_uri, verbose=0, callbacks=callbacks),
        )
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"run {name}: {len(results.errors)} fold(s) failed; rerun the same command to resume. First error: {results.errors[0]}")

    timing["folds_s"] = time.perf_counter() - t

    # Fold summaries, from each fold's last checkpoint as Ray Train registered it (a checkpoint folder that was
    # uploaded but not registered when a driver died is ignored: Ray retrained that epoch).
    fold_paths = {r.config["fold"]: r.metrics.get("fold_checkpoint") for r in results}
    fold_rows, best_paths, history = [], [], []
    for k in range(cfg.cv.folds):
        path = fold_paths.get(k)
        if not path:  # a path on the storage filesystem, as Ray Train reports it
            raise RuntimeError(f"run {name}: fold {k} reported no checkpoint")
        progress = read_fold_checkpoint(fs, path)
        if not progress["finished"]:
            raise RuntimeError(f"run {name}: fold {k}'s last checkpoint {path} is not finished")
        hist, es = progress["history"], progress["early_stopping"]
        best, last = hist[es["best_epoch"] - 1], hist[-1]
        fold_rows.append({
            "fold": k, "best_epoch": es["best_epoch"], "val_f1_weighted": best["val/f1_weighted"],
            "val_accuracy": best["val/accuracy"], "val_f1_macro": best["val/f1_macro"], "epochs_run": len(hist),
            "stopped_early": es["bad_epochs"] >= cfg.train.patience, **fold_timing(hist),
            "device": last.get("worker/device", ""), "host": last.get("worker/host", ""),
            **progress.get("setup", {}),
            "restarts": progress.get("restarts", []),
        })  # fmt: skip
        history += [{k2: v for k2, v in r.items() if not k2.startswith("worker/")} for r in hist]
        best_paths.append(f"{path}/best")

    # Ensemble on the test split, in an actor on a GPU when there is one.
    t = time.perf_counter()
    test = {"ids": tokens.ids[n_train:], "lengths": tokens.lengths[n_train:], "pad_id": tokens.pad_id}
    actor_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    actor = ray.remote(num_cpus=1, num_gpus=actor_gpus)(_EnsembleActor).remote(base_uri, best_paths, cfg.train.precision, cfg.train.profile)
    fold_logits = ray.get(actor.fold_logits.remote(ray.put(test)))
    ray.kill(actor)
    mean = fold_logits.mean(axis=0)
    metrics = ensemble_metrics(ds.test_labels, mean, ds.label_names)
    for row, logits in zip(fold_rows, fold_logits):
        row["test_f1_weighted"] = ensemble_metrics(ds.test_labels, logits, ds.label_names)["f1_weighted"]
    timing["ensemble_s"] = time.perf_counter() - t
    if cfg.cv.baseline:
        from reuters_ray.baseline import run_baseline

        metrics["baseline"] = run_baseline(ds)
        console.info(f"baseline ({metrics['baseline']['name']}): weighted F1 {metrics['baseline']['f1_weighted']:.4f}",
                     baseline_f1_weighted=metrics["baseline"]["f1_weighted"])  # fmt: skip
        timing["baseline_s"] = metrics["baseline"]["fit_s"]
    metrics.update({"run": name, "label_names": ds.label_names, "max_length": dc.max_length, "folds": fold_rows,
                    "wall_s": time.perf_counter() - t0, "timing": timing, "class_weights": weights.tolist(),
                    "cluster": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}})  # fmt: skip

    # Outputs: written locally, then copied into storage (a no-op copy for a local storage path). Their own time
    # cannot be in metrics.json (written first), so the result line and event carry it.
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for k, path in enumerate(best_paths):
            dst = out / "models" / f"fold_{k}"
            dst.mkdir(parents=True)
            pafs.copy_files(path, str(dst), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            tokenizer.save_pretrained(str(dst))
        write_run_outputs(out, metrics, fold_rows, history, ds.test_ids, ds.test_labels, mean, ds.label_names, cfg.to_dict(), ds.provenance)
        write_report(out)
        for item in sorted(out.iterdir(), key=lambda p: OUTPUT_ORDER.get(p.name, 0)):
            dst = f"{run_path}/{item.name}"
            if item.is_dir():
                pafs.copy_files(str(item), dst, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
            else:
                _write_bytes(fs, dst, item.read_bytes())
    timing = {**timing, "outputs_s": time.perf_counter() - t, "total_s": time.perf_counter() - t0}
    console.done(f"run {name}: accuracy {metrics['accuracy']:.4f}, weighted F1 {metrics['f1_weighted']:.4f}, "
                 f"macro F1 {metrics['f1_macro']:.4f} on {metrics['n_test']} test texts in {duration(timing['total_s'])}; "
                 f"report: {run_uri}/report.html",
                 run=name, uri=run_uri, accuracy=metrics["accuracy"], f1_weighted=metrics["f1_weighted"], f1_macro=metrics["f1_macro"],
                 timing=timing)  # fmt: skip
    return metrics


# Copy order into storage: metrics.json, then the report, report.md last (its presence means the run is complete).
OUTPUT_ORDER = {"metrics.json": 1, "report.html": 2, "report.md": 3}


ROW_KEYS = ("fold", "seed", "epoch", "lr", "finished", "max_epochs", "restarts")


def _progress_callback(console: Console):
    """A Tune callback that hands each fold's epoch row (forwarded by TuneReportCallback) to the console."""
    from ray import tune

    class _Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "val/f1_weighted" in result:
                console.epoch({k: v for k, v in result.items() if k in ROW_KEYS or "/" in k})

    return _Progress()
