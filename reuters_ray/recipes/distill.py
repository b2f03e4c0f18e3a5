"""A student distilled from a finished run's predictor: one model, trained by the fold loop on the true labels and on
the teacher's soft targets, in a run folder of its own that `predict`, `export` and `serve` take like any run. No Ray
here: reuters_ray.recipes.distill.run_distill calls these in order and trains the student as one Ray Train run.

    student_config   the teacher's config.yaml with the user's settings over it, distill.teacher set
    check_student    the teacher finished and distillable, the data the teacher's, the student model, the soft
                     targets and the held-out slice: all checked before anything is written
    teacher_targets  the teacher predictor's out-of-fold probabilities of every training text
    student_metrics  metrics.json of a student run: the student's test figures beside the teacher's
    write_student_outputs  the run folder: models/student, soft_targets.parquet, the data files, the report

Soft targets without leakage: a training text's target is the teacher's out-of-fold probability, from the fold model
that never trained on it (oof_predictions.parquet) blended, as the teacher's predictor is, with the linear model's
out-of-fold probability. The linear model's out-of-fold scores are not kept in a run folder: they are fitted again
on the teacher's folds (seconds; liblinear is seeded) and checked against the out-of-fold log loss the teacher
recorded, so a target that is not the teacher's is refused. The student's early stopping (and a multi-label
student's thresholds) use a held-out slice of the training split (distill.val_share), never the test split.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reuters_ray import stopping
from reuters_ray.config import RunConfig, from_dict, load_yaml
from reuters_ray.console import Console, duration
from reuters_ray.data import load_dataset
from reuters_ray.data.features import class_weights, tokenize
from reuters_ray.data.overlap import folds_note, shared_test_note
from reuters_ray.data.preprocess import clean_text, count_words, multilabel_sample, prepare, stratified_sample
from reuters_ray.data.reuters21578 import all_wires
from reuters_ray.errors import ConfigError, DataError
from reuters_ray.fold.card import CARD, student_card
from reuters_ray.fold.checkpoint import VAL_LOGITS_FILE, read_val_logits
from reuters_ray.fold.models import check_fits, check_layers, check_model, head_note, load_tokenizer
from reuters_ray.predictor.ensemble import Ensemble
from reuters_ray.recipes.cluster import (
    FoldScorer,
    cluster_record,
    connect,
    disconnect_early,
    fit_folds,
    put_train_split,
    ray_session,
)
from reuters_ray.run.folds import collect_folds
from reuters_ray.run.inputs import (
    Prepared,
    Run,
    announce,
    open_run,
)
from reuters_ray.run.outputs import Predictions, publish_outputs, run_record, say_done, write_run_outputs
from reuters_ray.run.place import Stopwatch, fold_names
from reuters_ray.run.report import write_report
from reuters_ray.scoring.baseline import LinearModel, out_of_fold_scores
from reuters_ray.scoring.blend import blend_probabilities
from reuters_ray.scoring.evaluate import choose_decision, evaluate, probabilities, unseen_record
from reuters_ray.scoring.metrics import log_loss
from reuters_ray.scoring.multilabel import binary_log_loss
from reuters_ray.storage import LOCAL, copy_dir, finished_run, read_bytes, write_atomic
from reuters_ray.track.mlflow_run import (
    ARTIFACTS,
    PREDICTOR_TAG,
    TRACKING_FILE,
    Tracker,
    check_tracking,
    model_logger,
    run_figures,
    tracked,
)

SOFT_TARGETS = "soft_targets.parquet"  # in a student run: each training text's teacher probabilities, and its role
STUDENT = "student"  # the student's Ray Train run (<run>/student) and its model (models/student)


# --- the config ----------------------------------------------------------------------------------------------------


def student_config(
    teacher: str, overrides: list[dict[str, Any]], student: str | None, layers: int | None, name: str | None
) -> RunConfig:
    """The student run's config: the teacher's config.yaml, then each mapping of `overrides` in turn (a --config
    file, the --section.key flags), then the student model (`student`, default the teacher's model.name; `layers`,
    model.layers), the run name (`name`, cv.name) and distill.teacher. cv.storage_path, unless overridden: the folder
    that holds the teacher. Raises DataError for a teacher that is not a finished run, ConfigError for a bad key."""

    local = finished_run(teacher)
    values = _yaml(local / "config.yaml")
    values.pop("distill", None)  # a student's own settings never come from its teacher (a student of a student)
    values.setdefault("cv", {})["name"] = None
    values["cv"]["storage_path"] = _parent(teacher)
    for mapping in overrides:
        for section, keys in mapping.items():
            if isinstance(keys, dict) and isinstance(values.get(section), dict):
                values[section].update(keys)
            else:
                values[section] = keys
    if student is not None:  # a local folder made absolute: the student's Ray worker runs in a folder of Ray's
        values.setdefault("model", {})["name"] = str(Path(student).resolve()) if Path(student).is_dir() else student
        values["model"]["layers"] = None  # the teacher's own cut does not apply to another model
    if layers is not None:
        values.setdefault("model", {})["layers"] = layers
    if name is not None:
        values["cv"]["name"] = name
    values.setdefault("distill", {})["teacher"] = teacher if "://" in teacher else str(Path(teacher).resolve())
    return from_dict(RunConfig, values)


def _parent(teacher: str) -> str:
    """The folder that holds run `teacher` (a local folder, or a URI: its query, such as an endpoint, kept)."""
    if "://" not in teacher:
        return str(Path(teacher).resolve().parent)
    location, sep, query = teacher.partition("?")
    return location.rstrip("/").rsplit("/", 1)[0] + sep + query


def _yaml(path: Path) -> dict[str, Any]:

    return load_yaml(path, what="teacher config")


# --- the input -----------------------------------------------------------------------------------------------------


@dataclass
class StudentPrepared(Prepared):
    """Prepared (one "fold": the student's training rows and its held-out slice) with the teacher: its local folder,
    its metrics.json, and the soft targets of every training row [n_train, K] float32."""

    teacher_dir: Path | None = None
    teacher_metrics: dict[str, Any] | None = None
    soft_targets: np.ndarray | None = None
    # The rows of ds's training split that are its labelled texts (the first n_labelled); the rest are transfer texts
    # (distill.transfer), whose soft targets score_transfer fills in.
    n_labelled: int = 0

    def assignment(self) -> dict[str, Any]:
        """fold_assignment.json of a student run: each training text's role, "train", "validation" or "transfer"."""
        return dict(zip(self.ds.train_ids, self.roles()))

    def roles(self) -> list[str]:
        role = np.full(self.n_train, "train", dtype=object)
        role[self.folds[0][1]] = "validation"
        role[self.n_labelled :] = "transfer"
        return role.tolist()

    @property
    def labelled(self) -> np.ndarray:
        """bool [n_train]: which training rows have true labels (the transfer texts have none)."""
        return np.arange(self.n_train) < self.n_labelled


def check_student(cfg: RunConfig) -> StudentPrepared:
    """The student run's input, checked before anything is written: the teacher a finished run with out-of-fold
    predictions, the student model, the data the teacher's (same texts, labels and split: its fingerprint), the soft
    targets rebuilt and matching the teacher's record, the held-out slice. Raises ConfigError or DataError naming the
    run, file or flag."""

    teacher = cfg.distill.teacher
    local = finished_run(teacher)
    metrics = json.loads((local / "metrics.json").read_text())
    if metrics.get("predictor") == "student":
        raise DataError(f"{teacher}: a student run; distil a cross-validated run (its out-of-fold predictions)")
    if not (local / "oof_predictions.parquet").is_file():
        raise DataError(
            f"{teacher}: no oof_predictions.parquet (the run was made before runs kept their out-of-fold "
            "predictions): the soft targets are those; train the teacher again with this version"
        )
    try:
        check_model(cfg.model.name)
        check_layers(cfg.model.name, cfg.model.layers)
    except ConfigError as e:
        raise ConfigError(f"student: {e}") from None
    ds = prepare(cfg.data)
    _check_same_data(teacher, local, ds)
    tokenizer = load_tokenizer(cfg.data.tokenizer or cfg.model.name)
    check_fits(cfg.model.name, cfg.data.max_length, tokenizer, cfg.data.tokenizer)
    soft = teacher_targets(local, metrics, ds)
    train_idx, val_idx = held_out_split(ds.train_labels, cfg.distill.val_share, cfg.train.seed)
    weights = class_weights(ds.train_labels, ds.num_classes)
    n = len(ds.train_texts)
    if cfg.distill.transfer == "unlabeled":  # after the labelled rows; their targets come once the run is open
        ids, texts = transfer_texts(cfg, ds)
        blank = np.zeros((len(ids), *ds.train_labels.shape[1:]), dtype=ds.train_labels.dtype)  # never read: masked
        ds = ds.with_step(
            "transfer_texts",
            {"transfer": "unlabeled", "texts": len(ids), "sample": cfg.distill.transfer_sample},
            {"train": 0, "test": 0},
            train_texts=ds.train_texts + texts,
            train_labels=np.concatenate([ds.train_labels, blank]),
            train_ids=ds.train_ids + ids,
        )
        soft = np.vstack([soft, np.full((len(ids), ds.num_classes), np.nan, dtype=np.float32)])
        train_idx = np.concatenate([train_idx, np.arange(n, n + len(ids))])
    tokens = tokenize(ds.train_texts + ds.test_texts, tokenizer, cfg.data.max_length)
    # its training texts: the labelled ones and any transfer texts
    notes = [head_note(cfg.model.name, ds.label_names, "student"), shared_test_note(ds, "the student run")]
    notes.append(folds_note(ds, [(train_idx, val_idx)], "held-out slice"))
    return StudentPrepared(
        ds,
        tokenizer,
        tokens,
        [(train_idx, val_idx)],
        weights,
        ds.fingerprint(),
        notes=[n for n in notes if n],
        teacher_dir=local,
        teacher_metrics=metrics,
        soft_targets=soft,
        n_labelled=n,
    )


def transfer_texts(cfg: RunConfig, ds) -> tuple[list[str], list[str]]:
    """(ids, cleaned texts) of distill.transfer "unlabeled": the Reuters-21578 wires that neither `ds`'s training
    split nor the source's whole test split holds (before any sample), cleaned as training texts are, with at least
    data.min_tokens words, none equal to a test text or to an earlier one; at most distill.transfer_sample of them,
    drawn at random (seeded by data.split_seed). Raises ConfigError for another source, DataError when none is left."""

    if cfg.data.source != "reuters21578":
        raise ConfigError(
            f"distill.transfer unlabeled: the texts a run left out are known for data.source reuters21578 only, not "
            f"{cfg.data.source}; use --distill.transfer none"
        )
    raw = load_dataset(cfg.data)  # the whole split, before filters and samples: none of its test wires is used
    taken = set(raw.test_ids) | set(ds.train_ids) | set(ds.test_ids)
    seen = {clean_text(t) for t in raw.test_texts} | set(ds.test_texts) | set(ds.train_texts)
    ids, texts = [], []
    for newid, text in all_wires(cfg.data.resolved_path(), cfg.data.cache_dir):
        cleaned = clean_text(text)
        if newid in taken or cleaned in seen or count_words(cleaned) < cfg.data.min_tokens:
            continue
        seen.add(cleaned)
        ids.append(newid)
        texts.append(cleaned)
    if not ids:
        raise DataError("distill.transfer unlabeled: the data leaves no wire out to transfer")
    n = cfg.distill.transfer_sample
    if n is not None and n < len(ids):
        keep = np.sort(np.random.default_rng(cfg.data.split_seed).choice(len(ids), n, replace=False))
        ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
    return ids, texts


def score_transfer(prep: StudentPrepared) -> float:
    """Fills in the transfer texts' soft targets: the teacher's whole predictor (its fold models and, for a blended
    teacher, its linear model) on this process's CPU or GPU. Returns the seconds it took (0 without transfer texts)."""

    if prep.n_labelled == prep.n_train:
        return 0.0
    t = time.perf_counter()
    teacher = Ensemble.from_run(prep.teacher_dir)
    probs = teacher.predict_proba(prep.ds.train_texts[prep.n_labelled :])
    if np.isnan(probs).any():  # a text the teacher reads nothing of: transfer_texts keeps words only
        raise DataError("a transfer text without tokens for the teacher")
    prep.soft_targets[prep.n_labelled :] = probs
    return time.perf_counter() - t


def _check_same_data(teacher: str, local: Path, ds) -> None:
    """Raises DataError unless `ds` is the teacher's data (data_fingerprint.json): the soft targets are per text."""
    kept = local / "data_fingerprint.json"
    if not kept.is_file():
        raise DataError(f"{teacher}: no data_fingerprint.json (a run made before it existed); train it again")
    want, have = json.loads(kept.read_text()), ds.fingerprint()
    if want["sha256"] != have["sha256"]:
        raise DataError(
            f"the student's data is not teacher {teacher}'s ({have['train']} train / {have['test']} test texts, "
            f"{have['classes']} classes, sha256 {have['sha256'][:12]}; the teacher's: {want['train']} / {want['test']}, "
            f"{want['classes']}, {want['sha256'][:12]}): keep the teacher's data settings (--data.path where its "
            "files moved)"
        )


def teacher_targets(local: Path, metrics: dict[str, Any], ds) -> np.ndarray:
    """[n_train, K] float32: for each training text of `ds` (in its order), the teacher predictor's out-of-fold
    probabilities. An ensemble teacher: oof_predictions.parquet's. A blended teacher: w x those + (1 - w) x the
    linear model's out-of-fold probabilities (its fold fits made again on the teacher's folds, calibrated by the
    teacher's saved linear model), the predictor's own formula (reuters_ray.scoring.blend). Raises DataError when the file
    does not cover the training texts, or when the linear model's out-of-fold log loss differs from the one the
    teacher recorded (the targets would not be the teacher's)."""
    import pandas as pd

    path = local / "oof_predictions.parquet"
    oof = pd.read_parquet(path)
    columns = [f"p_{n}" for n in ds.label_names]
    if missing := [c for c in columns + ["id", "fold"] if c not in oof.columns]:
        raise DataError(f"{path}: no column(s) {', '.join(missing[:5])}; not this data's out-of-fold predictions")
    row = {i: r for r, i in enumerate(oof["id"].astype(str))}
    if len(row) != len(oof) or set(row) != set(ds.train_ids):
        raise DataError(f"{path}: its ids are not the training texts' ({len(oof)} rows, {len(ds.train_ids)} texts)")
    order = np.array([row[i] for i in ds.train_ids])
    p_ensemble = oof[columns].to_numpy(np.float64)[order]
    if metrics.get("predictor") != "blend":
        return p_ensemble.astype(np.float32)
    fold = oof["fold"].to_numpy()[order]
    folds = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(int(fold.max()) + 1)]
    linear = LinearModel.load(local / "linear")
    p_linear = linear.proba_of_scores(out_of_fold_scores(ds.train_texts, ds.train_labels, folds, ds.num_classes))
    recorded = metrics["blend"]["out_of_fold"]["linear"]["log_loss"]
    rebuilt = _log_loss(ds.train_labels, p_linear)
    if not math.isclose(rebuilt, recorded, rel_tol=1e-6, abs_tol=1e-9):
        raise DataError(
            f"{local}: the linear model's out-of-fold predictions, fitted again, do not match the teacher's record "
            f"(log loss {rebuilt:.6f} against {recorded:.6f}): another scikit-learn than the teacher's? The soft "
            "targets would not be the teacher's"
        )
    return blend_probabilities(p_ensemble, p_linear, metrics["blend"]["weight"]).astype(np.float32)


