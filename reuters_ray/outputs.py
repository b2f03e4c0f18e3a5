"""The data files of a run folder, written from the run's results. No Ray here.

Every file is written under a temporary name and moved into place (reuters_ray.storage). In a run folder
metrics.json comes after the data files, and the report (reuters_ray.report) after metrics.json, report.md last:
its presence means the run is complete.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from reuters_ray.storage import write_atomic


def write_run_outputs(
    run_dir: Path,
    metrics: dict[str, Any],
    fold_rows: list[dict[str, Any]],
    history: list[dict[str, Any]],
    ids: list[str],
    y_true: np.ndarray,
    probs: np.ndarray,
    label_names: list[str],
    config: dict[str, Any],
    provenance: dict[str, Any],
    oof: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> None:
    """Writes the run folder's data files: config.yaml, provenance.json, folds.csv, history.csv (every fold's
    epoch rows), per_class.csv, confusion_matrix.csv, predictions.parquet (the run's test `probs`), oof_predictions.parquet (when
    `oof`, (ids, labels, fold, probabilities) of the training split, is given), and metrics.json last of them.
    The report (reuters_ray.report.write_report) is built from these files."""
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
    write_atomic(run_dir / "predictions.parquet", _predictions(ids, y_true, probs, label_names))
    if oof is not None:
        oof_ids, oof_y, oof_fold, oof_probs = oof
        data = _predictions(oof_ids, oof_y, oof_probs, label_names, fold=oof_fold)
        write_atomic(run_dir / "oof_predictions.parquet", data)
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2))


def _predictions(ids, y_true, probs, label_names, fold=None) -> bytes:
    """Parquet bytes: id, true and predicted label, [fold,] one probability column per class."""
    pred = probs.argmax(axis=1)
    df = pd.DataFrame(
        {"id": ids, "true_label": [label_names[i] for i in y_true], "predicted_label": [label_names[i] for i in pred]}
    )
    if fold is not None:
        df["fold"] = fold
    for j, name in enumerate(label_names):
        df[f"p_{name}"] = probs[:, j].astype(np.float32)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
