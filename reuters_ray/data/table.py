"""Source `table`: your own labelled texts in CSV, TSV, Parquet or JSON Lines.

One file split into train/test by a seeded stratified split, or a train file plus a test file.
Labels are strings as written: '001', '01' and '1' are three classes. JSON numbers keep their spelling (a JSON 1 and
"1" are one class, and the run says so); Parquet integers and booleans are written as JSON writes them. Label names
are the distinct training labels, integer codes in numeric order first. Text files are UTF-8, a byte-order mark
allowed; a CSV/TSV file's delimiter is data.delimiter, else the one whose split of the header holds the named
columns (';' from spreadsheets with a decimal comma), and the run says which. Ids come from an `id` column, else
the 0-based row number.
A path is a local file or a URI pyarrow's filesystems take (s3://bucket/news.csv?endpoint_override=..., gs://...),
so a job submitted to a remote cluster needs no file on its head node.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
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


class _JsonNumber(str):
    """A JSON number kept as it is written (`1`, `1.0`, `001` is not JSON): a label's spelling is its identity."""


def _decode(name: str, data: bytes) -> str:
    """The file's text: UTF-8, with or without a byte-order mark. Raises DataError naming the line of a bad byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{name}: UTF-16 text (it starts with a UTF-16 byte-order mark); re-save it as UTF-8")
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte-order mark (spreadsheets write one) is not part of the text
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{name}: not UTF-8 text (line {line}, byte {e.start}: {e.reason}); re-save it as UTF-8"
        ) from None


def _delimiter(name: str, text: str, fmt: str, delimiter: str | None, columns: tuple[str, ...]) -> tuple[str, str]:
    """(delimiter, how it was chosen) of a CSV/TSV file: data.delimiter when given, else the first of the file
    type's own (comma, tab), ';', ',', tab, '|' whose split of the header holds the named columns (spreadsheets
    with a decimal comma write ';'), else the file type's own."""
    if delimiter is not None:
        return delimiter, "data.delimiter"
    own = "\t" if fmt == "tsv" else ","
    for candidate in dict.fromkeys((own, ";", ",", "\t", "|")):
        try:
            header = next(csv.reader(io.StringIO(text), delimiter=candidate), [])
        except csv.Error:
            continue
        if all(c in header for c in columns):
            return candidate, "the file's own" if candidate == own else "detected from the header"
    return own, "the file's own"


def _read_jsonl(name: str, text: str) -> pd.DataFrame:
    """JSON Lines: one object per line, split only at \\n (a JSON string may hold other line separators), blank
    lines skipped, numbers kept as written. Raises DataError naming the line."""
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_int=_JsonNumber, parse_float=_JsonNumber)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}: line {number} is not JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f'{name}: line {number} is not a JSON object (one object per line, e.g. {{"text": ...}})')
        rows.append(row)
    return pd.DataFrame.from_records(rows) if rows else pd.DataFrame()


def _read(
    name: str, data: bytes, fmt: str, delimiter: str | None, columns: tuple[str, ...]
) -> tuple[pd.DataFrame, dict]:
    """(the table, how it was read: format and, for CSV/TSV, the delimiter) of a file's bytes. Every value is kept as
    written: strings in CSV/TSV, JSON's own types (numbers as written) in JSON Lines, Parquet's types."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data))
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"{name}: cannot parse as parquet: {str(e).splitlines()[0]}") from None
        # Python values column by column: an integer column with a gap stays integers (pandas would make floats)
        return pd.DataFrame({c: pd.Series(table.column(c).to_pylist(), dtype=object) for c in table.column_names}), {
            "format": "parquet"
        }
    text = _decode(name, data)
    if fmt == "jsonl":
        return _read_jsonl(name, text), {"format": "jsonl"}
    sep, how = _delimiter(name, text, fmt, delimiter, columns)
    try:
        # keep_default_na=False: the text "NA" is a word, not a missing value; only empty cells are missing.
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{name}: cannot parse as {fmt} with delimiter {sep!r}: {str(e).splitlines()[0]}") from None
    return df, {"format": fmt, "delimiter": sep, "delimiter_from": how}


def _label_text(value) -> str:
    """A label cell as a string, spelled as in the file: strings as they are, JSON numbers as written, Parquet's
    integers and booleans as JSON writes them."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _missing(value) -> bool:
    """An absent cell: empty in CSV, null in JSON or Parquet, or nothing but spaces."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value))


def _rows(positions) -> str:
    """Data rows (from 1) at 0-based `positions`, the first five."""
    positions = list(positions)
    return ", ".join(str(i + 1) for i in positions[:5]) + (" ..." if len(positions) > 5 else "")


@dataclass
class _File:
    """One table file, read: its rows' texts, labels (strings as written) and ids, what was dropped and noticed."""

    shown: str  # the file's name in messages
    where: str  # its name in provenance (an absolute path or the URI)
    sha256: str
    read: dict  # format, and for CSV/TSV the delimiter and how it was chosen
    texts: list[str]
    labels: list[str]
    ids: list[str]
    empty_rows: list[int]  # data rows (from 1) dropped for an empty text
    notes: list[str]


