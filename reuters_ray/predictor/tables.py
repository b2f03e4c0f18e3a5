"""Tables in, tables out: a run's predictor over the text column of a CSV, TSV, Parquet or JSON Lines table, local or
in a bucket (`reuters-ray predict --table IN --out OUT`). No Ray here: the reading, the answer columns and the writing
that both engines share, and the local engine (predict_table), which holds the table in memory and scores it in
batches; predictor/batch.py's ray-data engine reads and writes with Ray Data and adds the same columns in its actors.

    read_table(path, text_column) -> pyarrow.Table      check_table(path, text_column): its columns, from its head
    answer_table(ens, texts, top_k) -> the added columns  with_answers(table, ens, text_column, top_k)
    write_table(table, path)                              predict_table(...): read, score, write (--engine local)

Every input row and column is kept, in order; the answers are added after them: `label` (a multi-label run: `labels`,
a list of label names) and `p_<label>`, one probability per class (with top_k: top_1_label, top_1_p, ... instead).
A blank text (empty, spaces, a null cell) gets the "no text" answer: label and probabilities null. The answers are
Ensemble.predict_proba's probabilities, unrounded, and the labels Ensemble.answers gives (answer_of).
CSV and TSV cells are read as the strings written ("007" stays "007", "NA" is a word); JSON Lines values keep their
JSON types, Parquet columns their types. In CSV and TSV output a label set is written as `predict` prints it
("grain|wheat"), and other list or struct columns as JSON.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from reuters_ray.data.table import FORMATS, wide_encoding
from reuters_ray.errors import DataError
from reuters_ray.predictor.ensemble import Ensemble, answer_of
from reuters_ray.storage import read_bytes, storage_location, write_atomic

LABEL_SEPARATOR = "|"  # a label set in a CSV/TSV cell, as `predict` prints it
HEAD_BYTES = 1 << 16  # read at a time from a table's start to find its header (check_table)


def table_format(path: str, flag: str) -> str:
    """The format of table `path` (csv, tsv, parquet, jsonl) from its extension. Raises DataError naming the flag."""
    suffix = PurePosixPath(str(path).partition("?")[0].rstrip("/")).suffix
    fmt = FORMATS.get(suffix.lower())
    if fmt is None:
        kinds = ", ".join(sorted(FORMATS))
        raise DataError(f"{flag} {path}: unknown table format {suffix or '(no extension)'!r}; use one of {kinds}")
    return fmt


def locate(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) of a local path or a storage URI. Raises DataError for a URI pyarrow does not take."""
    try:
        fs, inner, _ = storage_location(str(path))
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: {e}") from None
    return fs, inner


def check_new(path: str, flag: str = "--out") -> None:
    """Raises DataError when `path` exists: a finished file (or folder) is never overwritten."""
    fs, inner = locate(path)
    try:
        kind = fs.get_file_info(inner).type
    except OSError as e:
        raise DataError(f"{flag} {path}: cannot tell whether it exists ({e})") from None
    if kind != pafs.FileType.NotFound:
        raise DataError(f"{flag} {path}: already exists; predict never overwrites a finished file, give a new name")


def _no_column(shown: str, column: str, columns: list[str]) -> DataError:
    found = ", ".join(map(repr, columns)) or "none"
    return DataError(f"{shown}: no column {column!r} (columns found: {found}); name the text column with --text-column")


def _check_columns(shown: str, columns: list[str], text_column: str) -> None:
    """Raises DataError for a repeated column name or a missing text column."""
    if repeated := sorted({c for c in columns if columns.count(c) > 1}):
        raise DataError(f"{shown}: the header repeats the column name(s) {', '.join(map(repr, repeated))}")
    if text_column not in columns:
        raise _no_column(shown, text_column, columns)


