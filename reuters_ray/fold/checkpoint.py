"""Fold checkpoints that resume exactly and load without unpickling arbitrary objects.

One checkpoint is a folder:
    model.safetensors   the weights after this epoch
    state.pt            optimizer, scheduler, grad-scaler and RNG states: tensors and plain Python values only,
                        read back with torch.load(weights_only=True)
    progress.json       epoch, early-stopping state, metrics history, the run's config
    best/               the best model so far as a Hugging Face folder (config.json with label names +
                        model.safetensors): every checkpoint carries it, so keeping only the latest few
                        checkpoints never loses the best model; beside it val_logits.safetensors, that model's
                        logits on the fold's validation rows (the run's out-of-fold predictions), and in a
                        finished fold's last checkpoint test_logits.safetensors, its logits on the test split
Folders are written under a temporary name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from reuters_ray.errors import CheckpointError

MODEL_FILE, STATE_FILE, PROGRESS_FILE, BEST_DIR = "model.safetensors", "state.pt", "progress.json", "best"
VAL_LOGITS_FILE = "val_logits.safetensors"  # in best/
TEST_LOGITS_FILE = "test_logits.safetensors"  # in best/ of a finished fold's last checkpoint


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python RNG states as tensors, lists and ints."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's weights (what checkpoints and the kept best model hold)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_best(
    path: Path,
    model_config,
    best_state: dict[str, torch.Tensor],
    val_logits: np.ndarray | None = None,
    test_logits: np.ndarray | None = None,
) -> None:
    """Writes a Hugging Face model folder (config + safetensors) that from_pretrained loads, and the model's
    validation and test logits beside it when given."""
    path.mkdir(parents=True, exist_ok=True)
    model_config.save_pretrained(path)
    save_file(best_state, path / MODEL_FILE, metadata={"format": "pt"})
    for logits, name in ((val_logits, VAL_LOGITS_FILE), (test_logits, TEST_LOGITS_FILE)):
        if logits is not None:
            save_file({"logits": torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))}, path / name)


def read_val_logits(data: bytes, where: str) -> np.ndarray:
    """The logits array of a val_logits.safetensors (or test_logits.safetensors) file's bytes; CheckpointError naming
    `where` when damaged."""
    from safetensors.numpy import load

    try:
        return load(data)["logits"]
    except Exception as e:  # a truncated or foreign file fails in several ways; any of them means damaged
        raise CheckpointError(f"{where}: damaged validation logits ({type(e).__name__}: {e})") from None


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor],
    training_state: dict[str, Any],
    progress: dict[str, Any] | Callable[[], dict[str, Any]],
    best_val_logits: np.ndarray | None = None,
    best_test_logits: np.ndarray | None = None,
) -> Path:
    """Writes checkpoint folder `path` atomically (temporary sibling, then rename). Returns `path`.

    progress: the dict for progress.json, or a function returning it, called after the weights and state are
    written (so the progress it returns can record how long they took)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(cpu_state(model), tmp / MODEL_FILE, metadata={"format": "pt"})
    torch.save({**training_state, "rng": rng_state()}, tmp / STATE_FILE)
    save_best(tmp / BEST_DIR, model.config, best_state, best_val_logits, best_test_logits)
    (tmp / PROGRESS_FILE).write_text(json.dumps(progress() if callable(progress) else progress, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Reads (weights, best weights, training state, progress) from a checkpoint folder; the training state
    carries the best model's validation logits as "best_val_logits" (None in checkpoints from before them).

    Raises CheckpointError naming the file when one is missing or damaged (e.g. a truncated safetensors file).
    """
    path = Path(path)
    files = [path / MODEL_FILE, path / STATE_FILE, path / PROGRESS_FILE, path / BEST_DIR / MODEL_FILE]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    try:
        weights, best = load_file(files[0]), load_file(files[3])
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {path}: damaged weights file ({e})") from None
    try:
        state = torch.load(files[1], map_location="cpu", weights_only=True)  # tensors and plain values only
        progress = json.loads(files[2].read_text())
    except Exception as e:  # unpickling errors come in many types; any of them means a damaged file
        raise CheckpointError(f"checkpoint {path}: damaged state ({type(e).__name__}: {e})") from None
    logits = path / BEST_DIR / VAL_LOGITS_FILE  # absent in checkpoints written before they were kept
    state["best_val_logits"] = read_val_logits(logits.read_bytes(), str(logits)) if logits.is_file() else None
    return weights, best, state, progress


def first_loadable(
    candidates: Iterable[Path], log: Callable[[str], None] = print
) -> tuple[Path, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]] | None:
    """(path, load_checkpoint(path)) of the first candidate that loads, newest first by convention; None when none
    does. A damaged candidate is logged and skipped: resuming from an older good checkpoint costs epochs, resuming
    from wrong weights costs the run. `candidates` may be a generator that fetches each folder only when asked."""
    for path in candidates:
        try:
            return Path(path), load_checkpoint(path)
        except CheckpointError as e:
            log(f"{e}: skipped, trying the previous kept checkpoint")
    return None


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Deletes all but the `keep` latest epoch_NNN folders (each carries the best model, see above)."""
    found = sorted(p for p in Path(folder).glob("epoch_*") if p.is_dir())
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