def _read_file(path: str, text_column: str, label_column: str, delimiter: str | None) -> _File:
    """Reads one table file. Raises DataError naming the file, column and data rows at fault: missing columns, no
    rows, missing labels, a list or mapping as a label, repeated ids, no text at all."""
    shown, where, data, fmt = _fetch(path)
    df, read = _read(shown, data, fmt, delimiter, (text_column, label_column))
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        hint = "name them with data.text_column / data.label_column"
        if "delimiter" in read:
            hint += f", or give data.delimiter (read with {read['delimiter']!r})"
        raise DataError(
            f"{shown}: no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(map(str, df.columns))}); "
            + hint
        )
    if df.empty:
        raise DataError(f"{shown}: the table has no rows")
    cells = df[label_column].tolist()
    absent = [i for i, v in enumerate(cells) if _missing(v)]
    if absent:
        raise DataError(
            f"{shown}: column {label_column!r} has {len(absent)} missing label(s), data rows {_rows(absent)}"
        )
    nested = [i for i, v in enumerate(cells) if isinstance(v, (list, dict, np.ndarray))]
    if nested:
        raise DataError(
            f"{shown}: column {label_column!r} holds a list or mapping in data rows {_rows(nested)}; one label per row"
        )
    labels = [_label_text(v) for v in cells]
    texts = df[text_column].tolist()
    empty = np.array([_missing(t) for t in texts])
    if empty.all():
        raise DataError(f"{shown}: column {text_column!r} holds no text in any of its {len(df)} rows")
    ids = [_label_text(i) for i in df["id"]] if "id" in df.columns else [str(i) for i in range(len(df))]
    at: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        at.setdefault(v, []).append(i)
    repeated = next((v for v, rows in at.items() if len(rows) > 1), None)
    if repeated is not None:
        raise DataError(
            f"{shown}: column 'id' repeats {repeated!r} in data rows {_rows(at[repeated])}; ids name rows in "
            f"predictions and folds, so each must be unique (rename the column to have rows numbered instead)"
        )
    keep = np.flatnonzero(~empty)  # empty texts: dropped and counted, as the seed's short-text filter drops short ones
    return _File(
        shown=shown,
        where=where,
        sha256=hashlib.sha256(data).hexdigest(),
        read=read,
        texts=[str(texts[i]) for i in keep],
        labels=[labels[i] for i in keep],
        ids=[ids[i] for i in keep],
        empty_rows=[int(i) + 1 for i in np.flatnonzero(empty)],
        notes=_read_notes(shown, read) + _label_notes(shown, label_column, [cells[i] for i in keep]),
    )


DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


def _read_notes(shown: str, read: dict) -> list[str]:
    """How a CSV/TSV file was split, for the run's first lines."""
    if "delimiter" not in read:
        return []
    name = DELIMITER_NAMES.get(read["delimiter"], repr(read["delimiter"]))
    return [f"{shown}: read as {read['format'].upper()} with delimiter {name} ({read['delimiter_from']})"]


def _label_notes(shown: str, column: str, cells: list) -> list[str]:
    """What a person should know about the label spellings: a JSON number and a JSON string written alike (one
    class), and labels that differ only in case or surrounding spaces (kept apart)."""
    notes = []
    numbers = {str.__str__(v) for v in cells if isinstance(v, _JsonNumber)}
    strings = {v for v in cells if type(v) is str}
    for both in sorted(numbers & strings, key=_natural):
        notes.append(f'{shown}: column {column!r} holds the number {both} and the string "{both}": one class {both!r}')
    groups: dict[str, set[str]] = {}
    for v in {_label_text(c) for c in cells}:
        groups.setdefault(v.strip().casefold(), set()).add(v)
    for spellings in sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: _natural(g[0])):
        notes.append(
            f"warning: {shown}: column {column!r} has labels that differ only in case or surrounding spaces, "
            f"{', '.join(map(repr, spellings))}: kept as {len(spellings)} classes (fix the table if they are one)"
        )
    return notes


