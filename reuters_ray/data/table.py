"""Source `table`: your own labelled texts in CSV, TSV, Parquet or JSON Lines.

One file split into train/test by a seeded stratified split, or a train file plus a test file.
Labels are strings as written: '001', '01' and '1' are three classes. JSON numbers keep their spelling (a JSON 1 and
"1" are one class, and the run says so); Parquet integers and booleans are written as JSON writes them. Label names
are the distinct training labels, integer codes in numeric order first. Text files are UTF-8, a byte-order mark
allowed; a CSV/TSV file's delimiter is data.delimiter, else the one whose split of the header holds the named
columns (';' from spreadsheets with a decimal comma), and the run says which. Ids come from an `id` column, else
the 0-based row number.
Multi-label data (data.task multi): a label cell holds a text's labels, in CSV/TSV split at data.label_delimiter ('|':
"sport | politics"; spaces around each label dropped, empty pieces ignored), in JSON Lines and Parquet a list (a plain
string there is split the same way). A column whose every cell is written as a list (JSON, Python's or numpy's
notation: what pandas writes for a column of lists) is read as lists; one that mixes them with other text, or whose
cells hold another separator but never data.label_delimiter, is refused (reuters_ray.data.label_cells). A row without
any label is dropped and counted; one file is split in two by a seeded iterative stratification
(MultilabelStratifiedShuffleSplit), and the labels become multi-hot rows. data.task single keeps a cell that holds
the label delimiter or a list as one class, as written, and says so in a warning line naming data.task multi.
A path is a local file or a URI pyarrow's filesystems take (s3://bucket/news.csv?endpoint_override=..., gs://...),
so a job submitted to a remote cluster needs no file on its head node.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from reuters_ray.data.dataset import TextDataset
from reuters_ray.data.label_cells import (
    check_joined,
    check_separators,
    column_lists,
    data_rows,
    separators,
    single_label_notes,
)
from reuters_ray.data.text import unreadable_texts
from reuters_ray.errors import DataError
from reuters_ray.storage import read_bytes, storage_location

FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _fetch(path: str) -> tuple[str, str, bytes, str]:
    """(the file's name for messages, its name for provenance, its bytes, its format) of a local path or a URI."""
    if "://" in path:
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


class _JsonNumber:
    """A JSON number kept as it is written (`1`, `1.0`; `001` is not JSON): a label's spelling is its identity. Not a
    str subclass: pandas turns those into plain strings, and then a number and a string written alike look the same."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


WIDE_BOMS = [
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
]


def wide_encoding(data: bytes) -> str | None:
    """ "UTF-16" or "UTF-32" when `data` is text in one of them (its byte-order mark, or, without one, a NUL in every
    second or fourth byte of its start: what ASCII looks like there), else None."""
    for bom, name in WIDE_BOMS:
        if data.startswith(bom):
            return f"{name} text (it starts with a {name} byte-order mark)"
    head = data[:4000]
    if len(head) >= 8 and head.count(0) >= len(head) // 3:
        return "UTF-16 or UTF-32 text (every other byte of its start is NUL)"
    return None


def _decode(name: str, data: bytes) -> str:
    """The file's text: UTF-8, with or without a byte-order mark. Raises DataError naming UTF-16/32 text, or the line
    of a byte that is not UTF-8."""
    if wide := wide_encoding(data):
        raise DataError(f"{name}: {wide}; re-save it as UTF-8")
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
        if bad := [k for k, v in row.items() if isinstance(v, str) and unreadable_texts([v])]:
            raise DataError(f"{name}: line {number}: {bad[0]!r} holds text that is not Unicode (a lone surrogate)")
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
        return pd.DataFrame({c: _parquet_column(table.column(c)) for c in table.column_names}), {"format": "parquet"}
    text = _decode(name, data)
    if fmt == "jsonl":
        return _read_jsonl(name, text), {"format": "jsonl"}
    sep, how = _delimiter(name, text, fmt, delimiter, columns)
    header = next(csv.reader(io.StringIO(text), delimiter=sep), [])
    if repeated := sorted({c for c in header if header.count(c) > 1 and c}):
        at = ", ".join(str(i + 1) for i, c in enumerate(header) if c in repeated)
        raise DataError(
            f"{name}: the header repeats the column name(s) {', '.join(map(repr, repeated))} (columns {at})"
        )
    try:
        # keep_default_na=False: the text "NA" is a word, not a missing value; only empty cells are missing.
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{name}: cannot parse as {fmt} with delimiter {sep!r}: {str(e).splitlines()[0]}") from None
    return df, {"format": fmt, "delimiter": sep, "delimiter_from": how}


def _parquet_column(column) -> pd.Series:
    """A Parquet column as Python values (an integer column with a gap stays integers: pandas would make floats);
    float32 values as numpy's float32, so that they print as written (0.1, not 0.10000000149011612)."""
    import pyarrow as pa

    values = column.to_pylist()
    if column.type == pa.float32():
        values = [None if v is None else np.float32(v) for v in values]
    return pd.Series(values, dtype=object)


def _label_text(value) -> str:
    """A cell as a string, spelled as in the file: strings as they are, JSON numbers as written, Parquet's integers
    and booleans as JSON writes them, its floats in their shortest form, its binary values as UTF-8."""
    if isinstance(value, str):
        return value
    if isinstance(value, _JsonNumber):
        return value.text
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, np.floating):
        return str(value)  # numpy's shortest form for the value's own precision
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")  # not UTF-8: refused by _cells first
    return str(value)


