"""Data sources: each turns its input into a TextDataset with provenance.

reuters21578  the raw Reuters-21578 SGML files (folder or UCI archive), Keras's exact split
keras         Keras's reuters.npz plus its word index, decoded to text
table         your own CSV / Parquet / JSONL file(s)
"""

from __future__ import annotations

from reuters_ray.config import DataConfig
from reuters_ray.data.dataset import TextDataset
from reuters_ray.data.keras_reuters import load_keras_reuters
from reuters_ray.data.reuters21578 import load_reuters21578
from reuters_ray.data.table import load_table


def load_dataset(cfg: DataConfig) -> TextDataset:
    """Loads the raw data set `cfg` names (no filtering: see reuters_ray.data.preprocess)."""
    if cfg.source == "reuters21578":
        return load_reuters21578(
            cfg.resolved_path(),
            text=cfg.text,
            cache_dir=cfg.cache_dir,
            seed=cfg.split_seed,
            split=cfg.split,
            task=cfg.task,
        )
    if cfg.source == "keras":
        return load_keras_reuters(cache_dir=cfg.cache_dir, num_words=cfg.keras_num_words, seed=cfg.split_seed)

    return load_table(
        cfg.path,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        test_path=cfg.test_path,
        test_size=cfg.test_size,
        seed=cfg.split_seed,
        delimiter=cfg.delimiter,
        task=cfg.task,
        label_delimiter=cfg.label_delimiter,
    )


__all__ = ["TextDataset", "load_dataset"]
