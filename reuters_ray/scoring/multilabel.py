"""Multi-label decisions and metrics (data.task multi), without torch or Ray: sigmoid probabilities, thresholds chosen
out of fold, label sets, and scikit-learn's multi-label metrics.

Probabilities are per topic: sigmoid(logit), independent of the other topics. A text's label set is every topic
whose probability reaches its threshold; with `at_least_one`, a text with none gets its most probable topic. The
thresholds are chosen on the training split's out-of-fold probabilities (rows scored by models that never trained
on them), never on the test split: `choose_thresholds` takes no test labels at all.

Metrics (scikit-learn's definitions): micro-F1 (every text-topic decision pooled: the benchmark's headline figure on
ModApte), macro-F1 (the mean over topics: the rare topics' figure), weighted F1 (topics weighted by support),
samples-F1 (the mean over texts), subset accuracy (the whole set right) and Hamming loss (the share of wrong
text-topic decisions).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

# Candidate thresholds, steps of 0.01 (a threshold of 0 or 1 would say "every text" or "none").
GRID = np.round(np.linspace(0.01, 0.99, 99), 2)
DEFAULT_THRESHOLD = 0.5


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function of [N, K] logits (float64, stable for large |x|)."""
    x = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def decide(probs: np.ndarray, thresholds: np.ndarray | float, at_least_one: bool) -> np.ndarray:
    """[N, K] bool label sets: probs >= thresholds (a number, or [K] one per topic); with `at_least_one`, a row with no
    topic gets its most probable one."""
    pred = probs >= np.asarray(thresholds, dtype=np.float64)
    if at_least_one and len(pred):
        empty = ~pred.any(axis=1)
        pred[np.flatnonzero(empty), probs[empty].argmax(axis=1)] = True
    return pred


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Subset accuracy ("subset_accuracy"), Hamming loss, micro/macro/weighted/samples precision, recall and F1 of
    [N, K] 0/1 label sets. Macro averages over the topics that occur in y_true or y_pred (as the single-label metrics
    do)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    present = np.flatnonzero(y_true.any(axis=0) | y_pred.any(axis=0))
    out = {
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
    }
    for avg in ("micro", "macro", "weighted", "samples"):
        labels = present if avg == "macro" else None
        if avg == "macro" and not len(present):
            p = r = f = 0.0
        else:
            p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, labels=labels, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    return out


