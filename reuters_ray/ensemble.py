"""The fold ensemble: average the fold models' logits, take the argmax. Plain torch; the Ray runner wraps it
in an actor, and `Ensemble.from_run` loads a finished run's predictor: its fold models and, when the run blended
them with the linear model (cv.blend), that model and the weight (reuters_ray.blend). With backend "onnx" or
"onnx-int8" the fold models are the run's ONNX export (reuters_ray.export) scored by onnxruntime instead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from reuters_ray.errors import DataError
from reuters_ray.features import TokenArrays, tokenize
from reuters_ray.metrics import softmax
from reuters_ray.train import eval_batch_size, predict_logits


class Ensemble:
    """Fold models that vote by averaging logits.

    model_dirs: Hugging Face folders (config.json with label names + model.safetensors), one per fold.
    """

    def __init__(
        self,
        model_dirs: list[str | Path],
        device: str | None = None,
        precision: str = "fp32",
        batch_size: int | None = None,
    ):
        from transformers import AutoModelForSequenceClassification

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision if self.device.type == "cuda" else "fp32"
        self.batch_size = eval_batch_size(batch_size, self.device)
        self.models = [
            AutoModelForSequenceClassification.from_pretrained(str(d), dtype=torch.float32).to(self.device).eval()
            for d in model_dirs
        ]
        names = [[m.config.id2label[i] for i in range(m.config.num_labels)] for m in self.models]
        if any(n != names[0] for n in names):
            raise ValueError(f"fold models disagree on their labels: {names}")
        self.label_names: list[str] = names[0] if names else []
        self.tokenizer = None  # set by from_run; predict_proba needs it
        self.max_length = 512
        self.linear = None  # a baseline.LinearModel to blend with (from_run, for a run with cv.blend) ...
        self.blend_weight = 1.0  # ... and the ensemble's weight in the blend
        self.onnx = None  # an export.OnnxFolds scoring in place of self.models (from_export)
        self.run_dir: Path | None = None  # the (local copy of the) run folder, for from_run

    def fold_logits(self, tokens: TokenArrays, idx: np.ndarray | None = None) -> np.ndarray:
        """[folds, N, K] float32 logits of every fold model for rows `idx` (default: all)."""
        idx = np.arange(len(tokens)) if idx is None else idx
        return np.stack(
            [
                predict_logits(m, tokens, idx, self.batch_size, "longest", self.device, self.precision)
                for m in self.models
            ]
        )

    @staticmethod
    def combine(fold_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean logits [N, K], predicted labels [N]) from [folds, N, K] logits."""
        mean = fold_logits.mean(axis=0)
        return mean, mean.argmax(axis=1)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, backend: str = "torch") -> Ensemble:
        """The predictor of a finished run folder: its models/fold_* folders, their tokenizer and max_length, and
        for a blended run linear/ and the weight in metrics.json. Raises DataError naming what is missing.
        backend "onnx" / "onnx-int8": the run's ONNX export, made once into a local cache (export.cached_export)."""
        from transformers import AutoTokenizer

        if backend != "torch":
            from reuters_ray.export import cached_export

            return cls.from_export(cached_export(run_dir, backend), backend)

        from reuters_ray.baseline import LinearModel
        from reuters_ray.storage import finished_run

        run_dir = finished_run(str(run_dir))  # a run in a bucket: its outputs fetched once into a local cache
        dirs = sorted((run_dir / "models").glob("fold_*"))
        ens = cls(dirs, device=device)
        ens.run_dir = run_dir
        ens.tokenizer = AutoTokenizer.from_pretrained(str(dirs[0]))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        ens.max_length = metrics["max_length"]
        if metrics.get("predictor") == "blend":
            ens.linear = LinearModel.load(run_dir / "linear")
            if ens.linear.num_classes != len(ens.label_names):
                n, k = ens.linear.num_classes, len(ens.label_names)
                raise DataError(f"{run_dir / 'linear'}: a linear model of {n} classes, fold models of {k}")
            ens.blend_weight = float(metrics["blend"]["weight"])
        return ens

    @classmethod
    def from_export(cls, export_dir: str | Path, backend: str = "onnx") -> Ensemble:
        """The predictor of an export folder (`reuters-ray export`): its ONNX graph (fp32, or INT8 for backend
        "onnx-int8"), tokenizer, labels and, for a blended run, linear model. Raises DataError for a folder that
        is not a whole export."""
        from transformers import AutoTokenizer

        from reuters_ray.baseline import LinearModel
        from reuters_ray.export import OnnxFolds

        folder = Path(export_dir)
        onnx = OnnxFolds(folder, backend)
        m = onnx.manifest
        ens = cls([])
        ens.onnx, ens.label_names, ens.max_length = onnx, list(m["label_names"]), int(m["max_length"])
        ens.batch_size = 64  # onnxruntime on CPU: larger batches than torch's 16 measured no slower
        try:
            ens.tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        except (OSError, ValueError) as e:
            raise DataError(f"{folder / 'tokenizer'}: cannot load the tokenizer ({e})") from None
        if m["predictor"] == "blend":
            ens.linear = LinearModel.load(folder / "linear")
            ens.blend_weight = float(m["blend_weight"])
        return ens

    def mean_logits(self, tokens: TokenArrays) -> np.ndarray:
        """[N, K] logits averaged over the fold models, by torch or by the ONNX graph."""
        if self.onnx is not None:
            return self.onnx.mean_logits(tokens, self.batch_size)
        return self.combine(self.fold_logits(tokens))[0]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """[N, K] class probabilities for raw texts, cleaned as in training: the softmax of the averaged logits,
        blended with the linear model's where the run did. A text with nothing left after cleaning (blank_texts)
        has no probabilities: its row is NaN, never a label. Lone surrogates are replaced (readable_texts)."""
        from reuters_ray.blend import combine
        from reuters_ray.preprocess import clean_text

        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string (predict_proba([text]))")
        if wrong := [i for i, t in enumerate(texts) if not isinstance(t, str)]:
            raise TypeError(f"texts {_indices(wrong)}: not strings ({type(texts[wrong[0]]).__name__})")
        cleaned = [clean_text(t) for t in readable_texts(texts)]
        out = np.full((len(cleaned), len(self.label_names)), np.nan)
        rows = [i for i, t in enumerate(cleaned) if t]
        if rows:
            kept = [cleaned[i] for i in rows]
            probs = softmax(self.mean_logits(tokenize(kept, self.tokenizer, self.max_length)))
            out[rows] = (
                probs if self.linear is None else combine(probs, self.linear.predict_proba(kept), self.blend_weight)
            )
        return out

    def predict(self, texts: list[str]) -> list[str | None]:
        """The label name predicted for each text; None for a text with no text in it (blank_texts)."""
        return [answer["label"] for answer in self.answers(texts, k=1)]

    def answers(self, texts: list[str], k: int = 3) -> list[dict]:
        """One answer per text, in order (the CLI's `predict --json`, the service and Python alike): {"label": the
        most probable label, "top": the k most probable, each {"label", "p"}}, or for a text with nothing in it
        {"label": None, "top": [], "note": "no text"}."""
        return [answer_of(p, self.label_names, k) for p in self.predict_proba(texts)]


