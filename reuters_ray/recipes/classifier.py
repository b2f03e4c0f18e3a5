"""The Python door: TextClassifier, k-fold cross-validation over pandas DataFrames, as scikit-learn and AutoGluon
users expect it (fit, predict, predict_proba, evaluate, leaderboard, load).

    clf = TextClassifier("configs/quick-cpu.yaml", cv={"name": "news"}).fit(train_df, text="body", label="topic")
    clf.leaderboard()                    # the predictor, the fold ensemble, the linear model and each fold
    clf.predict(["Oil prices rose"])     # label names (a multi-label run: lists of them)

fit runs exactly what `reuters-ray cv` runs (run_cv: Ray Train folds, the ensemble, the blend, the report, the same
run folder and resume). A DataFrame becomes the table source's input: its text and label columns (and `id`, if it
has one) written once as Parquet into the cache (REUTERS_RAY_CACHE, else ~/.cache/reuters-ray), named by their
content, so the same frame is the same data (a rerun trains nothing again) and a changed frame is other data
(refused under the same cv.name, as a changed file is). A label column of lists makes the run multi-label.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reuters_ray.config import RunConfig, load_config
from reuters_ray.console import Console
from reuters_ray.errors import DataError
from reuters_ray.predictor.ensemble import Ensemble
from reuters_ray.recipes.cv import run_cv
from reuters_ray.recipes.distill import run_distill, student_config
from reuters_ray.scoring.evaluate import evaluate
from reuters_ray.storage import cache_root, finished_run, uri_join, write_atomic

PRESETS = Path(__file__).resolve().parents[2] / "configs"  # the shipped configs: TextClassifier("quick-cpu")
FRAMES = "frames"  # the cache's folder of DataFrames written for the table source


class TextClassifier:
    """A k-fold cross-validated text classifier (the fold models' ensemble, blended with a linear model by default).

    config: a YAML file, the name of a shipped config ("quick-cpu", "tiny-cpu", ...: configs/<name>.yaml), a
    RunConfig, or None (every default); overrides: one mapping per config section, the CLI's names
    (train={"max_epochs": 2}, cv={"name": "news"}). log_format: the console's "text", "json" or "quiet".
    Raises ConfigError for an unknown key or a bad value."""

    def __init__(self, config: str | Path | RunConfig | None = None, log_format: str = "text", **overrides):
        if isinstance(config, RunConfig):
            config = config.to_dict()
        if (
            isinstance(config, str)
            and not config.endswith((".yaml", ".yml"))
            and (PRESETS / f"{config}.yaml").is_file()
        ):
            config = PRESETS / f"{config}.yaml"
        if isinstance(config, dict):
            sections = set(config) | set(overrides)
            self.config = load_config(None, **{s: {**config.get(s, {}), **overrides.get(s, {})} for s in sections})
        else:
            self.config = load_config(config, **overrides)
        self.console = Console(log_format)
        self.run_dir: str | None = None  # the run folder (a path or a storage URI), once fitted or loaded
        self.metrics: dict[str, Any] | None = None  # its metrics.json
        self.predictor: Ensemble | None = None
        self.text = "text"

    # --- training -------------------------------------------------------------------------------------------

    def fit(self, train, text: str = "text", label: str = "label", test=None) -> TextClassifier:
        """Runs (or resumes) k-fold cross-validation on Ray (a local Ray, or the cluster in RAY_ADDRESS) and loads
        the run's predictor. train, test: DataFrames with columns `text` and `label` (an `id` column is kept as the
        rows' ids), or paths/URIs of tables as `--data.path` takes; test None: a seeded split of train
        (data.test_size). Raises DataError naming the column and row of bad input (a missing column, an empty frame,
        a label that is NaN, a text that is not a string), before Ray starts and before anything is written;
        ConfigError, RuntimeError as run_cv. Returns self."""
        multi = _is_multi_label(train, label)
        paths = [_table_path(t, text, label, role) for t, role in ((train, "train"), (test, "test"))]
        data = {"source": "table", "path": paths[0], "test_path": paths[1], "text_column": text}
        data |= {"label_column": label, **({"task": "multi"} if multi else {})}
        cfg = dataclasses.replace(self.config, data=dataclasses.replace(self.config.data, **data))
        try:
            metrics = run_cv(cfg, self.console)
        except DataError as e:  # the table source names its file: a frame's is the cache's, not the user's
            text = str(e)
            for path, role, given in zip(paths, ("train", "test"), (train, test)):
                if isinstance(given, pd.DataFrame):
                    text = text.replace(path, f"the {role} DataFrame")
            raise DataError(text) from None
        self.config, self.text = cfg, text
        return self._loaded(uri_join(cfg.cv.storage_path, metrics["run"]), metrics)

    def distill(self, student: str | None = None, layers: int | None = None, **overrides) -> TextClassifier:
        """A student of this fitted classifier's run (`reuters-ray distill`): one model, `student` (a model name or
        folder; default the teacher's model) cut to its first `layers` layers, learnt from the teacher's
        out-of-fold probabilities; overrides as the constructor's. Returns the student as a new TextClassifier."""
        self._check_fitted()
        cfg = student_config(self.run_dir, [overrides], student, layers, None)
        metrics = run_distill(cfg, self.console)
        out = TextClassifier(cfg, log_format=self.console.mode)
        out.text = self.text
        return out._loaded(uri_join(cfg.cv.storage_path, metrics["run"]), metrics)

    # --- loading ----------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, source: str | Path, backend: str = "torch", device: str | None = None) -> TextClassifier:
        """The classifier of a finished run folder, a run in a bucket (a storage URI) or an export folder
        (Ensemble.load). An export has no leaderboard (its run folder has). Raises DataError naming what is
        missing."""
        predictor = Ensemble.load(source, backend=backend, device=device)
        out = cls(log_format="quiet")
        out.run_dir, out.predictor = str(source), predictor
        local = predictor.run_dir
        if local is not None and (Path(local) / "metrics.json").is_file():
            out.metrics = json.loads((Path(local) / "metrics.json").read_text())
            out.config = load_config(Path(local) / "config.yaml")
            out.text = out.config.data.text_column
        return out

    def _loaded(self, run_dir: str, metrics: dict[str, Any]) -> TextClassifier:
        self.run_dir, self.metrics = run_dir, metrics
        self.predictor = Ensemble.load(finished_run(run_dir))
        return self

    # --- answers ----------------------------------------------------------------------------------------------

    def predict(self, X, text: str | None = None) -> pd.Series:
        """The label predicted for each text (a multi-label run: the list of its labels, most probable first; None
        for a text with nothing in it), as a Series on X's index (a list: 0..n-1). X: texts, a Series, or a
        DataFrame whose column `text` (default: the one fit read) holds them."""
        texts, index = self._texts(X, text)
        return pd.Series(self.predictor.predict(texts), index=index, name="label", dtype=object)

    def predict_proba(self, X, text: str | None = None) -> pd.DataFrame:
        """[N, K] probabilities, one column per label (multi-label: each label's own probability); a row of NaN for
        a text with nothing in it. On X's index, as predict."""
        texts, index = self._texts(X, text)
        return pd.DataFrame(self.predictor.predict_proba(texts), index=index, columns=self.predictor.label_names)

    def evaluate(self, data: pd.DataFrame, text: str | None = None, label: str = "label") -> dict[str, Any]:
        """The predictor's figures on a labelled DataFrame, as metrics.json holds them for the test split
        (accuracy, weighted and macro F1, per class...; multi-label: micro-F1, macro-F1, samples-F1, subset
        accuracy, Hamming loss), with the run's multi-label thresholds. Raises DataError for a label the run does
        not know or a text with nothing in it, naming the row."""
        texts, index = self._texts(data, text)
        y = _encoded(data, label, self.predictor.label_names, self.predictor.multi_label)
        probs = self.predictor.predict_proba(texts)
        if blank := [i for i, row in zip(index, probs) if np.isnan(row).any()]:
            raise DataError(f"column {text or self.text!r}, row {blank[0]}: no text to score ({len(blank)} rows)")
        return evaluate(y, probs, self.predictor.label_names, self.predictor.decision)

    def leaderboard(self) -> pd.DataFrame:
        """One row per model of the run: the predictor (the blend, or the ensemble), the fold ensemble, the linear
        model and each fold; columns model, role, test_<figure> and out_of_fold_<figure> (a fold's: its own
        validation rows, which are out of fold for it) where the run has them. Figures: accuracy, weighted F1,
        macro F1; multi-label: micro-F1, macro-F1, subset accuracy."""
        self._check_fitted()
        if self.metrics is None:
            raise DataError(f"{self.run_dir}: an export has no leaderboard; load its run folder")
        return _leaderboard(self.metrics)

    # --- helpers ------------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if self.predictor is None:
            raise DataError("this TextClassifier is not fitted: call fit(...) or TextClassifier.load(run folder)")

    def _texts(self, X, text: str | None) -> tuple[list[str], pd.Index]:
        self._check_fitted()
        if isinstance(X, str):
            raise DataError("X: a list of texts, a Series or a DataFrame, not one string (wrap it in a list)")
        if isinstance(X, pd.DataFrame):
            column = text or self.text
            if column not in X.columns:
                raise DataError(f"no column {column!r} (columns: {', '.join(map(str, X.columns))}); pass text=...")
            X = X[column]
        series = X if isinstance(X, pd.Series) else pd.Series(list(X), dtype=object)
        if bad := [i for i, t in series.items() if not isinstance(t, str)]:
            raise DataError(f"row {bad[0]}: not text ({type(series[bad[0]]).__name__}), {len(bad)} such rows")
        return series.tolist(), series.index


# --- DataFrames into the table source ---------------------------------------------------------------------------


def _is_multi_label(train, label: str) -> bool:
    """Whether a DataFrame's label column holds lists (a multi-label table)."""
    if not isinstance(train, pd.DataFrame) or label not in train.columns:
        return False
    return any(isinstance(v, (list, tuple, np.ndarray)) for v in train[label])


def _table_path(frame, text: str, label: str, role: str) -> str | None:
    """The table source's path for `frame`: a path or URI as given, None for None, or a DataFrame checked and
    written once into the cache as Parquet, named by its content (the same frame: the same file)."""
    if frame is None or isinstance(frame, (str, Path)):
        return None if frame is None else str(frame)
    table = _checked(frame, text, label, role)
    digest = hashlib.sha256(
        json.dumps(table.to_dict(orient="list"), sort_keys=True, default=_plain).encode()
    ).hexdigest()
    path = cache_root() / FRAMES / f"{role}-{digest[:24]}.parquet"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, table.to_parquet(index=False))
    return str(path)


