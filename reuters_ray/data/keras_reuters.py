"""Source `keras`: Keras's Reuters newswire data set (reuters.npz + reuters_word_index.json), decoded to text.

Word ids are shifted and capped exactly as `keras.datasets.reuters.load_data` does (start_char=1, oov_char=2,
index_from=3, seed 113, test_split 0.2), then decoded with the word index: 1 -> [START], 2 -> [UNK],
0 -> [PAD], 3 -> [UNUSED]. With num_words=10000 the first training wire reads
"[START] [UNK] [UNK] said as a result of its december acquisition of space co ...", the seed's text.

Safety: reuters.npz stores ragged arrays as pickled objects, so numpy must be allowed to unpickle it.
We open it only after its SHA-256 matches the one Keras publishes for it.

Keras (the `keras` extra) is needed only to download the files into its cache (~/.keras/datasets, or
$KERAS_HOME/datasets). `keras.datasets.reuters.load_data` itself cannot read a file whose hash differs from
Keras's (it re-downloads instead), so the ten lines of its id mapping are reproduced here.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from reuters_ray.data.dataset import TextDataset
from reuters_ray.errors import DataError

ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
NPZ_NAME, NPZ_SHA256 = "reuters.npz", "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"
WORD_INDEX_NAME, WORD_INDEX_MD5 = (
    "reuters_word_index.json",
    "4d44cc38712099c9e383dc6e5f11a921",
)  # Keras publishes an MD5
START, OOV, INDEX_FROM = 1, 2, 3
SPECIAL = {0: "[PAD]", 1: "[START]", 2: "[UNK]", 3: "[UNUSED]"}
TEST_SPLIT = 0.2
# What Keras's rules did to the wires of the published reuters.npz (its SHA-256 above), counted from the raw files
# its 11,228 wires are (reuters21578.py rebuilds it wire for wire; tests/test_field_labels.py checks these): wires
# that list topics besides their first (all, and with seed 113 per split), wires with topics left out for a first
# topic that labels fewer than 15 wires.
PUBLISHED = {"wires": 11228, "other_topics": 1820, "other_topics_113": {"train": 1455, "test": 365}, "rare": 139}
# keras.datasets.reuters.get_label_names(): the same names, in the same order, as the raw-file source derives.
LABEL_NAMES = [
    "cocoa",
    "grain",
    "veg-oil",
    "earn",
    "acq",
    "wheat",
    "copper",
    "housing",
    "money-supply",
    "coffee",
    "sugar",
    "trade",
    "reserves",
    "ship",
    "cotton",
    "carcass",
    "crude",
    "nat-gas",
    "cpi",
    "money-fx",
    "interest",
    "gnp",
    "meal-feed",
    "alum",
    "oilseed",
    "gold",
    "tin",
    "strategic-metal",
    "livestock",
    "retail",
    "ipi",
    "iron-steel",
    "rubber",
    "heat",
    "jobs",
    "lei",
    "bop",
    "zinc",
    "orange",
    "pet-chem",
    "dlr",
    "gas",
    "silver",
    "wpi",
    "hog",
    "lead",
]


def keras_rule_note(counts: str | None, rare: int | None, keeps: str) -> str:
    """The line that says what Keras's Reuters-46 rules do to the wires: each is labelled by its first topic
    (`counts`: how many list others too, as words, or None) and those whose first topic labels fewer than 15 wires
    are left out (`rare` of them, or None: unknown); `keeps`: the flags that, with --data.task multi, keep every
    topic of a wire."""
    left = f"the {rare} wires" if rare is not None else "the wires"
    return (
        f"Keras's Reuters-46 rule: each wire is labelled by its first topic{f' ({counts})' if counts else ''}, and "
        f"{left} whose first topic labels fewer than 15 wires are left out; {keeps} --data.task multi keeps every "
        f"topic of a wire"
    )


def _rule_note(sha256: str, seed: int) -> str:
    """keras_rule_note for a reuters.npz: with counts for Keras's published file, without for another."""
    keeps = "--data.source reuters21578 --data.split modapte"
    if sha256 != NPZ_SHA256:
        return keras_rule_note(None, None, keeps)
    counts = f"{PUBLISHED['other_topics']} of reuters.npz's {PUBLISHED['wires']} wires list other topics too"
    if seed == 113:
        split = PUBLISHED["other_topics_113"]
        counts += f": {split['train']} training and {split['test']} test wires"
    return keras_rule_note(counts, PUBLISHED["rare"], keeps)


