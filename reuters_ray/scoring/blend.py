"""The blend of the fold ensemble with the linear baseline: probabilities w * ensemble + (1 - w) * linear.

The two fail differently (the transformer on the large classes, the linear model on the small ones), so their
average beats both. w is chosen on the training split's out-of-fold predictions (each row scored by models that
never trained on it), never on the test split: `choose_weight` takes no test labels at all.

Multi-label data: the same blend of per-topic probabilities (sigmoids of the ensemble, Platt-scaled SVM scores), the
weight chosen by the out-of-fold micro-F1 at the best global threshold (choose_weight_multilabel); the topics'
thresholds are then chosen on the chosen blend (reuters_ray.scoring.evaluate.choose_decision).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reuters_ray.scoring.baseline import fit_cv
from reuters_ray.scoring.metrics import classification_metrics, log_loss, softmax
from reuters_ray.scoring.multilabel import binary_log_loss, multilabel_metrics, sigmoid

GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # candidate weights of the ensemble, steps of 0.01


def blend_probabilities(p_ensemble: np.ndarray, p_linear: np.ndarray, weight: float) -> np.ndarray:
    """[N, K] blended probabilities: weight x the ensemble's + (1 - weight) x the linear model's."""
    return weight * p_ensemble + (1.0 - weight) * p_linear


def choose_weight(y: np.ndarray, p_ensemble: np.ndarray, p_linear: np.ndarray) -> dict[str, Any]:
    """The weight on GRID with the best weighted F1 of the out-of-fold blend (ties: the lower log loss, then the
    smaller weight), and its out-of-fold figures beside the two models' own."""
    k = p_ensemble.shape[1]
    best = None
    for w in GRID:
        probs = blend_probabilities(p_ensemble, p_linear, w)
        f1 = classification_metrics(y, probs.argmax(axis=1), k)["f1_weighted"]
        key = (-f1, log_loss(y, probs), w)
        if best is None or key < best:
            best = key
    w = float(best[2])

    def figures(probs: np.ndarray) -> dict[str, float]:
        m = classification_metrics(y, probs.argmax(axis=1), k)
        return {
            "accuracy": m["accuracy"],
            "f1_weighted": m["f1_weighted"],
            "f1_macro": m["f1_macro"],
            "log_loss": log_loss(y, probs),
        }

    return {
        "weight": w,
        "out_of_fold": {
            "blend": figures(blend_probabilities(p_ensemble, p_linear, w)),
            "ensemble": figures(p_ensemble),
            "linear": figures(p_linear),
        },
    }


COARSE = np.round(np.linspace(0.0, 1.0, 21), 2)  # multi-label: weights, then thresholds, in steps of 0.05


def choose_weight_multilabel(y: np.ndarray, p_ensemble: np.ndarray, p_linear: np.ndarray) -> dict[str, Any]:
    """The weight on COARSE whose out-of-fold blend has the best micro-F1 at its best global threshold (COARSE's
    inner values; ties: the lower binary log loss, then the smaller weight), with the out-of-fold figures of the
    blend and of the two models at their own best global thresholds. Steps of 0.05 keep it to a second or two on
    ModApte's 7,769 x 90 probabilities."""

    yb = y.astype(bool)
    pos = yb.sum()

    def best_micro(probs: np.ndarray) -> tuple[float, float]:
        best = (-1.0, 0.5)
        for t in COARSE[1:-1]:
            pred = probs >= t
            tp = (pred & yb).sum()
            f1 = 2 * tp / max(pred.sum() + pos, 1)
            if f1 > best[0]:
                best = (float(f1), float(t))
        return best

    best = None
    for w in COARSE:
        probs = blend_probabilities(p_ensemble, p_linear, w)
        key = (-best_micro(probs)[0], binary_log_loss(y, probs), w)
        if best is None or key < best:
            best = key
    w = float(best[2])

    def figures(probs: np.ndarray) -> dict[str, float]:
        f1, t = best_micro(probs)
        m = multilabel_metrics(y, probs >= t)
        return {
            "f1_micro": m["f1_micro"],
            "f1_macro": m["f1_macro"],
            "threshold": t,
            "log_loss": binary_log_loss(y, probs),
        }

    return {
        "weight": w,
        "out_of_fold": {
            "blend": figures(blend_probabilities(p_ensemble, p_linear, w)),
            "ensemble": figures(p_ensemble),
            "linear": figures(p_linear),
        },
    }


def fit_blend(ds, folds, oof_logits: np.ndarray):
    """The linear model (fitted on the whole training split, calibrated out of fold) and the blend's weight chosen
    on out-of-fold predictions: the fold models' `oof_logits` and the linear model's own. Reads only the training
    split of `ds` (a TextDataset). Returns (LinearModel, choose_weight's dict with the linear model's temperature)."""

    linear, oof_scores = fit_cv(ds.train_texts, ds.train_labels, folds, ds.num_classes)
    return linear, blend_of_fitted(ds, linear, oof_scores, oof_logits)


def blend_of_fitted(ds, linear, oof_scores: np.ndarray, oof_logits: np.ndarray) -> dict:
    """fit_blend's weight for a linear model already fitted (baseline.fit_cv's model and out-of-fold scores)."""
    if ds.multi_label:
        chosen = choose_weight_multilabel(ds.train_labels, sigmoid(oof_logits), linear.proba_of_scores(oof_scores))
        return {**chosen, "temperature": linear.temperature, "bias": linear.bias}
    chosen = choose_weight(ds.train_labels, softmax(oof_logits), linear.proba_of_scores(oof_scores))
    return {**chosen, "temperature": linear.temperature}
