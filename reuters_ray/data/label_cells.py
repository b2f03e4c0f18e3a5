"""How the label cells of a table are written, for the `table` source (reuters_ray.data.table).

A cell of several labels may be written in a list notation: a JSON list (["grain", "wheat"]), a Python list, tuple
or set (['grain', 'wheat']: what pandas writes to a CSV for a column of lists, with np.str_('grain') items when the
lists came from numpy), or a numpy array (['grain' 'wheat']: items apart by spaces, no commas); or as labels apart by
a separator. data.task multi reads a column in list notation as lists when every non-empty cell of it is one, and
refuses a column that mixes them with other text, or that holds no data.label_delimiter but another separator
(grain,wheat). data.task single keeps such cells as written, each one class, and says so. Cells are parsed, never
evaluated: JSON by json, Python's notations by ast.parse (literals only), numpy's by a regular expression.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Callable
from typing import Any

from reuters_ray.errors import DataError

_QUOTED = r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\""""
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_ITEM = re.compile(f"{_QUOTED}|{_NUMBER}")
# numpy's str() of an array: two or more items apart by white space only (Python would join two adjacent strings)
_NUMPY = re.compile(rf"\[\s*(?:{_QUOTED}|{_NUMBER})(?:\s+(?:{_QUOTED}|{_NUMBER}))+\s*\]")
_KINDS = {ast.List: "Python list", ast.Tuple: "Python tuple", ast.Set: "Python set"}
_NOT = object()  # an item that is no literal: the cell is no list notation
# Separators a cell of several labels is often written with, besides data.label_delimiter
SEPARATORS = (",", ";", "|", "/")
SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "|": "pipe", "/": "slash"}


