"""The baseline a user would otherwise pick: TF-IDF word uni- and bigrams + a linear SVM (scikit-learn).

Fitted on the same (preprocessed, sampled) training split the folds share, scored on the same test split, so
its row stands beside the ensemble's in the report.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

NAME = "TF-IDF (word 1-2 grams, sublinear tf) + LinearSVC (C=1, balanced class weights)"


def tfidf_svm_scores(
    train_texts: list[str], train_labels: np.ndarray, test_texts: list[str], num_classes: int
) -> np.ndarray:
    """[N_test, K] decision scores (argmax = the prediction) of the baseline fitted on the training split."""
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True),
        LinearSVC(C=1.0, class_weight="balanced"),  # balanced, as the model's focal loss weights classes
    )
    model.fit(train_texts, train_labels)
    scores = model.decision_function(test_texts)
    if scores.ndim == 1:  # two classes: one column, positive means the second
        scores = np.stack([-scores, scores], axis=1)
    out = np.full((len(test_texts), num_classes), -np.inf, dtype=np.float64)
    out[:, model.classes_] = scores  # classes absent from training can never be predicted
    return out


def run_baseline(ds) -> dict[str, Any]:
    """Metrics of the baseline on dataset `ds` (a TextDataset after preprocessing), as metrics.evaluate_scores."""
    from reuters_ray.metrics import evaluate_scores

    t0 = time.perf_counter()
    scores = tfidf_svm_scores(ds.train_texts, ds.train_labels, ds.test_texts, ds.num_classes)
    return {"name": NAME, **evaluate_scores(ds.test_labels, scores, ds.label_names), "fit_s": time.perf_counter() - t0}