def _header(shown: str, head: bytes, fmt: str) -> list[str]:
    """The column names at the start of a CSV/TSV/JSON Lines file (its header row; the first JSON object's keys)."""
    if wide := wide_encoding(head):
        raise DataError(f"{shown}: {wide}; re-save it as UTF-8")
    text = head.decode("utf-8-sig", errors="replace")
    if fmt == "jsonl":
        line = next((x for x in text.split("\n") if x.strip()), "")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{shown}: cannot read it as JSON Lines: its first line is not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{shown}: cannot read it as JSON Lines: its first line is not a JSON object")
        return list(row)
    header = next(csv.reader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ","), [])
    if not header:
        raise DataError(f"{shown}: no header row (an empty file?)")
    return header


def reader_options(fmt: str, columns: list[str]) -> dict:
    """pyarrow's reading options for a table of format `fmt` (and of these columns), the same for both engines:
    every CSV/TSV column read as the strings written (an empty cell as ""; quoted line breaks inside a cell). Ray
    Data's read_csv takes them as they are."""
    if fmt in ("csv", "tsv"):
        import pyarrow.csv as pacsv  # deferred: the CSV reader is loaded only for CSV tables

        return {
            "parse_options": pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
            "convert_options": pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        }
    return {}  # JSON Lines: pyarrow's types (a text column that holds numbers is refused), Parquet: its own


def _check_text_type(shown: str, schema: pa.Schema, text_column: str) -> None:
    kind = schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise DataError(f"{shown}: column {text_column!r} holds {kind}, not text")


def _first_file(fs: pafs.FileSystem, inner: str, fmt: str) -> str | None:
    """`inner` when it is a file; the first file of the format in it when it is a folder; None when it is neither."""
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.File:
        return inner
    if info.type != pafs.FileType.Directory:
        return None
    ends = tuple(s for s, f in FORMATS.items() if f == fmt)
    found = sorted(
        i.path
        for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        if i.type == pafs.FileType.File and i.base_name.lower().endswith(ends)
    )
    return found[0] if found else None


def _folder_format(fs: pafs.FileSystem, inner: str) -> str | None:
    """The format of the first table file in folder `inner` when its own name has no table extension, else None."""
    if PurePosixPath(inner.rstrip("/")).suffix.lower() in FORMATS:
        return None
    try:
        if fs.get_file_info(inner).type != pafs.FileType.Directory:
            return None
        names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True)))
    except OSError:
        return None
    return next(
        (FORMATS[PurePosixPath(n).suffix.lower()] for n in names if PurePosixPath(n).suffix.lower() in FORMATS), None
    )


def check_table(path: str, text_column: str, folders: bool = False) -> tuple[str, list[str]]:
    """(format, column names) of table `path`, read from its head only (the Parquet footer; the CSV/TSV header row; the
    first JSON object), with `folders` also of a folder of such files (its first; the format from the folder's
    extension, else from its files'). Raises DataError naming the file:
    no such file, unreadable, no text column (naming the columns found), or a text column that is not text."""
    fs, inner = locate(path)
    fmt = _folder_format(fs, inner) if folders else None  # a folder named without an extension: its files' format
    fmt = fmt or table_format(path, "--table")
    try:
        first = _first_file(fs, inner, fmt) if folders else inner
        kind = pafs.FileType.NotFound if first is None else fs.get_file_info(first).type
        if kind == pafs.FileType.Directory:
            raise DataError(f"{path}: a folder, not a file (--engine ray-data reads a folder of {fmt} files)")
        if kind != pafs.FileType.File:
            raise DataError(f"{path}: no such file" + (f" (or folder of {fmt} files)" if folders else ""))
        if fmt == "parquet":
            import pyarrow.parquet as pq  # deferred: as in reader_options

            with fs.open_input_file(first) as f:
                schema = pq.read_schema(f)
            columns = schema.names
        else:
            with fs.open_input_stream(first) as f:
                head = f.read(HEAD_BYTES)
                while b"\n" not in head.lstrip(b"\r\n") and (more := f.read(HEAD_BYTES)):
                    head += more
            columns = _header(path, head, fmt)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read it as {fmt} ({str(e).splitlines()[0] if str(e) else e})") from None
    _check_columns(path, columns, text_column)
    if fmt == "parquet":
        _check_text_type(path, schema, text_column)
    return fmt, columns


