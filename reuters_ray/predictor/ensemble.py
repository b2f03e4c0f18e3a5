"""A run's predictor: the fold models' averaged logits (the ensemble's vote), blended with the linear model where
the run did (cv.blend, reuters_ray.scoring.blend), answering texts. One loader builds it from a run folder, a run in a
bucket, or an export; the CLI (`predict`, `serve`, `export`), Python and the service all use it.

    Ensemble.load(source, backend="torch")   source: a run folder, a storage URI, or an export folder
    ens.predict(texts) / ens.predict_proba(texts) / ens.answers(texts, k)

The fold scorer is reuters_ray.fold.inference's TorchFolds (backend "torch") or OnnxFolds (an export's graph, fp32 or
INT8: "onnx", "onnx-int8"); a run asked for an ONNX backend is exported once into a local cache (cached_export).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from reuters_ray.data.features import TokenArrays, tokenize
from reuters_ray.data.preprocess import clean_text
from reuters_ray.data.text import readable_texts
from reuters_ray.errors import DataError
from reuters_ray.fold.inference import OnnxFolds, TorchFolds
from reuters_ray.predictor.export import BACKENDS, GRAPHS, export_cache_dir, export_predictor, read_manifest
from reuters_ray.scoring.baseline import LinearModel
from reuters_ray.scoring.blend import blend_probabilities
from reuters_ray.scoring.metrics import softmax
from reuters_ray.scoring.multilabel import decide, sigmoid
from reuters_ray.storage import finished_run, model_dirs, private_dir, publish_dir

NO_TEXT = "no text"  # the note of the answer to a blank text (nothing left after clean_text)


class Ensemble:
    """The predictor. folds: a fold scorer (`mean_logits(tokens) -> [N, K]`: inference.TorchFolds or OnnxFolds);
    tokenizer: the run's (Hugging Face, fast); label_names: the K labels in output order; max_length: tokens per text
    ([CLS] and [SEP] included); linear (baseline.LinearModel) and blend_weight: the blend, w x ensemble +
    (1 - w) x linear on probabilities, for a blended run; run_dir: the (local copy of the) run folder, if any;
    decision: for a multi-label run (data.task multi), its {"thresholds": [K], "at_least_one": bool} (metrics.json's
    "decision", chosen out of fold), else None."""

    def __init__(
        self, folds, tokenizer, label_names, max_length, linear=None, blend_weight=1.0, run_dir=None, decision=None
    ):
        self.folds, self.tokenizer, self.label_names, self.max_length = folds, tokenizer, list(label_names), max_length
        self.linear, self.blend_weight = linear, float(blend_weight)
        self.run_dir: Path | None = run_dir
        self.decision = None
        if decision is not None:
            self.decision = {"thresholds": list(decision["thresholds"]), "at_least_one": bool(decision["at_least_one"])}
            if len(self.decision["thresholds"]) != len(self.label_names):
                k, t = len(self.label_names), len(self.decision["thresholds"])
                raise DataError(f"a multi-label predictor of {k} labels with {t} thresholds")

    @property
    def multi_label(self) -> bool:
        """Whether texts get label sets (a data.task multi run): sigmoid probabilities and thresholds."""
        return self.decision is not None

    # --- loading ------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, source: str | Path, backend: str = "torch", device: str | None = None) -> Ensemble:
        """The predictor at `source`: an export folder (it holds manifest.json; backend "onnx" or "onnx-int8",
        "torch" meaning "onnx" there), else a finished run folder or storage URI, scored by its fold models (backend
        "torch", on `device`) or by its ONNX export, made once into the cache. Raises DataError naming what is
        missing."""

        if backend not in BACKENDS:
            raise DataError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if "://" not in str(source) and (Path(source) / "manifest.json").is_file():
            return cls.from_export(source, "onnx" if backend == "torch" else backend)
        if backend == "torch":
            return cls.from_run(source, device=device)
        return cls.from_export(cached_export(source, backend), backend)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | None = None, backend: str = "torch") -> Ensemble:
        """The predictor of a finished run folder (or storage URI: fetched once into a local cache): its
        models/fold_* folders (a student run: models/student), their tokenizer, metrics.json's max_length, and for a blended run linear/ and the
        weight. Another backend than "torch": Ensemble.load. Raises DataError naming what is missing."""
        from transformers import AutoTokenizer

        if backend != "torch":
            return cls.load(run_dir, backend, device)
        local = finished_run(str(run_dir))
        dirs = model_dirs(local)  # a student run: its one model
        folds = TorchFolds(dirs, device=device)
        metrics = json.loads((local / "metrics.json").read_text())
        linear, weight = None, 1.0
        if metrics.get("predictor") == "blend":
            linear, weight = LinearModel.load(local / "linear"), metrics["blend"]["weight"]
            if linear.num_classes != len(folds.label_names):
                n, k = linear.num_classes, len(folds.label_names)
                raise DataError(f"{local / 'linear'}: a linear model of {n} classes, fold models of {k}")
        tokenizer = AutoTokenizer.from_pretrained(str(dirs[0]))
        return cls(
            folds,
            tokenizer,
            folds.label_names,
            metrics["max_length"],
            linear,
            weight,
            run_dir=local,
            decision=metrics.get("decision") if metrics.get("task") == "multi" else None,
        )

    @classmethod
    def from_export(cls, export_dir: str | Path, backend: str = "onnx") -> Ensemble:
        """The predictor of an export folder (`reuters-ray export`): its ONNX graph (fp32, or INT8 for backend
        "onnx-int8"), tokenizer, labels and, for a blended run, linear model. Raises DataError for a folder that is
        not a whole export."""
        from transformers import AutoTokenizer

        folder = Path(export_dir)
        m = read_manifest(folder, backend)
        folds = OnnxFolds(folder / GRAPHS[backend], len(m["label_names"]))
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        except (OSError, ValueError) as e:
            raise DataError(f"{folder / 'tokenizer'}: cannot load the tokenizer ({e})") from None
        blended = m["predictor"] == "blend"
        linear = LinearModel.load(folder / "linear") if blended else None
        return cls(
            folds,
            tokenizer,
            m["label_names"],
            int(m["max_length"]),
            linear,
            m["blend_weight"] if blended else 1.0,
            decision=m.get("decision"),
        )

    def export(self, out_dir: str | Path, int8: bool = False) -> Path:
        """This (torch) predictor as an export folder (reuters_ray.predictor.export.export_predictor)."""

        return export_predictor(self, out_dir, int8=int8)

    # --- answering ----------------------------------------------------------------------------------------------

    @property
    def models(self) -> list:
        """The fold models (backend "torch")."""
        return self.folds.models

    @property
    def onnx(self):
        """The OnnxFolds scorer of an export's predictor, else None."""
        return self.folds if hasattr(self.folds, "session") else None

    @property
    def batch_size(self) -> int:
        return self.folds.batch_size

    def mean_logits(self, tokens) -> np.ndarray:
        """[N, K] logits averaged over the fold models, by torch or by the ONNX graph."""
        return self.folds.mean_logits(tokens)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """[N, K] class probabilities for raw texts (any iterable of strings), cleaned as in training: the softmax of
        the averaged logits (a multi-label run: each topic's sigmoid), blended with the linear model's where the run
        did. A text the model reads nothing of
        (blank_texts) has no probabilities: its row is NaN, never a label. Lone surrogates are replaced, with a
        warning. Raises TypeError for one string instead of a list, or for items that are not strings."""

        cleaned, tokens = self._read(texts)
        out = np.full((len(cleaned), len(self.label_names)), np.nan)
        rows = np.flatnonzero(tokens.lengths > 2)  # more than [CLS] and [SEP]
        if len(rows):
            kept = TokenArrays(tokens.ids[rows], tokens.lengths[rows], tokens.pad_id)
            logits = self.mean_logits(kept)
            probs = sigmoid(logits) if self.multi_label else softmax(logits)
            if self.linear is not None:
                linear = self.linear.predict_proba([cleaned[i] for i in rows])
                probs = blend_probabilities(probs, linear, self.blend_weight)
            out[rows] = probs
        return out

    def blank_texts(self, texts: list[str]) -> list[int]:
        """Indices of the texts the model reads nothing of: empty, spaces, only Keras's markers, or only characters
        its tokenizer drops (control characters, zero-width spaces, soft hyphens). They get the "no text" answer."""
        return np.flatnonzero(self._read(texts)[1].lengths <= 2).tolist()

    def _read(self, texts) -> tuple[list[str], object]:
        """(the texts cleaned as in training, their tokens)."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a list of strings, not one string (predict_proba([text]))")
        texts = list(texts)  # a generator too
        if wrong := [i for i, t in enumerate(texts) if not isinstance(t, str)]:
            raise TypeError(f"texts {', '.join(map(str, wrong[:20]))}: not strings ({type(texts[wrong[0]]).__name__})")
        cleaned = [clean_text(t) for t in readable_texts(texts)]
        return cleaned, tokenize(cleaned, self.tokenizer, self.max_length)

    def predict(self, texts: list[str]) -> list:
        """The label name predicted for each text (a multi-label run: the list of its label names, most probable
        first); None for a text with no text in it."""
        if self.multi_label:
            return [None if a["labels"] is None else [x["label"] for x in a["labels"]] for a in self.answers(texts, 1)]
        return [answer["label"] for answer in self.answers(texts, k=1)]

    def answers(self, texts: list[str], k: int = 3) -> list[dict]:
        """One answer per text, in order (the CLI's `predict --json`, the service and Python alike): {"label": the
        most probable label, "top": the k most probable, each {"label", "p"}}, or for a text with nothing in it
        {"label": None, "top": [], "note": "no text"}. A multi-label run answers {"labels": the label set, each
        {"label", "p"}, most probable first, "top": the k most probable} ({"labels": None, "top": [], "note": ...}
        for a blank text)."""
        return [answer_of(p, self.label_names, k, self.decision) for p in self.predict_proba(texts)]


def answer_of(probs: np.ndarray, label_names: list[str], k: int, decision: dict | None = None) -> dict:
    """One text's answer from its [K] probabilities (NaN: no text), and for a multi-label run its decision
    (thresholds, at_least_one); see Ensemble.answers."""
    key = "label" if decision is None else "labels"
    if np.isnan(probs).any():
        return {key: None, "top": [], "note": NO_TEXT}
    order = np.argsort(-probs, kind="stable")
    top = [{"label": label_names[i], "p": round(float(probs[i]), 6)} for i in order[:k]]
    if decision is None:
        return {"label": label_names[order[0]], "top": top}
    chosen = decide(probs[None, :], np.asarray(decision["thresholds"]), decision["at_least_one"])[0]
    return {
        "labels": [{"label": label_names[i], "p": round(float(probs[i]), 6)} for i in order if chosen[i]],
        "top": top,
    }


def cached_export(run_dir: str | Path, backend: str) -> Path:
    """The export of run `run_dir` with the graph for `backend`, made once into export.export_cache_dir and reused.
    Several processes may ask at once: each exports into a private folder and one rename publishes it; a process
    that finds another's whole export there uses it. Raises DataError naming a run that is not a finished one."""

    if backend not in GRAPHS:
        raise DataError(f"backend {backend!r}: choose one of {', '.join(GRAPHS)}")
    local = finished_run(str(run_dir))  # a run in a bucket: fetched once (and its metrics.json read once)
    folder = export_cache_dir(run_dir, local)

    def usable(path: Path) -> bool:
        try:
            read_manifest(path, backend)
            return True
        except DataError:  # not made yet, made without INT8, or damaged: made again
            return False

    if usable(folder):
        return folder
    tmp = private_dir(folder)
    try:
        Ensemble.from_run(local, device="cpu").export(tmp / "export", int8=backend == "onnx-int8")
        return publish_dir(tmp / "export", folder, usable)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
