"""The fold ensemble: average the fold models' logits, take the argmax. Plain torch; the Ray runner wraps it
in an actor, and `Ensemble.from_run` loads a finished run's predictor: its fold models and, when the run blended
them with the linear model (cv.blend), that model and the weight (reuters_ray.blend)."""

from __future__ import annotations

import json
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
        self.label_names: list[str] = names[0]
        self.tokenizer = None  # set by from_run; predict_proba needs it
        self.max_length = 512
        self.linear = None  # a baseline.LinearModel to blend with (from_run, for a run with cv.blend) ...
        self.blend_weight = 1.0  # ... and the ensemble's weight in the blend

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
    def from_run(cls, run_dir: str | Path, device: str | None = None) -> Ensemble:
        """The predictor of a finished run folder: its models/fold_* folders, their tokenizer and max_length, and
        for a blended run linear/ and the weight in metrics.json. Raises DataError naming what is missing."""
        from transformers import AutoTokenizer

        from reuters_ray.baseline import LinearModel
        from reuters_ray.storage import fetch_run

        missing = f"{run_dir}: no metrics.json or models/fold_* folders; is it a finished reuters-ray run folder?"
        try:
            run_dir = fetch_run(str(run_dir))  # a run in a bucket: its outputs fetched once into a local cache
        except (OSError, ValueError):  # nothing there, or a URI pyarrow does not take
            raise DataError(missing) from None
        dirs = sorted((run_dir / "models").glob("fold_*"))
        if not (run_dir / "metrics.json").is_file() or not dirs:
            raise DataError(missing)
        ens = cls(dirs, device=device)
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

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """[N, K] class probabilities for raw texts, cleaned as in training: the softmax of the averaged logits,
        blended with the linear model's where the run did."""
        from reuters_ray.blend import combine
        from reuters_ray.preprocess import clean_text

        cleaned = [clean_text(t) for t in texts]
        mean, _ = self.combine(self.fold_logits(tokenize(cleaned, self.tokenizer, self.max_length)))
        if self.linear is None:
            return softmax(mean)
        return combine(softmax(mean), self.linear.predict_proba(cleaned), self.blend_weight)

    def predict(self, texts: list[str]) -> list[str]:
        """The label name predicted for each text."""
        return [self.label_names[i] for i in self.predict_proba(texts).argmax(axis=1)]