def _f1_by_threshold(y: np.ndarray, probs: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """[len(grid), K] true positives, false positives and false negatives of each topic at each threshold, as
    counts (3, len(grid), K)."""
    y = y.astype(bool)
    tp = np.stack([((probs >= t) & y).sum(axis=0) for t in grid])
    fp = np.stack([((probs >= t) & ~y).sum(axis=0) for t in grid])
    fn = y.sum(axis=0)[None, :] - tp
    return np.stack([tp, fp, fn])


def best_global_threshold(y: np.ndarray, probs: np.ndarray) -> float:
    """The GRID threshold with the best micro-F1 of `probs` [N, K] against `y` [N, K] (ties: the one nearest 0.5)."""
    tp, fp, fn = _f1_by_threshold(y, probs, GRID).sum(axis=2)
    micro = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(GRID[int(np.lexsort((-np.abs(GRID - DEFAULT_THRESHOLD), micro))[-1])])


def validation_metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """A fold's validation figures for early stopping and the best model: multilabel_metrics of the sigmoids at the
    global threshold best on these rows ("threshold" in the dict). A fixed 0.5 would read 0 for the first epochs,
    while the rare topics' probabilities are all still low, and stop a fold before it learns; the test split's
    thresholds are chosen after the folds, on every fold's out-of-fold rows (choose_thresholds)."""
    probs = sigmoid(logits)
    t = best_global_threshold(y, probs)
    return {**multilabel_metrics(y, probs >= t), "threshold": t}


def choose_thresholds(
    y: np.ndarray, probs: np.ndarray, min_positives: int, at_least_one: bool = True
) -> dict[str, Any]:
    """Thresholds [K] chosen on out-of-fold `probs` [N, K] against the true label sets `y` [N, K].

    One global threshold: the GRID value with the best micro-F1 over every topic (ties: the one nearest 0.5). Then
    each topic with at least `min_positives` positives in `y` gets its own: the GRID value with that topic's best
    F1 (ties: nearest the global one); the others keep the global one (a few positives would overfit a number of
    their own). Returns {"thresholds": [K], "global": t, "own": [K] bool, "min_positives", "at_least_one",
    "out_of_fold": micro-F1 and macro-F1 of the decisions at 0.5 and at the chosen thresholds}."""
    counts = _f1_by_threshold(y, probs, GRID)
    t_global = best_global_threshold(y, probs)
    thresholds = np.full(y.shape[1], t_global)
    positives = y.sum(axis=0)
    own = positives >= min_positives
    tp_k, fp_k, fn_k = counts
    f1_k = 2 * tp_k / np.maximum(2 * tp_k + fp_k + fn_k, 1)
    near_global = -np.abs(GRID - t_global)
    for k in np.flatnonzero(own):
        thresholds[k] = GRID[int(np.lexsort((near_global, f1_k[:, k]))[-1])]

    def figures(t) -> dict[str, float]:
        m = multilabel_metrics(y, decide(probs, t, at_least_one))
        return {"f1_micro": m["f1_micro"], "f1_macro": m["f1_macro"]}

    return {
        "thresholds": thresholds.tolist(),
        "global": t_global,
        "own": own.tolist(),
        "min_positives": int(min_positives),
        "at_least_one": bool(at_least_one),
        "out_of_fold": {"at_0.5": figures(DEFAULT_THRESHOLD), "chosen": figures(thresholds)},
    }


def evaluate_multilabel(
    y_true: np.ndarray,
    probs: np.ndarray,
    label_names: list[str],
    thresholds: np.ndarray | float = DEFAULT_THRESHOLD,
    at_least_one: bool = False,
    pairs: int = 10,
) -> dict[str, Any]:
    """Overall metrics (multilabel_metrics), per-topic precision/recall/F1/support with each topic's missed (false
    negative) and false (false positive) texts, and the `pairs` most frequent confusions (a true topic missed and
    another predicted in its place on the same text) of the label sets decide(probs, thresholds, at_least_one).
    metrics.json's figures: "accuracy" repeats "subset_accuracy", the key runs before it had (export's manifest and
    older readers of metrics.json read it); every line and report names it subset accuracy."""
    y = np.asarray(y_true, dtype=bool)
    pred = decide(probs, thresholds, at_least_one)
    k = len(label_names)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=np.arange(k), zero_division=0)
    missed, false = (y & ~pred).sum(axis=0), (~y & pred).sum(axis=0)
    confused: Counter = Counter()
    for i in np.flatnonzero((y & ~pred).any(axis=1) & (~y & pred).any(axis=1)):
        for a in np.flatnonzero(y[i] & ~pred[i]):
            for b in np.flatnonzero(~y[i] & pred[i]):
                confused[(int(a), int(b))] += 1
    m = multilabel_metrics(y, pred)
    return {
        **m,
        "accuracy": m["subset_accuracy"],
        "n_test": int(len(y)),
        "per_class": [
            {
                "label": i,
                "name": n,
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
                "missed": int(missed[i]),
                "false": int(false[i]),
            }
            for i, n in enumerate(label_names)
        ],
        "confused_pairs": [
            {"true": label_names[a], "predicted": label_names[b], "texts": c}
            for (a, b), c in confused.most_common(pairs)
        ],
        "labels_per_text": {
            "true": float(y.sum(axis=1).mean()) if len(y) else 0.0,
            "predicted": float(pred.sum(axis=1).mean()) if len(y) else 0.0,
        },
    }


def binary_log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean over texts of the summed binary cross-entropy of every topic, probabilities clipped at 1e-12."""
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axis=1).mean())


def micro_f1(y: np.ndarray, probs: np.ndarray, thresholds, at_least_one: bool) -> float:
    return float(f1_score(y, decide(probs, thresholds, at_least_one), average="micro", zero_division=0))
