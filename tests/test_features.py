"""Tokenization into object-store arrays with the real (packaged, offline) BERT uncased tokenizer."""

import numpy as np
import pytest

from reuters_ray.data.features import tokenize
from reuters_ray.data.preprocess import preprocess
from reuters_ray.errors import DataError
from reuters_ray.fold.models import load_tokenizer


def test_tokenize_matches_the_tokenizer_and_truncates(minilm_tokenizer):
    texts = ["oil prices fell sharply", "word " * 500, "a"]
    arr = tokenize(texts, minilm_tokenizer, max_length=16, batch_size=2)
    assert arr.ids.shape == (3, 16) and arr.ids.dtype == np.uint16 and arr.lengths.dtype == np.int32
    assert arr.lengths.tolist() == [len(minilm_tokenizer(texts[0])["input_ids"]), 16, 3]
    assert arr.ids[0, : arr.lengths[0]].tolist() == minilm_tokenizer(texts[0])["input_ids"]
    assert arr.ids[1, 0] == minilm_tokenizer.cls_token_id and arr.ids[1, 15] == minilm_tokenizer.sep_token_id
    assert (arr.ids[2, 3:] == arr.pad_id).all()


def test_tokenize_reuters_once(reuters, minilm_tokenizer):
    ds = preprocess(reuters)
    arr = tokenize(ds.train_texts[:500], minilm_tokenizer, max_length=300)
    assert len(arr) == 500 and arr.lengths.max() == 300 and arr.lengths.min() > 3
    assert arr.ids.nbytes == 500 * 300 * 2  # compact: two bytes per token slot
    assert minilm_tokenizer.decode(arr.ids[0, 1 : arr.lengths[0]].tolist()).startswith(
        "mcgrath rentcorp < mgrc > sees net rising"
    )
    with pytest.raises(ValueError, match="max_length must be > 2"):
        tokenize(["x"], minilm_tokenizer, max_length=2)


def test_hub_tokenizer_offline_names_the_offline_choices():
    with pytest.raises(DataError, match="minilm-offline, small-bert-random"):
        load_tokenizer("google/bert_uncased_L-4_H-512_A-8")