def read_table(path: str, text_column: str) -> pa.Table:
    """Table `path` (a file, local or in a bucket) in memory. Raises DataError naming the file: no such file, not
    readable as its format, no text column (naming the columns found), a text column that is not text."""
    fmt, columns = check_table(path, text_column)
    fs, inner = locate(path)
    data = read_bytes(fs, inner)
    if data is None:
        raise DataError(f"{path}: cannot read it")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq  # deferred: as in reader_options

            table = pq.read_table(io.BytesIO(data))
        elif fmt == "jsonl":
            import pyarrow.json as pajson  # deferred: as in reader_options

            table = pajson.read_json(io.BytesIO(data))
        else:
            import pyarrow.csv as pacsv  # deferred: as in reader_options

            table = pacsv.read_csv(io.BytesIO(data), **reader_options(fmt, columns))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as {fmt} ({str(e).splitlines()[0]})") from None
    _check_columns(path, table.column_names, text_column)
    _check_text_type(path, table.schema, text_column)
    return table


# --- the answers --------------------------------------------------------------------------------------------------


def answer_schema(ens: Ensemble, top_k: int | None) -> pa.Schema:
    """The columns added to a table: label (string) or labels (list of strings), then p_<label> (float64) per class,
    or with top_k top_<i>_label and top_<i>_p for i = 1 .. min(top_k, classes)."""
    fields = [pa.field("labels", pa.list_(pa.string())) if ens.multi_label else pa.field("label", pa.string())]
    if top_k is None:
        fields += [pa.field(f"p_{name}", pa.float64()) for name in ens.label_names]
    else:
        for i in range(1, min(top_k, len(ens.label_names)) + 1):
            fields += [pa.field(f"top_{i}_label", pa.string()), pa.field(f"top_{i}_p", pa.float64())]
    return pa.schema(fields)


def answer_table(ens: Ensemble, texts: list[str | None], top_k: int | None = None) -> pa.Table:
    """The added columns (answer_schema) for `texts`, one row each, in order; None counts as a blank text."""
    schema, names = answer_schema(ens, top_k), ens.label_names
    texts = ["" if t is None else t for t in texts]
    probs = ens.predict_proba(texts) if texts else np.zeros((0, len(names)))
    blank = np.isnan(probs).any(axis=1)
    k = min(top_k or 1, len(names))
    answers = [answer_of(p, names, k, ens.decision) for p in probs]
    if ens.multi_label:
        sets = [None if a["labels"] is None else [x["label"] for x in a["labels"]] for a in answers]
        columns = [pa.array(sets, pa.list_(pa.string()))]
    else:
        columns = [pa.array([a["label"] for a in answers], pa.string())]
    if top_k is None:
        columns += [pa.array(probs[:, j], pa.float64(), mask=blank) for j in range(len(names))]
    else:
        index = {name: j for j, name in enumerate(names)}
        for i in range(k):
            top = [None if b else a["top"][i]["label"] for a, b in zip(answers, blank)]
            p = np.array([np.nan if t is None else probs[r, index[t]] for r, t in enumerate(top)], dtype=np.float64)
            columns += [pa.array(top, pa.string()), pa.array(p, pa.float64(), mask=blank)]
    return pa.Table.from_arrays(columns, schema=schema)


def check_added_columns(shown: str, columns: list[str], ens: Ensemble, top_k: int | None) -> None:
    """Raises DataError when the table already has a column the answers would add."""
    if clash := [c for c in answer_schema(ens, top_k).names if c in columns]:
        raise DataError(
            f"{shown}: already has the column(s) {', '.join(map(repr, clash))} that predict adds; rename them first"
        )