def _checked(frame, text: str, label: str, role: str) -> pd.DataFrame:
    """The columns the table source reads (id, if any; text; label), with each cell checked. Raises DataError
    naming the frame (`role`), the column and the row (the frame's index label)."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{role}: a pandas DataFrame, a path or a URI, not {type(frame).__name__}")
    if frame.empty:
        raise DataError(f"{role}: the DataFrame has no rows")
    for column in (text, label):
        if column not in frame.columns:
            found = ", ".join(map(str, frame.columns))
            raise DataError(f"{role}: no column {column!r} (columns: {found}); pass text=... and label=...")
    for i, v in frame[text].items():
        if not isinstance(v, str):
            raise DataError(f"{role}: column {text!r}, row {i}: not text ({v!r}, {type(v).__name__})")
    for i, v in frame[label].items():
        if isinstance(v, (list, tuple, np.ndarray)):
            if any(not isinstance(x, (str, int, np.integer)) for x in v):
                raise DataError(f"{role}: column {label!r}, row {i}: a label list holds {list(v)!r}")
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            raise DataError(f"{role}: column {label!r}, row {i}: no label ({v!r})")
    columns = (["id"] if "id" in frame.columns and "id" not in (text, label) else []) + [text, label]
    table = frame[columns].reset_index(drop=True)
    if _is_multi_label(frame, label):
        table[label] = [[str(x) for x in v] for v in table[label]]
    return table


def _plain(value: Any) -> Any:
    """JSON for what a frame's cells may hold besides JSON's own types (numpy scalars and arrays)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _encoded(data: pd.DataFrame, label: str, label_names: list[str], multi: bool) -> np.ndarray:
    """The label column as the run's label indices [N] (multi-label: multi-hot [N, K]). Raises DataError naming the
    row of a label the run does not know."""
    if label not in data.columns:
        raise DataError(f"no column {label!r} (columns: {', '.join(map(str, data.columns))}); pass label=...")
    index = {name: j for j, name in enumerate(label_names)}
    y = np.zeros((len(data), len(label_names)), dtype=np.int64) if multi else np.zeros(len(data), dtype=np.int64)
    for r, (i, v) in enumerate(data[label].items()):
        names = [str(x) for x in v] if multi else [str(v)]
        if unknown := [n for n in names if n not in index]:
            raise DataError(f"column {label!r}, row {i}: label {unknown[0]!r} is not one of the run's labels")
        if multi:
            y[r, [index[n] for n in names]] = 1
        else:
            y[r] = index[names[0]]
    return y