def list_cell(cell: str, number: Callable[[str], Any]) -> tuple[str, list] | None:
    """(notation, items) of a cell written as a list (module docstring), None for any other text. Items: strings,
    numbers and booleans as `number(text as written)` ('01' stays '01'), None for a null item."""
    s = cell.strip()
    if s == "set()":  # Python's empty set
        return "Python set", []
    if len(s) < 2 or s[0] + s[-1] not in ("[]", "()", "{}"):
        return None
    if s[0] == "[":
        try:
            value = json.loads(s, parse_int=number, parse_float=number)
        except ValueError:
            value = None
        if isinstance(value, list):
            return "JSON list", value
        if _NUMPY.fullmatch(s):
            return "numpy array", [ast.literal_eval(m) if m[0] in "'\"" else number(m) for m in _ITEM.findall(s)]
    try:
        with warnings.catch_warnings():  # an odd escape ('a\d') is the cell's business, not a line on stderr
            warnings.simplefilter("ignore")
            node = ast.parse(s, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if type(node) not in _KINDS:
        return None
    items = [_literal(s, e, number) for e in node.elts]
    return None if any(i is _NOT for i in items) else (_KINDS[type(node)], items)


def _literal(source: str, node: ast.expr, number: Callable[[str], Any]) -> Any:
    """A list item's value: a string literal's text, a number or boolean as written, None; numpy's scalar reprs
    (np.str_('grain'), np.int64(3), np.True_) as their value. _NOT for anything else."""
    if isinstance(node, ast.Call) and _numpy(node.func) and len(node.args) == 1 and not node.keywords:
        return _literal(source, node.args[0], number)
    if _numpy(node) and node.attr in ("True_", "False_"):
        return number(node.attr[:-1])
    segment = ast.get_source_segment(source, node) or ""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return number(segment)
        return _NOT
    if not isinstance(node, ast.Constant):
        return _NOT
    if isinstance(node.value, str):  # one literal: 'a' 'b' would be Python's joined "ab"
        return node.value if re.fullmatch(_QUOTED, segment) else _NOT
    if node.value is None:
        return None
    return number(segment) if type(node.value) in (int, float, bool) else _NOT


def _numpy(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy")


def column_lists(
    shown: str, column: str, values: list, delimiter: str, number
) -> tuple[dict[int, list], str | None, list[str]]:
    """task multi: ({0-based row: items} of the cells to read as lists, their notation, the note saying so), or
    ({}, None, []). A column is read as lists when every non-empty string cell of it is in list notation; none is when
    no cell is. Raises DataError naming the rows when some cells are and others are not, or when cells in brackets
    with a comma or semicolon inside ([grain, wheat]) are no JSON or Python list and either every cell is in
    brackets or none holds `delimiter` (read at another separator, they would keep their brackets)."""
    strings = {row: v for row, v in enumerate(values) if isinstance(v, str) and v.strip()}
    parsed = {row: list_cell(v, number) for row, v in strings.items()}
    lists = [row for row, p in parsed.items() if p is not None]
    if not lists:
        bracketed = {r: v for r, v in strings.items() if v.strip()[0] + v.strip()[-1] == "[]"}
        inside = [r for r, v in bracketed.items() if re.search("[,;]", v)]
        if inside and (len(bracketed) == len(strings) or not any(delimiter in v for v in strings.values())):
            row, cell = inside[0], strings[inside[0]]
            raise DataError(
                f"{shown}: column {column!r} holds bracketed lists that are neither JSON nor Python notation (data "
                f'row {row + 1}: {cell!r}); write them as ["grain", "wheat"], or as labels separated by '
                f"data.label_delimiter {delimiter!r}"
            )
        return {}, None, []
    first = lists[0]
    notation = parsed[first][0]
    others = sorted(set(strings) - set(lists))
    if others:
        raise DataError(
            f"{shown}: column {column!r} holds labels in {notation} notation (data row {first + 1}: "
            f"{strings[first]!r}) in data rows {data_rows(lists)} but other text in data rows {data_rows(others)} (data row "
            f"{others[0] + 1}: {strings[others[0]]!r}); write every cell the same way: a list, or labels separated by "
            f"data.label_delimiter {delimiter!r}"
        )
    note = (
        f"{shown}: column {column!r} holds its labels in {notation} notation (data row {first + 1}: "
        f"{strings[first]!r}): each item read as a label"
    )
    return {row: p[1] for row, p in parsed.items()}, notation, [note]


def separators(values: list, delimiter: str) -> dict:
    """task multi, a column not in list notation: how many non-empty string cells there are ("cells"), how many cells
    hold several labels ("several": a string holding `delimiter`, a JSON or Parquet list of two or more), and for each
    other separator (SEPARATORS) the string cells that hold it: [count, first 0-based row, its cell] ("separators")."""
    seen: dict[str, list] = {}
    cells = several = 0
    for row, v in enumerate(values):
        if isinstance(v, (list, tuple)):
            several += len(v) > 1
        if not isinstance(v, str) or not v.strip():
            continue
        cells += 1
        several += delimiter in v
        for sep in SEPARATORS:
            if sep not in delimiter and sep in v:
                seen.setdefault(sep, [0, row, v])[0] += 1
    return {"cells": cells, "several": several, "separators": seen}


def check_separators(files: list[tuple[str, dict]], column: str, delimiter: str) -> None:
    """task multi: raises DataError when no label cell of the files ((name, separators()) each, a test file after the
    training file) holds several labels (`delimiter`, a list) but some hold another separator, naming the one most
    cells hold, the first row that holds it and both remedies. A file of one label per cell with a comma in some
    (Washington, D.C.) is refused too, not split: with no cell of several labels there is no multi-label data."""
    if any(info["several"] for _, info in files):
        return
    totals: dict[str, int] = {}
    for _, info in files:
        for sep, (count, _, _) in info["separators"].items():
            totals[sep] = totals.get(sep, 0) + count
    if not totals:
        return
    sep = max(totals, key=lambda s: (totals[s], -SEPARATORS.index(s)))
    shown, info = next((shown, info) for shown, info in files if sep in info["separators"])
    _, row, cell = info["separators"][sep]
    cells = sum(f["cells"] for _, f in files)
    both = len(files) > 1  # counted over both files: say so, and whose row the example is
    where, of = (f" cells of {' and '.join(name for name, _ in files)}", f" of {shown}") if both else ("", "")
    raise DataError(
        f"{shown}: column {column!r}: no label cell holds data.label_delimiter {delimiter!r}, but {totals[sep]} of "
        f"{cells}{where} hold a {SEPARATOR_NAMES[sep]} (data row {row + 1}{of}: {cell!r}); if it separates the "
        f"labels, set --data.label_delimiter '{sep}'; if each cell is one label, use --data.task single"
    )


def check_joined(files: list[tuple[str, list[list[str]]]], column: str, delimiter: str) -> None:
    """task multi, a training and a test file ((name, each row's labels) each): raises DataError when one file holds
    no cell of several labels but cells that join the other file's labels with a separator ('acq,crude' where the
    other file holds the lists ["acq", "crude"]): the two files write their label sets differently, and the joined
    cells would be classes of their own (or test labels never seen in training)."""
    for i, (shown, sets) in enumerate(files):
        if any(len(labels) > 1 for labels in sets):
            continue
        other, others = next((name, {x for ls in s for x in ls}) for j, (name, s) in enumerate(files) if j != i)
        for sep in (s for s in SEPARATORS if s not in delimiter):
            joined = [
                ls[0]
                for ls in sets
                if len(ls) == 1
                and sep in ls[0]
                and ls[0] not in others
                and all(piece.strip() in others for piece in ls[0].split(sep))
            ]
            if joined:
                raise DataError(
                    f"{shown}: column {column!r}: {len(joined)} of its label cells join {other}'s labels with a "
                    f"{SEPARATOR_NAMES[sep]} (e.g. {joined[0]!r}) while {other} writes several labels per cell; write "
                    f"both files' label sets the same way, or set --data.label_delimiter '{sep}' (a list stays a list)"
                )


def single_label_notes(shown: str, column: str, labels: list, delimiter: str, number) -> list[str]:
    """task single: a warning line each for the cells that hold `delimiter` and for those in list notation, which
    become classes as written: how many cells, an example, how many classes, and --data.task multi."""
    listed: dict[int, str] = {}
    delimited: dict[int, str] = {}
    for row, v in enumerate(labels):
        if not isinstance(v, str):
            continue
        parsed = list_cell(v, number)
        if parsed is not None:
            listed[row] = parsed[0]
        elif delimiter in v:
            delimited[row] = v
    notes = []
    for rows, what, remedy in (
        (listed, f"labels in {next(iter(listed.values()), '')} notation", "reads each item as a label"),
        (delimited, f"data.label_delimiter {delimiter!r}", "splits them into labels"),
    ):
        if rows:
            first = next(iter(rows))
            notes.append(
                f"warning: {shown}: column {column!r}: {len(rows)} cell(s) hold {what} (data row {first + 1}: "
                f"{labels[first]!r}), read as {len({labels[r] for r in rows})} class(es) named as written; "
                f"--data.task multi {remedy}"
            )
    return notes


def data_rows(positions) -> str:
    """Data rows (from 1) at 0-based `positions`, the first five."""
    positions = list(positions)
    return ", ".join(str(i + 1) for i in positions[:5]) + (" ..." if len(positions) > 5 else "")
