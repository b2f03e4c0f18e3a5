"""Classification metrics from labels and predictions (validation and ensemble use the same ones)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, weighted precision/recall/F1 and macro precision/recall/F1 (classes absent from both count 0)."""
    labels = np.arange(num_classes)
    present = np.union1d(np.unique(y_true), np.unique(y_pred))  # macro over classes that occur, as sklearn's default
    p_w, r_w, f_w, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
    p_m, r_m, f_m, _ = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_weighted": float(p_w),
        "recall_weighted": float(r_w),
        "f1_weighted": float(f_w),
        "precision_macro": float(p_m),
        "recall_macro": float(r_m),
        "f1_macro": float(f_m),
    }


def majority_f1(y_true: np.ndarray, num_classes: int) -> float:
    """Weighted F1 of always predicting the most frequent class: the floor a model must beat."""
    pred = np.full_like(y_true, np.bincount(y_true, minlength=num_classes).argmax())
    return float(f1_score(y_true, pred, average="weighted", zero_division=0))