def _cells(shown: str, column: str, values: list, labels: bool) -> list[str | None]:
    """Each cell of `column` as text (_label_text), None where it is missing. Raises DataError naming the data rows of
    cells that are no text: a list or mapping, bytes that are not UTF-8, a lone surrogate (JSON "\\ud800"); and for a
    label, a line break, tab or other control character (a label is one line in every output)."""

    def refuse(rows: list[int], what: str, hint: str = "") -> None:
        if rows:
            raise DataError(f"{shown}: column {column!r} holds {what} in data rows {data_rows(rows)}{hint}")

    lists = [i for i, v in enumerate(values) if isinstance(v, (list, dict, np.ndarray))]
    several = labels and any(isinstance(values[i], (list, np.ndarray)) for i in lists)
    refuse(lists, "a list or mapping", "; for several labels per text use --data.task multi" if several else "")
    refuse([i for i, v in enumerate(values) if isinstance(v, bytes) and not _utf8(v)], "bytes that are not UTF-8")
    out = [None if _missing(v) else _label_text(v) for v in values]
    shown_texts = [t or "" for t in out]
    refuse(unreadable_texts(shown_texts), "text that is not Unicode (a lone surrogate)")
    if labels:
        what = "a line break, tab or other control character (a label is one line in every output)"
        refuse([i for i, t in enumerate(shown_texts) if _CONTROL.search(t)], what)
    return out


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _missing(value) -> bool:
    """An absent cell: empty in CSV, null in JSON or Parquet, or nothing but spaces."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value))


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
    unlabelled_rows: list[int] = field(default_factory=list)  # task multi: dropped, no label in the cell
    # task multi: the label column's notation ("Python list", ...; None: separated labels) and its cells'
    # separators (label_cells.separators)
    notation: str | None = None
    separators: dict = field(default_factory=dict)


def _read_file(
    path: str,
    text_column: str,
    label_column: str,
    delimiter: str | None,
    task: str = "single",
    label_delimiter: str = "|",
) -> _File:
    """Reads one table file. Raises DataError naming the file, column and data rows at fault: missing columns, no
    rows, missing labels, a list or mapping as a label, repeated ids, no text at all. task "multi": each label cell is
    a list of labels (_label_sets); a row without any is dropped and counted, not refused."""
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
    notation, seps, notes = None, {}, _read_notes(shown, read)
    if task == "multi":
        listed, notation, note = column_lists(shown, label_column, cells, label_delimiter, _JsonNumber)
        notes += note
        seps = {} if notation else separators(cells, label_delimiter)
        labels, items = _label_sets(
            shown, label_column, [listed.get(r, v) for r, v in enumerate(cells)], label_delimiter
        )
        unlabelled = np.array([not ls for ls in labels])
        if unlabelled.all():
            raise DataError(f"{shown}: column {label_column!r} holds no label in any of its {len(df)} rows")
    else:
        labels = _cells(shown, label_column, cells, labels=True)
        absent = [i for i, v in enumerate(labels) if v is None]
        if absent:
            raise DataError(
                f"{shown}: column {label_column!r} has {len(absent)} missing label(s), data rows {data_rows(absent)}"
            )
        items, unlabelled = [[c] for c in cells], np.zeros(len(labels), dtype=bool)
        notes += single_label_notes(shown, label_column, labels, label_delimiter, _JsonNumber)
    texts = _cells(shown, text_column, df[text_column].tolist(), labels=False)
    empty = np.array([t is None for t in texts])
    if empty.all():
        raise DataError(f"{shown}: column {text_column!r} holds no text in any of its {len(df)} rows")
    unlabelled &= ~empty  # a row with neither text nor label counts as an empty text
    ids = [_label_text(i) for i in df["id"]] if "id" in df.columns else [str(i) for i in range(len(df))]
    at: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        at.setdefault(v, []).append(i)
    repeated = next((v for v, rows in at.items() if len(rows) > 1), None)
    if repeated is not None:
        raise DataError(
            f"{shown}: column 'id' repeats {repeated!r} in data rows {data_rows(at[repeated])}; ids name rows in "
            f"predictions and folds, so each must be unique (rename the column to have rows numbered instead)"
        )
    # empty texts (and, task multi, rows without a label): dropped and counted, as the seed's short-text filter drops
    # short ones
    keep = np.flatnonzero(~empty & ~unlabelled)
    return _File(
        shown=shown,
        where=where,
        sha256=hashlib.sha256(data).hexdigest(),
        read=read,
        texts=[texts[i] for i in keep],
        labels=[labels[i] for i in keep],
        ids=[ids[i] for i in keep],
        empty_rows=[int(i) + 1 for i in np.flatnonzero(empty)],
        notes=notes + _label_notes(shown, label_column, [v for i in keep for v in items[i]]),
        unlabelled_rows=[int(i) + 1 for i in np.flatnonzero(unlabelled)],
        notation=notation,
        separators=seps,
    )


def _label_sets(shown: str, column: str, values: list, delimiter: str) -> tuple[list[list[str]], list[list]]:
    """task multi: each cell of `column` as its labels (each once, in the cell's order), and as the items they came
    from (for _label_notes). A list (JSON Lines, Parquet) holds one label per item, spelled as _label_text spells
    a cell; a string is split at `delimiter`, spaces around each piece dropped; a JSON or Parquet number or boolean
    is one label; empty pieces and items, and a missing cell, give no label. Raises DataError naming the data rows
    of a mapping or a list inside a list, bytes that are not UTF-8, a lone surrogate, or a control character."""
    faults: dict[str, list[int]] = {}
    sets, items_of = [], []
    for row, value in enumerate(values):
        if isinstance(value, dict):
            faults.setdefault("a mapping", []).append(row)
            value = None
        if isinstance(value, (list, tuple, np.ndarray)):
            items = list(value)
        elif _missing(value):
            items = []
        elif isinstance(value, str):
            items = [piece.strip() for piece in value.split(delimiter)]
        else:
            items = [value]
        kept = []
        for item in items:
            if isinstance(item, (list, tuple, dict, np.ndarray)):
                faults.setdefault("a list or mapping inside a list", []).append(row)
            elif isinstance(item, bytes) and not _utf8(item):
                faults.setdefault("bytes that are not UTF-8", []).append(row)
            elif not _missing(item):
                kept.append(item)
        names = [_label_text(item) for item in kept]
        if unreadable_texts(names):
            faults.setdefault("text that is not Unicode (a lone surrogate)", []).append(row)
        if any(_CONTROL.search(n) for n in names):
            what = "a line break, tab or other control character in a label (a label is one line in every output)"
            faults.setdefault(what, []).append(row)
        sets.append(list(dict.fromkeys(names)))
        items_of.append(kept)
    for what, rows in faults.items():
        raise DataError(f"{shown}: column {column!r} holds {what} in data rows {data_rows(sorted(set(rows)))}")
    return sets, items_of


DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


def _read_notes(shown: str, read: dict) -> list[str]:
    """How a CSV/TSV file was split, for the run's first lines."""
    if "delimiter" not in read:
        return []
    name = DELIMITER_NAMES.get(read["delimiter"], repr(read["delimiter"]))
    return [f"{shown}: read as {read['format'].upper()} with delimiter {name} ({read['delimiter_from']})"]


def _label_notes(shown: str, column: str, cells: list) -> list[str]:
    """What a person should know about the label spellings: a JSON number or boolean and a JSON string written alike
    (one class), and labels that differ only in case, surrounding spaces, invisible characters or Unicode form (NFC
    and NFD, full-width letters), which are kept apart."""
    notes = []
    typed = {_label_text(v): "number" if isinstance(v, _JsonNumber) else "boolean" for v in cells if _typed(v)}
    strings = {v for v in cells if isinstance(v, str)}
    for both in sorted(set(typed) & strings, key=_natural):
        notes.append(
            f'{shown}: column {column!r} holds the {typed[both]} {both} and the string "{both}": one class {both!r}'
        )
    groups: dict[str, set[str]] = {}
    for v in {_label_text(c) for c in cells}:
        groups.setdefault(_look(v), set()).add(v)
    for spellings in sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: _natural(g[0])):
        notes.append(
            f"warning: {shown}: column {column!r} has labels that differ only in case, spaces, invisible characters "
            f"or Unicode form, {', '.join(map(_shown, spellings))}: kept as {len(spellings)} classes (fix the table if "
            f"they are one)"
        )
    return notes