NO_TEXT = "no text"  # the note of the answer to a blank text (nothing left after clean_text)


def answer_of(probs: np.ndarray, label_names: list[str], k: int) -> dict:
    """One text's answer from its [K] probabilities (NaN: no text); see Ensemble.answers."""
    if np.isnan(probs).any():
        return {"label": None, "top": [], "note": NO_TEXT}
    top = np.argsort(-probs, kind="stable")[:k]
    return {
        "label": label_names[top[0]],
        "top": [{"label": label_names[i], "p": round(float(probs[i]), 6)} for i in top],
    }


def blank_texts(texts: list[str]) -> list[int]:
    """Indices of the texts with nothing left after the training's cleaning (empty, spaces, only [UNK]/[PAD]
    markers): they get the "no text" answer."""
    from reuters_ray.preprocess import clean_text

    return [i for i, t in enumerate(texts) if not clean_text(t)]


_SURROGATE = re.compile("[\ud800-\udfff]")


def unreadable_texts(texts: list[str]) -> list[int]:
    """Indices of the texts that hold a lone surrogate (e.g. JSON's "\\ud800", or bytes Python kept with
    surrogateescape): not Unicode any tokenizer can read."""
    return [i for i, t in enumerate(texts) if _SURROGATE.search(t)]


def readable_texts(texts: list[str]) -> list[str]:
    """`texts` with every lone surrogate replaced by U+FFFD, and a warning naming the texts' indices."""
    bad = unreadable_texts(texts)
    if bad:
        import warnings

        warnings.warn(f"texts {_indices(bad)}: lone surrogates (not Unicode) replaced by U+FFFD", stacklevel=3)
    return [_SURROGATE.sub("\ufffd", t) for t in texts] if bad else list(texts)


def _indices(rows: list[int], shown: int = 20) -> str:
    return ", ".join(map(str, rows[:shown])) + (" ..." if len(rows) > shown else "")
