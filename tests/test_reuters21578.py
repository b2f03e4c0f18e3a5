"""Source reuters21578 against the known figures of Keras's Reuters-46 and the seed (docs/data.md)."""

import tarfile

import numpy as np
import pytest
from conftest import copy_reuters

from reuters_ray.data.features import class_weights
from reuters_ray.data.keras_reuters import LABEL_NAMES as KERAS_LABEL_NAMES
from reuters_ray.data.preprocess import filter_rare_classes, preprocess
from reuters_ray.data.reuters21578 import load_reuters21578
from reuters_ray.errors import DataError

SEED_18 = [
    "cocoa",
    "grain",
    "veg-oil",
    "earn",
    "acq",
    "money-supply",
    "coffee",
    "sugar",
    "trade",
    "ship",
    "crude",
    "cpi",
    "money-fx",
    "interest",
    "gnp",
    "oilseed",
    "gold",
    "jobs",
]
SEED_TRAIN_COUNTS = [55, 432, 74, 3159, 1949, 139, 101, 124, 390, 172, 444, 66, 549, 269, 100, 62, 92, 50]
SEED_WEIGHTS = [
    2.21,
    0.28,
    1.64,
    0.04,
    0.06,
    0.87,
    1.20,
    0.98,
    0.31,
    0.71,
    0.27,
    1.84,
    0.22,
    0.45,
    1.21,
    1.96,
    1.32,
    2.43,
]


def test_keras_reuters46_sizes_and_label_order(reuters):
    assert len(reuters.train_texts) + len(reuters.test_texts) == 11228
    assert (len(reuters.train_texts), len(reuters.test_texts)) == (8982, 2246)
    assert reuters.num_classes == 46
    assert reuters.label_names[:10] == [
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
    ]
    assert reuters.label_names == KERAS_LABEL_NAMES  # keras.datasets.reuters.get_label_names()
    assert reuters.provenance["documents"] == 21578
    assert reuters.provenance["checksums"] == "match Reuters-21578 Distribution 1.0"


@pytest.mark.parametrize("mode", ["title+body", "keras"])
def test_first_training_wire_is_mcgrath_rentcorp_earn(reuters, reuters_keras_text, mode):
    ds = reuters if mode == "title+body" else reuters_keras_text
    assert ds.label_names[ds.train_labels[0]] == "earn" and ds.train_labels[0] == 3
    body_start = "McGrath RentCorp said as a\nresult of its December acquisition of Space Co"
    if mode == "keras":
        assert ds.train_texts[0].startswith(body_start)
    else:
        assert ds.train_texts[0].startswith("MCGRATH RENTCORP <MGRC> SEES NET RISING\n" + body_start)
    assert "&#3;" not in ds.train_texts[0] and "&lt;" not in ds.train_texts[0]


def test_both_text_modes_share_labels_and_split(reuters, reuters_keras_text):
    assert reuters.train_ids == reuters_keras_text.train_ids and reuters.test_ids == reuters_keras_text.test_ids
    np.testing.assert_array_equal(reuters.train_labels, reuters_keras_text.train_labels)


def test_keras_mode_gives_975_bodyless_wires_another_wires_body(reuters, reuters_keras_text):
    own = reuters.train_texts + reuters.test_texts
    keras = reuters_keras_text.train_texts + reuters_keras_text.test_texts
    # title+body text is "TITLE\nBODY": it ends with the keras text exactly when that is the wire's own body.
    foreign = [i for i in range(len(own)) if not own[i].endswith("\n" + keras[i])]
    assert len(foreign) == 975
    for i in foreign:
        assert keras[i] and keras[i] not in own[i]  # a body, and not this wire's
    assert reuters_keras_text.provenance["carrying_another_wires_body"] == 975
    assert reuters.provenance["carrying_another_wires_body"] == 0


def test_seed_filter_keeps_18_classes_with_its_exact_counts(reuters):
    ds = filter_rare_classes(reuters, min_samples=50)
    assert ds.label_names == SEED_18
    assert ds.counts("train").tolist() == SEED_TRAIN_COUNTS
    assert (len(ds.train_texts), len(ds.test_texts)) == (8227, 2043)
    step = ds.provenance["steps"][-1]
    assert step["step"] == "filter_rare_classes"
    assert step["removed"] == {"train": 755, "test": 203}
    assert step["params"]["classes_after"] == 18 and len(step["params"]["dropped_classes"]) == 28
    assert "steps" not in reuters.provenance or reuters.provenance["steps"] == []  # the input is untouched


def test_full_preprocess_and_seed_class_weights(reuters):
    ds = preprocess(reuters, min_samples=50, min_tokens=3)
    assert [s["step"] for s in ds.provenance["steps"]] == ["filter_rare_classes", "clean_texts", "drop_short_texts"]
    assert ds.train_texts[0].startswith("mcgrath rentcorp <mgrc> sees net rising mcgrath rentcorp said as a result")
    np.testing.assert_allclose(class_weights(ds.train_labels, ds.num_classes), SEED_WEIGHTS, atol=0.01)


def test_archive_reads_like_the_folder(reuters_dir, reuters, tmp_path):
    archive = tmp_path / "reuters21578.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for f in sorted(reuters_dir.glob("reut2-*.sgm")):
            tar.add(f, arcname=f.name)
    ds = load_reuters21578(str(archive))
    assert ds.train_ids == reuters.train_ids and ds.train_texts[0] == reuters.train_texts[0]
    assert ds.provenance["kind"] == "archive" and len(ds.provenance["archive_sha256"]) == 64


@pytest.fixture
def sgm_copy(reuters_dir, tmp_path):
    return copy_reuters(reuters_dir, tmp_path)


def test_truncated_sgm_is_named(sgm_copy):
    f = sgm_copy / "reut2-007.sgm"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"reut2-007\.sgm: truncated or garbled"):
        load_reuters21578(str(sgm_copy))


def test_edited_file_is_read_but_recorded(sgm_copy):
    f = sgm_copy / "reut2-003.sgm"
    f.write_bytes(f.read_bytes().replace(b"said", b"SAID", 1))
    ds = load_reuters21578(str(sgm_copy))
    assert ds.provenance["checksums"] == "differ from Distribution 1.0: reut2-003.sgm"


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_reuters21578(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="holds no reut2-\\*.sgm"):
        load_reuters21578(str(tmp_path))


def test_corrupt_archive_is_named(reuters_dir, tmp_path):
    archive = tmp_path / "reuters21578.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(reuters_dir / "reut2-000.sgm", arcname="reut2-000.sgm")
    archive.write_bytes(archive.read_bytes()[:5000])  # cut off mid-stream
    with pytest.raises(DataError, match="reuters21578.tar.gz: not a readable tar archive"):
        load_reuters21578(str(archive))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="junk.tar.gz: not a readable tar archive"):
        load_reuters21578(str(junk))
