"""The preprocessing steps one by one, on small hand-made data sets with known answers."""

import numpy as np
import pytest

from reuters_ray.data.dataset import TextDataset
from reuters_ray.data.features import class_weights
from reuters_ray.data.preprocess import clean_text, clean_texts, drop_short_texts, filter_rare_classes, preprocess
from reuters_ray.errors import DataError


def make(train, test, names):
    """TextDataset from [(text, label), ...] lists."""
    return TextDataset(
        train_texts=[t for t, _ in train],
        train_labels=np.array([y for _, y in train], dtype=np.int64),
        test_texts=[t for t, _ in test],
        test_labels=np.array([y for _, y in test], dtype=np.int64),
        label_names=names,
        train_ids=[f"tr{i}" for i in range(len(train))],
        test_ids=[f"te{i}" for i in range(len(test))],
        provenance={"source": "test", "steps": []},
    )


def test_clean_text_matches_the_seed_example():
    before = "[START] [UNK] [UNK] said as a result of its december acquisition of space co it expects earnings..."
    assert clean_text(before) == "said as a result of its december acquisition of space co it expects earnings..."
    assert clean_text("  Oil  PRICES\n\tfell [pad] [UNUSED], 3.5 pct ") == "oil prices fell , 3.5 pct"


def test_filter_rare_classes_relabels_and_keeps_names():
    train = [("a b c", 0)] * 3 + [("d e f", 1)] * 1 + [("g h i", 2)] * 2
    test = [("a b c", 0), ("d e f", 1), ("g h i", 2), ("g h i", 2)]
    ds = filter_rare_classes(make(train, test, ["x", "rare", "z"]), min_samples=2)
    assert ds.label_names == ["x", "z"]
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1] and ds.test_labels.tolist() == [0, 1, 1]
    assert ds.test_ids == ["te0", "te2", "te3"]
    step = ds.provenance["steps"][0]
    assert step["removed"] == {"train": 1, "test": 1} and step["after"] == {"train": 5, "test": 3}
    assert step["params"]["dropped_classes"] == [{"name": "rare", "train": 1, "test": 1}]
    assert ds.notes() == [
        "dropped 1 class(es) with fewer than data.min_samples=2 training examples and their 1 training and 1 test "
        "texts (training count in brackets): rare (1)"
    ]


def test_filter_leaving_one_class_is_an_error():
    ds = make([("a b c", 0)] * 5 + [("d e f", 1)], [], ["big", "small"])
    with pytest.raises(DataError, match="min_samples=2 leaves 1 class"):
        filter_rare_classes(ds, min_samples=2)


def test_drop_short_texts_counts_per_split():
    train = [("one two three", 0), ("one two", 0), ("a b c d", 1), ("x", 1), ("p q r", 1)]
    test = [("[UNK] two", 0), ("one two three", 1)]
    ds = drop_short_texts(clean_texts(make(train, test, ["a", "b"])), min_tokens=3)
    assert ds.train_texts == ["one two three", "a b c d", "p q r"] and ds.test_texts == ["one two three"]
    assert ds.provenance["steps"][-1]["removed"] == {"train": 2, "test": 1}


def test_preprocess_order_and_weights():
    train = [("[START] Alpha beta gamma", 0)] * 4 + [("Delta eps zeta", 1)] * 2
    ds = preprocess(make(train, [("alpha beta gamma", 1)], ["a", "b"]), min_samples=2, min_tokens=3)
    assert ds.train_texts[0] == "alpha beta gamma"
    # inverse frequency 1/4, 1/2 -> normalised to mean 1: 2/3, 4/3
    np.testing.assert_allclose(class_weights(ds.train_labels, 2), [2 / 3, 4 / 3], rtol=1e-6)


def test_class_weight_clip_bounds_a_tiny_class():
    labels = np.array([0] * 100000 + [1])
    w = class_weights(labels, 2, clip=(0.01, 10.0))
    assert w.mean() == pytest.approx(1.0) and w[1] / w[0] < 10.0 / 0.01 + 1e-3
    with pytest.raises(ValueError, match=r"classes \[2\] have no training examples"):
        class_weights(np.array([0, 1]), 3)


def test_check_folds_names_the_short_class():
    ds = make([("a b c", 0)] * 5 + [("d e f", 1)] * 2, [], ["plenty", "scarce"])
    ds.check_folds(2)
    with pytest.raises(DataError, match=r"3-fold .* too few in: 'scarce' \(2\)"):
        ds.check_folds(3)
    with pytest.raises(DataError, match="at least 2"):
        ds.check_folds(1)
