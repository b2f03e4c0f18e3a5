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

from reuters_ray.data.preprocess import clean_text

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


def _share(part: int, whole: int) -> str:
    """A share in percent, with a decimal below 1% (1 of 300 is 0.3%, not 0%)."""
    return f"{part / whole:.0%}" if part / whole >= 0.01 else f"{part / whole:.1%}"


def shared_test_note(ds, scored_by: str = "the run") -> str | None:
    """One warning line when test texts of TextDataset `ds` are training texts: how many, which ids, whether they
    carry their training copy's labels (a model that remembers its training texts is flattered) or others (the data
    disagrees with itself), and that the test figures count them; None when there are none. `scored_by`: who gives
    the figures on the rest."""
    shared = shared_test_rows(ds.train_texts, ds.test_texts)
    if not len(shared):
        return None
    n, same = len(ds.test_texts), len(shared) - len(_relabelled(ds, shared))
    flatters = "which flatters a model that remembers its training texts"
    other = "the data disagrees with itself"
    if same == len(shared):
        effect = f"the test figures count them as held out, {flatters}"
    elif same == 0:
        effect = f"each with other labels than its training copy ({other}); the test figures count them as held out"
    else:
        effect = (
            f"{same} with their training copy's labels ({flatters}), {len(shared) - same} with others ({other}); the "
            "test figures count them as held out"
        )
    return (
        f"warning: {len(shared)} of {n} test texts ({_share(len(shared), n)}) are also training texts (the same text "
        f"after cleaning; test ids {_ids(ds.test_ids, shared)}): {effect}; {scored_by} also scores the "
        f"{n - len(shared)} test texts that are not training texts"
    )


def _relabelled(ds, shared: np.ndarray) -> list[int]:
    """The test rows of `shared` whose label set is none of their training copies' label sets."""
    by_text: dict[str, set[tuple]] = {}
    for text, labels in zip(_cleaned(ds.train_texts), ds.label_sets("train")):
        by_text.setdefault(text, set()).add(tuple(sorted(labels)))
    test_sets, cleaned = ds.label_sets("test"), _cleaned(ds.test_texts)
    return [int(i) for i in shared if tuple(sorted(test_sets[i])) not in by_text[cleaned[i]]]


def folds_note(ds, folds: list[tuple[np.ndarray, np.ndarray]], what: str = "fold") -> str | None:
    """One warning line when a fold's validation rows hold texts of its own training rows (copies in the training
    split): how many per fold, which ids, and what is chosen on those rows; None when none does. `what`: "fold", or
    for a student "held-out slice"."""
    leaks = fold_leaks(ds.train_texts, folds)
    if not any(len(rows) for rows in leaks):
        return None
    if what == "fold":
        per = ", ".join(f"fold {k} {len(rows)} of {len(folds[k][1])}" for k, rows in enumerate(leaks))
        chosen = "the best epoch, early stopping, the blend's weight, multi-label thresholds"
    else:  # a student's held-out slice chooses no blend
        per, chosen = f"{len(leaks[0])} of {len(folds[0][1])}", "the best epoch, early stopping, multi-label thresholds"
    first = np.concatenate(leaks)
    return (
        f"warning: the {what}'s validation rows hold texts that are also its training rows ({per}; ids "
        f"{_ids(ds.train_ids, first)}): validation figures, and what is chosen on them ({chosen}), count them as held "
        "out"
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
