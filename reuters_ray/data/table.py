"""Source `table`: your own labelled texts in CSV, Parquet or JSON Lines.

One file split into train/test by a seeded stratified split, or a train file plus a test file.
Labels may be strings or integers; label names are the sorted distinct training labels.
A path is a local file or a URI pyarrow's filesystems take (s3://bucket/news.csv?endpoint_override=..., gs://...),
so a job submitted to a remote cluster needs no file on its head node.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from reuters_ray.data.dataset import TextDataset
from reuters_ray.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _fetch(path: str) -> tuple[str, str, bytes, str]:
    """(the file's name for messages, its name for provenance, its bytes, its format) of a local path or a URI."""
    if "://" in path:
        from reuters_ray.storage import read_bytes, storage_location

        try:
            fs, inner, _ = storage_location(path)
        except (ValueError, OSError) as e:  # a URI pyarrow does not take
            raise DataError(f"{path}: {e}") from None
        name, suffix = path, PurePosixPath(inner).suffix
    else:
        local = Path(path).expanduser()
        name, suffix = str(local), local.suffix
    fmt = FORMATS.get(suffix.lower())
    if fmt is None:
        raise DataError(f"{name}: unknown table format {suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    if "://" in path:
        data = read_bytes(fs, inner)
        if data is None:
            raise DataError(f"{name}: no such file, or it cannot be read")
        return name, name, data, fmt
    if not local.is_file():
        raise DataError(f"{name}: no such file")
    return name, str(local.resolve()), local.read_bytes(), fmt


def _read(name: str, data: bytes, fmt: str) -> pd.DataFrame:
    try:
        if fmt in ("csv", "tsv"):
            # keep_default_na=False: the text "NA" is a word, not a missing value; only empty cells are missing.
            return pd.read_csv(
                io.BytesIO(data),
                sep="\t" if fmt == "tsv" else ",",
                encoding="utf-8",
                dtype=str,
                keep_default_na=False,
                na_values=[""],
            )
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_json(io.BytesIO(data), lines=True, dtype=False, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text (byte {e.start}: {e.reason}); re-save it as UTF-8") from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DataError(f"{name}: cannot parse as {fmt}: {str(e).splitlines()[0]}") from None


def _columns(
    df: pd.DataFrame, path: Path, text_column: str, label_column: str
) -> tuple[list[str], pd.Series, list[str], list[int]]:
    """(texts, labels, ids, data rows dropped for an empty text) of a table; raises DataError naming the file
    and column for missing columns, no rows, missing labels, or no text at all."""
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(map(str, df.columns))}); "
            f"name them with data.text_column / data.label_column"
        )
    if df.empty:
        raise DataError(f"{path}: the table has no rows")
    rows = lambda mask: ", ".join(str(i + 1) for i in np.flatnonzero(mask)[:5]) + (" ..." if mask.sum() > 5 else "")  # noqa: E731
    labels = df[label_column]
    if labels.isna().any():
        raise DataError(
            f"{path}: column {label_column!r} has {int(labels.isna().sum())} missing label(s), data rows {rows(labels.isna().to_numpy())}"
        )
    texts = df[text_column]
    empty = texts.isna().to_numpy() | np.array([not str(t).strip() for t in texts.fillna("")])
    if empty.all():
        raise DataError(f"{path}: column {text_column!r} holds no text in any of its {len(df)} rows")
    ids = [str(i) for i in (df["id"] if "id" in df.columns else range(len(df)))]
    # Empty texts are dropped and counted, as the seed's short-text filter drops short ones; rows count from 1
    keep = np.flatnonzero(~empty)
    dropped = [int(i) + 1 for i in np.flatnonzero(empty)]
    return [str(texts.iloc[i]) for i in keep], labels.iloc[keep], [ids[i] for i in keep], dropped


def _label_values(labels: pd.Series) -> list:
    """Labels as ints when every one is an integer (3, or "3" in a CSV), else as strings."""
    values = [str(v).strip() for v in labels.tolist()]
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return [int(v) for v in values]
    return values


def load_table(
    path: str | None,
    text_column: str = "text",
    label_column: str = "label",
    test_path: str | None = None,
    test_size: float = 0.2,
    seed: int = 113,
) -> TextDataset:
    """Reads a labelled table (see module docstring). Raises DataError naming the file and column at fault."""
    if path is None:
        raise DataError("data.path is required for source 'table' (a .csv, .parquet or .jsonl file)")
    shown, where, data, fmt = _fetch(path)
    texts, raw_labels, ids, empty = _columns(_read(shown, data, fmt), shown, text_column, label_column)
    test_empty: list[int] = []
    labels = _label_values(raw_labels)
    if test_path is not None:
        tshown, twhere, tdata, tfmt = _fetch(test_path)
        test_texts, test_raw, test_ids, test_empty = _columns(
            _read(tshown, tdata, tfmt), tshown, text_column, label_column
        )
        test_labels = _label_values(test_raw)
        train_idx = np.arange(len(texts))
    else:
        from sklearn.model_selection import train_test_split

        counts = pd.Series(labels).value_counts()
        if (counts < 2).any():
            raise DataError(
                f"{shown}: a stratified test split needs at least 2 examples per class; only 1 for "
                f"{', '.join(repr(str(k)) for k in counts[counts < 2].index)}. Add examples or give data.test_path"
            )
        try:
            train_idx, test_idx = train_test_split(
                np.arange(len(texts)), test_size=test_size, random_state=seed, stratify=labels
            )
        except ValueError as e:
            raise DataError(f"{shown}: cannot split with data.test_size={test_size}: {e}") from None
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
        test_texts, test_labels, test_ids = (
            [texts[i] for i in test_idx],
            [labels[i] for i in test_idx],
            [ids[i] for i in test_idx],
        )

    train_labels = [labels[i] for i in train_idx]
    if len({type(v) for v in train_labels + test_labels}) > 1:
        train_labels, test_labels = [str(v) for v in train_labels], [str(v) for v in test_labels]
    names = sorted(set(train_labels))
    if len(names) < 2:
        raise DataError(
            f"{shown}: column {label_column!r} holds a single class ({names[0]!r}); a classifier needs at least 2"
        )
    unseen = sorted(set(test_labels) - set(names), key=str)
    if unseen:
        raise DataError(
            f"{tshown if test_path else shown}: test labels never seen in training: {', '.join(map(repr, unseen))}"
        )
    index = {n: i for i, n in enumerate(names)}
    prov = {
        "source": "table",
        "path": where,
        "sha256": hashlib.sha256(data).hexdigest(),
        "text_column": text_column,
        "label_column": label_column,
        "split": {
            "test_path": twhere if test_path else None,
            "test_size": None if test_path else test_size,
            "seed": None if test_path else seed,
            "train": len(train_idx),
            "test": len(test_texts),
        },
        "steps": [],
    }
    ds = TextDataset(
        train_texts=[texts[i] for i in train_idx],
        train_labels=np.array([index[v] for v in train_labels], dtype=np.int64),
        test_texts=test_texts,
        test_labels=np.array([index[v] for v in test_labels], dtype=np.int64),
        label_names=[str(n) for n in names],
        train_ids=[ids[i] for i in train_idx],
        test_ids=test_ids,
        provenance=prov,
    )
    rows = {shown: empty, **({tshown: test_empty} if test_path else {})}
    # With one file split in two, its empty rows are counted under "train" (they were dropped before the split)
    return ds.with_step(
        "drop_empty_texts", {"column": text_column, "rows": rows}, {"train": len(empty), "test": len(test_empty)}
    )