# --- the leaderboard -----------------------------------------------------------------------------------------


def _leaderboard(m: dict[str, Any]) -> pd.DataFrame:
    """The leaderboard of metrics.json `m` (TextClassifier.leaderboard)."""
    multi = m.get("task") == "multi"
    keys = ("f1_micro", "f1_macro", "subset_accuracy") if multi else ("accuracy", "f1_weighted", "f1_macro")
    blend_oof = (m.get("blend") or {}).get("out_of_fold", {})

    def row(model: str, role: str, test: dict | None, oof: dict | None) -> dict[str, Any]:
        test, oof = test or {}, oof or {}
        return (
            {"model": model, "role": role}
            | {f"test_{k}": test.get(k) for k in keys}
            | {f"out_of_fold_{k}": oof.get(k) for k in keys}
        )

    predictor = m.get("predictor", "ensemble")
    rows = []
    if predictor == "blend":
        rows.append(row("blend", "the predictor", m, blend_oof.get("blend")))
    if predictor == "student":
        rows.append(row("student", "the predictor", m, None))
    ensemble_role = "the predictor" if predictor == "ensemble" else "fold ensemble"
    ensemble_test = m if predictor == "ensemble" else m.get("ensemble")
    if predictor != "student":
        rows.append(row("ensemble", ensemble_role, ensemble_test, m.get("out_of_fold")))
    if "baseline" in m or "linear" in blend_oof:
        rows.append(row("linear", "TF-IDF + linear SVM", m.get("baseline"), blend_oof.get("linear")))
    if predictor != "student":  # a student's one model is the predictor's row
        for f in m.get("folds", []):
            test = {"f1_weighted": f.get("test_f1_weighted"), "f1_micro": f.get("test_f1_micro")}
            rows.append(row(f"fold_{f['fold']}", "one fold model", test, {k: f.get(f"val_{k}") for k in keys}))
    return pd.DataFrame(rows)