def _natural(label: str) -> tuple:
    """Sort key of label names: integer codes by value (then spelling: '01' before '1'), then the rest."""
    return (0, int(label), label) if re.fullmatch(r"[+-]?\d+", label) else (1, 0, label)


def load_table(
    path: str | None,
    text_column: str = "text",
    label_column: str = "label",
    test_path: str | None = None,
    test_size: float = 0.2,
    seed: int = 113,
    delimiter: str | None = None,
) -> TextDataset:
    """Reads a labelled table (module docstring). Labels are strings as written in the file ('001' stays '001');
    label names are the distinct training labels, integer codes in numeric order, then the rest. A CSV/TSV file's
    delimiter is `delimiter`, else detected from its header. Raises DataError naming the file, column and rows at
    fault."""
    if path is None:
        raise DataError("data.path is required for source 'table' (a .csv, .tsv, .parquet or .jsonl file)")
    train = _read_file(path, text_column, label_column, delimiter)
    test = _read_file(test_path, text_column, label_column, delimiter) if test_path is not None else None
    if test is not None:
        train_idx = np.arange(len(train.texts))
        test_texts, test_labels, test_ids = test.texts, test.labels, test.ids
    else:
        from sklearn.model_selection import train_test_split

        counts = pd.Series(train.labels).value_counts()
        if (counts < 2).any():
            raise DataError(
                f"{train.shown}: a stratified test split needs at least 2 examples per class; only 1 for "
                f"{', '.join(repr(str(k)) for k in counts[counts < 2].index)}. Add examples or give data.test_path"
            )
        try:
            train_idx, test_idx = train_test_split(
                np.arange(len(train.texts)), test_size=test_size, random_state=seed, stratify=train.labels
            )
        except ValueError as e:
            raise DataError(f"{train.shown}: cannot split with data.test_size={test_size}: {e}") from None
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
        test_texts, test_labels, test_ids = (
            [train.texts[i] for i in test_idx],
            [train.labels[i] for i in test_idx],
            [train.ids[i] for i in test_idx],
        )

    train_labels = [train.labels[i] for i in train_idx]
    names = sorted(set(train_labels), key=_natural)
    if len(names) < 2:
        raise DataError(
            f"{train.shown}: column {label_column!r} holds a single class ({names[0]!r}); a classifier needs at least 2"
        )
    unseen = sorted(set(test_labels) - set(names), key=_natural)
    if unseen:
        raise DataError(f"{(test or train).shown}: test labels never seen in training: {', '.join(map(repr, unseen))}")
    index = {n: i for i, n in enumerate(names)}
    prov = {
        "source": "table",
        "path": train.where,
        "sha256": train.sha256,
        "text_column": text_column,
        "label_column": label_column,
        "read": train.read,
        "split": {
            "test_path": test.where if test else None,
            "test_sha256": test.sha256 if test else None,
            "test_size": None if test else test_size,
            "seed": None if test else seed,
            "train": len(train_idx),
            "test": len(test_texts),
        },
        "notes": train.notes + (test.notes if test else []),
        "steps": [],
    }
    ds = TextDataset(
        train_texts=[train.texts[i] for i in train_idx],
        train_labels=np.array([index[v] for v in train_labels], dtype=np.int64),
        test_texts=test_texts,
        test_labels=np.array([index[v] for v in test_labels], dtype=np.int64),
        label_names=names,
        train_ids=[train.ids[i] for i in train_idx],
        test_ids=test_ids,
        provenance=prov,
    )
    rows = {train.shown: train.empty_rows, **({test.shown: test.empty_rows} if test else {})}
    # With one file split in two, its empty rows are counted under "train" (they were dropped before the split)
    removed = {"train": len(train.empty_rows), "test": len(test.empty_rows) if test else 0}
    return ds.with_step("drop_empty_texts", {"column": text_column, "rows": rows}, removed)
