"""Scoring token arrays: batching, the forward pass and logits, for training's validation, the ensemble and the
export alike. No Ray here.

    predict_logits   one model's float32 logits for rows of a TokenArrays, batched longest-first
    TorchFolds       the fold models (Hugging Face folders) on a device: each fold's logits, and their mean
    OnnxFolds        an exported graph (reuters_ray.predictor.export) on onnxruntime: the mean of the folds' logits
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from reuters_ray.data.features import TokenArrays
from reuters_ray.errors import ConfigError
from reuters_ray.fold.models import head_in_fp32
from reuters_ray.fold.plan import eval_precision


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, else the GPU when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def check_device(device: str) -> torch.device:
    """`device` as torch names it, after checking it exists here. Raises ConfigError naming it otherwise."""

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--device {device!r}: not a device torch knows ({str(e).splitlines()[0]})") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise ConfigError(f"--device {device!r}: this machine has {count} CUDA device(s); use cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device!r}: reuters-ray runs on cpu or cuda")
    return dev


def eval_batch_size(requested: int | None, device: torch.device) -> int:
    """Inference batch: large on a GPU (fewer launches), small on CPU (cache-sized batches measured faster)."""
    return requested or (256 if device.type == "cuda" else 16)


# cuDNN's attention builds a plan for every new batch shape: 0.33 s each on the H100, 17 s of a fold's first epoch
# with length-grouped batches. Flash and memory-efficient attention need none; steady epochs were within 3% of
# cuDNN's there (bench/shape_warmup.py, docs/results.md).
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@contextlib.contextmanager
def forward_mode(device: torch.device, precision: str):
    """Mixed precision as `precision` says (bf16/fp16 autocast, or none), attention without cuDNN's backend."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), sdpa_kernel(ATTENTION_BACKENDS):
        yield


def collate(
    tokens: TokenArrays, labels: np.ndarray, idx: np.ndarray, pad_to: str, device: torch.device
) -> dict[str, torch.Tensor]:
    """Input ids, attention mask and labels for rows `idx`, padded to max_length (pad_to "max_length") or to the
    batch's longest row rounded up to a multiple of 8 ("longest")."""
    max_length = tokens.ids.shape[1]
    lengths = tokens.lengths[idx]
    width = max_length if pad_to == "max_length" else min(max_length, -(-int(lengths.max()) // 8) * 8)
    ids = torch.from_numpy(tokens.ids[idx, :width].astype(np.int64))
    mask = torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(labels[idx])}
    if device.type == "cuda":  # pinned host memory lets the copy overlap with the previous step's kernels
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def longest_first(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Positions 0..len(lengths)-1 in batches, longest rows first: each batch pads little."""
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def predict_logits(
    model,
    tokens: TokenArrays,
    idx: np.ndarray,
    batch_size: int,
    pad_to: str,
    device: torch.device,
    precision: str,
    batches: list[np.ndarray] | None = None,
) -> np.ndarray:
    """[len(idx), K] float32 logits of `model` for rows `idx` of `tokens`, in that order. batches: only these
    batches of positions into `idx` (some of longest_first's: a worker's share of a sharded validation); the other
    rows stay 0."""
    model.eval()
    out = np.zeros((len(idx), model.config.num_labels), dtype=np.float32)
    no_labels = np.zeros(len(tokens), dtype=np.int64)
    for rows in longest_first(tokens.lengths[idx], batch_size) if batches is None else batches:
        batch = collate(tokens, no_labels, idx[rows], pad_to, device)
        with forward_mode(device, precision):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out[rows] = logits.float().cpu().numpy()
    return out


class TorchFolds:
    """The fold models of a run (Hugging Face folders: config.json with the label names, model.safetensors) on one
    device. Raises ValueError when they disagree on their labels."""

    def __init__(
        self,
        model_dirs: list[str | Path],
        device: str | torch.device | None = None,
        precision: str = "fp32",
        batch_size: int | None = None,
    ):
        from transformers import AutoModelForSequenceClassification

        self.device = default_device(device)
        self.precision = eval_precision(precision, self.device)
        self.batch_size = eval_batch_size(batch_size, self.device)
        self.models = [
            AutoModelForSequenceClassification.from_pretrained(str(d), dtype=torch.float32).to(self.device).eval()
            for d in model_dirs
        ]
        for m in self.models:  # as the folds trained and validated (a GPU's bf16 autocast; no change in fp32)
            head_in_fp32(m)
        names = [[m.config.id2label[i] for i in range(m.config.num_labels)] for m in self.models]
        if any(n != names[0] for n in names):
            raise ValueError(f"fold models disagree on their labels: {names}")
        self.label_names: list[str] = names[0] if names else []

    def fold_logits(self, tokens: TokenArrays, idx: np.ndarray | None = None) -> np.ndarray:
        """[folds, N, K] float32 logits of every fold model for rows `idx` (default: all)."""
        idx = np.arange(len(tokens)) if idx is None else idx
        return np.stack(
            [
                predict_logits(m, tokens, idx, self.batch_size, "longest", self.device, self.precision)
                for m in self.models
            ]
        )

    def mean_logits(self, tokens: TokenArrays) -> np.ndarray:
        """[N, K] logits averaged over the fold models (the ensemble's vote)."""
        return self.fold_logits(tokens).mean(axis=0)


class OnnxFolds:
    """An exported graph (the fold models' averaged logits: reuters_ray.predictor.export) scored by onnxruntime on CPU, batched
    longest-first as predict_logits does."""

    def __init__(self, graph: str | Path, num_labels: int, batch_size: int = 64, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.num_labels = num_labels
        self.batch_size = batch_size  # onnxruntime on CPU: larger batches than torch's 16 measured no slower

    def mean_logits(self, tokens: TokenArrays) -> np.ndarray:
        """[N, K] float32 averaged logits for every row of `tokens`."""
        out = np.empty((len(tokens), self.num_labels), dtype=np.float32)
        for rows in longest_first(tokens.lengths, self.batch_size):
            width = max(int(tokens.lengths[rows].max()), 2)
            ids = tokens.ids[rows, :width].astype(np.int64)
            mask = (np.arange(width)[None, :] < tokens.lengths[rows, None]).astype(np.int64)
            ids[mask == 0] = tokens.pad_id
            (logits,) = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
            out[rows] = logits
        return out