def _log_loss(y: np.ndarray, probs: np.ndarray) -> float:

    return binary_log_loss(y, probs) if y.ndim == 2 else log_loss(y, probs)


def held_out_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of the training split: a stratified (multi-label: iteratively stratified),
    seeded share `share` held out. Raises DataError when it cannot be drawn (a class too rare for it)."""

    n = max(1, round(len(labels) * share))
    try:
        held = multilabel_sample(labels, n, seed) if labels.ndim == 2 else stratified_sample(labels, n, seed)
    except ValueError as e:
        raise DataError(f"distill.val_share={share}: cannot hold out a stratified slice ({e})") from None
    keep = np.ones(len(labels), dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep), np.sort(held)


# --- after the training ---------------------------------------------------------------------------------------------


def student_metrics(run: Run, folds, test_logits, cluster) -> dict:
    """metrics.json of a student run: the student's test figures at the top (multi-label: at thresholds chosen on
    its held-out slice), the teacher's predictor, ensemble and baseline figures beside them (from the teacher's
    metrics.json: the same test split), what the student learnt from, the fold table's one row, the timing."""
    cfg, place, prep = run.cfg, run.place, run.prep
    ds, t = prep.ds, prep.teacher_metrics
    decision = None
    if ds.multi_label:  # thresholds on the held-out slice: the student's own validation logits, never the test split
        best = folds.best_paths[0]
        val_logits = read_val_logits(read_bytes(place.fs, f"{best}/{VAL_LOGITS_FILE}"), f"{best}/{VAL_LOGITS_FILE}")
        val_idx = prep.folds[0][1]
        decision = choose_decision(cfg.cv, ds.train_labels[val_idx], probabilities(val_logits, True))
    probs = probabilities(test_logits, ds.multi_label)
    m = evaluate(ds.test_labels, probs, ds.label_names, decision)
    folds.table[0]["test_f1_weighted"] = m["f1_weighted"]
    if decision is not None:
        folds.table[0]["test_f1_micro"] = m["f1_micro"]
    train_idx, val_idx = prep.folds[0]
    transfer = prep.n_train - prep.n_labelled
    return {
        **m,
        **({"decision": decision} if decision is not None else {}),
        "task": cfg.data.task,
        "predictor": "student",
        **unseen_record(ds, probs, decision),
        "teacher": {
            "run": t["run"],
            "source": cfg.distill.teacher,
            "predictor": t.get("predictor", "ensemble"),
            "folds": len(t["folds"]),
            "model": _teacher_model(prep.teacher_dir),
            **{k: v for k, v in t.items() if isinstance(v, (int, float)) and k not in ("wall_s",)},
        },
        "ensemble": t["ensemble"],
        **({"baseline": t["baseline"]} if "baseline" in t else {}),
        "distill": {
            "soft_targets": f"the teacher's out-of-fold {t.get('predictor', 'ensemble')} probabilities",
            "temperature": cfg.distill.temperature,
            "alpha": cfg.distill.alpha,
            "train": int(len(train_idx)) - transfer,
            "validation": int(len(val_idx)),
            "transfer": cfg.distill.transfer,
            "transfer_texts": transfer,  # their ids: soft_targets.parquet's rows of role "transfer"
        },
        "student": {"model": cfg.model.name, "layers": cfg.model.layers},
        **run_record(run, folds, cluster),
    }


