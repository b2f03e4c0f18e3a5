"""Typed configuration: dataclasses with commented defaults, built from YAML or `key=value` flags.

Unknown keys and values of the wrong type are errors that name the key, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reuters_ray.errors import DataError

# Environment variable pointing at a local Reuters-21578 folder or archive (used when `path` is unset).
REUTERS_PATH_ENV = "REUTERS21578_PATH"


@dataclass
class DataConfig:
    # Where the texts come from: "reuters21578" (the raw SGML distribution), "keras" (Keras's
    # reuters.npz, needs the `keras` extra to download) or "table" (your own CSV/Parquet/JSONL).
    source: str = "reuters21578"
    # reuters21578: a folder of reut2-*.sgm or reuters21578.tar.gz; unset -> $REUTERS21578_PATH, else download.
    # table: the training file (or the whole file, split by test_size).
    path: str | None = None
    # reuters21578 only. "title+body": each wire's own title and body (correct). "keras": the next
    # <BODY> after the wire's <TOPICS>, as Keras built its data set (975 wires get a later wire's body).
    text: str = "title+body"
    # Downloads land here (default ~/.cache/reuters-ray, or Keras's own cache for source "keras").
    cache_dir: str | None = None
    # table only: a separate test file; unset -> a seeded stratified split of `path` by test_size.
    test_path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    test_size: float = 0.2
    # Seed of the train/test split: 113 is Keras's, which the reuters21578 source reproduces.
    split_seed: int = 113
    # keras only: keep the most frequent words, others decode to [UNK] (10000 gives the seed's texts).
    keras_num_words: int | None = 10000
    # Drop classes with fewer training examples than this (the seed: 50 -> 18 Reuters topics).
    min_samples: int = 50
    # Drop texts with fewer whitespace tokens than this after cleaning (the seed: 3).
    min_tokens: int = 3
    # Tokens per text after WordPiece, [CLS] and [SEP] included; longer texts are truncated.
    max_length: int = 300
    # Tokenizer: a hub id, a local folder, or an offline alias (see reuters_ray.models).
    tokenizer: str = "google/bert_uncased_L-4_H-512_A-8"

    def __post_init__(self) -> None:
        checks = [
            (self.source in ("reuters21578", "keras", "table"), "source", "one of reuters21578, keras, table"),
            (self.text in ("title+body", "keras"), "text", "title+body or keras"),
            (0.0 < self.test_size < 1.0, "test_size", "between 0 and 1"),
            (self.min_samples >= 1, "min_samples", ">= 1"),
            (self.min_tokens >= 0, "min_tokens", ">= 0"),
            (self.max_length >= 8, "max_length", ">= 8 (room for [CLS], [SEP] and some text)"),
            (self.keras_num_words is None or self.keras_num_words > 3, "keras_num_words", "> 3 or unset"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise DataError(f"config: data.{name} must be {want}, got {getattr(self, name)!r}")

    def resolved_path(self) -> str | None:
        """The data path after the environment fallback (reuters21578 only)."""
        if self.path is None and self.source == "reuters21578":
            return os.environ.get(REUTERS_PATH_ENV) or None
        return self.path


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks `value` against a (simple) annotation; strings from flags are parsed as YAML scalars."""
    if isinstance(value, str) and tp is not str:
        value = yaml.safe_load(value) if value != "" else None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except DataError:
                pass
        raise DataError(f"config: {where} must be {tp}, got {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise DataError(f"config: {where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, mapping: dict[str, Any] | None, where: str = "") -> Any:
    """Builds dataclass `cls` from a mapping; unknown keys and wrong types raise DataError."""
    mapping = dict(mapping or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise DataError(f"config: unknown key(s) {', '.join(where + k for k in unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in mapping.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, where=f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, where + name)
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML config file into a mapping (an empty file is an empty mapping)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"config: cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise DataError(f"config: {path} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise DataError(f"config: {path} must hold a mapping of keys to values")
    return data or {}
