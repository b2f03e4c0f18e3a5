"""A run's figures from its logits: probabilities, the multi-label decision (thresholds chosen out of fold), the
ensemble's and the out-of-fold figures, the linear model's fits and the blend (blend_phase), and the figures on the
test texts that are not training texts. numpy and scikit-learn; no torch, no Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from reuters_ray.config import RunConfig
from reuters_ray.console import Console
from reuters_ray.data.overlap import UNSEEN_KEYS, on_unseen
from reuters_ray.errors import DataError
from reuters_ray.scoring.baseline import NAME, baseline_metrics, fit_cv
from reuters_ray.scoring.blend import blend_of_fitted, blend_probabilities
from reuters_ray.scoring.metrics import evaluate_scores, softmax
from reuters_ray.scoring.multilabel import choose_thresholds, evaluate_multilabel, sigmoid


@dataclass
class Scored:
    """The run's test figures: metrics.json's top level (the predictor's), its test probabilities [N, K], the
    linear model when the run blends, and the seconds the linear model's fits took."""

    metrics: dict[str, Any]
    probs: np.ndarray
    linear: Any = None
    linear_s: float | None = None


def out_of_fold_metrics(y, oof_logits, label_names, fold_table, decision=None) -> dict[str, Any]:
    """Accuracy, weighted and macro F1 of the out-of-fold predictions, beside the folds' mean validation figures at
    their best epochs ("folds_mean"). Multi-label (`decision`: the ensemble's thresholds): subset accuracy
    ("subset_accuracy") for accuracy, and also micro-F1, samples-F1 and Hamming loss."""
    m = evaluate(y, oof_logits if decision is None else probabilities(oof_logits, True), label_names, decision)
    accuracy = "accuracy" if decision is None else "subset_accuracy"
    keys = {accuracy: f"val_{accuracy}", "f1_weighted": "val_f1_weighted", "f1_macro": "val_f1_macro"}
    extra = {k: m[k] for k in ("f1_micro", "f1_samples", "hamming_loss") if decision is not None}
    return {
        **{k: m[k] for k in keys},
        **extra,
        "n": int(len(y)),
        "folds_mean": {k: float(np.mean([r[v] for r in fold_table])) for k, v in keys.items()},
    }


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """[N, K] probabilities of logits: softmax over classes, or for multi-label data each topic's sigmoid."""

    return sigmoid(logits) if multi_label else softmax(logits)


def choose_decision(cv, y: np.ndarray, oof_probs: np.ndarray) -> dict[str, Any]:
    """Multi-label: the thresholds of a predictor chosen on its out-of-fold probabilities (multilabel.choose_thresholds
    with cv.threshold_min_positives and cv.at_least_one)."""

    return choose_thresholds(y, oof_probs, cv.threshold_min_positives, cv.at_least_one)


def evaluate(y, scores, label_names, decision=None) -> dict[str, Any]:
    """metrics.evaluate_scores of [N, K] scores, or for multi-label data (`decision` given) multilabel's
    evaluate_multilabel of [N, K] probabilities at the decision's thresholds."""

    if decision is None:
        return evaluate_scores(y, scores, label_names)
    return evaluate_multilabel(y, scores, label_names, np.asarray(decision["thresholds"]), decision["at_least_one"])


def score_ensemble(ds, fold_logits: np.ndarray, table: list[dict[str, Any]], cv=None, oof_logits=None) -> dict:
    """The ensemble's test metrics from the fold models' test logits [folds, N, K] (their mean votes); each fold's own
    test F1 goes into its row of the fold table. Multi-label data: the ensemble's thresholds are chosen on its
    out-of-fold probabilities (`oof_logits`, cv's settings) and kept as "decision"; each fold's test micro-F1 too."""
    decision = None
    if ds.multi_label:
        decision = choose_decision(cv, ds.train_labels, probabilities(oof_logits, True))
    for row, logits in zip(table, fold_logits):
        m = evaluate(ds.test_labels, probabilities(logits, ds.multi_label), ds.label_names, decision)
        row["test_f1_weighted"] = m["f1_weighted"]
        if decision is not None:
            row["test_f1_micro"] = m["f1_micro"]
    probs = probabilities(fold_logits.mean(axis=0), ds.multi_label)
    m = evaluate(ds.test_labels, probs, ds.label_names, decision)
    return m if decision is None else {**m, "decision": decision}


def fit_linear(ds, folds) -> tuple[Any, np.ndarray, float]:
    """The linear model fitted on each fold's training rows and on the whole training split (baseline.fit_cv),
    and its seconds. CPU work on the driver: run_cv runs it in a thread while the folds train. Raises DataError
    when it cannot be fitted, saying that the folds are kept."""

    t = time.perf_counter()
    try:
        linear, oof_scores = fit_cv(ds.train_texts, ds.train_labels, folds, ds.num_classes)
    except ValueError as e:  # checked before the folds (baseline.check_fittable); should anything else fail:
        raise DataError(
            f"the linear model could not be fitted ({str(e).splitlines()[0]}); the folds are kept: rerun the same "
            f"command with --cv.blend false --cv.baseline false to finish the run without it"
        ) from None
    return linear, oof_scores, time.perf_counter() - t


def blend_phase(cfg: RunConfig, ds, fitted, oof_logits, ensemble, ensemble_probs, console: Console) -> Scored:
    """The run's test figures. With the linear model (`fitted`: fit_linear's result, or None when neither the blend
    nor the baseline is asked for), the baseline's test figures (cv.baseline) and, with cv.blend, the blend of its
    probabilities with the ensemble's by the weight the out-of-fold predictions chose."""

    if fitted is None:
        return Scored(dict(ensemble), ensemble_probs)
    linear, oof_scores, fit_s = fitted
    blend = blend_of_fitted(ds, linear, oof_scores, oof_logits)
    scores = linear.scores(ds.test_texts)
    scored = Scored(dict(ensemble), ensemble_probs, linear if cfg.cv.blend else None, fit_s)
    if cfg.cv.blend:
        scored.probs = blend_probabilities(ensemble_probs, linear.proba_of_scores(scores), blend["weight"])
        if ds.multi_label:
            oof_blend = blend_probabilities(
                probabilities(oof_logits, True), linear.proba_of_scores(oof_scores), blend["weight"]
            )
            decision = choose_decision(cfg.cv, ds.train_labels, oof_blend)
            test = evaluate(ds.test_labels, scored.probs, ds.label_names, decision)
            scored.metrics = {**test, "blend": blend, "decision": decision}
        else:
            scored.metrics = {**evaluate_scores(ds.test_labels, scored.probs, ds.label_names), "blend": blend}
        oof, key = blend["out_of_fold"], "f1_micro" if ds.multi_label else "f1_weighted"
        what = "micro-F1" if ds.multi_label else "weighted F1"
        console.info(
            f"blend: weight {blend['weight']:.2f} on the ensemble, {1 - blend['weight']:.2f} on the linear model, "
            f"chosen out of fold ({what} {oof['blend'][key]:.4f} against the ensemble's "
            f"{oof['ensemble'][key]:.4f} and the linear model's {oof['linear'][key]:.4f})",
            blend_weight=blend["weight"],
        )
    if cfg.cv.baseline:
        b = scored.metrics["baseline"] = baseline_metrics(ds, scores)
        if ds.multi_label:
            console.info(
                f"baseline ({b['name']}): micro-F1 {b['f1_micro']:.4f}, macro-F1 {b['f1_macro']:.4f}",
                baseline_f1_micro=b["f1_micro"],
            )
        else:
            console.info(
                f"baseline ({NAME}): weighted F1 {b['f1_weighted']:.4f}", baseline_f1_weighted=b["f1_weighted"]
            )
    return scored


# what the result line calls metrics.json's "test_unseen" figures
UNSEEN_NAMES = {
    "accuracy": "accuracy",
    "f1_weighted": "weighted F1",
    "f1_macro": "macro F1",
    "f1_micro": "micro-F1",
    "f1_samples": "samples-F1",
}


def unseen_record(ds, probs: np.ndarray, decision: dict | None) -> dict[str, Any]:
    """metrics.json's "test_unseen": the predictor's figures (probs [n_test, K]; decision: a multi-label predictor's
    thresholds) on the test texts that are not training texts (data.overlap.on_unseen), when some are."""

    u = on_unseen(ds, lambda rows: evaluate(ds.test_labels[rows], probs[rows], ds.label_names, decision))
    return {"test_unseen": u} if u else {}


def unseen_line(m: dict[str, Any]) -> str:
    """The result line's part for metrics.json's "test_unseen" (empty without it)."""
    u = m.get("test_unseen")
    if not u:
        return ""

    multi = m.get("task") == "multi"
    names = {**UNSEEN_NAMES, "f1_macro": "macro-F1"} if multi else UNSEEN_NAMES  # the multi-label lines' spelling
    figures = ", ".join(f"{names[k]} {u[k]:.4f}" for k in UNSEEN_KEYS[multi])
    return f"; on the {u['n']} test texts that are not training texts: {figures}"