def _teacher_model(local: Path) -> str:
    cfg = _yaml(local / "config.yaml")
    return str(cfg.get("model", {}).get("name"))


def write_student_outputs(run: Run, folds, metrics: dict, test_logits) -> None:
    """The student run's folder, written locally and then copied into storage (report.md last): models/student (the
    best model with the tokenizer), soft_targets.parquet, the data files (reuters_ray.run.outputs) and the report."""
    import pandas as pd

    cfg, place, prep = run.cfg, run.place, run.prep
    ds = prep.ds
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        dst = out / "models" / STUDENT
        dst.mkdir(parents=True)
        copy_dir(folds.best_paths[0], str(dst), place.fs, LOCAL)
        prep.tokenizer.save_pretrained(str(dst))
        soft = pd.DataFrame({"id": ds.train_ids, "role": prep.roles()})
        for j, name in enumerate(ds.label_names):
            soft[f"p_{name}"] = prep.soft_targets[:, j]
        buf = io.BytesIO()
        soft.to_parquet(buf, index=False)
        write_atomic(out / SOFT_TARGETS, buf.getvalue())
        write_run_outputs(
            out,
            metrics,
            history=folds.history,
            test=Predictions(
                ds.test_ids,
                ds.test_labels,
                probabilities(test_logits, ds.multi_label),
                decision=metrics.get("decision"),
            ),
            config=cfg.to_dict(),
            provenance={**ds.provenance, "fingerprint": prep.fingerprint},
        )
        (dst / CARD).write_text(student_card(metrics, cfg.to_dict(), prep.fingerprint))
        write_report(out)
        publish_outputs(out, place.fs, place.path)


