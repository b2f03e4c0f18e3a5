"""The cv driver's phases, without Ray: each a function, with small records at the boundaries. reuters_ray.runner
calls them in order (run_cv) and holds only what needs Ray: connecting, the folds' Ray Train runs, the ensemble actor.

    check_input      config, model, data, folds, what the linear model needs: checked before anything is written
    open_run         the run's place in storage (RunPlace): a new run, or the same run (config and data) resumed
    collect_folds    each fold's summary, epoch rows and best model, from its last checkpoint in storage
    score_ensemble   the ensemble's test metrics from the fold models' test logits
    blend_phase      the linear model's baseline figures and the blend, its weight chosen out of fold
    run_metrics      metrics.json
    write_outputs    the run folder's files, written locally and then copied into storage, report.md last

Storage: <cv.storage_path>/<run name>/ holds config.yaml and data_fingerprint.json from the start, fold_<k>/ (Ray
Train's run of fold k: its checkpoints, its JSON checkpoint snapshot, and fold_result.json once the fold finished),
and at the end the run's outputs (reuters_ray.outputs, reuters_ray.report) and models/fold_<k>/. Nothing read back
from storage is unpickled: JSON and safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import yaml

from reuters_ray import rows as R
from reuters_ray.config import RunConfig
from reuters_ray.console import Console
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
    "cv": (
        "name",
        "storage_path",
        "gpus_per_fold",
        "cpus_per_fold",
        "workers_per_fold",
        "max_failures",
        "baseline",
        "blend",
        "threshold_min_positives",
        "at_least_one",
    ),  # fmt: skip
    "train": ("eval_batch_size", "compile", "keep_checkpoints", "checkpoint_every", "checkpoint_every_s"),
}
DATA_FILE = "data_fingerprint.json"  # in the run folder from its start: the data's identity (TextDataset.fingerprint)
FOLD_RESULT = "fold_result.json"  # in fold_<k>/ once the fold finished: {"checkpoint": its last checkpoint's folder}
# Copy order into storage: metrics.json, then the report, report.md last (its presence means the run is complete).
OUTPUT_ORDER = {"metrics.json": 1, "report.html": 2, "report.md": 3}


# --- records at the phases' boundaries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlace:
    """Where a run lives: its name, the filesystem, its path on it, and the URI Ray is given."""

    name: str
    fs: pafs.FileSystem
    path: str
    uri: str

    def at(self, *parts: str) -> str:
        """A path inside the run folder."""
        return "/".join([self.path, *parts])


@dataclass
class Prepared:
    """The input of a run, checked: the data set, its tokens (train rows first, then test), the folds (train rows,
    validation rows) and class weights, and the data's fingerprint."""

    ds: Any  # TextDataset
    tokenizer: Any
    tokens: Any  # TokenArrays [n_train + n_test, max_length]
    folds: list[tuple[np.ndarray, np.ndarray]]
    weights: np.ndarray
    fingerprint: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # about the model and the splits, for the run's first lines

    @property
    def n_train(self) -> int:
        return len(self.ds.train_texts)

    def fold_of_row(self) -> np.ndarray:
        """For each training row, the fold whose validation split holds it."""
        return fold_of_rows(self.folds, self.n_train)

    def assignment(self) -> dict[str, Any]:
        """fold_assignment.json: each training text's id and the fold that validates on it."""
        return dict(zip(self.ds.train_ids, self.fold_of_row().tolist()))


@dataclass
class Folds:
    """What the folds left: the fold table (a row per fold), every epoch row, and each fold's best model."""

    table: list[dict[str, Any]]
    history: list[dict[str, Any]]
    best_paths: list[str]  # best/ of each fold's last checkpoint, in storage


@dataclass
class Scored:
    """The run's test figures: metrics.json's top level (the predictor's), its test probabilities [N, K], the
    linear model when the run blends, and the seconds the linear model's fits took."""

    metrics: dict[str, Any]
    probs: np.ndarray
    linear: Any = None
    linear_s: float | None = None