def with_answers(table: pa.Table, ens: Ensemble, text_column: str, top_k: int | None, batch_size=None) -> pa.Table:
    """`table` with the answer columns after its own, scored `batch_size` texts at a time (all at once: None)."""
    texts = table.column(text_column).to_pylist()
    step = batch_size or max(len(texts), 1)
    parts = [answer_table(ens, texts[i : i + step], top_k) for i in range(0, len(texts), step)]
    answers = pa.concat_tables(parts) if parts else answer_table(ens, [], top_k)
    for field, column in zip(answers.schema, answers.columns):
        table = table.append_column(field, column)
    return table


# --- writing --------------------------------------------------------------------------------------------------------


def _json_value(value):
    """A value JSON has no type for, as text (dates, decimals, bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _flat(table: pa.Table) -> pa.Table:
    """`table` with its list, struct and map columns as text, for CSV/TSV: a label set joined as `predict` prints it
    ("grain|wheat"), the rest as JSON."""
    for i, field in enumerate(table.schema):
        kind = field.type
        if not (pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            continue
        values = table.column(i).to_pylist()
        if field.name == "labels" and pa.types.is_list(kind) and pa.types.is_string(kind.value_type):
            text = [None if v is None else LABEL_SEPARATOR.join(v) for v in values]
        elif pa.types.is_nested(kind):
            text = [None if v is None else json.dumps(v, ensure_ascii=False, default=_json_value) for v in values]
        else:
            text = [None if v is None else _json_value(v) for v in values]
        table = table.set_column(i, pa.field(field.name, pa.string()), pa.array(text, pa.string()))
    return table


def encode_table(table: pa.Table, fmt: str) -> bytes:
    """The bytes of `table` as a file of format `fmt`."""
    buf = io.BytesIO()
    if fmt == "parquet":
        import pyarrow.parquet as pq  # deferred: as in reader_options

        pq.write_table(table, buf)
    elif fmt == "jsonl":
        for row in table.to_pylist():
            buf.write(json.dumps(row, ensure_ascii=False, default=_json_value).encode("utf-8") + b"\n")
    else:
        import pyarrow.csv as pacsv  # deferred: as in reader_options

        pacsv.write_csv(_flat(table), buf, pacsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ","))
    return buf.getvalue()


def write_table(table: pa.Table, path: str) -> None:
    """Writes `table` to `path` (its format from the extension), local or in a bucket, whole or not at all (a
    temporary sibling, then a move). Raises DataError when `path` exists or cannot be written."""
    fmt = table_format(path, "--out")
    check_new(path)  # again: the scoring may have taken a while
    fs, inner = locate(path)
    try:
        data = encode_table(table, fmt)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(f"{path}: cannot write the table as {fmt} ({str(e).splitlines()[0]})") from None
    try:
        write_atomic(inner, data, fs)
    except OSError as e:
        raise DataError(f"{path}: cannot write it ({e})") from None


def predict_table(
    run: str,
    table: str,
    out: str,
    text_column: str = "text",
    top_k: int | None = None,
    batch_size: int = 64,
    backend: str = "torch",
    device: str | None = None,
) -> str:
    """--engine local: table `table` read into memory, its texts answered by run `run`'s predictor `batch_size` at a
    time, written to `out` with the answer columns added. Every check (flags aside) comes before any scoring: `out`
    must be new, `table` readable with a text column, the run a finished one, no answer column in the table already.
    Returns the result line."""
    table_format(out, "--out")
    check_new(out)
    data = read_table(table, text_column)
    ens = Ensemble.load(run, backend=backend, device=device)
    check_added_columns(table, data.column_names, ens, top_k)
    scored = with_answers(data, ens, text_column, top_k, batch_size)
    write_table(scored, out)
    key = "labels" if ens.multi_label else "label"
    blank = scored.column(key).null_count
    return f"wrote {scored.num_rows} rows to {out} ({blank} with no text)"
