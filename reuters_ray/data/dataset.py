"""The one data-set type every source produces and every later stage consumes."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from reuters_ray.errors import DataError

# The table steps that drop rows, and what their note calls the rows (TextDataset.notes)
_ROWS_DROPPED = {"drop_empty_texts": "empty text(s)", "drop_unlabelled_rows": "row(s) without a label"}


@dataclass(frozen=True)
class TextDataset:
    """Texts with labels, a fixed train/test split, and where it all came from.

    Labels: single-label data, int64 [N] class indices in 0..K-1; multi-label data (data.task multi), uint8 [N, K]
    multi-hot rows (1 where the text has label k; a row may have several).

    `provenance` is a JSON-able dict: source, path or checksum, text mode, and `steps`, one entry per
    filter applied with what it removed from each split. Every report carries it.
    """

    train_texts: list[str]
    train_labels: np.ndarray  # int64 [N] in 0..len(label_names)-1, or uint8 [N, K] multi-hot
    test_texts: list[str]
    test_labels: np.ndarray
    label_names: list[str]
    train_ids: list[str]  # stable ids (Reuters NEWID, table row) for predictions and error analysis
    test_ids: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            texts, labels, ids = (getattr(self, f"{split}_{k}") for k in ("texts", "labels", "ids"))
            if not (len(texts) == len(labels) == len(ids)):
                raise ValueError(f"{split}: {len(texts)} texts, {len(labels)} labels, {len(ids)} ids")
            if labels.ndim == 2:
                if labels.shape[1] != len(self.label_names) or (len(labels) and labels.max() > 1):
                    raise ValueError(f"{split}: multi-hot labels must be [N, {len(self.label_names)}] of 0 and 1")
            elif len(labels) and (labels.min() < 0 or labels.max() >= len(self.label_names)):
                raise ValueError(f"{split}: labels outside 0..{len(self.label_names) - 1}")

    @property
    def multi_label(self) -> bool:
        """Whether the labels are multi-hot rows (data.task multi)."""
        return self.train_labels.ndim == 2

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def fingerprint(self) -> dict[str, Any]:
        """The data's identity: the SHA-256 of every text, label and id of both splits and of the label names, with
        the sizes for messages. Two data sets that train and score alike have the same one; a run resumes only on
        data with its fingerprint."""
        h = hashlib.sha256()
        for part in (self.label_names, self.train_ids, self.test_ids, self.train_texts, self.test_texts):
            h.update(json.dumps(part, ensure_ascii=False).encode())
        for labels in (self.train_labels, self.test_labels):
            if labels.ndim == 2:  # multi-hot: the shape is part of the identity (single-label hashes stay as before)
                h.update(f"multi{labels.shape}".encode())
            h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
        return {
            "sha256": h.hexdigest(),
            "train": len(self.train_texts),
            "test": len(self.test_texts),
            "classes": self.num_classes,
        }

    def counts(self, split: str) -> np.ndarray:
        """Examples per class in `split` ("train" or "test"): for multi-label data, each label's positives."""
        labels = getattr(self, f"{split}_labels")
        if labels.ndim == 2:
            return labels.sum(axis=0, dtype=np.int64)
        return np.bincount(labels, minlength=self.num_classes)

    def label_sets(self, split: str) -> list[list[str]]:
        """Each text's label names in `split`, in label order (a list of one for single-label data)."""
        labels = getattr(self, f"{split}_labels")
        if labels.ndim == 1:
            return [[self.label_names[i]] for i in labels]
        return [[self.label_names[k] for k in np.flatnonzero(row)] for row in labels]

    def with_step(self, name: str, params: dict[str, Any], removed: dict[str, int], **changes: Any) -> TextDataset:
        """A copy with `changes` applied and the step recorded in provenance (the original is untouched)."""
        prov = copy.deepcopy(self.provenance)
        after = {s: len(changes.get(f"{s}_texts", getattr(self, f"{s}_texts"))) for s in ("train", "test")}
        prov.setdefault("steps", []).append({"step": name, "params": params, "removed": removed, "after": after})
        return replace(self, provenance=prov, **changes)

    def notes(self) -> list[str]:
        """What loading and preprocessing did that a person should read first, one line each: how a table was read,
        what its labels look like and what a source's task rule does to the labels (provenance "notes": a Reuters wire
        labelled by its first topic), each class dropped by data.min_samples with its training count and the texts it
        takes along, empty texts and rows without a label of a table with their rows, short texts with their ids, the
        texts a sample leaves out, and for multi-label data the topics without a test text and the texts left without
        any kept topic, with why. Each line that drops or relabels names the setting that keeps them, where one does."""
        lines = list(self.provenance.get("notes", []))
        for step in self.provenance.get("steps", []):
            params = step["params"]
            if step["step"] == "filter_rare_classes" and params.get("dropped_classes"):
                dropped = params["dropped_classes"]
                listed = ", ".join(f"{d['name']} ({d['train']})" for d in dropped)
                multi = "rows_without_kept_topic" in params  # its texts have a line of their own, below
                removed = step["removed"]
                what = "training positives" if multi else "training examples"
                texts = "" if multi else f" and their {removed['train']} training and {removed['test']} test texts"
                lines.append(
                    f"dropped {len(dropped)} class(es) with fewer than data.min_samples={params['min_samples']} "
                    f"{what}{texts} (training count in brackets): {listed}"
                )
            elif step["step"] == "drop_topics_without_test_wire" and params.get("dropped_classes"):
                dropped = params["dropped_classes"]
                listed = ", ".join(f"{d['name']} ({d['train']})" for d in dropped)
                lines.append(
                    f"dropped {len(dropped)} topic(s) without a test text (training count in brackets): {listed}"
                )
            elif step["step"] == "drop_topics_without_training_text" and params.get("dropped_classes"):
                dropped = params["dropped_classes"]
                listed = ", ".join(f"{d['name']} ({d['test']})" for d in dropped)
                lines.append(
                    f"dropped {len(dropped)} topic(s) left without a training text by data.train_sample="
                    f"{params['train_sample']} (test count in brackets): {listed}"
                )
            elif step["step"] in _ROWS_DROPPED and sum(step["removed"].values()):
                for file, rows in params["rows"].items():
                    if rows:
                        shown = ", ".join(map(str, rows[:20])) + (" ..." if len(rows) > 20 else "")
                        lines.append(
                            f"warning: {file}: dropped {len(rows)} {_ROWS_DROPPED[step['step']]} in column "
                            f"{params['column']!r}, data rows {shown}"
                        )
            elif step["step"] == "drop_short_texts" and sum(step["removed"].values()):
                ids = params.get("ids", {})
                listed = [i for split in ("train", "test") for i in ids.get(split, [])]
                shown = ", ".join(listed[:20]) + (" ..." if len(listed) > 20 else "")
                lines.append(
                    f"warning: dropped {sum(step['removed'].values())} text(s) with fewer than data.min_tokens="
                    f"{params['min_tokens']} words (train {step['removed']['train']}, test {step['removed']['test']})"
                    + (f": ids {shown}" if shown else "")
                )
            elif step["step"] == "subsample" and sum(step["removed"].values()):
                lines.append(_sample_note(step))
            gone = params.get("rows_without_kept_topic", {})  # multi-label data: texts whose every topic was dropped
            if sum(gone.values()):
                lines.append(
                    f"dropped {sum(gone.values())} text(s) without any kept topic at {step['step']} "
                    f"(train {gone['train']}, test {gone['test']}): {_why_no_topic(step)}"
                )
        return lines

    def check_folds(self, n_folds: int) -> None:
        """Raises DataError unless every class has at least `n_folds` training examples (stratified k-fold). For
        multi-label data only the texts are counted: a topic with fewer positives than folds is absent from some
        folds' validation rows, which the iterative stratification accepts."""
        if n_folds < 2:
            raise DataError(f"folds must be at least 2, got {n_folds}")
        if self.multi_label:  # rare topics are spread over the folds as far as they go (iterative stratification)
            if len(self.train_texts) < n_folds:
                raise DataError(f"{n_folds}-fold cross-validation needs at least {n_folds} training texts")
            return
        counts = self.counts("train")
        short = [(self.label_names[k], int(c)) for k, c in enumerate(counts) if c < n_folds]
        if short:
            listed = ", ".join(f"{name!r} ({c})" for name, c in short)
            raise DataError(
                f"{n_folds}-fold cross-validation needs at least {n_folds} training examples per class; "
                f"too few in: {listed}. Lower the number of folds or raise data.min_samples."
            )


