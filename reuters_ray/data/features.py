"""Features computed once on the driver: class weights and token arrays for the object store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def class_weights(labels: np.ndarray, num_classes: int, clip: tuple[float, float] = (0.01, 10.0)) -> np.ndarray:
    """Inverse class frequency, normalised to mean 1, clipped to `clip`, normalised again (float32).

    On the seed's 18 Reuters classes this gives its printed weights (2.21, 0.28, ..., 2.43); the clip
    only bites on far more skewed data, where one tiny class would otherwise dominate the loss.
    Multi-hot labels [N, K] (data.task multi): the topics' positive weights (loss.focal_loss_multilabel), inverse
    positive frequency relative to the most frequent topic, clipped to [1, clip[1]]: a positive never counts less
    than a negative. (Normalised to mean 1 as above, ModApte's frequent topics got 0.01 and the quick multi-label
    run's folds learned to answer no topic at all, every text alike.)
    """
    if labels.ndim == 2:
        counts = labels.sum(axis=0).astype(np.float64)
        if (counts == 0).any():
            raise ValueError(f"topics {np.flatnonzero(counts == 0).tolist()} have no training positives")
        return np.clip(counts.max() / counts, 1.0, clip[1]).astype(np.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"classes {missing} have no training examples: no weight can be computed")
    w = 1.0 / counts
    w = np.clip(w / w.mean(), *clip)
    return (w / w.mean()).astype(np.float32)


@dataclass(frozen=True)
class TokenArrays:
    """Token ids of N texts as one padded [N, max_length] array plus true lengths.

    uint16 ids when the vocabulary fits (BERT's 30,522 does): about 0.6 KB per text at length 300, and
    plain numpy arrays, so Ray's object store shares them zero-copy with every worker.
    """

    ids: np.ndarray  # [N, max_length], pad_id after each text's length
    lengths: np.ndarray  # [N] int32, [CLS] and [SEP] included
    pad_id: int

    def __len__(self) -> int:
        return len(self.lengths)


def tokenize(texts: list[str], tokenizer, max_length: int = 300, batch_size: int = 1024) -> TokenArrays:
    """Tokenizes all `texts` once, in batches (the fast tokenizer parallelises each batch), truncating
    to `max_length` tokens including [CLS] and [SEP]."""
    if max_length <= 2:
        raise ValueError(f"max_length must be > 2 (room for [CLS] and [SEP]), got {max_length}")
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    pad_id = tokenizer.pad_token_id or 0
    ids = np.full((len(texts), max_length), pad_id, dtype=dtype)
    lengths = np.zeros(len(texts), dtype=np.int32)
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        for i, row in enumerate(enc, start):
            ids[i, : len(row)] = row
            lengths[i] = len(row)
    return TokenArrays(ids=ids, lengths=lengths, pad_id=pad_id)


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) of each of `n_folds` stratified, shuffled, seeded folds. Multi-hot labels
    [N, K]: iterative stratification (Sechidis et al. 2011; iterative-stratification's MultilabelStratifiedKFold),
    which keeps each topic's positives per fold as even as the label sets allow."""
    if labels.ndim == 2:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        return [(tr.astype(np.int64), va.astype(np.int64)) for tr, va in splitter.split(np.zeros(len(labels)), labels)]
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr.astype(np.int64), va.astype(np.int64)) for tr, va in splitter.split(np.zeros(len(labels)), labels)]
