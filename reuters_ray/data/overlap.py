"""The same text on both sides of a split: test texts that are training texts, a fold's validation rows whose text
is among its training rows, copies inside the training split. Texts are compared after the run's own cleaning
(preprocess.clean_text: lowercase, Keras's markers gone, whitespace collapsed), exactly: near-copies are not counted.

A test text the model trained on measures memory, not generalisation: on a table of 150 texts with random labels,
written twice each, the linear baseline scored 0.80 instead of chance (0.43), with 46 of its 60 test texts among
the training texts (issue 41). Nothing is dropped here: every command that splits or reads a test file names the
copies in its first lines (overlap_notes), and the test figures are given again on the test texts that are not
training texts (unseen_rows; metrics.json "test_unseen").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from reuters_ray.preprocess import clean_text

SHOWN_IDS = 10  # ids named in a line; the rest counted


def _cleaned(texts: Sequence[str]) -> list[str]:
    return [clean_text(t) for t in texts]


def shared_test_rows(train_texts: Sequence[str], test_texts: Sequence[str]) -> np.ndarray:
    """int64 [M]: the test rows whose text (cleaned) is also a training text, in test order."""
    seen = set(_cleaned(train_texts))
    return np.array([i for i, t in enumerate(_cleaned(test_texts)) if t in seen], dtype=np.int64)


def unseen_rows(ds) -> np.ndarray:
    """int64: the test rows of TextDataset `ds` whose text is not a training text (the held-out part of the test
    split)."""
    shared = set(shared_test_rows(ds.train_texts, ds.test_texts).tolist())
    return np.array([i for i in range(len(ds.test_texts)) if i not in shared], dtype=np.int64)


# the figures given again on the test texts that are not training texts (metrics.json "test_unseen"), by task
UNSEEN_KEYS = {False: ("accuracy", "f1_weighted", "f1_macro"), True: ("f1_micro", "f1_macro", "f1_samples")}


def on_unseen(ds, evaluate) -> dict | None:
    """{"n": the test texts of TextDataset `ds` that are not training texts, "shared_with_training": the others, and
    UNSEEN_KEYS' figures of evaluate(rows)} (`evaluate`: test rows -> a metrics dict); None when no test text is a
    training text (the figures are the test split's own) or every one is."""
    rows = unseen_rows(ds)
    if len(rows) in (0, len(ds.test_texts)):
        return None
    m = evaluate(rows)
    shared = len(ds.test_texts) - len(rows)
    return {"n": int(len(rows)), "shared_with_training": shared, **{k: m[k] for k in UNSEEN_KEYS[ds.multi_label]}}


def fold_leaks(texts: Sequence[str], folds: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """For each fold (train rows, validation rows) of `texts`: the validation rows whose text (cleaned) is also
    among that fold's training rows."""
    cleaned = _cleaned(texts)
    out = []
    for train_idx, val_idx in folds:
        seen = {cleaned[i] for i in train_idx}
        out.append(np.array([i for i in val_idx if cleaned[i] in seen], dtype=np.int64))
    return out


def repeated_rows(texts: Sequence[str]) -> np.ndarray:
    """int64: the rows whose text (cleaned) is a copy of an earlier row's."""
    seen: set[str] = set()
    rows = []
    for i, t in enumerate(_cleaned(texts)):
        if t in seen:
            rows.append(i)
        seen.add(t)
    return np.array(rows, dtype=np.int64)


def _ids(ids: Sequence[str], rows) -> str:
    rows = list(rows)
    listed = ", ".join(str(ids[i]) for i in rows[:SHOWN_IDS])
    return listed + (f" and {len(rows) - SHOWN_IDS} more" if len(rows) > SHOWN_IDS else "")


def shared_test_note(ds, scored_by: str = "the run") -> str | None:
    """One warning line when test texts of TextDataset `ds` are training texts: how many, which ids, and what it does
    to the test figures; None when there are none. `scored_by`: who gives the figures on the rest."""
    shared = shared_test_rows(ds.train_texts, ds.test_texts)
    if not len(shared):
        return None
    n = len(ds.test_texts)
    return (
        f"warning: {len(shared)} of {n} test texts ({len(shared) / n:.0%}) are also training texts (the same text "
        f"after cleaning; test ids {_ids(ds.test_ids, shared)}): the test figures count them as held out, which "
        f"flatters a model that remembers its training texts; {scored_by} also scores the {n - len(shared)} test "
        f"texts that are not training texts"
    )


def folds_note(ds, folds: list[tuple[np.ndarray, np.ndarray]], what: str = "fold") -> str | None:
    """One warning line when a fold's validation rows hold texts of its own training rows (copies in the training
    split): how many per fold, which ids, and what is chosen on those rows; None when none does. `what`: "fold", or
    for a student "held-out slice"."""
    leaks = fold_leaks(ds.train_texts, folds)
    if not any(len(rows) for rows in leaks):
        return None
    if what == "fold":
        per = ", ".join(f"fold {k} {len(rows)} of {len(folds[k][1])}" for k, rows in enumerate(leaks))
    else:
        per = f"{len(leaks[0])} of {len(folds[0][1])}"
    first = np.concatenate(leaks)
    return (
        f"warning: the {what}'s validation rows hold texts that are also its training rows ({per}; ids "
        f"{_ids(ds.train_ids, first)}): validation figures, and what is chosen on them (the best epoch, early "
        f"stopping, the blend's weight, multi-label thresholds), count them as held out"
    )


def overlap_notes(ds, folds: list[tuple[np.ndarray, np.ndarray]] | None = None, scored_by: str = "the run") -> list:
    """The warning lines of shared_test_note and, with `folds`, folds_note; without folds, a line for copies inside the
    training split (k-fold validation rows may then hold copies of their fold's training rows)."""
    notes = [shared_test_note(ds, scored_by)]
    if folds is not None:
        notes.append(folds_note(ds, folds))
    elif len(copies := repeated_rows(ds.train_texts)):
        distinct = len(Counter(_cleaned(ds.train_texts[i] for i in copies)))
        notes.append(
            f"warning: {len(copies)} training texts are copies of another training text ({distinct} texts written "
            f"more than once, after cleaning; ids {_ids(ds.train_ids, copies)}): a fold's validation rows may hold "
            "copies of its training rows"
        )
    return [n for n in notes if n]
