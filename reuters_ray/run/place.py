"""The run's place in storage: its name (derived from everything that changes the result), whether an existing run
there is this one to resume (RESUME_FREE_KEYS may differ), a write test, and which of its folds finished.

Storage: <cv.storage_path>/<run name>/ holds config.yaml and data_fingerprint.json from the start, fold_<k>/ (Ray
Train's run of fold k: its checkpoints, its JSON checkpoint snapshot, and fold_result.json once the fold finished),
and at the end the run's outputs (reuters_ray.run.outputs, reuters_ray.run.report) and models/fold_<k>/. Nothing
read back from storage is unpickled: JSON and safetensors only. No Ray here.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs
import yaml

from reuters_ray.config import RunConfig
from reuters_ray.errors import ConfigError
from reuters_ray.storage import (
    read_text,
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
    ),
    "train": ("eval_batch_size", "compile", "keep_checkpoints", "checkpoint_every", "checkpoint_every_s"),
    "track": ("mlflow", "uri", "experiment", "register", "log_model"),  # where the run is logged, not what it is
}


DATA_FILE = "data_fingerprint.json"  # in the run folder from its start: the data's identity (TextDataset.fingerprint)


FOLD_RESULT = "fold_result.json"  # in fold_<k>/ once the fold finished: {"checkpoint": its last checkpoint's folder}


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
    "track": {},  # every key free to differ (RESUME_FREE_KEYS): the section left out whole
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
    kept = read_text(fs, f"{run_path}/{DATA_FILE}")  # absent in runs made before it existed: those resume as before
    kept_data = json.loads(kept) if kept is not None else None
    diff = [f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k) != new[s][k]]
    other_data = data is not None and kept_data is not None and kept_data["sha256"] != data["sha256"]
    if old != new and not (other_data and set(diff) <= {"data.path", "data.test_path"}):  # else: other data, below
        raise ConfigError(
            f"run {name!r} in {cfg.cv.storage_path} was made with another config (differs in {', '.join(diff)}); "
            f"use the same config to resume it, or another cv.name"
        )
    if other_data:  # the same file changed, or another file (a TextClassifier's other DataFrame) in its place

        def said(d: dict[str, Any]) -> str:
            return f"{d['train']} train / {d['test']} test texts, {d['classes']} classes, sha256 {d['sha256'][:12]}"

        raise ConfigError(
            f"run {name!r} in {cfg.cv.storage_path} was made with other data ({said(kept_data)}; now "
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


# Ray Train's list of a fold's registered checkpoints, in the fold's folder; Ray writes it in place (no temporary name)
SNAPSHOT = "checkpoint_manager_snapshot.json"


def recover_from_damaged_snapshot(place: RunPlace, name: str) -> str | None:
    """When fold folder `name`'s Ray Train snapshot is there but unreadable (empty, or not JSON: the run was stopped
    while Ray wrote it, and Ray Train would then fail the fold on every rerun), sets it aside as <snapshot>.damaged
    and returns the path of the fold's newest checkpoint folder, from which (or from an older one, whichever loads
    first) the fold continues; when that checkpoint is a finished fold's, marks the fold finished (mark_finished)
    and returns None, as when the snapshot reads, is absent, or no checkpoint folder is there."""
    path = place.at(name, SNAPSHOT)
    text = read_text(place.fs, path)
    if text is None:
        return None
    try:
        json.loads(text)
        return None
    except ValueError:
        pass
    place.fs.move(path, f"{path}.damaged")
    folders = sorted(
        i.path
        for i in place.fs.get_file_info(pafs.FileSelector(place.at(name), allow_not_found=True))
        if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
    )
    if not folders:
        return None
    progress = read_text(place.fs, f"{folders[-1]}/progress.json")
    try:
        finished = progress is not None and json.loads(progress).get("finished") is True
    except ValueError:
        finished = False  # a damaged checkpoint: the fold's loader skips it for an older one
    if finished:
        mark_finished(place, name, folders[-1].rstrip("/").rsplit("/", 1)[-1])
        return None
    return folders[-1]


def mark_finished(place: RunPlace, name: str, folder: str) -> None:
    write_atomic(place.at(name, FOLD_RESULT), json.dumps({"checkpoint": folder}), place.fs)
