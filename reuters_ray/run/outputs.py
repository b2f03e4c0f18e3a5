"""The data files of a run folder, written from the run's results. No Ray here.

Every file is written under a temporary name and moved into place (reuters_ray.storage). In a run folder
metrics.json comes after the data files, and the report (reuters_ray.run.report) after metrics.json, report.md last:
its presence means the run is complete.
"""

from __future__ import annotations

import io
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import yaml

from reuters_ray import rows as R
from reuters_ray.config import monitor_key
from reuters_ray.console import Console, duration
from reuters_ray.data.overlap import fold_leaks
from reuters_ray.fold.card import CARD, fold_card
from reuters_ray.run.folds import Folds
from reuters_ray.run.inputs import Run
from reuters_ray.run.place import RunPlace
from reuters_ray.run.report import write_report
from reuters_ray.scoring.evaluate import (
    Scored,
    out_of_fold_metrics,
    probabilities,
    unseen_line,
    unseen_record,
)
from reuters_ray.scoring.multilabel import decide
from reuters_ray.storage import (
    LOCAL,
    copy_dir,
    uri_join,
    write_atomic,
)


@dataclass(frozen=True)
class Predictions:
    """A split's predictions: ids, true labels (indices [N], or multi-hot [N, K]), probabilities [N, K], for
    out-of-fold ones the fold of each row, and for multi-label ones the decision (thresholds, at_least_one)."""

    ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
    fold: np.ndarray | None = None
    decision: dict[str, Any] | None = None


def write_run_outputs(
    run_dir: Path,
    metrics: dict[str, Any],
    *,
    history: list[dict[str, Any]],
    test: Predictions,
    config: dict[str, Any],
    provenance: dict[str, Any],
    oof: Predictions | None = None,
) -> None:
    """Writes the run folder's data files: config.yaml, provenance.json, folds.csv (metrics["folds"]), history.csv
    (every fold's epoch rows, true_named), per_class.csv, confusion_matrix.csv, predictions.parquet (the run's `test`
    predictions), oof_predictions.parquet (the training split's out-of-fold ones, when given), and metrics.json last
    of them. The report (reuters_ray.run.report.write_report) is built from these files."""
    run_dir, names = Path(run_dir), metrics["label_names"]
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=True))
    write_atomic(run_dir / "provenance.json", json.dumps(provenance, indent=2))
    folds = pd.DataFrame(metrics["folds"])
    folds["restarts"] = [len(r.get("restarts", [])) for r in metrics["folds"]]
    write_atomic(run_dir / "folds.csv", folds.to_csv(index=False))
    write_atomic(run_dir / "history.csv", pd.DataFrame(true_named(history, config)).to_csv(index=False))
    write_atomic(run_dir / "per_class.csv", pd.DataFrame(metrics["per_class"]).to_csv(index=False))
    if "confusion_matrix" in metrics:
        cm = pd.DataFrame(metrics["confusion_matrix"], index=names, columns=names)
        cm.index.name = "true \\ predicted"
        write_atomic(run_dir / "confusion_matrix.csv", cm.to_csv())
    else:  # multi-label: the topic pairs predicted for each other
        pairs = pd.DataFrame(metrics["confused_pairs"], columns=["true", "predicted", "texts"])
        write_atomic(run_dir / "confused_pairs.csv", pairs.to_csv(index=False))
    write_atomic(run_dir / "predictions.parquet", _parquet(test, names))
    if oof is not None:
        write_atomic(run_dir / "oof_predictions.parquet", _parquet(oof, names))
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))


def true_named(history: list[dict[str, Any]], config: dict[str, Any]) -> list[dict[str, Any]]:
    """The epoch rows with every figure under its true name. Rows a resumed run kept from checkpoints written
    before the names (no rows.MONITOR) carry the monitored figure's best under best/f1_weighted whatever it was, and
    a multi-label run's subset accuracy under val/accuracy: moved to best/<monitor> and val/subset_accuracy."""

    monitor = monitor_key(config.get("train", {}).get("monitor"), config.get("data", {}).get("task"))
    out = []
    for row in history:
        row = dict(row)
        if R.MONITOR not in row and R.BEST + "f1_weighted" in row:
            row[R.MONITOR], row[R.BEST + monitor] = monitor, row.pop(R.BEST + "f1_weighted")
        if R.VAL + "hamming_loss" in row and R.VAL_ACCURACY in row:
            row[R.VAL_SUBSET_ACCURACY] = row.pop(R.VAL_ACCURACY)
        out.append(row)
    return out


def _parquet(p: Predictions, label_names: list[str]) -> bytes:
    """Parquet bytes: id, true and predicted label, [fold,] one probability column per class. Multi-label: the true
    and predicted label sets as lists of names (true_labels, predicted_labels)."""
    if p.labels.ndim == 2:
        pred = decide(p.probs, np.asarray(p.decision["thresholds"]), p.decision["at_least_one"])
        df = pd.DataFrame(
            {
                "id": p.ids,
                "true_labels": [[label_names[k] for k in np.flatnonzero(r)] for r in p.labels],
                "predicted_labels": [[label_names[k] for k in np.flatnonzero(r)] for r in pred],
            }
        )
        return _finish(df, p, label_names)
    pred = p.probs.argmax(axis=1)
    df = pd.DataFrame(
        {
            "id": p.ids,
            "true_label": [label_names[i] for i in p.labels],
            "predicted_label": [label_names[i] for i in pred],
        }
    )
    return _finish(df, p, label_names)