def keras_datasets_dir(cache_dir: str | None = None) -> Path:
    """Keras's cache folder for data sets: `cache_dir`/datasets, else $KERAS_HOME/datasets, else ~/.keras/datasets."""
    return Path(cache_dir or os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "datasets"


def _download(folder: Path) -> None:
    try:
        import keras  # noqa: F401  (light Keras 3; any backend, e.g. KERAS_BACKEND=torch)
        from keras.utils import get_file
    except ImportError:
        raise DataError(
            f"source 'keras': {folder / NPZ_NAME} is not there and downloading it needs the keras extra: pip install 'reuters-ray[keras]'"
        ) from None
    cache_dir = str(folder.parent)
    for name, file_hash in ((NPZ_NAME, NPZ_SHA256), (WORD_INDEX_NAME, WORD_INDEX_MD5)):
        try:
            get_file(name, origin=ORIGIN + name, file_hash=file_hash, cache_dir=cache_dir)
        except Exception as e:  # keras raises plain Exception for network failures
            raise DataError(f"source 'keras': could not download {ORIGIN + name} ({e})") from None


def _check_hash(path: Path, expected: str) -> None:
    algo = hashlib.sha256 if len(expected) == 64 else hashlib.md5
    got = algo(path.read_bytes()).hexdigest()
    if got != expected:
        raise DataError(
            f"{path}: checksum {got} does not match the expected {expected}; refusing to open it (delete it to download again)"
        )


def decode(seq: list[int], index_to_word: dict[int, str]) -> str:
    """Word ids (after Keras's shift) back to text; ids the index lacks read [UNK]."""
    return " ".join(SPECIAL.get(i) or index_to_word.get(i, "[UNK]") for i in seq)


def load_keras_reuters(
    cache_dir: str | None = None,
    num_words: int | None = 10000,
    seed: int = 113,
    npz_sha256: str = NPZ_SHA256,
    word_index_hash: str = WORD_INDEX_MD5,
) -> TextDataset:
    """Keras's Reuters-46 as text. Downloads into Keras's cache when the files are missing (needs keras).

    The hashes default to the ones Keras publishes; pass others only for a file you made yourself.
    Raises DataError for a checksum mismatch, a missing keras package, or an unreadable file.
    """
    folder = keras_datasets_dir(cache_dir)
    npz, word_index_path = folder / NPZ_NAME, folder / WORD_INDEX_NAME
    if not (npz.exists() and word_index_path.exists()):
        _download(folder)
    _check_hash(npz, npz_sha256)
    _check_hash(word_index_path, word_index_hash)
    try:
        with np.load(npz, allow_pickle=True) as f:  # safe: the bytes are the ones whose hash we checked
            xs, ys = f["x"], f["y"]
        word_index = json.loads(word_index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{folder}: cannot read the Keras Reuters files ({type(e).__name__}: {e})") from None

    # As keras.datasets.reuters.load_data: shuffle, prepend start_char, shift by index_from, cap at num_words.
    order = np.arange(len(xs))
    np.random.RandomState(seed).shuffle(order)
    xs, ys = xs[order], np.asarray(ys)[order].astype(np.int64)
    seqs = [[START] + [w + INDEX_FROM for w in x] for x in xs]
    cap = num_words or max(max(s) for s in seqs)  # Keras's own default; it maps the top id itself to OOV
    seqs = [[w if w < cap else OOV for w in s] for s in seqs]
    index_to_word = {i + INDEX_FROM: w for w, i in word_index.items()}
    texts = [decode(s, index_to_word) for s in seqs]

    cut = int(len(seqs) * (1 - TEST_SPLIT))
    ids = [str(i) for i in order]  # position in reuters.npz
    names = LABEL_NAMES if ys.max() < len(LABEL_NAMES) else [str(i) for i in range(int(ys.max()) + 1)]
    sha256 = hashlib.sha256(npz.read_bytes()).hexdigest()
    prov = {
        "source": "keras",
        "path": str(npz.resolve()),
        "sha256": sha256,
        "text_mode": "keras-decoded",
        "num_words": num_words,
        "split": {"seed": seed, "test_split": TEST_SPLIT, "train": cut, "test": len(seqs) - cut},
        "notes": [_rule_note(sha256, seed)],
        "steps": [],
    }
    return TextDataset(
        train_texts=texts[:cut],
        train_labels=ys[:cut],
        test_texts=texts[cut:],
        test_labels=ys[cut:],
        label_names=list(names),
        train_ids=ids[:cut],
        test_ids=ids[cut:],
        provenance=prov,
    )