def run_distill(cfg: RunConfig, console: Console | None = None) -> dict[str, Any]:
    """Trains (or resumes) a student of run cfg.distill.teacher (reuters_ray.recipes.distill) as one Ray Train run, scores the
    test split with it and writes its run folder; returns its metrics.json. Raises ConfigError or DataError before
    anything is written for a bad teacher, student or data; RuntimeError when the training fails (the same command
    resumes). Connects to Ray (or starts it) only when not connected already, and then disconnects at the end."""
    with ray_session():
        return _run_distill(cfg, console or Console())


def _run_distill(cfg: RunConfig, console: Console) -> dict[str, Any]:
    timing = Stopwatch()
    check_tracking(cfg.track)  # MLflow asked for and not installed: said before anything is written
    prep = check_student(cfg)  # the teacher, the student model, the data and the soft targets: nothing written yet
    place, resuming = open_run(cfg, prep)
    run = Run(cfg, place, prep, console, resuming, timing)
    with tracked(run, "student", children=None, tags=teacher_tags(cfg, prep.teacher_dir)) as tracker:
        return _train_student(run, tracker)


def teacher_tags(cfg: RunConfig, teacher_dir: Path) -> dict[str, str]:
    """The MLflow tags that link a student's run to its teacher: the teacher's run folder and, when the teacher was
    tracked (its tracking.json), its MLflow run id and tracking URI."""
    kept = teacher_dir / TRACKING_FILE
    tracking = json.loads(kept.read_text()) if kept.is_file() else {}
    tags = {"reuters_ray.teacher": cfg.distill.teacher}
    uri = tracking.get("last")  # the store the teacher was logged to last
    kept = tracking.get("stores", {}).get(uri) if isinstance(tracking, dict) else None
    if kept:
        tags |= {"reuters_ray.teacher_mlflow_run_id": kept["run_id"], "reuters_ray.teacher_mlflow_uri": uri}
    return tags


