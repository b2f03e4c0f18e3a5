"""A run's input, checked before anything is written (check_input: the model, the data, the folds, what the linear
model needs), tokenized (tokenize_input), its folder opened (open_run) and its first lines said (announce). No Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from reuters_ray.config import RunConfig
from reuters_ray.console import Console
from reuters_ray.data.features import class_weights, stratified_folds, tokenize
from reuters_ray.data.overlap import overlap_notes
from reuters_ray.data.preprocess import prepare
from reuters_ray.errors import ConfigError, DataError
from reuters_ray.fold.models import check_fits, check_model, head_note, load_tokenizer
from reuters_ray.run.place import DATA_FILE, RunPlace, Stopwatch, check_resumable, check_writable, run_name
from reuters_ray.scoring.baseline import check_fittable
from reuters_ray.storage import (
    storage_location,
    unreachable_endpoint,
    uri_join,
    write_atomic,
)


@dataclass
class Run:
    """One run as it travels a recipe (cv, a student, a search's trial), instead of loose pieces: its config, its
    place in storage, its checked input (Prepared, or a student's StudentPrepared), its console, whether it resumes
    an earlier run of the same name, its stopwatch, and each fold worker's GPU share once connected
    (recipes.cluster.connect)."""

    cfg: RunConfig
    place: RunPlace
    prep: Any  # Prepared | StudentPrepared
    console: Console
    resuming: bool
    timing: Stopwatch
    gpu_share: float = 0.0
    cpu_share: float = 1.0  # CPUs of each fold worker (recipes.cluster.connect: share_of_cpus)


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


def check_input(cfg: RunConfig, tokenize_now: bool = True) -> Prepared:
    """The run's input, checked and tokenized, before anything is written: the model (its config only), the data,
    the folds, the tokenizer against the model, and what the linear model needs when the run fits it. Raises
    ConfigError or DataError naming the file, field or flag. tokenize_now=False: every check, but `tokens` is left
    None for tokenize_input (run_cv tokenizes while Ray starts)."""

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


def fold_of_rows(folds: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """For each of the n training rows, the fold whose validation split holds it."""
    fold = np.full(n, -1, dtype=np.int64)
    for k, (_, val_idx) in enumerate(folds):
        fold[val_idx] = k
    return fold