def _shown(label: str) -> str:
    """A label in quotes, its invisible characters (format characters, combining marks, odd spaces) as \\u escapes."""
    import unicodedata

    def ch_shown(ch: str) -> str:
        return f"\\u{ord(ch):04x}" if ch != " " and unicodedata.category(ch) in ("Cf", "Mn", "Zs") else ch

    return "'" + "".join(map(ch_shown, label)) + "'"


def _typed(value) -> bool:
    return isinstance(value, (_JsonNumber, bool, np.bool_))


def _look(label: str) -> str:
    """What a label looks like to a person: NFKC form, no invisible (format) characters, no surrounding spaces, case
    folded."""
    import unicodedata

    folded = unicodedata.normalize("NFKC", label)
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf").strip().casefold()


def _natural(label: str) -> tuple:
    """Sort key of label names: numbers by value (then spelling: '01' before '1'; 2.0 before 10.0), then the rest."""
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", label):
        return (0, float(label), label)
    return (1, 0.0, label)


def _split(train: _File, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of one file: a seeded split stratified by label. Raises DataError naming the file."""
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
    return np.sort(train_idx), np.sort(test_idx)


def _multilabel_split(train: _File, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of one multi-label file: a seeded iterative stratification of its label sets
    (MultilabelStratifiedShuffleSplit; the test share may differ from test_size by a few rows, as it keeps each
    label's share first). Raises DataError naming the file."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    names = sorted({n for ls in train.labels for n in ls}, key=_natural)
    if len(names) < 2:
        raise DataError(f"{train.shown}: the labels hold a single class ({names[0]!r}); a classifier needs at least 2")
    hot = _multi_hot(train.labels, names)
    once = [n for n, c in zip(names, hot.sum(axis=0)) if c < 2]
    if once:
        raise DataError(
            f"{train.shown}: a stratified test split needs at least 2 examples per label; only 1 for "
            f"{', '.join(map(repr, once))}. Add examples or give data.test_path"
        )
    try:
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train_idx, test_idx = next(splitter.split(np.zeros((len(hot), 1)), hot))
    except ValueError as e:
        raise DataError(f"{train.shown}: cannot split with data.test_size={test_size}: {e}") from None
    return np.sort(train_idx), np.sort(test_idx)


def _multi_hot(label_sets: list[list[str]], names: list[str]) -> np.ndarray:
    """uint8 [N, len(names)]: 1 where row n has label k."""
    index = {n: k for k, n in enumerate(names)}
    hot = np.zeros((len(label_sets), len(names)), dtype=np.uint8)
    for row, labels in enumerate(label_sets):
        hot[row, [index[n] for n in labels]] = 1
    return hot


def load_table(
    path: str | None,
    text_column: str = "text",
    label_column: str = "label",
    test_path: str | None = None,
    test_size: float = 0.2,
    seed: int = 113,
    delimiter: str | None = None,
    task: str = "single",
    label_delimiter: str = "|",
) -> TextDataset:
    """Reads a labelled table (module docstring). Labels are strings as written in the file ('001' stays '001');
    label names are the distinct training labels, integer codes in numeric order, then the rest. A CSV/TSV file's
    delimiter is `delimiter`, else detected from its header. task "multi": a cell holds several labels (split at
    `label_delimiter`, or a list), rows without one are dropped and counted, the labels are multi-hot. Raises
    DataError naming the file, column and rows at fault."""
    if path is None:
        raise DataError("data.path is required for source 'table' (a .csv, .tsv, .parquet or .jsonl file)")
    if task not in ("single", "multi"):
        raise DataError(f"data.task must be 'single' or 'multi', got {task!r}")
    multi = task == "multi"
    train = _read_file(path, text_column, label_column, delimiter, task, label_delimiter)
    test = None
    if test_path is not None:
        test = _read_file(test_path, text_column, label_column, delimiter, task, label_delimiter)
    if test is not None and test.sha256 == train.sha256:
        raise DataError(
            f"{test.shown}: data.test_path holds the same bytes as data.path {train.shown}: testing on the training "
            f"rows measures nothing; give the held-out file, or leave data.test_path unset for a split"
        )
    files = [f for f in (train, test) if f is not None]
    if multi and not any(f.notation for f in files):  # before the split, which would fail on such labels less clearly
        check_separators([(f.shown, f.separators) for f in files], label_column, label_delimiter)
    if multi and len(files) == 2:  # each file in its own notation: one may join the other's labels
        check_joined([(f.shown, f.labels) for f in files], label_column, label_delimiter)
    return _dataset(train, test, text_column, label_column, test_size, seed, multi, label_delimiter)


def _dataset(
    train: _File, test: _File | None, text_column, label_column, test_size, seed, multi: bool, label_delimiter
) -> TextDataset:
    """load_table's data set from its file(s), read: the split (test file, else seeded), label names, provenance,
    and the rows dropped while reading as steps."""
    if test is not None:
        train_idx = np.arange(len(train.texts))
        test_texts, test_labels, test_ids = test.texts, test.labels, test.ids
    else:
        train_idx, test_idx = _multilabel_split(train, test_size, seed) if multi else _split(train, test_size, seed)
        test_texts, test_labels, test_ids = (
            [train.texts[i] for i in test_idx],
            [train.labels[i] for i in test_idx],
            [train.ids[i] for i in test_idx],
        )
    train_labels = [train.labels[i] for i in train_idx]
    # multi: every label of every row; single: each row's one label
    flat = (lambda rows: [n for ls in rows for n in ls]) if multi else (lambda rows: rows)
    names = sorted(set(flat(train_labels)), key=_natural)
    if len(names) < 2:
        raise DataError(
            f"{train.shown}: column {label_column!r} holds a single class ({names[0]!r}); a classifier needs at least 2"
        )
    unseen = sorted(set(flat(test_labels)) - set(names), key=_natural)
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
        "notes": train.notes
        + (test.notes if test else [])
        + (_one_label_note(train, test, label_column, label_delimiter) if multi else []),
        "steps": [],
    }
    if multi:
        prov = {**prov, "task": "multi", "label_delimiter": label_delimiter}

    def encode(labels: list) -> np.ndarray:
        return _multi_hot(labels, names) if multi else np.array([index[v] for v in labels], dtype=np.int64)

    ds = TextDataset(
        train_texts=[train.texts[i] for i in train_idx],
        train_labels=encode(train_labels),
        test_texts=test_texts,
        test_labels=encode(test_labels),
        label_names=names,
        train_ids=[train.ids[i] for i in train_idx],
        test_ids=test_ids,
        provenance=prov,
    )
    rows = {train.shown: train.empty_rows, **({test.shown: test.empty_rows} if test else {})}
    # With one file split in two, its empty rows are counted under "train" (they were dropped before the split)
    removed = {"train": len(train.empty_rows), "test": len(test.empty_rows) if test else 0}
    ds = ds.with_step("drop_empty_texts", {"column": text_column, "rows": rows}, removed)
    if not multi:
        return ds
    rows = {train.shown: train.unlabelled_rows, **({test.shown: test.unlabelled_rows} if test else {})}
    removed = {"train": len(train.unlabelled_rows), "test": len(test.unlabelled_rows) if test else 0}
    return ds.with_step("drop_unlabelled_rows", {"column": label_column, "rows": rows}, removed)


def _one_label_note(train: _File, test: _File | None, column: str, label_delimiter: str) -> list[str]:
    """task multi: one warning line when every row of the table (both files) has exactly one label. (Cells that hold
    another separator instead of the delimiter were refused before: there the remedy is data.label_delimiter.)"""
    files = [train] + ([test] if test else [])
    if any(len(labels) != 1 for f in files for labels in f.labels):
        return []
    shown = " and ".join(f.shown for f in files)
    if any(f.notation for f in files):  # with data.task single a cell is a class as written, brackets and all
        how, remedy = "each list holds one item", "data.task single may be what you want, with the labels written bare"
    else:
        how, remedy = f"data.label_delimiter is {label_delimiter!r}", "data.task single may be what you want"
    return [f"warning: {shown}: column {column!r}: every row has one label ({how}); {remedy}"]
