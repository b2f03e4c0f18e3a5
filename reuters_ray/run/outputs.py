"""The data files of a run folder, written from the run's results. No Ray here.

Every file is written under a temporary name and moved into place (reuters_ray.storage). In a run folder
metrics.json comes after the data files, and the report (reuters_ray.report) after metrics.json, report.md last:
its presence means the run is complete.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from reuters_ray import rows as R
from reuters_ray.storage import write_atomic


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
    from reuters_ray.config import monitor_key

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
        from reuters_ray.scoring.multilabel import decide

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
