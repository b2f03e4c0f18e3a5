"""Source keras, offline: the test writes a small reuters.npz and word index in Keras's cache format."""

import hashlib
import json

import numpy as np
import pytest
from conftest import Exploit

from reuters_ray.config import DataConfig
from reuters_ray.data import load_dataset
from reuters_ray.data.keras_reuters import LABEL_NAMES, load_keras_reuters
from reuters_ray.data.preprocess import preprocess
from reuters_ray.errors import DataError

WORDS = "the said of a as result its december acquisition space co it expects mcgrath rentcorp".split()
WORD_INDEX = {w: i + 1 for i, w in enumerate(WORDS)}  # Keras ranks words from 1 by frequency


def write_keras_cache(home, n=40, payload=None):
    """KERAS_HOME/datasets/reuters.npz (+ word index) as Keras stores them: ragged lists of Python ints."""
    folder = home / "datasets"
    folder.mkdir(parents=True)
    x = np.empty(n, dtype=object)
    mcgrath = [
        WORD_INDEX[w] for w in "mcgrath rentcorp said as a result of its december acquisition of space co".split()
    ]
    for i in range(n):
        x[i] = mcgrath if i == 0 else [1 + (i + j) % 12 for j in range(3 + i % 5)]
    if payload is not None:
        x[1] = payload
    np.savez(folder / "reuters.npz", x=x, y=np.array([3] + [i % 4 for i in range(1, n)]))
    (folder / "reuters_word_index.json").write_text(json.dumps(WORD_INDEX))
    sha = hashlib.sha256((folder / "reuters.npz").read_bytes()).hexdigest()
    md5 = hashlib.md5((folder / "reuters_word_index.json").read_bytes()).hexdigest()
    return sha, md5


def test_decodes_like_the_seed_and_splits_like_keras(tmp_path):
    sha, md5 = write_keras_cache(tmp_path)
    ds = load_keras_reuters(cache_dir=str(tmp_path), num_words=15, npz_sha256=sha, word_index_hash=md5)
    order = np.arange(40)
    np.random.RandomState(113).shuffle(order)
    assert ds.train_ids == [str(i) for i in order[:32]] and len(ds.test_texts) == 8  # int(40 * 0.8)
    texts = dict(zip(ds.train_ids + ds.test_ids, ds.train_texts + ds.test_texts))
    labels = dict(zip(ds.train_ids + ds.test_ids, np.concatenate([ds.train_labels, ds.test_labels])))
    # word ids >= num_words (here mcgrath 14+3, rentcorp 15+3; co 11+3 stays) become [UNK], as in the seed's text
    assert texts["0"] == "[START] [UNK] [UNK] said as a result of its december acquisition of space co"
    assert ds.label_names == LABEL_NAMES and ds.label_names[labels["0"]] == "earn"
    cleaned = preprocess(ds, min_samples=1, min_tokens=3)
    assert "said as a result of its december acquisition of space co" in cleaned.train_texts + cleaned.test_texts
    assert ds.provenance["sha256"] == sha and ds.provenance["num_words"] == 15


def test_full_vocabulary_keeps_the_words(tmp_path):
    sha, md5 = write_keras_cache(tmp_path)
    ds = load_keras_reuters(cache_dir=str(tmp_path), num_words=100, npz_sha256=sha, word_index_hash=md5)
    texts = dict(zip(ds.train_ids + ds.test_ids, ds.train_texts + ds.test_texts))
    assert texts["0"].startswith("[START] mcgrath rentcorp said")


def test_npz_is_never_unpickled_unless_its_hash_matches(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    write_keras_cache(tmp_path, payload=Exploit(marker))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(
        DataError, match="reuters.npz: checksum .* does not match the expected d6586e69.*refusing to open it"
    ):
        load_dataset(DataConfig(source="keras"))  # Keras's published hash, the default
    assert not marker.exists()