@dataclass
class Stopwatch:
    """Wall seconds by phase (metrics.json "timing")."""

    started: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)
    laps: dict[str, float] = field(default_factory=dict)

    def lap(self, name: str) -> None:
        self.lap_at(name, time.perf_counter())

    def lap_at(self, name: str, at: float) -> None:
        """Phase `name` ended at perf_counter time `at` (now or earlier: the phase after it overlapped it)."""
        self.laps[name], self.last = at - self.last, at

    def total(self) -> float:
        return time.perf_counter() - self.started


# --- names and resuming ------------------------------------------------------------------------------------------


# Settings added after runs existed, with the value that keeps what those runs did: left out of the comparison and
# of the derived name at that value, so a run made before them (its config.yaml lacks them) resumes under its name.
ADDED_KEYS = {
    "data": {"task": "single", "split": "keras", "label_delimiter": "|"},
    "model": {"layers": None},
    "train": {"monitor": None},
    "distill": {
        "teacher": None,
        "temperature": 2.0,
        "alpha": 0.5,
        "val_share": 0.1,
        "transfer": "none",
        "transfer_sample": None,
    },  # a cv run: the defaults; absent from the config.yaml of older runs
}


def result_config(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The config without RESUME_FREE_KEYS (and ADDED_KEYS at their old behaviour's value): what must match for a
    run to be resumed."""
    d = json.loads(json.dumps(cfg_dict))
    for section, keys in RESUME_FREE_KEYS.items():
        for k in keys:
            d.get(section, {}).pop(k, None)
    for section, keys in ADDED_KEYS.items():
        for k, value in keys.items():
            if k in d.get(section, {}) and d[section][k] == value:
                d[section].pop(k)
        if section in d and not d[section]:
            d.pop(section)  # a section added whole (distill): absent from older runs' config.yaml
    return d


def run_name(cfg: RunConfig, data_sha256: str | None = None) -> str:
    """cv.name, else a name derived from everything that changes the result, the data's fingerprint included: same
    config and data, same name (a changed table gets a run of its own; under a cv.name it is refused)."""
    if cfg.cv.name:
        return cfg.cv.name
    d = result_config(cfg.to_dict())
    if data_sha256 is not None:
        d["data_sha256"] = data_sha256
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    model = re.sub(r"[^A-Za-z0-9]+", "-", cfg.model.name.split("/")[-1]).strip("-").lower()
    if cfg.student:  # the teacher's folder name, then the student's model: the two sit side by side
        teacher = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.distill.teacher.partition("?")[0].rstrip("/").rsplit("/", 1)[-1])
        return f"{teacher}-student-{model}{'' if cfg.model.layers is None else f'-{cfg.model.layers}l'}-{digest}"
    return f"{model}-{cfg.data.source}-{cfg.train.profile}-{cfg.cv.folds}fold-{digest}"


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


# Of a GPU, what the ensemble's actor holds: it is created while the last folds train (runner._Ensemble), so folds
# that share a card leave it this much.
ENSEMBLE_GPU = 0.01


def share_of_gpu(workers: int, gpus: int) -> float:
    """Each of `workers` training workers' share of `gpus` GPUs: 1 when there are enough, else an equal share, as
    many workers to a card as the busiest card takes (3 workers on 2 GPUs: 2 to a card), less ENSEMBLE_GPU on each
    card, rounded down to Ray's 1e-4 resource grain (3 on one GPU: 0.33 each); 0 without GPUs."""
    if gpus < 1:
        return 0.0
    if workers <= gpus:
        return 1.0
    per_card = -(-workers // gpus)
    return math.floor((1 - ENSEMBLE_GPU) / per_card * 1e4) / 1e4


def ensemble_fits_early(cv, cluster: dict[str, float], gpu_share: float, n_models: int | None = None) -> bool:
    """Whether the ensemble's actor (no CPU, ENSEMBLE_GPU of a GPU on a GPU cluster) fits while the folds hold
    their room: without GPUs, when the folds share cards (place_folds left each card ENSEMBLE_GPU) or when a card is
    spare. Not with cv.gpus_per_fold set, or whole cards for every fold: the actor would wait for a card, and could
    take one a restarted fold worker needs."""
    gpus = int(cluster.get("GPU", 0))
    if gpus == 0:
        return True
    workers = (n_models or cv.folds) * cv.workers_per_fold
    return cv.gpus_per_fold is None and (gpu_share < 1 or workers < gpus)


def place_folds(cv, cluster: dict[str, float], n_models: int | None = None) -> float:
    """The GPU share of each fold worker on a cluster with resources `cluster` (ray.cluster_resources()).

    cv.gpus_per_fold unset: a whole GPU per worker when there are enough, else a share (share_of_gpu) so the folds
    share them and run at once (on one H100 that pays the minute of fold start-up once, not per fold:
    docs/results.md), 0 without GPUs; a fold has cv.workers_per_fold workers. n_models: the models trained at once,
    when not cv.folds (a student run: 1). Raises ConfigError when a fold could never be placed (it would wait forever); folds that fit
    only one after another queue."""
    gpus, workers = cv.gpus_per_fold, cv.workers_per_fold
    have_gpu, have_cpu = cluster.get("GPU", 0), cluster.get("CPU", 0)
    if gpus is None:
        gpus = share_of_gpu((n_models or cv.folds) * workers, int(have_gpu))
    alone = {  # one worker: the messages of before cv.workers_per_fold
        "CPUs": f"cv.cpus_per_fold={cv.cpus_per_fold} does not fit this Ray cluster's {have_cpu:g} CPUs",
        "GPUs": f"cv.gpus_per_fold={gpus} but this Ray cluster has {have_gpu:g} GPUs",
    }
    for what, each, have in (("CPUs", cv.cpus_per_fold, have_cpu), ("GPUs", gpus, have_gpu)):
        if workers * each > have + 1e-9:
            raise ConfigError(
                alone[what]
                if workers == 1
                else f"a fold's {workers} workers (cv.workers_per_fold) need {workers * each:g} {what} ({each:g} "
                f"each: cv.{what[:3].lower()}s_per_fold) but this Ray cluster has {have:g} {what}"
            )
    return gpus


# --- before Ray: the input and the run's place ---------------------------------------------------------------------


def check_input(cfg: RunConfig, tokenize_now: bool = True) -> Prepared:
    """The run's input, checked and tokenized, before anything is written: the model (its config only), the data,
    the folds, the tokenizer against the model, and what the linear model needs when the run fits it. Raises
    ConfigError or DataError naming the file, field or flag. tokenize_now=False: every check, but `tokens` is left
    None for tokenize_input (run_cv tokenizes while Ray starts)."""
    from reuters_ray.data.features import class_weights, stratified_folds
    from reuters_ray.data.overlap import overlap_notes
    from reuters_ray.data.preprocess import prepare
    from reuters_ray.fold.models import check_fits, check_model, head_note, load_tokenizer
    from reuters_ray.scoring.baseline import check_fittable

    dc = cfg.data
    check_model(cfg.model.name)
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
    weights = class_weights(ds.train_labels, ds.num_classes)
    notes = [n for n in [head_note(cfg.model.name, ds.label_names)] if n] + overlap_notes(ds, folds)
    prep = Prepared(ds, tokenizer, None, folds, weights, ds.fingerprint(), notes)
    return tokenize_input(prep, dc.max_length) if tokenize_now else prep


def tokenize_input(prep: Prepared, max_length: int) -> Prepared:
    """`prep` with its tokens: the training texts, then the test texts (features.tokenize). Nothing here refuses
    input: check_input has checked it all."""
    from reuters_ray.data.features import tokenize

    prep.tokens = tokenize(prep.ds.train_texts + prep.ds.test_texts, prep.tokenizer, max_length)
    return prep


def open_run(cfg: RunConfig, prep: Prepared) -> tuple[RunPlace, bool]:
    """(the run's place, whether it is resumed): the storage path checked (a URI pyarrow takes, an endpoint that
    answers, a folder this process can write), an existing run of the same name checked to be this config and this
    data, then config.yaml, data_fingerprint.json and fold_assignment.json written. Raises ConfigError before
    anything is written."""
    try:
        fs, base, base_uri = storage_location(cfg.cv.storage_path)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError: a URI it does not take
        raise ConfigError(f"cv.storage_path {cfg.cv.storage_path!r}: {e}") from None
    if why := unreachable_endpoint(cfg.cv.storage_path):
        raise ConfigError(f"cv.storage_path {cfg.cv.storage_path!r}: {why}")
    name = run_name(cfg, prep.fingerprint["sha256"])
    place = RunPlace(name, fs, f"{base}/{name}", uri_join(base_uri, name))
    resuming = check_resumable(fs, place.path, cfg, name, prep.fingerprint)
    check_writable(fs, place.path, cfg.cv.storage_path)
    write_atomic(place.at("config.yaml"), yaml.safe_dump(cfg.to_dict(), sort_keys=True), fs)
    write_atomic(place.at(DATA_FILE), json.dumps(prep.fingerprint), fs)
    write_atomic(place.at("fold_assignment.json"), json.dumps(prep.assignment()), fs)
    return place, resuming


def announce(console: Console, place: RunPlace, prep: Prepared, cfg: RunConfig) -> None:
    """The run's first lines: where it lives, what loading and preprocessing did, the data's size."""
    announce_run(console, place, prep)
    announce_data(console, prep, cfg)


def announce_run(console: Console, place: RunPlace, prep: Prepared) -> None:
    """Where the run lives and what loading, preprocessing and the model's checks found: all known before Ray."""
    console.info(f"run {place.name}: {place.uri}", run=place.name, uri=place.uri)
    for line in prep.ds.notes() + prep.notes:
        console.info(line)


def announce_data(console: Console, prep: Prepared, cfg: RunConfig) -> None:
    """The data's size and its tokens (once tokenized)."""
    ds, tokens = prep.ds, prep.tokens
    labelled = getattr(prep, "n_labelled", prep.n_train)  # a student's transfer texts come after its training texts
    train = f"{labelled} train" + (f" + {prep.n_train - labelled} transfer" if labelled < prep.n_train else "")
    console.info(
        f"data: {train} / {len(ds.test_texts)} test texts, {_classes(ds, labelled)}, "
        f"{'a student' if cfg.student else f'{cfg.cv.folds} folds'}, tokens {tokens.ids.shape} {tokens.ids.dtype} ({tokens.ids.nbytes / 2**20:.1f} MiB)",
        train=prep.n_train,
        test=len(ds.test_texts),
        classes=ds.num_classes,
        folds=cfg.cv.folds,
    )


def _classes(ds, labelled: int) -> str:
    """ "18 classes", or for multi-label data "90 topics (multi-label, 1.24 per text)" (of the first `labelled`
    training rows: a student's transfer texts have none)."""
    if not ds.multi_label:
        return f"{ds.num_classes} classes"
    per_text = ds.train_labels[:labelled].sum(axis=1).mean()
    return f"{ds.num_classes} topics (multi-label, {per_text:.2f} per training text)"


def fold_names(cfg: RunConfig) -> list[str]:
    """The Ray Train runs of a run, in fold order: fold_0 .. fold_<k-1>, or a student run's one `student`. Each is
    a folder of the run and, after it, the name the dashboard's Train runs list shows (<run>/<name>)."""
    return ["student"] if cfg.student else [f"fold_{k}" for k in range(cfg.cv.folds)]


def finished_folds(place: RunPlace, names: list[str]) -> dict[int, str]:
    """{fold: its last checkpoint's folder} of the folds (fold_names) a previous run of this one finished
    (fold_result.json)."""
    done = {}
    for k, name in enumerate(names):
        if (text := read_text(place.fs, place.at(name, FOLD_RESULT))) is not None:
            done[k] = json.loads(text)["checkpoint"]
    return done


def mark_finished(place: RunPlace, name: str, folder: str) -> None:
    write_atomic(place.at(name, FOLD_RESULT), json.dumps({"checkpoint": folder}), place.fs)


# --- after the folds ---------------------------------------------------------------------------------------------


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
    from reuters_ray.config import monitor_key

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


def fold_of_rows(folds: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """For each of the n training rows, the fold whose validation split holds it."""
    fold = np.full(n, -1, dtype=np.int64)
    for k, (_, val_idx) in enumerate(folds):
        fold[val_idx] = k
    return fold


def out_of_fold_logits(fs: pafs.FileSystem, best_paths: list[str], folds, n: int) -> np.ndarray:
    """The training split's out-of-fold logits: each row scored by the best model of the fold that validated on it
    (best/val_logits.safetensors in storage). Raises RuntimeError when a fold's file is missing or does not fit."""
    from reuters_ray.fold.checkpoint import VAL_LOGITS_FILE, read_val_logits

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


def out_of_fold_metrics(y, oof_logits, label_names, fold_table, decision=None) -> dict[str, Any]:
    """Accuracy, weighted and macro F1 of the out-of-fold predictions, beside the folds' mean validation figures at
    their best epochs ("folds_mean"). Multi-label (`decision`: the ensemble's thresholds): subset accuracy
    ("subset_accuracy") for accuracy, and also micro-F1, samples-F1 and Hamming loss."""
    m = evaluate(y, oof_logits if decision is None else probabilities(oof_logits, True), label_names, decision)
    accuracy = "accuracy" if decision is None else "subset_accuracy"
    keys = {accuracy: f"val_{accuracy}", "f1_weighted": "val_f1_weighted", "f1_macro": "val_f1_macro"}
    extra = {k: m[k] for k in ("f1_micro", "f1_samples", "hamming_loss") if decision is not None}
    return {
        **{k: m[k] for k in keys},
        **extra,
        "n": int(len(y)),
        "folds_mean": {k: float(np.mean([r[v] for r in fold_table])) for k, v in keys.items()},
    }


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """[N, K] probabilities of logits: softmax over classes, or for multi-label data each topic's sigmoid."""
    from reuters_ray.scoring.metrics import softmax
    from reuters_ray.scoring.multilabel import sigmoid

    return sigmoid(logits) if multi_label else softmax(logits)


def choose_decision(cv, y: np.ndarray, oof_probs: np.ndarray) -> dict[str, Any]:
    """Multi-label: the thresholds of a predictor chosen on its out-of-fold probabilities (multilabel.choose_thresholds
    with cv.threshold_min_positives and cv.at_least_one)."""
    from reuters_ray.scoring.multilabel import choose_thresholds

    return choose_thresholds(y, oof_probs, cv.threshold_min_positives, cv.at_least_one)


def evaluate(y, scores, label_names, decision=None) -> dict[str, Any]:
    """metrics.evaluate_scores of [N, K] scores, or for multi-label data (`decision` given) multilabel's
    evaluate_multilabel of [N, K] probabilities at the decision's thresholds."""
    from reuters_ray.scoring.metrics import evaluate_scores
    from reuters_ray.scoring.multilabel import evaluate_multilabel

    if decision is None:
        return evaluate_scores(y, scores, label_names)
    return evaluate_multilabel(y, scores, label_names, np.asarray(decision["thresholds"]), decision["at_least_one"])


def score_ensemble(ds, fold_logits: np.ndarray, table: list[dict[str, Any]], cv=None, oof_logits=None) -> dict:
    """The ensemble's test metrics from the fold models' test logits [folds, N, K] (their mean votes); each fold's own
    test F1 goes into its row of the fold table. Multi-label data: the ensemble's thresholds are chosen on its
    out-of-fold probabilities (`oof_logits`, cv's settings) and kept as "decision"; each fold's test micro-F1 too."""
    decision = None
    if ds.multi_label:
        decision = choose_decision(cv, ds.train_labels, probabilities(oof_logits, True))
    for row, logits in zip(table, fold_logits):
        m = evaluate(ds.test_labels, probabilities(logits, ds.multi_label), ds.label_names, decision)
        row["test_f1_weighted"] = m["f1_weighted"]
        if decision is not None:
            row["test_f1_micro"] = m["f1_micro"]
    probs = probabilities(fold_logits.mean(axis=0), ds.multi_label)
    m = evaluate(ds.test_labels, probs, ds.label_names, decision)
    return m if decision is None else {**m, "decision": decision}


def fit_linear(ds, folds) -> tuple[Any, np.ndarray, float]:
    """The linear model fitted on each fold's training rows and on the whole training split (baseline.fit_cv),
    and its seconds. CPU work on the driver: run_cv runs it in a thread while the folds train. Raises DataError
    when it cannot be fitted, saying that the folds are kept."""
    from reuters_ray.scoring.baseline import fit_cv

    t = time.perf_counter()
    try:
        linear, oof_scores = fit_cv(ds.train_texts, ds.train_labels, folds, ds.num_classes)
    except ValueError as e:  # checked before the folds (baseline.check_fittable); should anything else fail:
        raise DataError(
            f"the linear model could not be fitted ({str(e).splitlines()[0]}); the folds are kept: rerun the same "
            f"command with --cv.blend false --cv.baseline false to finish the run without it"
        ) from None
    return linear, oof_scores, time.perf_counter() - t


def blend_phase(cfg: RunConfig, ds, fitted, oof_logits, ensemble, ensemble_probs, console: Console) -> Scored:
    """The run's test figures. With the linear model (`fitted`: fit_linear's result, or None when neither the blend
    nor the baseline is asked for), the baseline's test figures (cv.baseline) and, with cv.blend, the blend of its
    probabilities with the ensemble's by the weight the out-of-fold predictions chose."""
    from reuters_ray.scoring.baseline import NAME, baseline_metrics
    from reuters_ray.scoring.blend import blend_of_fitted, blend_probabilities
    from reuters_ray.scoring.metrics import evaluate_scores

    if fitted is None:
        return Scored(dict(ensemble), ensemble_probs)
    linear, oof_scores, fit_s = fitted
    blend = blend_of_fitted(ds, linear, oof_scores, oof_logits)
    scores = linear.scores(ds.test_texts)
    scored = Scored(dict(ensemble), ensemble_probs, linear if cfg.cv.blend else None, fit_s)
    if cfg.cv.blend:
        scored.probs = blend_probabilities(ensemble_probs, linear.proba_of_scores(scores), blend["weight"])
        if ds.multi_label:
            oof_blend = blend_probabilities(
                probabilities(oof_logits, True), linear.proba_of_scores(oof_scores), blend["weight"]
            )
            decision = choose_decision(cfg.cv, ds.train_labels, oof_blend)
            test = evaluate(ds.test_labels, scored.probs, ds.label_names, decision)
            scored.metrics = {**test, "blend": blend, "decision": decision}
        else:
            scored.metrics = {**evaluate_scores(ds.test_labels, scored.probs, ds.label_names), "blend": blend}
        oof, key = blend["out_of_fold"], "f1_micro" if ds.multi_label else "f1_weighted"
        what = "micro-F1" if ds.multi_label else "weighted F1"
        console.info(
            f"blend: weight {blend['weight']:.2f} on the ensemble, {1 - blend['weight']:.2f} on the linear model, "
            f"chosen out of fold ({what} {oof['blend'][key]:.4f} against the ensemble's "
            f"{oof['ensemble'][key]:.4f} and the linear model's {oof['linear'][key]:.4f})",
            blend_weight=blend["weight"],
        )
    if cfg.cv.baseline:
        b = scored.metrics["baseline"] = baseline_metrics(ds, scores)
        if ds.multi_label:
            console.info(
                f"baseline ({b['name']}): micro-F1 {b['f1_micro']:.4f}, macro-F1 {b['f1_macro']:.4f}",
                baseline_f1_micro=b["f1_micro"],
            )
        else:
            console.info(
                f"baseline ({NAME}): weighted F1 {b['f1_weighted']:.4f}", baseline_f1_weighted=b["f1_weighted"]
            )
    return scored


def run_metrics(cfg, place, prep, folds: Folds, ensemble, scored: Scored, oof_logits, timing, cluster) -> dict:
    """metrics.json: the predictor's test figures at the top, the ensemble's, the baseline's and the blend's beside
    them, the out-of-fold figures, the fold table, the timing and the cluster."""
    ds = prep.ds
    if scored.linear_s is not None:
        timing.laps["baseline_s"] = scored.linear_s  # the linear model's fits, in a thread during the folds
    return {
        **scored.metrics,
        "ensemble": ensemble,
        "out_of_fold": out_of_fold_metrics(
            ds.train_labels, oof_logits, ds.label_names, folds.table, ensemble.get("decision")
        ),
        "task": cfg.data.task,
        "predictor": "blend" if cfg.cv.blend else "ensemble",  # what the top-level figures are of
        **unseen_record(ds, scored.probs, scored.metrics.get("decision")),
        **run_record(cfg, place, prep, folds, timing, cluster),
    }


# what the result line calls metrics.json's "test_unseen" figures
UNSEEN_NAMES = {
    "accuracy": "accuracy",
    "f1_weighted": "weighted F1",
    "f1_macro": "macro F1",
    "f1_micro": "micro-F1",
    "f1_samples": "samples-F1",
}


def unseen_record(ds, probs: np.ndarray, decision: dict | None) -> dict[str, Any]:
    """metrics.json's "test_unseen": the predictor's figures (probs [n_test, K]; decision: a multi-label predictor's
    thresholds) on the test texts that are not training texts (data.overlap.on_unseen), when some are."""
    from reuters_ray.data.overlap import on_unseen

    u = on_unseen(ds, lambda rows: evaluate(ds.test_labels[rows], probs[rows], ds.label_names, decision))
    return {"test_unseen": u} if u else {}


def unseen_line(m: dict[str, Any]) -> str:
    """The result line's part for metrics.json's "test_unseen" (empty without it)."""
    u = m.get("test_unseen")
    if not u:
        return ""
    from reuters_ray.data.overlap import UNSEEN_KEYS

    multi = m.get("task") == "multi"
    names = {**UNSEEN_NAMES, "f1_macro": "macro-F1"} if multi else UNSEEN_NAMES  # the multi-label lines' spelling
    figures = ", ".join(f"{names[k]} {u[k]:.4f}" for k in UNSEEN_KEYS[multi])
    return f"; on the {u['n']} test texts that are not training texts: {figures}"


def run_record(cfg, place, prep, folds: Folds, timing, cluster) -> dict[str, Any]:
    """metrics.json's keys about the run itself, a cross-validation's or a student's: its name, labels, max_length,
    fold table, wall time and its phases, class weights and cluster."""
    return {
        "run": place.name,
        "label_names": prep.ds.label_names,
        "max_length": cfg.data.max_length,
        "folds": folds.table,
        "wall_s": timing.total(),
        "timing": dict(timing.laps),
        "class_weights": prep.weights.tolist(),
        "cluster": cluster,
        **_fold_copies(prep),
    }


def _fold_copies(prep) -> dict[str, Any]:
    """metrics.json's "fold_copies" when a fold's (a student's held-out slice's) validation rows hold texts of its
    own training rows (data.overlap.fold_leaks): how many per fold, of how many, and their ids."""
    from reuters_ray.data.overlap import fold_leaks

    leaks = fold_leaks(prep.ds.train_texts, prep.folds)
    if not any(len(rows) for rows in leaks):
        return {}
    ids = prep.ds.train_ids
    return {
        "fold_copies": [
            {"fold": k, "validation_rows": len(val), "also_training_texts": len(rows), "ids": [ids[i] for i in rows]}
            for k, (rows, (_, val)) in enumerate(zip(leaks, prep.folds))
        ]
    }


def write_outputs(place: RunPlace, cfg: RunConfig, prep: Prepared, folds: Folds, metrics, scored: Scored, oof_logits):
    """The run folder's outputs, written locally and then copied into storage: models/fold_<k>/ (each fold's best
    model with the tokenizer), the data files (reuters_ray.outputs), linear/ for a blended run, and the report."""
    from reuters_ray.run.outputs import Predictions, write_run_outputs
    from reuters_ray.run.report import write_report

    ds = prep.ds
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for k, path in enumerate(folds.best_paths):
            dst = out / "models" / f"fold_{k}"
            dst.mkdir(parents=True)
            copy_dir(path, str(dst), place.fs, LOCAL)
            prep.tokenizer.save_pretrained(str(dst))
        write_run_outputs(
            out,
            metrics,
            history=folds.history,
            test=Predictions(ds.test_ids, ds.test_labels, scored.probs, decision=metrics.get("decision")),
            oof=Predictions(
                ds.train_ids,
                ds.train_labels,
                probabilities(oof_logits, ds.multi_label),
                fold=prep.fold_of_row(),
                decision=metrics.get("ensemble", {}).get("decision"),
            ),  # fmt: skip
            config=cfg.to_dict(),
            provenance={**ds.provenance, "fingerprint": prep.fingerprint},
        )
        if scored.linear is not None:
            scored.linear.save(out / "linear")
        write_report(out)
        publish_outputs(out, place.fs, place.path)


def publish_outputs(local: Path, fs: pafs.FileSystem, run_path: str) -> None:
    """Copies a locally written run folder into storage, report.md last."""
    for item in sorted(local.iterdir(), key=lambda p: OUTPUT_ORDER.get(p.name, 0)):
        dst = f"{run_path}/{item.name}"
        if item.is_dir():
            copy_dir(str(item), dst, LOCAL, fs)
        else:
            write_atomic(dst, item.read_bytes(), fs)


def predictor_line(m: dict[str, Any]) -> str:
    """What the run's test figures are of, with the others' weighted F1 (multi-label: micro-F1) for comparison."""
    blend = m.get("predictor") == "blend"
    key, name = ("f1_micro", "micro-F1") if m.get("task") == "multi" else ("f1_weighted", "weighted F1")
    if m.get("predictor") == "student":
        t = m["teacher"]
        others = [f"teacher ({t['predictor']}) {t[key]:.4f}", f"its ensemble {m['ensemble'][key]:.4f}"]
        others += [f"baseline {m['baseline'][key]:.4f}"] if "baseline" in m else []
        return f"student of run {t['run']}; {name} of the {', '.join(others)}"
    others = [f"ensemble {m['ensemble'][key]:.4f}"] if blend else []
    others += [f"baseline {m['baseline'][key]:.4f}"] if "baseline" in m else []
    what = f"blend, weight {m['blend']['weight']:.2f} on the ensemble" if blend else "ensemble"
    return what + (f"; {name} of the {' and the '.join(others)}" if others else "")
