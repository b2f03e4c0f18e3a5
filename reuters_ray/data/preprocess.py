"""The seed's preprocessing (its section 2) as named steps, each recorded in the data set's provenance.

    filter_rare_classes  drop classes with < min_samples TRAINING examples; relabel 0..K-1 keeping names
    clean_texts          lowercase, remove [START] [UNK] [PAD] [UNUSED], collapse whitespace
    drop_short_texts     drop texts with < min_tokens words (after cleaning; count_words)

`preprocess` runs the three in that order, as the seed did.

Multi-label data (uint8 [N, K] multi-hot labels, data.task multi): a class is a topic (a column). filter_rare_classes
drops the topics with fewer than min_samples training POSITIVES, then the texts left without any kept topic (counted
per split); for data whose provenance says "topics_need_test_wire" (the ModApte split of reuters21578),
drop_topics_without_test_wire then drops the topics without a single test positive the same way (ModApte-90: the
topics with at least one training and one test wire). `subsample` stratifies multi-hot labels iteratively.
"""

from __future__ import annotations

import re

import numpy as np

from reuters_ray.config import DataConfig
from reuters_ray.data import load_dataset
from reuters_ray.data.dataset import TextDataset
from reuters_ray.errors import DataError

TOKEN_ARTIFACTS = re.compile(r"\[(?:start|unk|pad|unused)\]", re.I)
WHITESPACE = re.compile(r"\s+")
# Scripts written without spaces between words: Thai, Lao, Tibetan, Myanmar, Khmer, kana, CJK ideographs (and their
# compatibility forms, half-width katakana, the supplementary planes' ideographs). BERT's tokenizer splits each
# CJK character off on its own; the others have no spaces to split at.
_NO_SPACE = (
    "\u0e00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_WORD = re.compile(f"[{_NO_SPACE}]|[^\\s{_NO_SPACE}]+")


def count_words(text: str) -> int:
    """Words in `text`: whitespace-separated tokens (the seed's count), except that each character of a script
    written without spaces counts as one ("Oil 价格上涨" is 5: Oil, 价, 格, 上, 涨)."""
    return len(_WORD.findall(text))


def clean_text(text: str) -> str:
    """Lowercase, strip Keras's marker tokens, collapse whitespace. Punctuation and numbers stay (seed 2.2)."""
    return WHITESPACE.sub(" ", TOKEN_ARTIFACTS.sub(" ", text.lower())).strip()


def _keep(ds: TextDataset, keep: dict[str, np.ndarray]) -> dict:
    """The per-split fields of `ds` restricted to the boolean masks in `keep`."""
    out = {}
    for split, mask in keep.items():
        idx = np.flatnonzero(mask)
        out[f"{split}_texts"] = [getattr(ds, f"{split}_texts")[i] for i in idx]
        out[f"{split}_labels"] = getattr(ds, f"{split}_labels")[idx]
        out[f"{split}_ids"] = [getattr(ds, f"{split}_ids")[i] for i in idx]
    return out


def filter_rare_classes(ds: TextDataset, min_samples: int = 50) -> TextDataset:
    """Drops classes with fewer than `min_samples` training examples from both splits, then relabels the
    kept classes 0..K-1 in their original order, keeping their names. Multi-label data: drops the topics with fewer
    than `min_samples` training positives, then the texts left without any kept topic."""
    counts = ds.counts("train")
    kept = np.flatnonzero(counts >= min_samples)
    if len(kept) < 2:
        raise DataError(
            f"data.min_samples={min_samples} leaves {len(kept)} class(es) with enough training examples; "
            f"a classifier needs at least 2 (largest class has {int(counts.max()) if len(counts) else 0})"
        )
    params = {"min_samples": min_samples, "classes_before": ds.num_classes, "classes_after": len(kept)}
    if ds.multi_label:
        return _keep_topics(ds, kept, "filter_rare_classes", params)
    remap = np.full(ds.num_classes, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    masks = {s: remap[getattr(ds, f"{s}_labels")] >= 0 for s in ("train", "test")}
    fields = _keep(ds, masks)
    for s in ("train", "test"):
        fields[f"{s}_labels"] = remap[fields[f"{s}_labels"]]
    removed = {s: int((~m).sum()) for s, m in masks.items()}
    return ds.with_step(
        "filter_rare_classes",
        {**params, "dropped_classes": _dropped(ds, kept)},
        removed,
        label_names=[ds.label_names[k] for k in kept],
        **fields,
    )


def _dropped(ds: TextDataset, kept: np.ndarray) -> list[dict]:
    """Each class of `ds` not in `kept`, with its training and test counts (positives for multi-label data)."""
    train, test = ds.counts("train"), ds.counts("test")
    gone = sorted(set(range(ds.num_classes)) - set(kept.tolist()))
    return [{"name": ds.label_names[k], "train": int(train[k]), "test": int(test[k])} for k in gone]


def _keep_topics(ds: TextDataset, kept: np.ndarray, step: str, params: dict) -> TextDataset:
    """Multi-label data restricted to the topics (columns) `kept`, then to the texts that still have one of them; the
    step records the dropped topics and, per split, the texts left without a kept topic, and of those the ones that
    had no topic to begin with (ModApte's wires without topics: no setting keeps them)."""
    cols = {s: getattr(ds, f"{s}_labels")[:, kept] for s in ("train", "test")}
    masks = {s: c.any(axis=1) for s, c in cols.items()}
    none = {s: int((~getattr(ds, f"{s}_labels").any(axis=1)).sum()) for s in ("train", "test")}
    fields = _keep(ds, masks)
    for s in ("train", "test"):
        fields[f"{s}_labels"] = np.ascontiguousarray(cols[s][masks[s]])
    removed = {s: int((~m).sum()) for s, m in masks.items()}
    params = {
        **params,
        "dropped_classes": _dropped(ds, kept),
        "rows_without_kept_topic": removed,
        "rows_without_any_topic": none,
    }
    return ds.with_step(step, params, removed, label_names=[ds.label_names[k] for k in kept], **fields)


def drop_topics_without_test_wire(ds: TextDataset) -> TextDataset:
    """Multi-label data: drops the topics without a single test positive, then the texts left without any kept topic
    (the ModApte-90 rule: a topic needs at least one training and one test wire; data.min_samples covers training).
    A topic that is never tested has no recall or F1 to report. Single-label data is returned unchanged."""
    if not ds.multi_label:
        return ds
    counts = ds.counts("test")
    kept = np.flatnonzero(counts >= 1)
    if len(kept) < 2:
        raise DataError(f"only {len(kept)} topic(s) have a test text; a classifier needs at least 2")
    params = {"min_test_positives": 1, "classes_before": ds.num_classes, "classes_after": len(kept)}
    return _keep_topics(ds, kept, "drop_topics_without_test_wire", params)


def clean_texts(ds: TextDataset) -> TextDataset:
    """Applies clean_text to every text (removes no examples)."""
    return ds.with_step(
        "clean_texts",
        {"lowercase": True, "removed_tokens": ["[START]", "[UNK]", "[PAD]", "[UNUSED]"], "collapse_whitespace": True},
        {"train": 0, "test": 0},
        train_texts=[clean_text(t) for t in ds.train_texts],
        test_texts=[clean_text(t) for t in ds.test_texts],
    )


def drop_short_texts(ds: TextDataset, min_tokens: int = 3) -> TextDataset:
    """Drops examples whose text has fewer than `min_tokens` words (count_words); their ids are recorded."""
    masks = {
        s: np.array([count_words(t) >= min_tokens for t in getattr(ds, f"{s}_texts")], dtype=bool)
        for s in ("train", "test")
    }
    removed = {s: int((~m).sum()) for s, m in masks.items()}
    ids = {s: [getattr(ds, f"{s}_ids")[i] for i in np.flatnonzero(~m)] for s, m in masks.items()}
    params = {"min_tokens": min_tokens, "unit": "words (a character in scripts without spaces)", "ids": ids}
    out = ds.with_step("drop_short_texts", params, removed, **_keep(ds, masks))
    missing = [ds.label_names[k] for k in range(ds.num_classes) if out.counts("train")[k] == 0]
    if missing:
        raise DataError(f"data.min_tokens={min_tokens} removes every training example of: {', '.join(missing)}")
    return out


def preprocess(ds: TextDataset, min_samples: int = 50, min_tokens: int = 3) -> TextDataset:
    """The seed's pipeline: filter_rare_classes -> clean_texts -> drop_short_texts; for multi-label data whose
    provenance asks for it (ModApte), drop_topics_without_test_wire right after filter_rare_classes."""
    ds = filter_rare_classes(ds, min_samples)
    if ds.multi_label and ds.provenance.get("topics_need_test_wire"):
        ds = drop_topics_without_test_wire(ds)
    return drop_short_texts(clean_texts(ds), min_tokens)


def subsample(ds: TextDataset, train: int | None, test: int | None, seed: int = 113) -> TextDataset:
    """A stratified, seeded sample of `train` training and `test` test examples (None keeps a split whole).
    Multi-label data: an iterative stratification (MultilabelStratifiedShuffleSplit) keeps each topic's share."""
    masks = {}
    for split, n in (("train", train), ("test", test)):
        labels = getattr(ds, f"{split}_labels")
        keep = np.ones(len(labels), dtype=bool)
        if n is not None and n < len(labels):
            try:
                rows = multilabel_sample(labels, n, seed) if labels.ndim == 2 else stratified_sample(labels, n, seed)
            except ValueError as e:
                raise DataError(f"data.{split}_sample={n}: cannot draw a stratified sample ({e})") from None
            keep[:] = False
            keep[rows] = True
        masks[split] = keep
    removed = {s: int((~m).sum()) for s, m in masks.items()}
    out = ds.with_step("subsample", {"train": train, "test": test, "seed": seed}, removed, **_keep(ds, masks))
    if out.multi_label and (out.counts("train") == 0).any():  # nothing to learn a rare topic from in the sample
        kept = np.flatnonzero(out.counts("train") > 0)
        if len(kept) < 2:
            raise DataError(f"data.train_sample={train} leaves {len(kept)} topic(s) with a training text")
        params = {"train_sample": train, "classes_before": out.num_classes, "classes_after": len(kept)}
        out = _keep_topics(out, kept, "drop_topics_without_training_text", params)
    return out


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split  # here: importing sklearn costs seconds

    rows, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return rows


def multilabel_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` rows of multi-hot `labels` drawn by iterative stratification, seeded. The stratification may miss `n` by a
    few rows (it puts each topic's share before the size); the difference is made up one row at a time, each time
    the row whose topics are furthest over (to leave) or under (to join) their share of `n`."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, train_size=n, test_size=len(labels) - n, random_state=seed)
    rows, rest = next(splitter.split(np.zeros((len(labels), 1)), labels))
    rng = np.random.RandomState(seed)  # the order in which equally good rows are found
    rows, rest = list(rng.permutation(rows)), list(rng.permutation(rest))
    share = labels.sum(axis=0) * n / len(labels)
    have = labels[rows].sum(axis=0).astype(np.float64)
    while len(rows) > n:
        out = rows.pop(int(np.argmax(labels[rows] @ (have - share))))
        have -= labels[out]
        rest.append(out)
    while len(rows) < n:
        new = rest.pop(int(np.argmax(labels[rest] @ (share - have))))
        have += labels[new]
        rows.append(new)
    return np.sort(np.array(rows, dtype=np.int64))


def prepare(dc: DataConfig) -> TextDataset:
    """The data a run trains and tests on: data.source loaded, preprocessed, then sampled as `dc` says. The cv
    driver, `reuters-ray baseline` and the tests that rebuild a run's split start from this one function."""

    ds = preprocess(load_dataset(dc), dc.min_samples, dc.min_tokens)
    return subsample(ds, dc.train_sample, dc.test_sample, dc.split_seed)