def _why_no_topic(step: dict) -> str:
    """Why the texts a multi-label step dropped were left without a topic, and the setting that would keep them."""
    params, gone = step["params"], step["params"]["rows_without_kept_topic"]
    if step["step"] == "drop_topics_without_test_wire":
        return "each of their topics lacks a test text (ModApte-90's rule)"
    if step["step"] == "drop_topics_without_training_text":
        return f"each of their topics lacks a text in the sample of data.train_sample={params['train_sample']}"
    none = sum(params.get("rows_without_any_topic", {}).values())
    lost = sum(gone.values()) - none
    below = f"only topics below data.min_samples={params['min_samples']} (a lower value keeps them)"
    if not lost:
        return "they have no topic at all"
    return below if not none else f"{none} with no topic at all, {lost} with {below}"


def _sample_note(step: dict) -> str:
    """The line that says what data.train_sample / data.test_sample left out (step "subsample")."""
    params, removed, after = step["params"], step["removed"], step["after"]
    parts = [
        f"{after[s]} of {after[s] + removed[s]} {word} texts (data.{s}_sample={params[s]})"
        for s, word in (("train", "training"), ("test", "test"))
        if removed[s]
    ]
    return f"kept a stratified sample of {' and '.join(parts)}, seeded by data.split_seed; unset keeps every text"
