"""Run outputs: ensemble metrics and the files of a run folder. No Ray here.

Every file is written under a temporary name and renamed into place. In a run folder metrics.json comes after
the data files, and the report after metrics.json, report.md last: its presence means the run is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from reuters_ray.metrics import classification_metrics


def write_atomic(path: Path, data: str | bytes) -> None:
    """Writes `data` to `path` through a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def ensemble_metrics(y_true: np.ndarray, mean_logits: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Overall metrics, per-class precision/recall/F1/support and the confusion matrix of the ensemble."""
    k = len(label_names)
    pred = mean_logits.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=np.arange(k), zero_division=0)
    return {
        **classification_metrics(y_true, pred, k),
        "n_test": int(len(y_true)),
        "per_class": [
            {"label": i, "name": n, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, n in enumerate(label_names)
        ],
        "confusion_matrix": confusion_matrix(y_true, pred, labels=np.arange(k)).tolist(),
    }


def write_run_outputs(
    run_dir: Path,
    metrics: dict[str, Any],
    fold_rows: list[dict[str, Any]],
    history: list[dict[str, Any]],
    ids: list[str],
    y_true: np.ndarray,
    mean_logits: np.ndarray,
    label_names: list[str],
    config: dict[str, Any],
    provenance: dict[str, Any],
) -> None:
    """Writes the run folder's data files: config.yaml, provenance.json, folds.csv, history.csv (every fold's
    epoch rows), per_class.csv, confusion_matrix.csv, predictions.parquet, and metrics.json last of them.
    The report (reuters_ray.reporting.write_report) is built from these files."""
    run_dir = Path(run_dir)
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=True))
    write_atomic(run_dir / "provenance.json", json.dumps(provenance, indent=2))
    folds = pd.DataFrame(fold_rows)
    folds["restarts"] = [len(r.get("restarts", [])) for r in fold_rows]
    write_atomic(run_dir / "folds.csv", folds.to_csv(index=False))
    write_atomic(run_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
    write_atomic(run_dir / "per_class.csv", pd.DataFrame(metrics["per_class"]).to_csv(index=False))
    cm = pd.DataFrame(metrics["confusion_matrix"], index=label_names, columns=label_names)
    cm.index.name = "true \\ predicted"
    write_atomic(run_dir / "confusion_matrix.csv", cm.to_csv())
    e = np.exp(mean_logits - mean_logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    pred = mean_logits.argmax(axis=1)
    df = pd.DataFrame({"id": ids, "true_label": [label_names[i] for i in y_true], "predicted_label": [label_names[i] for i in pred]})
    for j, name in enumerate(label_names):
        df[f"p_{name}"] = probs[:, j].astype(np.float32)
    tmp = run_dir / ".predictions.parquet.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, run_dir / "predictions.parquet")
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))

