"""Source table: users' own CSV / Parquet / JSONL, and one clear error per kind of bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from reuters_ray.config import DataConfig
from reuters_ray.data import load_dataset
from reuters_ray.data.table import load_table
from reuters_ray.errors import DataError


def frame(n_per_class=10, labels=("sports", "politics", "tech")):
    rows = [
        {"id": f"d-{lab}-{i}", "text": f"{lab} story number {i} with words", "label": lab}
        for k, lab in enumerate(labels)
        for i in range(n_per_class)
    ]
    return pd.DataFrame(rows)


def test_csv_with_string_labels_and_stratified_split(tmp_path):
    path = tmp_path / "news.csv"
    frame().to_csv(path, index=False)
    ds = load_dataset(DataConfig(source="table", path=str(path), test_size=0.2, split_seed=7))
    assert ds.label_names == ["politics", "sports", "tech"]  # sorted label values
    assert (len(ds.train_texts), len(ds.test_texts)) == (24, 6)
    assert ds.counts("test").tolist() == [2, 2, 2]  # stratified
    assert all(ds.label_names[y] in t for t, y in zip(ds.train_texts, ds.train_labels))
    assert ds.train_ids[0].startswith("d") and ds.provenance["split"]["seed"] == 7
    again = load_table(str(path), test_size=0.2, seed=7)
    assert again.test_ids == ds.test_ids  # seeded: the same split every time


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_jsonl_with_integer_labels_and_test_file(tmp_path, fmt):
    df = frame(labels=(2, 0, 1)).rename(columns={"text": "body", "label": "topic"})
    train, test = tmp_path / f"train.{fmt}", tmp_path / f"test.{fmt}"
    for part, p in ((df.iloc[::2], train), (df.iloc[1::2], test)):
        part.to_parquet(p) if fmt == "parquet" else part.to_json(p, orient="records", lines=True)
    ds = load_table(str(train), text_column="body", label_column="topic", test_path=str(test))
    assert ds.label_names == ["0", "1", "2"] and len(ds.train_texts) == 15 and len(ds.test_texts) == 15
    assert all(t.startswith(ds.label_names[y]) for t, y in zip(ds.test_texts, ds.test_labels))


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "news.csv"
    frame().rename(columns={"label": "category"}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"news.csv: no column 'label' \(columns: id, text, category\)"):
        load_table(str(path))


def test_nan_labels_are_named_with_rows_and_empty_texts_dropped_and_counted(tmp_path):
    df = frame()
    df.loc[[3, 9], "text"] = "   "
    df.loc[[5, 7], "label"] = None
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"bad.csv: column 'label' has 2 missing label\(s\), data rows 6, 8"):
        load_table(str(path))
    df.loc[[5, 7], "label"] = "sports"
    df.to_csv(path, index=False)
    ds = load_table(str(path))  # empty texts: dropped and counted, as the seed's short-text filter does
    assert len(ds.train_texts) + len(ds.test_texts) == len(df) - 2
    assert df.loc[3, "id"] not in ds.train_ids + ds.test_ids and df.loc[9, "id"] not in ds.train_ids + ds.test_ids
    (step,) = ds.provenance["steps"]
    assert step["step"] == "drop_empty_texts" and step["removed"] == {"train": 2, "test": 0}
    assert ds.notes() == [
        f"{path}: read as CSV with delimiter comma (the file's own)",
        f"warning: {path}: dropped 2 empty text(s) in column 'text', data rows 4, 10",
    ]
    df["text"] = ""
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"bad.csv: column 'text' holds no text in any of its {len(df)} rows"):
        load_table(str(path))


def test_non_utf8_single_class_unseen_labels_and_tiny_classes(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 au lait today,food\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv: not UTF-8"):
        load_table(str(latin))
    one = tmp_path / "one.jsonl"
    one.write_text("\n".join(json.dumps({"text": f"text {i} here", "label": "only"}) for i in range(5)))
    with pytest.raises(DataError, match="single class"):
        load_table(str(one), test_size=0.4)
    train, test = tmp_path / "tr.csv", tmp_path / "te.csv"
    frame(labels=("a", "b")).to_csv(train, index=False)
    frame(labels=("a", "c")).to_csv(test, index=False)
    with pytest.raises(DataError, match="te.csv: test labels never seen in training: 'c'"):
        load_table(str(train), test_path=str(test))
    tiny = tmp_path / "tiny.csv"
    pd.concat([frame(labels=("a", "b")), frame(1, labels=("lonely",))]).to_csv(tiny, index=False)
    with pytest.raises(DataError, match="at least 2 examples per class; only 1 for 'lonely'"):
        load_table(str(tiny))


def test_unknown_format_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="unknown table format '.xlsx'"):
        load_table(str(tmp_path / "x.xlsx"))
    with pytest.raises(DataError, match="no such file"):
        load_table(str(tmp_path / "x.csv"))
    with pytest.raises(DataError, match="data.path is required"):
        load_dataset(DataConfig(source="table"))


def test_fewer_examples_than_folds(tmp_path):
    path = tmp_path / "news.csv"
    pd.concat([frame(10, labels=("a", "b")), frame(3, labels=("c",))]).to_csv(path, index=False)
    ds = load_table(str(path), test_size=0.3)
    assert ds.counts("train").tolist()[2] == 2
    with pytest.raises(DataError, match=r"3-fold cross-validation .* 'c' \(2\)"):
        ds.check_folds(3)
    assert np.array_equal(np.sort(np.unique(ds.train_labels)), [0, 1, 2])