def _train_student(run: Run, tracker: Tracker) -> dict[str, Any]:
    cfg, place, prep, console, timing = run.cfg, run.place, run.prep, run.console, run.timing
    announce(console, place, prep, cfg)
    t, transfer = prep.teacher_metrics, prep.n_train - prep.n_labelled
    train_idx, val_idx = prep.folds[0]
    console.info(
        f"student of run {t['run']} ({t.get('predictor', 'ensemble')} of {len(t['folds'])} fold models): "
        f"{cfg.model.name}{'' if cfg.model.layers is None else f' (its first {cfg.model.layers} layers)'}, trained on "
        f"{len(train_idx) - transfer} texts with their labels and the teacher's out-of-fold probabilities"
        + (f" and {transfer} transfer texts with the teacher's probabilities" if transfer else "")
        + f" (alpha {cfg.distill.alpha}, temperature {cfg.distill.temperature}); {len(val_idx)} held out for early "
        "stopping",
        teacher=t["run"],
    )
    if transfer:
        console.info(f"transfer: {transfer} wires the run's data left out, scored by the teacher's predictor ...")
        seconds = score_transfer(prep)
        console.info(f"transfer: scored in {duration(seconds)}", transfer=transfer)
    timing.lap("data_s")
    connect(run)
    timing.lap("ray_start_s")
    tracker.tag({"reuters_ray.ray_job_id": cluster_record()["job_id"]})
    if run.resuming:
        console.info(f"run {place.name}: resuming (the student continues from its last checkpoint)", resuming=True)
    # the student alone: its scoring actor, started while it trains
    scorer = FoldScorer(run)
    try:
        folders = fit_folds(run, put_train_split(prep), started=scorer.start)
        folds = collect_folds(place, folders, cfg.train.patience, fold_names(cfg))
        tracker.history(folds.history)
        timing.lap("folds_s")
        test_logits = scorer.test_logits(folds.best_paths)[0]
    finally:
        scorer.close()
    timing.lap("ensemble_s")
    metrics = student_metrics(run, folds, test_logits, cluster_record())
    disconnect_early()  # Ray's no longer needed: its shutdown overlaps the outputs
    with stopping.deferred():  # a stop signal waits for the outputs: nothing half-written
        write_student_outputs(run, folds, metrics, test_logits)
    timing.lap("outputs_s")
    tracker.finish(run_figures(metrics), ARTIFACTS, model_logger(run, metrics), {PREDICTOR_TAG: metrics["predictor"]})
    say_done(console, place, metrics, {**timing.laps, "total_s": timing.total()})
    return metrics