def _finish(df: pd.DataFrame, p: Predictions, label_names: list[str]) -> bytes:
    if p.fold is not None:
        df["fold"] = p.fold
    for j, name in enumerate(label_names):
        df[f"p_{name}"] = p.probs[:, j].astype(np.float32)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


# Copy order into storage: metrics.json, then the report, report.md last (its presence means the run is complete).
OUTPUT_ORDER = {"metrics.json": 1, "report.html": 2, "report.md": 3}


def run_metrics(run: Run, folds: Folds, ensemble, scored: Scored, oof_logits, cluster) -> dict:
    """metrics.json: the predictor's test figures at the top, the ensemble's, the baseline's and the blend's beside
    them, the out-of-fold figures, the fold table, the timing and the cluster."""
    cfg, ds = run.cfg, run.prep.ds
    if scored.linear_s is not None:
        run.timing.laps["baseline_s"] = scored.linear_s  # the linear model's fits, in a thread during the folds
    return {
        **scored.metrics,
        "ensemble": ensemble,
        "out_of_fold": out_of_fold_metrics(
            ds.train_labels, oof_logits, ds.label_names, folds.table, ensemble.get("decision")
        ),
        "task": cfg.data.task,
        "predictor": "blend" if cfg.cv.blend else "ensemble",  # what the top-level figures are of
        **unseen_record(ds, scored.probs, scored.metrics.get("decision")),
        **run_record(run, folds, cluster),
    }


def run_record(run: Run, folds: Folds, cluster) -> dict[str, Any]:
    """metrics.json's keys about the run itself, a cross-validation's or a student's: its name, labels, max_length,
    fold table, wall time and its phases, class weights and cluster."""
    cfg, place, prep, timing = run.cfg, run.place, run.prep, run.timing
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


def write_outputs(run: Run, folds: Folds, metrics, scored: Scored, oof_logits):
    """The run folder's outputs, written locally and then copied into storage: models/fold_<k>/ (each fold's best
    model with the tokenizer), the data files (write_run_outputs), linear/ for a blended run, and the report."""
    cfg, place, prep = run.cfg, run.place, run.prep
    ds = prep.ds
    n_models = len(folds.best_paths)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max(1, n_models), thread_name_prefix="model") as pool:
        out = Path(tmp)
        models = [out / "models" / f"fold_{k}" for k in range(n_models)]
        # the fold models' copies (pyarrow's, without Python's lock) while the tables and the report's figures are
        # made: about 1 s of a quick run's end on 2 cores (docs/results.md, issue 45)
        copies = [pool.submit(copy_dir, src, str(dst), place.fs, LOCAL) for src, dst in zip(folds.best_paths, models)]
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
            ),
            config=cfg.to_dict(),
            provenance={**ds.provenance, "fingerprint": prep.fingerprint},
        )
        if scored.linear is not None:
            scored.linear.save(out / "linear")
        write_report(out)
        for k, (copied, dst) in enumerate(zip(copies, models)):
            copied.result()
            prep.tokenizer.save_pretrained(str(dst))
            # each fold model explains itself when pushed to a model hub
            (dst / CARD).write_text(fold_card(metrics, cfg.to_dict(), prep.fingerprint, k))
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


def say_done(console: Console, place: RunPlace, metrics: dict[str, Any], timing: dict[str, float]) -> None:
    if metrics.get("task") == "multi":
        m = metrics
        console.done(
            f"run {place.name}: micro-F1 {m['f1_micro']:.4f}, macro-F1 {m['f1_macro']:.4f}, samples-F1 "
            f"{m['f1_samples']:.4f}, subset accuracy {m['subset_accuracy']:.4f}, Hamming loss {m['hamming_loss']:.4f} on "
            f"{m['n_test']} test texts ({predictor_line(m)}) in {duration(timing['total_s'])}"
            f"{unseen_line(m)}; report: {uri_join(place.uri, 'report.html')}",
            run=place.name,
            uri=place.uri,
            f1_micro=m["f1_micro"],
            f1_macro=m["f1_macro"],
            f1_samples=m["f1_samples"],
            subset_accuracy=m["subset_accuracy"],
            hamming_loss=m["hamming_loss"],
            timing=timing,
            **({"test_unseen": m["test_unseen"]} if "test_unseen" in m else {}),
        )
        return
    console.done(
        f"run {place.name}: accuracy {metrics['accuracy']:.4f}, weighted F1 {metrics['f1_weighted']:.4f}, "
        f"macro F1 {metrics['f1_macro']:.4f} on {metrics['n_test']} test texts ({predictor_line(metrics)}) "
        f"in {duration(timing['total_s'])}{unseen_line(metrics)}; report: {uri_join(place.uri, 'report.html')}",
        run=place.name,
        uri=place.uri,
        accuracy=metrics["accuracy"],
        f1_weighted=metrics["f1_weighted"],
        f1_macro=metrics["f1_macro"],
        timing=timing,
        **({"test_unseen": metrics["test_unseen"]} if "test_unseen" in metrics else {}),
    )
