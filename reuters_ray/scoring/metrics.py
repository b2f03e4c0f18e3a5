"""Classification metrics from labels and predictions or scores: validation, folds, ensemble and baseline alike."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, weighted precision/recall/F1 and macro precision/recall/F1 (classes absent from both count 0)."""
    labels = np.arange(num_classes)
    present = np.union1d(np.unique(y_true), np.unique(y_pred))  # macro over classes that occur, as sklearn's default
    p_w, r_w, f_w, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0
    )
    p_m, r_m, f_m, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_micro": float(accuracy_score(y_true, y_pred)),  # single-label: micro-F1 is accuracy
        "precision_weighted": float(p_w),
        "recall_weighted": float(r_w),
        "f1_weighted": float(f_w),
        "precision_macro": float(p_m),
        "recall_macro": float(r_m),
        "f1_macro": float(f_m),
    }


def evaluate_scores(y_true: np.ndarray, scores: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Overall metrics, per-class precision/recall/F1/support and the confusion matrix of the argmax of [N, K]
    scores (logits, probabilities or decision values): one fold, the ensemble or the baseline."""
    k = len(label_names)
    pred = scores.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=np.arange(k), zero_division=0)
    return {
        **classification_metrics(y_true, pred, k),
        "n_test": int(len(y_true)),
        "per_class": [
            {
                "label": i,
                "name": n,
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
            for i, n in enumerate(label_names)
        ],
        "confusion_matrix": confusion_matrix(y_true, pred, labels=np.arange(k)).tolist(),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, K] logits, computed stably."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log probability of the true labels `y` under [N, K] `probs`, clipped at 1e-12 (a zero would be
    infinite): the blend's tie-break and the linear model's calibration alike."""
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
