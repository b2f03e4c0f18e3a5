"""The baseline a user would otherwise pick: TF-IDF word uni- and bigrams + a linear SVM (scikit-learn).

Fitted on the same (preprocessed, sampled) training split the folds share, scored on the same test split, so
its row stands beside the ensemble's in the report. Inside the CV it is also fitted on each fold's training rows,
which gives its out-of-fold scores: they calibrate its probabilities (one softmax temperature) and choose the
blend's weight (reuters_ray.scoring.blend) without touching the test split.

Multi-label data (multi-hot labels [N, K]): one binary linear SVM per topic (one-vs-rest, the classic
text-categorization SVM of Joachims 1998 and Yang & Liu 1999; balanced class weights as for single-label data: on
ModApte-90 micro-F1 0.867 against 0.840 unbalanced, macro-F1 0.423 against 0.331, docs/results.md), probabilities sigmoid(a * score + b) with one (a, b)
for every topic fitted on the out-of-fold scores (Platt 1999), and the baseline's own decisions score >= 0.

A fitted model is plain arrays (vocabulary, idf, coefficients, intercepts, temperature) saved as safetensors and
JSON: loading it never unpickles, and it scores texts exactly as the scikit-learn pipeline it came from.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from reuters_ray.data.overlap import on_unseen
from reuters_ray.errors import DataError
from reuters_ray.scoring.metrics import evaluate_scores, log_loss, softmax
from reuters_ray.scoring.multilabel import evaluate_multilabel, sigmoid

NAME = "TF-IDF (word 1-2 grams, sublinear tf) + LinearSVC (C=1, balanced class weights)"
NAME_MULTI = "TF-IDF (word 1-2 grams, sublinear tf) + one LinearSVC per topic (C=1, balanced class weights), decisions score >= 0"
FORMAT = "reuters-ray-linear/1"  # written into the safetensors header; anything else is refused on load
WEIGHTS_FILE, VOCABULARY_FILE = "model.safetensors", "vocabulary.json"
NGRAMS = (1, 2)


@dataclass
class LinearModel:
    """TF-IDF + one-vs-rest linear SVM as arrays. Row r of `coef` scores label `classes[r]`; labels absent from
    the training rows score -inf (never predicted, probability 0)."""

    vocabulary: list[str]  # the term of each TF-IDF column
    idf: np.ndarray  # [V] float64
    coef: np.ndarray  # [C, V] float64
    intercept: np.ndarray  # [C] float64
    classes: np.ndarray  # [C] int64, label indices
    num_classes: int
    temperature: float = 1.0  # probabilities = softmax(scores / temperature); fitted on out-of-fold scores
    multi_label: bool = False  # one binary SVM per topic; probabilities sigmoid(scores / temperature + bias)
    bias: float = 0.0  # multi-label only: Platt's b (temperature is 1 / Platt's a)
    _counter: CountVectorizer | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(cls, texts: list[str], labels: np.ndarray, num_classes: int) -> LinearModel:
        vec = TfidfVectorizer(ngram_range=NGRAMS, min_df=2, sublinear_tf=True, lowercase=True)
        x = vec.fit_transform(texts)
        if labels.ndim == 2:
            return cls._fit_topics(vec, x, labels)
        # Balanced, as the model's focal loss weights classes; seeded, since liblinear shuffles the rows.
        svm = LinearSVC(C=1.0, class_weight="balanced", random_state=0).fit(x, labels)
        coef, intercept = svm.coef_, svm.intercept_
        if len(svm.classes_) == 2:  # one row, positive means the second class: make it one row per class
            coef, intercept = np.vstack([-coef, coef]), np.array([-intercept[0], intercept[0]])
        return cls(
            vocabulary=vec.get_feature_names_out().tolist(),
            idf=vec.idf_.astype(np.float64),
            coef=coef.astype(np.float64),
            intercept=intercept.astype(np.float64),
            classes=svm.classes_.astype(np.int64),
            num_classes=num_classes,
        )

    @classmethod
    def _fit_topics(cls, vec, x, labels: np.ndarray) -> LinearModel:
        """One binary SVM per topic of multi-hot `labels`; a topic without positives (or negatives) in these rows
        gets a constant score of -1 (or +1)."""
        k = labels.shape[1]
        coef, intercept = np.zeros((k, x.shape[1])), np.zeros(k)
        for j in range(k):
            y = labels[:, j]
            if 0 < y.sum() < len(y):
                # 5000 iterations: liblinear stops short of converging at its default 1000 on the rarest topics
                svm = LinearSVC(C=1.0, class_weight="balanced", random_state=0, max_iter=5000).fit(x, y)
                coef[j], intercept[j] = svm.coef_[0], svm.intercept_[0]
            else:
                intercept[j] = 1.0 if y.sum() else -1.0
        return cls(
            vocabulary=vec.get_feature_names_out().tolist(),
            idf=vec.idf_.astype(np.float64),
            coef=coef,
            intercept=intercept,
            classes=np.arange(k, dtype=np.int64),
            num_classes=k,
            multi_label=True,
        )

    def features(self, texts: list[str]):
        """TfidfVectorizer's transform, from the arrays: counts of known terms, 1 + log(tf), times idf, L2-normed."""
        if self._counter is None:  # built once: the vocabulary dict of a full run has ~10^5 terms
            vocabulary = {t: i for i, t in enumerate(self.vocabulary)}
            self._counter = CountVectorizer(ngram_range=NGRAMS, lowercase=True, vocabulary=vocabulary)
        x = self._counter.transform(texts).astype(np.float64)
        x.data = np.log(x.data) + 1.0
        return normalize(x.multiply(self.idf).tocsr())

    def scores(self, texts: list[str]) -> np.ndarray:
        """[N, K] decision values (argmax = the prediction); -inf for labels the model never saw."""
        out = np.full((len(texts), self.num_classes), -np.inf, dtype=np.float64)
        out[:, self.classes] = self.features(texts) @ self.coef.T + self.intercept
        return out

    def proba_of_scores(self, scores: np.ndarray) -> np.ndarray:
        if self.multi_label:
            return sigmoid(scores / self.temperature + self.bias)
        return softmax(scores / self.temperature)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """[N, K] calibrated class probabilities (multi-label: each topic's own probability)."""
        return self.proba_of_scores(self.scores(texts))

    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / VOCABULARY_FILE).write_text(json.dumps(self.vocabulary))
        arrays = {"idf": self.idf, "coef": self.coef, "intercept": self.intercept, "classes": self.classes}
        meta = {"format": FORMAT, "num_classes": str(self.num_classes), "temperature": repr(self.temperature)}
        if self.multi_label:
            meta.update(task="multi", bias=repr(self.bias))
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / WEIGHTS_FILE), metadata=meta)

    @classmethod
    def load(cls, folder: str | Path) -> LinearModel:
        """The model saved in `folder`. Raises DataError naming the file when one is missing, damaged, or not a
        reuters-ray linear model."""
        from safetensors import safe_open

        folder = Path(folder)
        weights, vocab_file = folder / WEIGHTS_FILE, folder / VOCABULARY_FILE
        try:
            with safe_open(str(weights), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise DataError(f"{weights}: not a reuters-ray linear model (format {meta.get('format')!r})")
                arrays = {k: f.get_tensor(k) for k in ("idf", "coef", "intercept", "classes")}
                num_classes, temperature = int(meta["num_classes"]), float(meta["temperature"])
                multi_label, bias = meta.get("task") == "multi", float(meta.get("bias", 0.0))
        except DataError:
            raise
        except Exception as e:  # safetensors' own error, a missing tensor or header key, an unreadable file
            raise DataError(
                f"{weights}: cannot be read as a reuters-ray linear model ({type(e).__name__}: {e})"
            ) from None
        try:
            vocabulary = json.loads(vocab_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{vocab_file}: cannot be read ({e})") from None
        v, (c, cv) = len(vocabulary) if isinstance(vocabulary, list) else -1, arrays["coef"].shape
        ok = (
            v == cv == arrays["idf"].shape[0]
            and arrays["intercept"].shape == arrays["classes"].shape == (c,)
            and all(isinstance(t, str) for t in vocabulary)
            and ((arrays["classes"] >= 0) & (arrays["classes"] < num_classes)).all()
            and temperature > 0
        )
        if not ok:
            raise DataError(f"{folder}: {WEIGHTS_FILE} and {VOCABULARY_FILE} do not fit together")
        return cls(
            vocabulary, num_classes=num_classes, temperature=temperature, multi_label=multi_label, bias=bias, **arrays
        )


def check_fittable(texts: list[str], folds: list[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
    """Raises DataError unless the model can be fitted on `texts` and on each fold's training rows: TF-IDF needs a
    term (a word of 2+ characters: scikit-learn's token pattern) in at least 2 texts (min_df), or its vocabulary is
    empty. Stops at the first such term, so usual data costs a few texts."""
    analyze = CountVectorizer(lowercase=True).build_analyzer()  # TfidfVectorizer's tokens, its unigrams alone

    def shared_term(rows) -> bool:  # a bigram in 2 texts has its words in them too: unigrams suffice
        seen: set[str] = set()
        for i in rows:
            terms = set(analyze(texts[i]))
            if seen & terms:
                return True
            seen |= terms
        return False

    parts = [("the training split", range(len(texts)))]
    parts += [(f"fold {k}'s training rows", train_idx) for k, (train_idx, _) in enumerate(folds or [])]
    for where, rows in parts:
        if not shared_term(rows):
            raise DataError(
                f"the linear model ({NAME}) cannot be fitted on {where}: no word of 2 or more characters occurs in 2 "
                f"or more texts (texts of one-character codes give TF-IDF no terms)"
            )


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature that minimises the log loss of `scores` (out-of-fold decision values): one number,
    so the ranking of classes (the prediction) never changes."""

    def nll(log_t: float) -> float:
        return log_loss(labels, softmax(scores / np.exp(log_t)))

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(1e-3), np.log(1e3)), method="bounded").x))


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(temperature, bias) of sigmoid(scores / temperature + bias) fitted on every topic's out-of-fold scores at once
    (Platt scaling; scikit-learn's logistic regression on the one feature, nearly unregularised)."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6).fit(scores.reshape(-1, 1), labels.reshape(-1))
    a = max(float(lr.coef_[0, 0]), 1e-6)  # the SVM's scores rank topics: a must stay positive
    return 1.0 / a, float(lr.intercept_[0])


def out_of_fold_scores(
    texts: list[str], labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], num_classes: int
) -> np.ndarray:
    """[N, K] decision values of every text by the model fitted on the training rows of the fold that validates on
    it (deterministic: liblinear is seeded). fit_cv's, and what a student's teacher targets are rebuilt from."""
    oof = np.full((len(texts), num_classes), np.nan)
    for train_idx, val_idx in folds:
        fold_model = LinearModel.fit([texts[i] for i in train_idx], labels[train_idx], num_classes)
        oof[val_idx] = fold_model.scores([texts[i] for i in val_idx])
    return oof


def fit_cv(
    texts: list[str], labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], num_classes: int
) -> tuple[LinearModel, np.ndarray]:
    """The model fitted on all of `texts`, calibrated on the out-of-fold scores of one model per fold (fitted on
    that fold's training rows, scoring its validation rows); returns (model, out-of-fold scores [N, K])."""
    oof = out_of_fold_scores(texts, labels, folds, num_classes)
    model = LinearModel.fit(texts, labels, num_classes)
    if model.multi_label:
        model.temperature, model.bias = fit_platt(oof, labels)
    else:
        model.temperature = fit_temperature(oof, labels)
    return model, oof


def baseline_metrics(ds, scores: np.ndarray) -> dict[str, Any]:
    """The baseline's row of metrics.json: its name and metrics.evaluate_scores of its test `scores` (multi-label:
    multilabel.evaluate_multilabel of its own decisions, score >= 0 on each topic)."""

    def evaluate(rows) -> dict[str, Any]:
        y, s = ds.test_labels[rows], scores[rows]
        return (
            evaluate_multilabel(y, sigmoid(s), ds.label_names)
            if ds.multi_label
            else evaluate_scores(y, s, ds.label_names)
        )

    unseen = on_unseen(ds, evaluate)
    name = NAME_MULTI if ds.multi_label else NAME
    return {"name": name, **evaluate(np.arange(len(ds.test_texts))), **({"test_unseen": unseen} if unseen else {})}


def run_baseline(ds) -> dict[str, Any]:
    """Metrics of the baseline fitted on dataset `ds` (a TextDataset after preprocessing), with its time. Raises
    DataError when it cannot be fitted (check_fittable)."""
    check_fittable(ds.train_texts)
    t0 = time.perf_counter()
    scores = LinearModel.fit(ds.train_texts, ds.train_labels, ds.num_classes).scores(ds.test_texts)
    return {**baseline_metrics(ds, scores), "fit_s": time.perf_counter() - t0}
