"""Shared set-up of the benchmarks: real Reuters-18 wires, tokenized as in a run."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def reuters_path() -> str:
    """The Reuters-21578 files: $REUTERS21578_PATH (DataConfig's own fallback), else the workplace's shared copy."""
    from reuters_ray.config import DataConfig

    return DataConfig().resolved_path() or str(REPO.parent / "shared" / "data" / "reuters21578")


def reuters18_tokens(
    n: int, split: str = "train", seed: int = 0, max_length: int = 300, tokenizer: str = "small-bert-random"
):
    """(TokenArrays, labels, label names) of a stratified sample of n preprocessed Reuters-18 wires.
    tokenizer: an alias or a local tokenizer folder (the uncased BERT vocabulary either way)."""
    from reuters_ray.data.features import tokenize
    from reuters_ray.data.preprocess import preprocess, subsample
    from reuters_ray.data.reuters21578 import load_reuters21578
    from reuters_ray.fold.models import load_tokenizer

    ds = preprocess(load_reuters21578(reuters_path()))
    ds = subsample(ds, n if split == "train" else None, n if split == "test" else None, seed)
    texts, labels = (ds.train_texts, ds.train_labels) if split == "train" else (ds.test_texts, ds.test_labels)
    return tokenize(texts, load_tokenizer(tokenizer), max_length), labels, ds.label_names


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


__all__ = ["machine", "np", "reuters18_tokens", "reuters_path", "sync"]
